"""No secret in fapilog's own errors: for every setting that can hold one (OTLP headers and
the OTEL_ variables read in their place, OTLP endpoints, Loki's URL, user, password, token
and tenant; a misspelt setting name too), a malformed value holding a unique secret, set
through the environment and through `configure_logging()` keywords, fails with a
ConfigurationError that names the setting and shows the value masked, and the secret is in
neither the error nor anything fapilog writes to stdout or stderr (also when configuring
from the environment falls back to the defaults). Exporters that cannot reach an endpoint
given with credentials (closed ports on 127.0.0.1) never print them in their diagnostics."""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

import fapilog
import fapilog.testing
from fapilog import ConfigurationError, LoggingSettings
from fapilog.exporters.loki import LokiExporter
from fapilog.exporters.loki_config import validate
from fapilog.lifecycle.configure import configure_from_environment
from fapilog.otlp import span_processors
from fapilog.settings import LokiSettings
from fapilog.settings._errors import mask_mapping, mask_url, mask_userinfo, scrub

SECRET = "s3cr3t-9f4c2a7e"  # found nowhere else
MASK = "**********"


@dataclass
class Case:
    """A secret-bearing setting given a malformed value: `names` must be in the message
    (the variable of the setting first), `shown` (the masked value) too when given;
    `implicit`: what stderr says when fapilog configures itself from that environment."""

    names: list[str]
    env: dict[str, str] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    shown: str | None = None
    implicit: str = "using defaults"


def case(id: str, names: list[str], **given: Any) -> Any:
    return pytest.param(Case(names, **given), id=id)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


OTLP = "FAPILOG_OTLP__HEADERS"
BROKEN_HEADERS = f"Authorization=Bearer abc.{SECRET},broken"
CASES = [
    case(
        "otlp-headers-env",
        [OTLP, "malformed mapping"],
        env={OTLP: BROKEN_HEADERS, "FAPILOG_EXPORTERS": "otlp"},
        shown=f"'Authorization={MASK},{MASK}'",
    ),
    case(
        "otlp-headers-keyword",
        [OTLP, "malformed mapping"],
        kwargs={"exporters": ["otlp"], "otlp": {"headers": BROKEN_HEADERS}},
        shown=f"'Authorization={MASK},{MASK}'",
    ),
    case(
        "otlp-headers-json-env",
        [OTLP, "not valid JSON"],
        env={OTLP: '{"authorization": "Bearer ' + SECRET + '",}', "FAPILOG_EXPORTERS": "otlp"},
    ),
    case(
        "otlp-headers-value-keyword",
        [OTLP, "otlp.headers.authorization"],
        kwargs={"otlp": {"headers": {"authorization": [f"Bearer {SECRET}"]}}},
    ),
    case(
        "otel-headers",
        ["OTEL_EXPORTER_OTLP_HEADERS", "item 2 of 2"],
        env={
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-tenant=a,authorization: Bearer {SECRET}",
            "FAPILOG_EXPORTERS": "otlp",
        },
        shown=f"'x-tenant={MASK},{MASK}'",
    ),
    case(
        "otel-headers-http",
        ["OTEL_EXPORTER_OTLP_HEADERS", "item 1 of 2"],
        env={
            "OTEL_EXPORTER_OTLP_HEADERS": f"Bearer {SECRET},x-tenant=a",
            "FAPILOG_EXPORTERS": "otlp",
            "FAPILOG_OTLP__PROTOCOL": "http/protobuf",
            # over HTTP the SDK adds the variable's headers to fapilog's own
            OTLP: "x-team=pay",
        },
    ),
    case(
        "otel-logs-headers",
        ["OTEL_EXPORTER_OTLP_LOGS_HEADERS", "item 1 of 1"],
        env={
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS": f"authorization=Bearer\t{SECRET}",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-ignored=1",
            "FAPILOG_EXPORTERS": "otlp",
        },
    ),
    case(
        "otlp-endpoint-userinfo-env",
        ["FAPILOG_OTLP__ENDPOINT", "carries credentials"],
        env={"FAPILOG_OTLP__ENDPOINT": f"https://user:{SECRET}@collector:4318"},
        shown=f"'https://{MASK}@collector:4318'",
    ),
    case(
        "otlp-endpoint-userinfo-keyword",
        ["FAPILOG_OTLP__ENDPOINT", "carries credentials"],
        kwargs={"otlp": {"endpoint": f"https://{SECRET}@collector:4318"}},
        shown=f"'https://{MASK}@collector:4318'",
    ),
    case(
        "otlp-endpoint-scheme-keyword",
        ["FAPILOG_OTLP__ENDPOINT", "http:// or https://"],
        kwargs={"otlp": {"endpoint": f"grpc://user:{SECRET}@collector:4317"}},
        shown=f"'grpc://{MASK}@collector:4317'",
    ),
    case(
        "otel-endpoint",
        ["OTEL_EXPORTER_OTLP_ENDPOINT", "carries credentials"],
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://user:{SECRET}@collector:4317",
            "FAPILOG_EXPORTERS": "otlp",
        },
        shown=f"'http://{MASK}@collector:4317'",
    ),
    case(
        "otel-logs-endpoint",
        ["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "carries credentials"],
        env={
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://user:{SECRET}@collector:4318/v1/logs",
            "FAPILOG_OTLP__PROTOCOL": "http/protobuf",
            "FAPILOG_EXPORTERS": "otlp",
        },
    ),
    case(
        "loki-url-userinfo-env",
        ["FAPILOG_LOKI__URL", "carries credentials"],
        env={
            "FAPILOG_LOKI__URL": f"https://123:{SECRET}@logs.example",
            "FAPILOG_EXPORTERS": "loki",
        },
        shown=f"'https://{MASK}@logs.example'",
    ),
    case(
        "loki-url-userinfo-keyword",
        ["FAPILOG_LOKI__URL", "carries credentials"],
        kwargs={"exporters": ["loki"], "loki": {"url": f"http://u:{SECRET}@loki:3100"}},
        shown=f"'http://{MASK}@loki:3100'",
    ),
    case(
        "loki-url-invalid-keyword",
        ["FAPILOG_LOKI__URL", "not a valid URL"],
        kwargs={"exporters": ["loki"], "loki": {"url": f"http://u:{SECRET}@[::1"}},
    ),
    case(
        "loki-password-without-user-env",
        ["FAPILOG_LOKI__PASSWORD", "basic auth needs both"],
        env={"FAPILOG_LOKI__PASSWORD": SECRET, "FAPILOG_EXPORTERS": "loki"},
    ),
    case(
        "loki-password-type-keyword",
        ["FAPILOG_LOKI__PASSWORD", "valid string"],
        kwargs={"loki": {"password": [SECRET]}},
    ),
    case(
        "loki-user-without-password-keyword",
        ["FAPILOG_LOKI__USERNAME", "basic auth needs both"],
        kwargs={"exporters": ["loki"], "loki": {"username": SECRET}},
    ),
    case(
        "loki-user-type-keyword",
        ["FAPILOG_LOKI__USERNAME", "valid string"],
        kwargs={"loki": {"username": {"name": SECRET}}},
    ),
    case(
        "loki-token-and-basic-env",
        ["FAPILOG_LOKI__BEARER_TOKEN", "not both"],
        env={
            "FAPILOG_LOKI__BEARER_TOKEN": SECRET,
            "FAPILOG_LOKI__USERNAME": "123",
            "FAPILOG_LOKI__PASSWORD": SECRET[::-1],
            "FAPILOG_EXPORTERS": "loki",
        },
    ),
    case(
        "loki-token-and-basic-keyword",
        ["FAPILOG_LOKI__BEARER_TOKEN", "not both"],
        kwargs={
            "exporters": ["loki"],
            "loki": {"bearer_token": SECRET, "username": "1", "password": SECRET[::-1]},
        },
    ),
    case(
        "loki-tenant-env",
        ["FAPILOG_LOKI__TENANT_ID", "' '"],
        env={"FAPILOG_LOKI__TENANT_ID": f"team {SECRET}", "FAPILOG_EXPORTERS": "loki"},
        shown=f"'{MASK}'",
    ),
    case(
        "loki-tenant-keyword",
        ["FAPILOG_LOKI__TENANT_ID", "more than 150"],
        kwargs={"exporters": ["loki"], "loki": {"tenant_id": SECRET * 20}},
    ),
    case(
        "misspelt-password-env",
        ["FAPILOG_LOKI__PASSWD", "not a fapilog setting", "did you mean FAPILOG_LOKI__PASSWORD"],
        env={"FAPILOG_LOKI__PASSWD": SECRET},
        implicit="not a fapilog setting",  # (left out; the other settings apply)
    ),
    case(
        "misspelt-headers-keyword",
        ["FAPILOG_OTLP__HEADER", "unknown setting"],
        kwargs={"otlp": {"header": f"authorization=Bearer {SECRET}"}},
    ),
]


def secret_forms() -> list[str]:
    """The secret, and the forms it could leak as."""
    return [
        SECRET,
        SECRET[::-1],
        base64.b64encode(f"1:{SECRET[::-1]}".encode()).decode(),
        base64.b64encode(f"123:{SECRET[::-1]}".encode()).decode(),
        SECRET[:8],
    ]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for form in secret_forms():
            assert form not in text, f"{form!r} leaked in {text!r}"


@pytest.fixture
def clean_diagnostics() -> None:
    fapilog.testing.reset()  # (forgets the diagnostics' rate limits too)


@pytest.mark.parametrize("row", CASES)
def test_a_malformed_secret_setting_is_named_and_masked(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    clean_diagnostics: None,
    row: Case,
) -> None:
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        fapilog.configure_logging(**row.kwargs)
    message = str(info.value)
    for name in row.names:
        assert name in message, (name, message)
    if row.shown is not None:
        assert row.shown in message
    assert_no_secret(message, repr(info.value.errors), repr(info.value))
    # nothing chained either (a traceback would print it)
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    if row.env and not row.kwargs:
        # an application configured from its environment starts anyway (on the defaults,
        # or without a misspelt variable), and says why on stderr
        configure_from_environment("test")
        fapilog.log.info("started")
        assert fapilog.force_flush(5)
        out, err = capfd.readouterr()
        assert row.names[0] in err and row.implicit in err
    else:
        out, err = capfd.readouterr()
    assert_no_secret(out, err)


def test_otel_traces_headers_are_checked_where_spans_are_exported(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"x-a=1,{SECRET}")
    with pytest.raises(ConfigurationError) as info:
        span_processors(LoggingSettings(otlp={"traces": True}))
    assert "OTEL_EXPORTER_OTLP_TRACES_HEADERS" in str(info.value)
    assert f"'x-a={MASK},{MASK}'" in str(info.value)
    out, err = capfd.readouterr()
    assert_no_secret(str(info.value), out, err)


def test_well_formed_otel_variables_are_left_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks accept what the SDK accepts: URL-encoded and liberal (spaces) header
    values, an "@" in the endpoint's query."""
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS",
        f"authorization=Bearer%20{SECRET}, x-tenant = a b ,api-key=x=y",
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}/?a=b@c")
    for protocol in ("grpc", "http/protobuf"):
        fapilog.configure_logging(
            exporters=["otlp"],
            otlp={"protocol": protocol, "timeout": 1},
            spool={"enabled": False},
        )


def test_masking_keeps_what_tells_the_mistake() -> None:
    assert mask_mapping("a=1, Authorization = Bearer x ,broken,,b c=2") == (
        f"a={MASK},Authorization={MASK},{MASK},,{MASK}={MASK}"
    )
    assert mask_mapping('{"authorization": "x", "x-a": 1}') == f"authorization={MASK},x-a={MASK}"
    assert mask_mapping("{not json") == MASK
    assert mask_url("https://u:p@ss@host:1/x") == f"https://{MASK}@host:1/x"
    assert mask_url("u:p@host:4317") == f"{MASK}@host:4317"
    assert mask_url("http://host/a") == "http://host/a"
    assert mask_userinfo("to 'http://u:p/w@h:1' and https://t@x, mail a@b") == (
        f"to 'http://{MASK}@h:1' and https://{MASK}@x, mail a@b"
    )
    assert scrub(f"Bearer {SECRET} via http://u:{SECRET}@h", [SECRET]) == (
        f"Bearer {MASK} via http://{MASK}@h"
    )


# -- exporters that cannot reach an endpoint given with credentials -------------------------


FAST = {"min_backoff": 0.01, "max_backoff": 0.02, "max_retries": 1, "timeout": 2.0}


def test_a_loki_exporter_given_a_url_with_credentials_never_prints_them(
    capfd: pytest.CaptureFixture[str], exporter_named: Any
) -> None:
    """The factory refuses such a URL; an exporter built directly (a custom factory) is
    still never heard saying it: not in its repr, not in its diagnostics."""
    url = f"http://user:{SECRET}@127.0.0.1:{closed_port()}"
    sink = LokiExporter(LokiSettings(url=url, **FAST))
    assert SECRET not in repr(sink) and MASK in repr(sink)
    name = exporter_named(sink)
    fapilog.configure_logging(exporters=[name], spool={"enabled": False})
    fapilog.log.info("hello")
    fapilog.force_flush(10)
    out, err = capfd.readouterr()
    assert "loki-drop" in err and "Connection refused" in err
    assert f"http://{MASK}@127.0.0.1" in err
    assert_no_secret(out, err)
    with pytest.raises(ConfigurationError) as info:
        validate(LokiSettings(url=url))
    assert_no_secret(str(info.value))


def test_loki_through_a_proxy_with_credentials_never_prints_them(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:{SECRET}@127.0.0.1:{closed_port()}")
    fapilog.configure_logging(
        exporters=["loki"],
        loki={"url": f"http://127.0.0.1:{closed_port()}", **FAST},
        spool={"enabled": False},
    )
    fapilog.log.info("hello")
    fapilog.force_flush(10)
    out, err = capfd.readouterr()
    assert "loki-drop" in err
    assert_no_secret(out, err)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_otlp_endpoint_with_credentials_is_refused_before_anything_prints_it(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], protocol: str
) -> None:
    """The SDK's exporters print their endpoint when they fail (gRPC: "Failed to export
    logs to user:secret@127.0.0.1:..."), so an endpoint with credentials never reaches
    them: refused, masked, whether fapilog's setting or the SDK's variable gives it."""
    endpoint = f"http://user:{SECRET}@127.0.0.1:{closed_port()}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("FAPILOG_EXPORTERS", "otlp")
    monkeypatch.setenv("FAPILOG_OTLP__PROTOCOL", protocol)
    monkeypatch.setenv("FAPILOG_OTLP__TIMEOUT", "1")
    configure_from_environment("test")  # falls back to the defaults, says why
    fapilog.log.info("hello")
    assert fapilog.force_flush(5)
    with pytest.raises(ConfigurationError) as info:
        fapilog.configure_logging(otlp={"endpoint": endpoint, "protocol": protocol})
    assert "FAPILOG_OTLP__ENDPOINT" in str(info.value)
    assert_no_secret(str(info.value))
    out, err = capfd.readouterr()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in err and f"http://{MASK}@127.0.0.1" in err
    assert_no_secret(out, err)


def test_an_otlp_exporter_failing_with_credentials_in_its_headers_never_prints_them(
    capfd: pytest.CaptureFixture[str],
) -> None:
    fapilog.configure_logging(
        exporters=["otlp"],
        otlp={
            "endpoint": f"http://127.0.0.1:{closed_port()}",
            "protocol": "http/protobuf",
            "timeout": 1,
            "headers": {"authorization": f"Bearer {SECRET}"},
        },
        spool={"enabled": False},
    )
    fapilog.log.info("hello")
    fapilog.force_flush(10)
    fapilog.shutdown(10)  # the SDK exporter's attempts are over: all it said is written
    assert fapilog.stats()["exporters"]["otlp"]["dropped"] >= 1  # its export failed
    out, err = capfd.readouterr()
    assert_no_secret(out, err)

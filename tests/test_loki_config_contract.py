"""What configuring the Loki exporter checks and derives: the push URL, label names and
values as Loki takes them, and each configure-time error, exactly as the user reads it (never
with a credential). In-process."""

from __future__ import annotations

from typing import Any

import pytest

from fapilog.exceptions import ConfigurationError
from fapilog.exporters import loki_config
from fapilog.exporters.loki_config import (
    LABEL_SOURCES,
    MAX_LABELS,
    Label,
    label_value,
    parse_labels,
    push_url,
    sanitize_label_name,
    validate,
)
from fapilog.settings import LokiSettings

ALLOWED = "(allowed: up to 150 of the characters A-Z a-z 0-9 ! - _ . * ' ( ))"


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("service.name", "service_name"),
        ("  k8s-pod ", "k8s_pod"),
        ("9lives", "_9lives"),
        ("", "_"),
        ("ok_Name1", "ok_Name1"),
    ],
)
def test_a_label_name_is_made_valid_for_loki(name: str, label: str) -> None:
    assert sanitize_label_name(name) == label


@pytest.mark.parametrize(
    ("url", "push"),
    [
        ("http://loki:3100", "http://loki:3100/loki/api/v1/push"),
        (" http://loki:3100/ ", "http://loki:3100/loki/api/v1/push"),
        ("https://gw/loki", "https://gw/loki/loki/api/v1/push"),
        ("https://gw/LOKIX", "https://gw/LOKIX/loki/api/v1/push"),
        ("https://gw/loki/api/v1/push", "https://gw/loki/api/v1/push"),
        ("https://gw/loki/api/v1/push/", "https://gw/loki/api/v1/push"),
        ("http://loki:3100/x?org=1", "http://loki:3100/x/loki/api/v1/push?org=1"),
    ],
)
def test_the_push_url_of_a_base_url_or_a_full_one(url: str, push: str) -> None:
    assert push_url(url) == push


def test_labels_by_name_take_their_usual_source_and_name_equals_source_is_kept() -> None:
    labels = parse_labels(
        ["service_name", "env", "level", "region=cloud.region", " team = app.team ", "zone"],
        {"cluster": "eu-1"},
    )
    assert labels == [
        Label("service_name", "service.name"),
        Label("env", "deployment.environment.name"),
        Label("level", "level"),
        Label("region", "cloud.region"),
        Label("team", "app.team"),
        Label("zone", "zone"),
    ]
    assert parse_labels(["service.version"], {}) == [Label("service_version", "service.version")]
    assert LABEL_SOURCES["host"] == "host.name"


@pytest.mark.parametrize(
    ("specs", "static", "message"),
    [
        (["=x"], {}, "label '=x': write `name` or `name=source`"),
        (["a="], {}, "label 'a=': write `name` or `name=source`"),
        (
            ["9a=x"],
            {},
            "label name '9a' is not valid for Loki (letters, digits and _, not starting "
            "with a digit)",
        ),
        (
            ["tid=trace_id"],
            {},
            "label 'tid=trace_id' has one value per event and would create a stream per "
            "event; keep it in the line (trace_id and span_id go to structured metadata)",
        ),
        (["request_id=x"], {}, "label 'request_id=x' has one value per event"),
        (["pid=process.pid"], {}, "label 'pid=process.pid' has one value per event"),
        ([], {"bad-name": "x"}, "static label name 'bad-name' is not valid for Loki"),
        (["env", "env=deployment.environment.name"], {}, "label 'env' is given twice"),
        (["app"], {"app": "x"}, "label 'app' is given twice"),
        ([f"{'n' * 1025}=x"], {}, f"label name {'n' * 40!r}... is longer than 1024 bytes"),
        ([f"l{i}" for i in range(15)], {"s": "x"}, "16 labels; Loki allows at most 15 per stream"),
    ],
)
def test_a_bad_label_is_refused_with_what_is_wrong(
    specs: list[str], static: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        parse_labels(specs, static)
    assert str(raised.value).startswith(message)


def test_fifteen_labels_and_a_name_of_1024_bytes_are_allowed() -> None:
    assert MAX_LABELS == 15
    assert len(parse_labels([f"l{i}" for i in range(14)], {"s": "x"})) == 14
    assert parse_labels([f"{'n' * 1024}=x"], {}) == [Label("n" * 1024, "x")]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (None, ""),
        (42, "42"),
        (1.5, "1.5"),
        ("plain text é", "plain text é"),
        ('q"b\\s', "q_b_s"),
        ('quote"only', "quote_only"),
        ("backslash\\only", "backslash_only"),
        ("tab\there\nnl", "tab_here_nl"),
        ("zero\u200bwidth", "zero_width"),
        ("lone\ud800", "lone_"),
        ("bad\ufffdchar", "bad_char"),
        ("x" * 3000, "x" * 2048),
        ("é" * 1500, "é" * 1024),  # 2 bytes each: cut at 2048 bytes
        ("a" + "é" * 1500, "a" + "é" * 1023),  # never half a character
    ],
)
def test_a_label_value_is_printable_utf8_without_quotes_cut_at_2048_bytes(
    value: Any, text: str
) -> None:
    assert label_value(value) == text


def loki(**settings: Any) -> LokiSettings:
    return LokiSettings(**{"url": "http://loki:3100", **settings})


def refused(settings: LokiSettings) -> str:
    with pytest.raises(ConfigurationError) as raised:
        validate(settings)
    return str(raised.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"url": "http://u:secret@loki:3100"},
            "FAPILOG_LOKI__URL (setting 'loki.url'): 'http://**********@loki:3100' is invalid: "
            "carries credentials: set FAPILOG_LOKI__USERNAME and FAPILOG_LOKI__PASSWORD (or "
            "FAPILOG_LOKI__BEARER_TOKEN) instead",
        ),
        (
            {"url": "http://u@loki:3100"},
            "FAPILOG_LOKI__URL (setting 'loki.url'): 'http://**********@loki:3100' is invalid: "
            "carries credentials",
        ),
        (
            {"url": "ftp://loki"},
            "FAPILOG_LOKI__URL (setting 'loki.url'): 'ftp://loki' is invalid: not a valid URL: "
            "the scheme 'ftp' is not supported; expected http(s)://host[:port], e.g. "
            "http://loki:3100",
        ),
        (
            # credentials in front of the URL, or with a space: masked all the same
            {"url": "u:secret@http://loki"},
            "FAPILOG_LOKI__URL (setting 'loki.url'): '**********@http://loki' is invalid: not a "
            "valid URL: it has no scheme (http:// or https://)",
        ),
        (
            {"url": "http://u:se cret@loki"},
            "FAPILOG_LOKI__URL (setting 'loki.url'): 'http://**********@loki' is invalid: not a "
            "valid URL: it contains a space",
        ),
        (
            # one the URL check passes and the HTTP client refuses: its reason is shown
            {"url": "http://1.2.3.256"},
            "FAPILOG_LOKI__URL (setting 'loki.url'): 'http://1.2.3.256' is invalid: not a valid "
            "URL: Invalid IPv4 address: '1.2.3.256'; expected http(s)://host[:port], e.g. "
            "http://loki:3100",
        ),
        (
            {"tenant_id": ".."},
            "FAPILOG_LOKI__TENANT_ID (setting 'loki.tenant_id'): '**********' is invalid: '.' "
            "and '..' are not valid tenant ids (Loki refuses them)",
        ),
        (
            {"tenant_id": "."},
            "FAPILOG_LOKI__TENANT_ID (setting 'loki.tenant_id'): '**********' is invalid: '.'",
        ),
        (
            {"tenant_id": 'a b"a'},
            "FAPILOG_LOKI__TENANT_ID (setting 'loki.tenant_id'): '**********' is invalid: it "
            f"holds ' ', '\"', not allowed {ALLOWED}",
        ),
        (
            {"tenant_id": "t" * 151},
            "FAPILOG_LOKI__TENANT_ID (setting 'loki.tenant_id'): '**********' is invalid: 151 "
            f"characters, more than 150 {ALLOWED}",
        ),
        (
            {"tenant_id": "t" * 149 + " "},  # 150 characters: what is wrong is the space
            "FAPILOG_LOKI__TENANT_ID (setting 'loki.tenant_id'): '**********' is invalid: it "
            f"holds ' ', not allowed {ALLOWED}",
        ),
        (
            {"tenant_id": ""},
            "FAPILOG_LOKI__TENANT_ID (setting 'loki.tenant_id'): '**********' is invalid: it "
            f"is empty {ALLOWED}",
        ),
        (
            {"username": "u"},
            "FAPILOG_LOKI__PASSWORD (setting 'loki.password'): basic auth needs both "
            "FAPILOG_LOKI__USERNAME and FAPILOG_LOKI__PASSWORD",
        ),
        (
            {"password": "p"},
            "FAPILOG_LOKI__USERNAME (setting 'loki.username'): basic auth needs both",
        ),
        (
            {"bearer_token": "s3cr3t", "username": "u", "password": "p"},
            "FAPILOG_LOKI__BEARER_TOKEN (setting 'loki.bearer_token'): '**********' is "
            "invalid: set either a bearer token or basic auth (username/password), not both",
        ),
        (
            {"labels": ["trace_id"]},
            "FAPILOG_LOKI__LABELS (setting 'loki.labels'): ['trace_id'] is invalid: label "
            "'trace_id' has one value per event",
        ),
        (
            {"min_backoff": 5, "max_backoff": 1},
            "FAPILOG_LOKI__MIN_BACKOFF (setting 'loki.min_backoff'): 5.0 is invalid: it is "
            "larger than FAPILOG_LOKI__MAX_BACKOFF (1.0)",
        ),
    ],
)
def test_each_rule_refuses_with_its_setting_and_never_shows_a_credential(
    settings: dict[str, Any], message: str
) -> None:
    text = refused(loki(**settings))
    assert text.startswith(message), text
    for secret in ("secret", "cret", "s3cr3t", "t" * 151, 'a b"a'):
        assert secret not in text


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"tenant_id": "Team-1_a.b*c'(x)!"},
        {"tenant_id": "t" * 150},
        {"username": "u", "password": "p"},
        {"bearer_token": "s3cr3t"},
        {"bearer_token": "s3cr3t", "username": "u"},  # a username alone is its own error below
        {"min_backoff": 2, "max_backoff": 2},
        {"url": "https://gw.example/loki/api/v1/push", "labels": ["env", "app=service.name"]},
    ],
)
def test_valid_settings_pass(settings: dict[str, Any]) -> None:
    if settings.get("username") and not settings.get("password"):
        assert "basic auth needs both" in refused(loki(**settings))
    else:
        validate(loki(**settings))


def test_protobuf_without_cramjam_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Any:
        raise ImportError("No module named 'cramjam'")

    monkeypatch.setattr(loki_config, "snappy_compressor", missing)
    text = refused(loki(encoding="protobuf"))
    assert text.startswith(
        "FAPILOG_LOKI__ENCODING (setting 'loki.encoding'): 'protobuf' is invalid: it needs the "
        f"cramjam package (snappy compression): {loki_config.PROTOBUF_EXTRA}, or set "
        "FAPILOG_LOKI__ENCODING=json"
    ), text
    validate(loki(encoding="json"))

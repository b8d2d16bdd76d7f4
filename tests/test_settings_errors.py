"""A bad setting fails at configure time, naming its variable: one table of environment
variables set to a bad value. For each, configure_logging() raises ConfigurationError
whose message names the variable and says what was wrong (the bad value, what is
allowed), and whose first structured error carries the variable too.

Bad settings passed as keyword arguments, several at once, or whose tests check more
than the message (secrets never echoed, every key of `.errors`) stay with their
subject's tests."""

from __future__ import annotations

from typing import Any

import pytest

from fapilog import ConfigurationError, configure_logging


def bad(
    env: str,
    value: str,
    *fragments: str,
    id: str,
    marks: Any = (),
    **kwargs: Any,
) -> Any:
    """One row: `env` set to `value`; the message must contain `env` and every fragment;
    `kwargs` go to configure_logging() (an exporter that reads the setting, say)."""
    return pytest.param(env, value, list(fragments), kwargs, id=id, marks=marks)


FILE = {"exporters": ["file"]}
OTLP = {"exporters": ["otlp"]}

BAD_SETTINGS = [
    # core settings
    bad("FAPILOG_LEVEL", "LOUD", "FAPILOG_LEVEL", "'LOUD'", "DEBUG", "CRITICAL", id="level"),
    bad("FAPILOG_ENV", "moon", "FAPILOG_ENV", "'moon'", "development", "production", id="env"),
    bad(
        "FAPILOG_JSON_CONSOLE",
        "maybe",
        "FAPILOG_JSON_CONSOLE",
        "'maybe'",
        "true or false",
        id="json_console-not-a-bool",
    ),
    bad(
        "FAPILOG_EXPORTERS",
        "[stdout",
        "FAPILOG_EXPORTERS",
        "'[stdout'",
        "comma-separated",
        id="exporters-broken-json",
    ),
    bad("FAPILOG_EXPORTERS", "stdout,,file", "FAPILOG_EXPORTERS", "empty item", id="exporters-gap"),
    bad(
        "FAPILOG_EXPORTERS",
        "stdout,kafka",
        "FAPILOG_EXPORTERS",
        "'kafka'",
        "stdout",
        "console",  # the known exporters are listed
        id="exporters-unknown-lists-known",
    ),
    bad("FAPILOG_QUEUE__MAX_SIZE", "0", "FAPILOG_QUEUE__MAX_SIZE", "0", ">= 1", id="queue-size"),
    bad(
        "FAPILOG_QUEUE__OVERFLOW",
        "explode",
        "FAPILOG_QUEUE__OVERFLOW",
        "drop_oldest",
        "block",
        id="queue-overflow",
    ),
    bad(
        "FAPILOG_LOGGER_LEVELS",
        "a=LOUD",
        "FAPILOG_LOGGER_LEVELS",
        "'LOUD'",
        "WARNING",
        id="logger_levels-level",
    ),
    bad(
        "FAPILOG_LOGGER_LEVELS",
        "justaname",
        "FAPILOG_LOGGER_LEVELS",
        "name=value",
        id="logger_levels-no-value",
    ),
    # request enrichment
    bad(
        "FAPILOG_REQUEST__TRUSTED_PROXIES",
        "10.0.0.0/8,nonsense",
        "not an IP address or CIDR",
        id="request-trusted_proxies",
    ),
    bad("FAPILOG_REQUEST__CLIENT_IP", "partial", "anonymized", id="request-client_ip"),
    bad(
        "FAPILOG_REQUEST__HEADERS",
        "X Tenant",
        "not a valid HTTP header name",
        id="request-headers",
    ),
    bad(
        "FAPILOG_REQUEST__SENSITIVE_HEADERS",
        "bad:name",
        "not a valid HTTP header name",
        id="request-sensitive_headers",
    ),
    # system enrichment: the package whose version becomes service.version
    bad(
        "FAPILOG_SYSTEM__PACKAGE",
        "no-such-distribution-xyz",
        "no-such-distribution-xyz",
        id="system-package-not-installed",
    ),
    # the file exporter
    bad("FAPILOG_FILE__MODE", "rw-r-----", "octal", id="file-mode", **FILE),
    bad("FAPILOG_FILE__MAX_BYTES", "-1", "FAPILOG_FILE__MAX_BYTES", id="file-max_bytes", **FILE),
    bad("FAPILOG_FILE__WHEN", "weekly", "FAPILOG_FILE__WHEN", id="file-when", **FILE),
    bad(
        "FAPILOG_FILE__MULTIPROCESS",
        "maybe",
        "FAPILOG_FILE__MULTIPROCESS",
        id="file-multiprocess",
        **FILE,
    ),
    # the OTLP exporter, and the OTel variable it honours
    bad(
        "FAPILOG_OTLP__ENDPOINT",
        "collector:4317",
        "http:// or https://",
        id="otlp-endpoint",
        **OTLP,
    ),
    bad("FAPILOG_OTLP__PROTOCOL", "http/json", "grpc", id="otlp-protocol", **OTLP),
    bad("FAPILOG_OTLP__TIMEOUT", "0", "> 0", id="otlp-timeout", **OTLP),
    bad("FAPILOG_OTLP__HEADERS", "novalue", "name=value", id="otlp-headers", **OTLP),
    bad("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon", id="otel-otlp-protocol", **OTLP),
    # redaction
    bad(
        "FAPILOG_REDACTION__PATTERNS",
        '["(unclosed"]',
        "invalid regex",
        id="redaction-patterns-invalid",
    ),
    bad(
        "FAPILOG_REDACTION__PATTERNS",
        "a*",
        "matches the empty string",
        id="redaction-patterns-match-empty",
    ),
    bad(
        "FAPILOG_REDACTION__BUILTIN_PATTERNS",
        "jwt,ssh",
        "ssh",
        id="redaction-builtin_patterns",
    ),
    bad("FAPILOG_REDACTION__MARKER", "", "at least 1 character", id="redaction-marker"),
    bad("FAPILOG_REDACTION__ENABLED", "maybe", "true or false", id="redaction-enabled"),
]


@pytest.mark.parametrize(("env", "value", "fragments", "kwargs"), BAD_SETTINGS)
def test_a_bad_setting_fails_at_configure_time_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    value: str,
    fragments: list[str],
    kwargs: dict[str, Any],
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        configure_logging(**kwargs)
    message = str(info.value)
    assert env in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert info.value.errors and info.value.errors[0]["env"] == env


def test_every_setting_error_has_one_wording() -> None:
    """Errors found by validation and errors found by an exporter's factory read alike:
    variable, setting, value, what is wrong, what is allowed."""
    from fapilog.settings._errors import setting_error

    error = setting_error("queue.max_size", "too small", value=0, allowed="a number >= 1")
    assert str(error) == (
        "FAPILOG_QUEUE__MAX_SIZE (setting 'queue.max_size'): 0 is invalid: too small "
        "(allowed: a number >= 1)"
    )
    assert error.errors == [
        {
            "env": "FAPILOG_QUEUE__MAX_SIZE",
            "error": "too small",
            "setting": "queue.max_size",
            "value": "0",
            "allowed": "a number >= 1",
        }
    ]
    variable = setting_error(None, "expected a number", value="x", env="OTEL_BLRP_SCHEDULE_DELAY")
    assert str(variable) == "OTEL_BLRP_SCHEDULE_DELAY='x' is invalid: expected a number"


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("FAPILOG_OTLP__HEADERS", "authorization Bearer t0ps3cret-value"),
        ("FAPILOG_OTLP__HEADERS", '{"authorization": "Bearer t0ps3cret-value", bad json'),
    ],
)
def test_a_secret_setting_is_never_shown_in_its_error(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        configure_logging()
    assert env in str(info.value)
    assert "t0ps3cret" not in str(info.value)
    assert "t0ps3cret" not in repr(info.value.errors)
    assert "**********" in str(info.value)

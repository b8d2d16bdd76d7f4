"""Redaction: by key at any depth, by value pattern, the message and exceptions too; on by
default, configured once, applied to structlog and stdlib events before any exporter."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

import fapilog
from conftest import MemoryExporter
from fapilog import LoggingSettings, configure_logging, get_logger, log
from fapilog.capture import redaction as redaction_module
from fapilog.redaction import Redactor, luhn_valid, normalise_key
from fapilog.settings.redaction import BUILTIN_PATTERNS, DEFAULT_KEYS

M = "[REDACTED]"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
VISA = "4111111111111111"  # a test card number that passes the Luhn check


def redact(event: dict[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    result = (redactor or Redactor())(None, "info", dict(event))
    return dict(result)


def _attrs(record: Any) -> dict[str, Any]:
    return dict(record.log_record.attributes or {})


# -- keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", DEFAULT_KEYS)
def test_every_default_key_is_redacted(key: str) -> None:
    assert redact({"event": "e", key: "value"}) == {"event": "e", key: M}


@pytest.mark.parametrize(
    "key", ["PASSWORD", "Api-Key", "Set_Cookie", "X-API-KEY", "db_password", "client_secret"]
)
def test_keys_are_case_insensitive_and_fragments_match(key: str) -> None:
    assert redact({key: "value"}) == {key: M}


def test_any_depth_and_inside_lists() -> None:
    event = {
        "event": "e",
        "config": {"db": {"password": "p", "host": "h"}, "items": [{"token": "t"}, 1, "x"]},
        "tuple": ({"cvv": "123"},),
    }
    assert redact(event) == {
        "event": "e",
        "config": {"db": {"password": M, "host": "h"}, "items": [{"token": M}, 1, "x"]},
        "tuple": ({"cvv": M},),
    }


def test_the_whole_value_of_a_sensitive_key_goes_even_when_structured() -> None:
    """A list keeps its shape (every item the marker), so array fields stay arrays."""
    assert redact(
        {"session": {"id": 1, "user": "u"}, "cookie": ["a", "b"], "login": {"token": ("t",)}}
    ) == {"session": M, "cookie": [M, M], "login": {"token": [M]}}
    # a key containing a sensitive word keeps numbers, in lists too
    assert redact({"reset_token_ids": [7, "x"], "tokens": []}) == {
        "reset_token_ids": [7, M],
        "tokens": [],
    }


def test_numbers_under_fragment_keys_stay_but_exact_keys_redact_anything() -> None:
    event = {"max_tokens": 100, "token_count": 2.5, "ssn": 123456789, "password": None}
    assert redact(event) == {"max_tokens": 100, "token_count": 2.5, "ssn": M, "password": None}


def test_trace_ids_are_never_touched() -> None:
    event = {"trace_id": "4111111111111111" * 2, "span_id": "4111111111111111"}
    assert redact(event) == event


def test_user_containers_are_not_mutated() -> None:
    nested = {"password": "p", "list": [{"token": "t"}]}
    untouched = {"a": [1, 2], "b": {"c": "d"}}
    result = redact({"nested": nested, "untouched": untouched})
    assert nested == {"password": "p", "list": [{"token": "t"}]}
    assert result["nested"] == {"password": M, "list": [{"token": M}]}
    assert result["untouched"] is untouched  # nothing to change: not even copied


def test_objects_are_redacted_in_their_logged_form() -> None:
    class User:
        def __repr__(self) -> str:
            return "User(name='bob', password='hunter2')"

    from collections import OrderedDict

    result = redact({"user": User(), "mapping": OrderedDict(api_key="k", ok=1), "s": {JWT}})
    assert result == {
        "user": f"User(name='bob', password='{M}')",
        "mapping": {"api_key": M, "ok": 1},
        "s": [M],
    }


def test_cycles_and_extreme_depth_end_safely() -> None:
    loop: dict[str, Any] = {"password": "p"}
    loop["self"] = loop
    result = redact({"loop": loop})
    assert result["loop"]["password"] == M
    assert result["loop"]["self"] == "<recursion>"
    deep: Any = "token eyJhbGciOiJIUzI1NiJ9xx"
    for _ in range(60):
        deep = [deep]
    flattened = str(redact({"deep": deep}))
    assert "eyJ" not in flattened
    # cut visibly where values stop being kept, not passed off as a redaction
    assert "<truncated: nested deeper than 32 levels>" in flattened
    assert M not in flattened


def test_configured_keys_added_and_removed() -> None:
    settings = LoggingSettings(
        redaction={"keys": "iban,Tax-ID", "allow_keys": "session", "key_fragments": "pin"}
    )
    redactor = Redactor.from_settings(settings.redaction)
    event = {"iban": "DE89", "tax_id": "1", "session": "s", "user_pin_code": "1234", "secret": "x"}
    assert redact(event, redactor) == {
        "iban": M,
        "tax_id": M,
        "session": "s",
        "user_pin_code": M,
        "secret": M,  # still in the default key set
    }
    assert redactor.is_sensitive_key("IBAN")
    assert not redactor.is_sensitive_key("session")


def test_normalise_key() -> None:
    assert normalise_key(" Set-Cookie ") == "set_cookie"


# -- value patterns ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user logged in", "user logged in"),
        (f"token {JWT}", f"token {M}"),
        ("token eyJhbGciOi...", f"token {M}"),  # even a truncated JWT
        ("Authorization: Bearer abc.def.ghi", f"Authorization: {M}"),
        ("sent with bearer abc123", f"sent with bearer {M}"),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: {M}"),
        ("header basic dXNlcjpwYXNz", f"header basic {M}"),
        ("basic configuration loaded", "basic configuration loaded"),  # not a credential
        ("db postgres://bob:s3cr3t@db:5432/app", f"db postgres://{M}@db:5432/app"),
        ("url https://bob:p@ss@host/x", f"url https://{M}@host/x"),
        ("see https://example.com/a?b=1", "see https://example.com/a?b=1"),
        (f"card {VISA}.", f"card {M}."),
        ("card 4111 1111 1111 1111 on file", f"card {M} on file"),
        ("card 4111-1111-1111-1111", f"card {M}"),
        ("order 4111111111111112", "order 4111111111111112"),  # fails Luhn
        ("at 1716200000000 ms", "at 1716200000000 ms"),  # not a card prefix
        ("password=hunter2&user=bob", f"password={M}&user=bob"),
        ('{"password": "hunter 2", "n": 1}', f'{{"password": "{M}", "n": 1}}'),
        ("User(name='bob', password='s3cret pw')", f"User(name='bob', password='{M}')"),
        ("GET /cb?code=1&access_token=xyz HTTP/1.1", f"GET /cb?code=1&access_token={M} HTTP/1.1"),
        ("max_tokens=100 tokens: 1500", "max_tokens=100 tokens: 1500"),
        ("client_secret: abc", f"client_secret: {M}"),
        ("at 12:00:01 ratio=3:4", "at 12:00:01 ratio=3:4"),
    ],
)
def test_value_patterns(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


def test_luhn() -> None:
    assert luhn_valid(VISA)
    assert luhn_valid("378282246310005")  # Amex test number
    assert not luhn_valid("4111111111111112")


def test_a_clean_string_is_returned_as_is() -> None:
    text = "nothing to see here: really"
    assert Redactor().redact_text(text) is text


def test_builtin_patterns_can_be_switched_off_one_by_one() -> None:
    redactor = Redactor(builtin_patterns=[p for p in BUILTIN_PATTERNS if p != "card"])
    assert redactor.redact_text(f"card {VISA}") == f"card {VISA}"
    assert redactor.redact_text(f"jwt {JWT}") == f"jwt {M}"
    assert Redactor(builtin_patterns=[]).redact_text(f"jwt {JWT}") == f"jwt {JWT}"


def test_custom_patterns_whole_match_or_the_secret_group() -> None:
    settings = LoggingSettings(
        redaction={"patterns": '["sk_live_[0-9a-z]{8,}", "pin (?P<secret>\\\\d{4,6})\\\\b"]'}
    )
    redactor = Redactor.from_settings(settings.redaction)
    assert redactor.redact_text("key sk_live_abcdef123 and pin 1234.") == f"key {M} and pin {M}."


def test_a_single_custom_regex_may_contain_commas_and_brackets() -> None:
    settings = LoggingSettings(redaction={"patterns": "[A-Z]{2,3}-[0-9]{4}"})
    assert settings.redaction.patterns == ["[A-Z]{2,3}-[0-9]{4}"]
    assert Redactor.from_settings(settings.redaction).redact_text("id AB-1234") == f"id {M}"


def test_configurable_marker() -> None:
    redactor = Redactor.from_settings(LoggingSettings(redaction={"marker": "***"}).redaction)
    assert redact({"password": "p", "m": f"Bearer {JWT}"}, redactor) == {
        "password": "***",
        "m": "Bearer ***",
    }


# -- the exception, the message, failure modes ------------------------------------------


def test_exception_text_is_redacted_on_the_way_out(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    try:
        raise ConnectionError("cannot reach postgres://app:hunter2@db/app with token " + JWT)
    except ConnectionError:
        log.exception("database down")
    [record] = memory_exporter.records()
    attrs = _attrs(record)
    assert attrs["exception.type"] == "ConnectionError"
    assert attrs["exception.message"] == f"cannot reach postgres://{M}@db/app with token {M}"
    assert "hunter2" not in attrs["exception.stacktrace"]
    assert JWT not in attrs["exception.stacktrace"]
    assert "database down" in str(record.log_record.body)


def test_a_redaction_bug_withholds_values_instead_of_leaking() -> None:
    class Exploding(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError("changed size during iteration")

    event = Exploding(event="login", password="p", count=3)
    reports: list[str] = []

    def listener(key: str, message: str, fields: dict[str, Any]) -> None:
        reports.append(key)

    fapilog._diag.add_listener(listener)
    try:
        result = Redactor()(None, "info", event)
    finally:
        fapilog._diag.remove_listener(listener)
    assert "redaction" in reports
    assert result["fapilog.redaction_failed"] is True
    assert "p" not in result.values()


# -- in the pipeline ---------------------------------------------------------------------


def test_on_by_default_for_structlog_and_stdlib(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    get_logger("auth").bind(api_key="k").info("login", password="hunter2")
    logging.getLogger("lib").warning(
        "retrying https://u:pw@host/x with Bearer %s", "abc.def", extra={"token": "t"}
    )
    first, second = memory_exporter.records()
    assert first.log_record.body == "login"
    assert _attrs(first) == {"api_key": M, "password": M}
    assert second.log_record.body == f"retrying https://{M}@host/x with Bearer {M}"
    assert _attrs(second)["token"] == M


def test_off_only_when_explicitly_disabled(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LoggingSettings().redaction.enabled is True
    monkeypatch.setenv("FAPILOG_REDACTION__ENABLED", "false")
    configure_logging(exporters=[memory_exporter.name])
    log.info("login", password="hunter2")
    [record] = memory_exporter.records()
    assert _attrs(record) == {"password": "hunter2"}
    assert redaction_module.build_processors(LoggingSettings(redaction={"enabled": False})) == []


def test_redaction_is_the_last_processor_before_the_bridge() -> None:
    configure_logging(enrichers=[])
    from fapilog.capture.logger import CHAIN
    from fapilog.capture.record import OTelBridge

    assert isinstance(CHAIN[-1], OTelBridge)
    assert isinstance(CHAIN[-2], Redactor)


def test_enricher_output_is_redacted_too(memory_exporter: MemoryExporter) -> None:
    from fapilog.enrichers import register_enricher, unregister_enricher

    register_enricher("leaky", lambda event: {**event, "authorization": "Bearer x"})
    try:
        configure_logging(exporters=[memory_exporter.name], enrichers=["leaky"])
        log.info("hello")
    finally:
        unregister_enricher("leaky")
    assert _attrs(memory_exporter.records()[0]) == {"authorization": M}


def test_capture_logs_sees_redacted_events() -> None:
    from fapilog.testing import capture_logs

    configure_logging()
    with capture_logs() as logs:
        log.info("signup", password="p", card=f"{VISA}")
    assert logs[0]["password"] == M
    assert logs[0]["card"] == M


def test_capture_logs_redacts_without_configure_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before configure_logging(), capture_logs() applies what the first event would
    configure from the environment: the default redaction, the environment's own
    redaction settings, and the default redaction when the environment is invalid."""
    from fapilog._state import STATE
    from fapilog.testing import capture_logs

    def captured() -> dict[str, Any]:
        assert not STATE.is_configured()
        with capture_logs() as logs:
            log.info("login", password="hunter2", nested={"api_key": "k"}, card=VISA)
            logging.getLogger("legacy").warning("token=%s", "abc123")
        assert not STATE.is_configured()  # capturing configured nothing
        assert logs.messages()[1] in ("token=[REDACTED]", "token=abc123")
        return {**logs[0], "stdlib": logs[1]["message"]}

    assert captured() == {
        "message": "login", "level": "info", "logger": "app", "password": M,
        "nested": {"api_key": M}, "card": M, "stdlib": f"token={M}",
    }  # fmt: skip
    monkeypatch.setenv("FAPILOG_REDACTION__KEYS", "card")
    monkeypatch.setenv("FAPILOG_REDACTION__BUILTIN_PATTERNS", "bearer")
    event = captured()
    assert (event["password"], event["card"], event["stdlib"]) == (M, M, "token=abc123")
    monkeypatch.setenv("FAPILOG_LEVEL", "LOUD")  # invalid: the default redaction applies
    event = captured()
    assert (event["password"], event["nested"]) == (M, {"api_key": M})
    assert event["stdlib"] == f"token={M}"


def test_basic_pattern_only_redacts_decodable_user_password() -> None:
    token = base64.b64encode(b"alice:wonderland").decode()
    assert Redactor().redact_text(f"Basic {token}") == f"Basic {M}"
    no_colon = "Basic " + base64.b64encode(b"wonderland").decode()
    assert Redactor().redact_text(no_colon) == no_colon


@pytest.mark.slow
def test_the_very_first_event_without_configure_logging_is_redacted(
    subprocess_env: dict[str, str],
) -> None:
    """Zero configuration: the first event configures fapilog from the environment before
    it is processed, so it is redacted (and enriched) like every later one."""
    from conftest import run_python

    env = {**subprocess_env, "FAPILOG_JSON_CONSOLE": "true"}
    code = (
        "from fapilog import log\n"
        "log.info('first', password='hunter2', note='Bearer abc.def')\n"
        "log.info('second', password='hunter2')\n"
    )
    status, out, err = run_python(code, env)
    assert status == 0, err
    assert "hunter2" not in out
    assert "abc.def" not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["message"] for line in lines] == ["first", "second"]
    assert lines[0]["password"] == M
    assert lines[0]["note"] == f"Bearer {M}"

"""`capture_logs(level=...)` captures from exactly that level up, whatever was configured
before (fapilog's loggers and stdlib's), and puts every level back afterwards; without a
level it keeps the levels it always had."""

from __future__ import annotations

import logging

import pytest

from conftest import MemoryExporter
from fapilog import configure_logging, get_logger, log
from fapilog.testing import capture_logs


def test_debug_is_captured_after_an_info_configuration_and_info_comes_back(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(level="INFO", exporters=[memory_exporter.name])
    with capture_logs(level="debug") as logs:
        log.debug("x")
    assert logs == [{"message": "x", "level": "debug", "logger": "app"}]
    with capture_logs() as after:
        log.debug("not after the block")
        log.info("info still is")
    assert after.messages() == ["info still is"]
    assert logging.getLogger().level == logging.INFO


def test_a_stdlib_debug_record_is_captured_and_the_stdlib_levels_come_back(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(
        level="INFO", exporters=[memory_exporter.name], logger_levels={"chatty": "ERROR"}
    )
    chatty = logging.getLogger("chatty")
    assert chatty.level == logging.ERROR  # what fapilog's logger_levels set
    with capture_logs(level="DEBUG") as logs:
        logging.getLogger("lib").debug("stdlib debug", extra={"n": 1})
        chatty.info("a configured logger follows the level asked for")
        get_logger("chatty").debug("and so does fapilog's logger of that name")
    assert logs.messages() == [
        "stdlib debug",
        "a configured logger follows the level asked for",
        "and so does fapilog's logger of that name",
    ]
    assert logs[0] == {"message": "stdlib debug", "level": "debug", "logger": "lib", "n": 1}
    assert logging.getLogger().level == logging.INFO
    assert chatty.level == logging.ERROR
    assert not logging.getLogger("lib").isEnabledFor(logging.DEBUG)
    assert not get_logger("chatty").is_enabled_for(logging.WARNING)


def test_warning_drops_info_even_from_a_stdlib_logger_set_lower_by_the_application(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(level="DEBUG", exporters=[memory_exporter.name])
    verbose = logging.getLogger("verbose")
    verbose.setLevel(logging.DEBUG)  # the application's own choice: kept
    try:
        with capture_logs(level="warning") as logs:
            log.info("info dropped")
            log.warning("warning kept")
            verbose.info("stdlib info dropped")
            verbose.error("stdlib error kept")
        assert logs.messages() == ["warning kept", "stdlib error kept"]
        assert verbose.level == logging.DEBUG
        with capture_logs() as after:
            log.debug("debug again")
        assert after.messages() == ["debug again"]
    finally:
        verbose.setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        (10, ["debug", "info", "warning", "error"]),
        ("INFO", ["info", "warning", "error"]),
        (" Warn ", ["warning", "error"]),
        (40, ["error"]),
    ],
)
def test_names_and_numbers_like_the_level_setting(level: str | int, kept: list[str]) -> None:
    with capture_logs(level=level) as logs:
        for name in ("debug", "info", "warning", "error"):
            getattr(log, name)(name)
            logging.getLogger("lib").log(logging.getLevelName(name.upper()), name)
    assert [entry["message"] for entry in logs if entry["logger"] == "app"] == kept
    assert [entry["message"] for entry in logs if entry["logger"] == "lib"] == kept


def test_a_level_before_configuration_and_everything_restored() -> None:
    root = logging.getLogger()
    saved = root.level
    with capture_logs(level="error") as logs:
        log.warning("dropped")
        logging.getLogger("lib").warning("dropped too")
        log.error("kept")
    assert logs.messages() == ["kept"]
    assert root.level == saved
    assert all(handler.__class__.__name__ != "FapilogHandler" for handler in root.handlers)
    with capture_logs() as unconfigured:  # the default: every level before configuration
        log.debug("debug")
        logging.getLogger("lib").debug("stdlib debug")
    assert unconfigured.messages() == ["debug", "stdlib debug"]


def test_the_default_keeps_the_configured_levels(memory_exporter: MemoryExporter) -> None:
    configure_logging(level="WARNING", exporters=[memory_exporter.name])
    with capture_logs() as logs:
        log.info("below the configured level")
        logging.getLogger("lib").info("stdlib below it")
        log.warning("at it")
    assert logs.messages() == ["at it"]


@pytest.mark.parametrize("level", ["verbose", 15, True, 5.0])
def test_an_unknown_level_is_refused_before_anything_changes(
    level: object, memory_exporter: MemoryExporter
) -> None:
    configure_logging(level="INFO", exporters=[memory_exporter.name])
    with pytest.raises(ValueError, match="unknown level") as raised:
        capture_logs(level=level).__enter__()  # type: ignore[arg-type]
    assert "DEBUG (10)" in str(raised.value)
    with capture_logs() as logs:
        log.debug("still filtered")
        log.info("still captured")
    assert logs.messages() == ["still captured"]


def test_before_configuration_a_stray_variable_leaves_the_environments_redaction_on(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """capture_logs() before configure_logging() reads the environment as the first event
    would: a misspelt variable is reported and left out, the other settings apply."""
    monkeypatch.setenv("FAPILOG_REDACTION__KEYS", "ssn")
    monkeypatch.setenv("FAPILOG_FOO", "1")
    with capture_logs() as logs:
        get_logger("app").info("applied", ssn="123-45-6789")
    assert logs[-1]["ssn"] == "[REDACTED]"
    assert "FAPILOG_FOO" in capfd.readouterr().err

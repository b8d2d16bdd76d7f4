"""LoggingSettings: environment parsing, list forms, precedence, and error messages."""

from __future__ import annotations

import pytest

import fapilog
from fapilog import ConfigurationError, LoggingSettings, configure_logging


def test_defaults_need_no_configuration() -> None:
    settings = LoggingSettings()
    assert settings.level == "INFO"
    assert settings.env == "production"
    assert settings.exporters == ["stdout"]
    assert settings.json_console is None
    assert settings.queue.max_size == 1000


def test_env_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAPILOG_LEVEL", "warning")
    monkeypatch.setenv("FAPILOG_ENV", "development")
    monkeypatch.setenv("FAPILOG_JSON_CONSOLE", "true")
    monkeypatch.setenv("FAPILOG_SERVICE_NAME", "billing")
    monkeypatch.setenv("FAPILOG_SERVICE_VERSION", "1.2.3")
    monkeypatch.setenv("FAPILOG_QUEUE__MAX_SIZE", "5000")
    monkeypatch.setenv("FAPILOG_QUEUE__OVERFLOW", "block")
    settings = LoggingSettings()
    assert (settings.level, settings.env, settings.json_console) == ("WARNING", "development", True)
    assert (settings.service_name, settings.service_version) == ("billing", "1.2.3")
    assert (settings.queue.max_size, settings.queue.overflow) == (5000, "block")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stdout,file", ["stdout", "file"]),
        (" stdout , console ", ["stdout", "console"]),
        ('["stdout", "file"]', ["stdout", "file"]),
        ("STDOUT", ["stdout"]),
        ("stdout,stdout", ["stdout"]),
    ],
)
def test_list_settings_accept_comma_and_json(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("FAPILOG_EXPORTERS", raw)
    assert LoggingSettings().exporters == expected


def test_logger_levels_mapping_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAPILOG_LOGGER_LEVELS", "uvicorn.access=warn, sqlalchemy=INFO")
    assert LoggingSettings().logger_levels == {"uvicorn.access": "WARNING", "sqlalchemy": "INFO"}
    monkeypatch.setenv("FAPILOG_LOGGER_LEVELS", '{"httpx": "error"}')
    assert LoggingSettings().logger_levels == {"httpx": "ERROR"}


def test_several_errors_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAPILOG_LEVEL", "LOUD")
    monkeypatch.setenv("FAPILOG_QUEUE__MAX_SIZE", "lots")
    with pytest.raises(ConfigurationError) as info:
        LoggingSettings()
    assert {e["env"] for e in info.value.errors} == {"FAPILOG_LEVEL", "FAPILOG_QUEUE__MAX_SIZE"}


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="FAPILOG_LEVEL"):
        LoggingSettings(level="LOUD")


def test_programmatic_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAPILOG_LEVEL", "ERROR")
    monkeypatch.setenv("FAPILOG_SERVICE_NAME", "from-env")
    assert configure_logging(level="DEBUG").level == "DEBUG"
    explicit = configure_logging(LoggingSettings(level="WARNING"))
    assert explicit.level == "WARNING"
    assert explicit.service_name == "from-env"  # env still fills what was not given
    both = configure_logging(LoggingSettings(level="WARNING"), level="CRITICAL")
    assert both.level == "CRITICAL"


def test_nested_override_merges_with_section() -> None:
    settings = configure_logging(queue={"overflow": "sample"})
    assert settings.queue.overflow == "sample"
    assert settings.queue.max_size == 1000


def test_invalid_override_names_setting() -> None:
    with pytest.raises(ConfigurationError, match="FAPILOG_QUEUE__OVERFLOW"):
        configure_logging(queue={"overflow": "x"})
    with pytest.raises(TypeError, match="levle"):  # (mypy reports it before it runs)
        configure_logging(levle="DEBUG")  # type: ignore[call-arg]


def test_rejects_a_non_settings_positional() -> None:
    with pytest.raises(ConfigurationError, match="LoggingSettings"):
        configure_logging({"level": "DEBUG"})  # type: ignore[arg-type]


def test_otel_blrp_variables_map_to_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "4096")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "128")
    monkeypatch.setenv("OTEL_BLRP_EXPORT_TIMEOUT", "3000")
    queue = LoggingSettings().queue
    assert (queue.max_size, queue.max_delay, queue.batch_size, queue.export_timeout) == (
        4096,
        0.25,
        128,
        3.0,
    )
    monkeypatch.setenv("FAPILOG_QUEUE__MAX_SIZE", "10")  # fapilog's own variable wins
    assert LoggingSettings().queue.max_size == 10
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "soon")
    with pytest.raises(ConfigurationError, match="OTEL_BLRP_SCHEDULE_DELAY"):
        LoggingSettings()


@pytest.mark.parametrize(
    ("json_console", "env", "tty", "expected"),
    [
        (None, "production", False, True),
        (None, "production", True, False),
        (None, "development", False, False),
        (True, "development", True, True),
        (False, "production", False, False),
    ],
)
def test_json_console_default(
    json_console: bool | None, env: str, tty: bool, expected: bool
) -> None:
    settings = LoggingSettings(json_console=json_console, env=env)
    assert settings.use_json(stream_is_tty=tty) is expected


def test_reference_lists_every_setting() -> None:
    from fapilog.settings import settings_reference

    rows = {row[0] for row in settings_reference()}
    assert {"FAPILOG_LEVEL", "FAPILOG_EXPORTERS", "FAPILOG_QUEUE__OVERFLOW"} <= rows
    assert all(name.startswith(("FAPILOG_", "(code only")) for name in rows)
    assert all(row[3] for row in settings_reference()), "every setting needs a description"


def test_public_api_all_is_sorted_and_complete() -> None:
    assert fapilog.__all__ == sorted(fapilog.__all__)
    for name in fapilog.__all__:
        assert hasattr(fapilog, name), name

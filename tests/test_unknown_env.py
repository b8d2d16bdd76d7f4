"""A misspelt ``FAPILOG_*`` variable is never ignored in silence: an explicit configuration
(`configure_logging()`, `LoggingSettings()`) fails naming each unknown variable and the
closest setting; an implicit one (the first event logged before `configure_logging()`,
`opentelemetry-instrument`) says so on stderr and goes on with the valid settings.
``FAPILOG_ALLOW_UNKNOWN=true`` turns the check off. The known names come from the model, in
every form pydantic-settings reads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

import fapilog
import fapilog.testing
from conftest import ROOT
from fapilog import ConfigurationError, LoggingSettings, configure_logging
from fapilog.integrations.distro import AUTO_INSTRUMENT_ENV
from fapilog.settings import QueueSettings, from_environment, settings_reference
from fapilog.settings._names import READ_ELSEWHERE, is_known

TYPOS = [
    ("FAPILOG_LEVL", "debug", "FAPILOG_LEVEL"),
    ("FAPILOG_EXPORTER", "file", "FAPILOG_EXPORTERS"),
    ("FAPILOG_QUEUE_MAX_SIZE", "5", "FAPILOG_QUEUE__MAX_SIZE"),
]


def said(name: str, closest: str) -> str:
    return f"{name} is not a fapilog setting; did you mean {closest}?"


@pytest.mark.parametrize(("name", "value", "closest"), TYPOS)
def test_a_misspelt_variable_fails_configure_logging_naming_the_setting_meant(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, closest: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        configure_logging()
    assert said(name, closest) in str(info.value)
    assert "FAPILOG_ALLOW_UNKNOWN=true" in str(info.value)  # how to turn the check off
    assert info.value.errors == [
        {"env": name, "error": f"not a fapilog setting; did you mean {closest}?"}
    ]
    with pytest.raises(ConfigurationError, match=name):
        LoggingSettings()


def test_every_unknown_variable_is_named_with_the_other_problems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value, _ in TYPOS:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("fapilog_loki_url", "http://loki:3100")  # (names are read in any case)
    monkeypatch.setenv("FAPILOG_SHUTDOWN_TIMEOUT", "-1")  # a bad value, reported alongside
    with pytest.raises(ConfigurationError) as info:
        configure_logging()
    message = str(info.value)
    for name, _, closest in TYPOS:
        assert said(name, closest) in message
    assert said("fapilog_loki_url", "FAPILOG_LOKI__URL") in message
    assert "FAPILOG_SHUTDOWN_TIMEOUT (setting 'shutdown_timeout'): '-1' is invalid" in message
    assert [error["env"] for error in info.value.errors] == [
        "FAPILOG_EXPORTER",
        "FAPILOG_LEVL",
        "FAPILOG_QUEUE_MAX_SIZE",
        "fapilog_loki_url",
        "FAPILOG_SHUTDOWN_TIMEOUT",
    ]


def test_a_misspelt_nested_setting_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_LOKI__PASSWD", "hunter2-secret")
    monkeypatch.setenv("FAPILOG_LOGGER_LEVEL__UVICORN", "WARNING")
    monkeypatch.setenv("FAPILOG_NOTHING_LIKE_IT", "1")
    with pytest.raises(ConfigurationError) as info:
        configure_logging()
    message = str(info.value)
    assert said("FAPILOG_LOKI__PASSWD", "FAPILOG_LOKI__PASSWORD") in message
    assert said("FAPILOG_LOGGER_LEVEL__UVICORN", "FAPILOG_LOGGER_LEVELS__UVICORN") in message
    assert "FAPILOG_NOTHING_LIKE_IT is not a fapilog setting\n" in message  # no guess
    assert "hunter2" not in message and "hunter2" not in repr(info.value.errors)


def test_a_misspelt_keyword_names_the_field_meant() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean 'level'\?"):
        LoggingSettings(levl="DEBUG")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match=r"did you mean 'headers'\?"):
        configure_logging(otlp={"header": "authorization=x"})


# every form in which pydantic-settings reads a setting: the value lands where shown
HONOURED: list[tuple[str, str, Any]] = [
    ("FAPILOG_LEVEL", "warning", lambda s: s.level == "WARNING"),
    ("fapilog_level", "warning", lambda s: s.level == "WARNING"),
    ("FAPILOG_QUEUE__MAX_SIZE", "7", lambda s: s.queue.max_size == 7),
    ("FAPILOG_QUEUE", '{"max_size": 7}', lambda s: s.queue.max_size == 7),
    ("FAPILOG_LOGGER_LEVELS", "uvicorn=WARNING", lambda s: s.logger_levels["uvicorn"]),
    ("FAPILOG_LOGGER_LEVELS__UVICORN", "WARNING", lambda s: s.logger_levels["uvicorn"]),
    ("FAPILOG_LOKI__LABELS", "level", lambda s: s.loki.labels == ["level"]),
    ("FAPILOG_LOKI__STATIC_LABELS__TEAM", "pay", lambda s: s.loki.static_labels["team"]),
    ("FAPILOG_OTLP__HEADERS__X_TENANT", "a", lambda s: "x_tenant" in s.otlp.headers),
    ("FAPILOG_REQUEST__STATUS_LEVELS__404", "INFO", lambda s: s.request.status_levels["404"]),
    (
        "FAPILOG_EXPORTER_OPTIONS__MYSINK__ENDPOINT",
        "http://x",
        lambda s: s.exporter_options["mysink"]["endpoint"] == "http://x",
    ),
    ("FAPILOG_AUTO_INSTRUMENT", "false", lambda s: True),  # read by the distro
]


@pytest.mark.parametrize(("name", "value", "landed"), HONOURED)
def test_every_form_the_settings_read_is_known(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, landed: Any
) -> None:
    monkeypatch.setenv(name, value)
    assert landed(LoggingSettings())


def test_forms_the_settings_do_not_read_are_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key under a setting that is no mapping, an empty key: pydantic-settings ignores
    the first and makes nonsense of the second; both are named."""
    for name in ("FAPILOG_LEVEL__X", "FAPILOG_EXPORTERS__0", "FAPILOG_LOGGER_LEVELS__"):
        monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigurationError) as info:
        LoggingSettings()
    assert [error["env"] for error in info.value.errors] == [
        "FAPILOG_EXPORTERS__0",
        "FAPILOG_LEVEL__X",
        "FAPILOG_LOGGER_LEVELS__",
    ]


def test_the_known_names_come_from_the_model() -> None:
    for env, *_ in settings_reference():
        if not env.startswith("("):  # (code only)
            assert is_known(env, LoggingSettings), env

    class Extended(LoggingSettings):
        extra: QueueSettings = Field(default_factory=QueueSettings)

    assert is_known("FAPILOG_EXTRA__MAX_SIZE", Extended)  # a section added later
    assert not is_known("FAPILOG_EXTRA__MAX_SIZE", LoggingSettings)


def test_every_fapilog_variable_read_outside_the_model_is_known() -> None:
    """Each ``"FAPILOG_..."`` name written in the package's code is a setting or read
    elsewhere (`READ_ELSEWHERE`), so setting it is never an error."""
    assert AUTO_INSTRUMENT_ENV in READ_ELSEWHERE
    names = set()
    for path in (ROOT / "src" / "fapilog").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text.startswith("FAPILOG_") and text.replace("_", "").isalnum():
                    names.add(text)
    names.discard("FAPILOG_")  # (the prefix)
    assert names, "no name found: the scan is broken"
    assert {name for name in names if not is_known(name, LoggingSettings)} == set()


def test_allow_unknown_turns_the_check_off_and_the_other_settings_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_LEVL", "debug")
    monkeypatch.setenv("FAPILOG_LOKI__PASSWD", "x")  # (a section's unknown key too)
    monkeypatch.setenv("FAPILOG_LEVEL", "error")
    assert LoggingSettings(allow_unknown=True).level == "ERROR"
    monkeypatch.setenv("FAPILOG_ALLOW_UNKNOWN", "true")
    effective = configure_logging()
    assert (effective.level, effective.allow_unknown) == ("ERROR", True)
    with pytest.raises(ConfigurationError, match="FAPILOG_LEVL"):
        LoggingSettings(allow_unknown=False)  # code outranks the environment


def test_from_environment_reports_unknown_variables_and_keeps_the_valid_settings(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAPILOG_LEVL", "debug")
    monkeypatch.setenv("FAPILOG_QUEUE_MAX_SIZE", "5")
    monkeypatch.setenv("FAPILOG_LEVEL", "warning")
    monkeypatch.setenv("FAPILOG_QUEUE__BATCH_SIZE", "3")
    settings = from_environment("test")
    assert (settings.level, settings.queue.batch_size) == ("WARNING", 3)
    err = capfd.readouterr().err
    assert said("FAPILOG_LEVL", "FAPILOG_LEVEL") in err
    assert said("FAPILOG_QUEUE_MAX_SIZE", "FAPILOG_QUEUE__MAX_SIZE") in err
    assert "using defaults" not in err
    fapilog.testing.reset()  # (forgets the diagnostics' rate limits)
    monkeypatch.setenv("FAPILOG_ALLOW_UNKNOWN", "1")
    assert from_environment("test").level == "WARNING"
    assert "FAPILOG_LEVL" not in capfd.readouterr().err


def run(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


IMPLICIT = """
import fapilog
from fapilog._state import STATE
log = fapilog.get_logger("app")
log.warning("first")  # configures fapilog from the environment
log.info("hidden")
log.warning("shown")
fapilog.force_flush(5)
print("LEVEL", STATE.pipeline.settings.level)
"""


def test_an_implicit_configuration_reports_the_misspelt_variable_and_applies_the_rest(
    subprocess_env: dict[str, str],
) -> None:
    env = {**subprocess_env, "FAPILOG_LEVL": "debug", "FAPILOG_LEVEL": "warning"}
    child = run(env, "-c", IMPLICIT)
    assert child.returncode == 0, child.stderr
    assert said("FAPILOG_LEVL", "FAPILOG_LEVEL") in child.stderr
    assert "using defaults" not in child.stderr
    assert "LEVEL WARNING" in child.stdout
    assert '"shown"' in child.stdout and '"hidden"' not in child.stdout
    quiet = run({**env, "FAPILOG_ALLOW_UNKNOWN": "true"}, "-c", IMPLICIT)
    assert quiet.returncode == 0, quiet.stderr
    assert "FAPILOG_LEVL" not in quiet.stderr
    assert "LEVEL WARNING" in quiet.stdout


def test_opentelemetry_instrument_reports_the_misspelt_variable_and_applies_the_rest(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(
        "import logging\n"
        "logging.getLogger('app').info('hidden')\n"
        "logging.getLogger('app').warning('shown')\n"
    )
    env = {
        **subprocess_env,
        "FAPILOG_LEVL": "debug",
        "FAPILOG_LEVEL": "warning",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
    }
    instrument = str(Path(sys.executable).parent / "opentelemetry-instrument")
    child = subprocess.run(
        [instrument, sys.executable, "app.py"],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert said("FAPILOG_LEVL", "FAPILOG_LEVEL") in child.stderr
    assert '"shown"' in child.stdout and '"hidden"' not in child.stdout


def test_an_application_calling_configure_logging_stops_on_a_misspelt_variable(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(
        "import fapilog\nfapilog.configure_logging()\nprint('started')\n"
    )
    child = run({**subprocess_env, "FAPILOG_LEVL": "debug"}, "app.py", cwd=tmp_path)
    assert child.returncode != 0
    assert "started" not in child.stdout
    assert "ConfigurationError" in child.stderr
    assert said("FAPILOG_LEVL", "FAPILOG_LEVEL") in child.stderr

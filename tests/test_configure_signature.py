"""`configure_logging()` takes one typed keyword per setting (mypy catches a misspelt one),
a keyword left out never overrides anything, and `help(LoggingSettings)` lists every field."""

from __future__ import annotations

import inspect
import logging
import pydoc
import re
import subprocess
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from fapilog import ConfigurationError, LoggingSettings, configure_logging
from fapilog._state import STATE
from fapilog.settings import UNSET, FileSettings, QueueSettings, Unset, env_var_for

FIELDS = LoggingSettings.model_fields
SIGNATURE = inspect.signature(configure_logging)
HINTS = typing.get_type_hints(configure_logging)
SECTIONS = {
    name: field.annotation
    for name, field in FIELDS.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}


def members(hint: Any) -> tuple[Any, ...]:
    """The types a union is made of (a non-union: itself)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def words(text: str) -> str:
    return " ".join(text.split())


# -- the signature --------------------------------------------------------------------------


def test_the_keywords_are_exactly_the_settings_fields() -> None:
    keywords = [
        name
        for name, parameter in SIGNATURE.parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "app"
    ]
    assert sorted(keywords) == sorted(FIELDS)
    assert not any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in SIGNATURE.parameters.values()
    )
    assert list(SIGNATURE.parameters)[:2] == ["settings", "app"]


@pytest.mark.parametrize("name", list(FIELDS))
def test_each_keyword_defaults_to_unset_and_accepts_its_field(name: str) -> None:
    field = FIELDS[name]
    hint = HINTS[name]
    assert SIGNATURE.parameters[name].default is UNSET
    assert Unset in members(hint)
    # None is accepted exactly where the setting takes None
    assert (type(None) in members(hint)) == (type(None) in typing.get_args(field.annotation))
    # a value of the field's type (its default) is a valid argument
    default = field.get_default(call_default_factory=True)
    TypeAdapter(hint).validate_python(default, strict=True)
    if name in SECTIONS:
        assert SECTIONS[name] in members(hint)
        assert any(typing.get_origin(member) is Mapping for member in members(hint))


@pytest.mark.slow
def test_mypy_reports_a_misspelt_keyword_and_passes_correct_calls(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    every_field = ", ".join(f"{name}=current.{name}" for name in FIELDS)
    (tmp_path / "good.py").write_text(
        "import logging\n"
        "from fapilog import LoggingSettings, configure_logging\n"
        "from fapilog.settings import UNSET, QueueSettings\n"
        "current = LoggingSettings()\n"
        f"configure_logging({every_field})\n"
        "effective: LoggingSettings = configure_logging(\n"
        "    LoggingSettings(), level=logging.DEBUG, exporters=['stdout', 'file'],\n"
        "    file={'path': 'app.log'}, queue=QueueSettings(max_size=10), json_console=None,\n"
        "    logger_levels={'uvicorn': 'WARNING', 'httpx': logging.ERROR}, env=UNSET,\n"
        "    on_alert=print, service_name=None,\n"
        ")\n"
    )
    (tmp_path / "bad.py").write_text(
        "from fapilog import configure_logging\n"
        "configure_logging(levl=1)\n"
        "configure_logging(level='LOUD')\n"
        "configure_logging(file=42)\n"
        "configure_logging(json_console='yes')\n"
    )
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    command = [sys.executable, "-m", "mypy", "--config-file", "mypy.ini"]
    result = subprocess.run(
        [*command, "--cache-dir", ".cache", "--no-error-summary", "good.py", "bad.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors = re.findall(r"^(\w+)\.py:(\d+): error: (.*)$", result.stdout, re.M)
    assert result.returncode == 1, result.stdout + result.stderr
    assert [(file, line) for file, line, _ in errors] == [
        ("bad", "2"),
        ("bad", "3"),
        ("bad", "4"),
        ("bad", "5"),
    ], result.stdout
    assert 'Unexpected keyword argument "levl"' in errors[0][2]
    assert all("[arg-type]" in message for _, _, message in errors[1:]), result.stdout


# -- keywords, settings and the environment ------------------------------------------------


def test_a_keyword_given_wins_over_the_environment_and_the_settings_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_LEVEL", "WARNING")
    assert configure_logging(level="DEBUG").level == "DEBUG"
    assert configure_logging(LoggingSettings(level="ERROR"), level="DEBUG").level == "DEBUG"
    assert configure_logging(level=logging.CRITICAL).level == "CRITICAL"


def test_a_keyword_left_out_leaves_the_environment_and_the_settings_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_LEVEL", "WARNING")
    monkeypatch.setenv("FAPILOG_JSON_CONSOLE", "false")
    effective = configure_logging(service_name="checkout")
    assert (effective.level, effective.json_console) == ("WARNING", False)
    assert effective.service_name == "checkout"
    given = LoggingSettings(level="ERROR", json_console=True)
    effective = configure_logging(given, service_name="checkout")
    assert (effective.level, effective.json_console) == ("ERROR", True)
    # UNSET passed on (by a wrapper of configure_logging) is the same as leaving it out
    assert configure_logging(level=UNSET, json_console=UNSET).level == "WARNING"


def test_none_given_where_a_setting_takes_none_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_JSON_CONSOLE", "true")
    monkeypatch.setenv("FAPILOG_SERVICE_NAME", "from-env")
    effective = configure_logging(json_console=None, service_name=None)
    assert effective.json_console is None and effective.service_name is None
    alerts: list[dict[str, Any]] = []
    with_alert = LoggingSettings(on_alert=alerts.append, json_console=False)
    assert configure_logging(with_alert).on_alert == alerts.append
    effective = configure_logging(with_alert, on_alert=None, json_console=None)
    assert effective.on_alert is None and effective.json_console is None


def test_allow_unknown_given_applies_to_the_first_read_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_LEVLE", "DEBUG")
    with pytest.raises(ConfigurationError, match="FAPILOG_LEVLE"):
        configure_logging()
    assert configure_logging(allow_unknown=True, level="ERROR").level == "ERROR"
    monkeypatch.setenv("FAPILOG_ALLOW_UNKNOWN", "true")
    assert configure_logging().allow_unknown is True
    with pytest.raises(ConfigurationError, match="FAPILOG_LEVLE"):
        configure_logging(allow_unknown=False)


def test_changing_allow_unknown_keeps_the_running_exporters() -> None:
    configure_logging()
    assert STATE.pipeline is not None
    running = STATE.pipeline.processors
    configure_logging(allow_unknown=True)
    assert STATE.pipeline.processors is running


def test_a_section_given_as_a_mapping_merges_into_the_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAPILOG_FILE__BACKUP_COUNT", "9")
    path = str(tmp_path / "app.log")
    effective = configure_logging(file={"path": path})
    assert (effective.file.path, effective.file.backup_count) == (path, 9)
    given = LoggingSettings(file=FileSettings(gzip=True))
    effective = configure_logging(given, file={"path": path})
    assert (effective.file.path, effective.file.gzip) == (path, True)
    # the mapping settings merge by key the same way
    monkeypatch.setenv("FAPILOG_LOGGER_LEVELS", "sqlalchemy=INFO")
    effective = configure_logging(logger_levels={"uvicorn.access": logging.WARNING})
    assert effective.logger_levels == {"sqlalchemy": "INFO", "uvicorn.access": "WARNING"}


def test_a_section_given_as_its_model_replaces_the_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_QUEUE__BATCH_SIZE", "7")
    queue = QueueSettings(max_size=123)
    effective = configure_logging(queue=queue)
    assert effective.queue == queue and effective.queue.batch_size == 512


@pytest.mark.parametrize(
    ("keywords", "variable"),
    [
        ({"file": 42}, "FAPILOG_FILE"),
        ({"queue": {"max_size": "many"}}, "FAPILOG_QUEUE__MAX_SIZE"),
        ({"capture_stdlib": "maybe"}, "FAPILOG_CAPTURE_STDLIB"),
        ({"level": "LOUD"}, "FAPILOG_LEVEL"),
        ({"exporters": 3}, "FAPILOG_EXPORTERS"),
    ],
)
def test_a_value_of_the_wrong_type_raises_configuration_error_naming_the_setting(
    keywords: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure_logging(**keywords)
    assert variable in str(info.value)
    assert info.value.errors and info.value.errors[0]["env"].startswith(variable)


def test_the_same_keywords_twice_give_the_same_settings() -> None:
    first = configure_logging(level="DEBUG", file={"backup_count": 2})
    assert configure_logging(level="DEBUG", file={"backup_count": 2}) == first


# -- help() lists every field ----------------------------------------------------------------


def _help_text(model: type[BaseModel]) -> str:
    """What `help(model)` shows, without pydoc's class frame (" |  " line prefixes)."""
    rendered = pydoc.plain(pydoc.render_doc(model))
    return words(re.sub(r"^ \|( {1,2}|$)", "", rendered, flags=re.M))


@pytest.mark.parametrize(
    ("model", "prefix"),
    [(LoggingSettings, ()), *((section, (name,)) for name, section in SECTIONS.items())],
    ids=["LoggingSettings", *SECTIONS],
)
def test_help_lists_every_field_with_its_variable_and_description(
    model: type[BaseModel], prefix: tuple[str, ...]
) -> None:
    shown = _help_text(model)
    assert words(model.__doc__ or "") in shown
    for name, field in model.model_fields.items():
        env = "code only" if field.exclude else env_var_for(*prefix, name)
        assert f"{name} ({env}" in shown, name
        if field.description:
            assert words(field.description) in shown, name


def test_help_of_logging_settings_keeps_its_own_text_and_names_each_section() -> None:
    doc = words(LoggingSettings.__doc__ or "")
    assert doc.startswith("All of fapilog's settings.")
    for section in SECTIONS.values():
        assert f"help({section.__name__})" in doc
    assert "default INFO" in doc and 'default ["stdout"]' in doc

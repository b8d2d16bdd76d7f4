"""Nothing raises into the caller, whatever the arguments: an unknown level, %-arguments
whose repr raises, keywords named like the parameters, a processor that fails. Each call
returns normally and leaves a record, marked with ``fapilog.error`` when something had to
be degraded; nothing is lost uncounted. Real pipeline, real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import structlog

import fapilog
from conftest import ROOT
from fapilog import configure_logging, get_logger, log
from fapilog.capture.logger import BoundLogger
from fapilog.capture.record import OTelBridge

SCHEMA = json.loads((ROOT / "docs" / "json-line.schema.json").read_text())


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class StrRaises:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "<StrRaises>"


class NothingPrints:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def configure(tmp_path: Path, **settings: Any) -> None:
    configure_logging(exporters=["file"], file={"path": str(tmp_path / "app.log")}, **settings)


def lines(tmp_path: Path) -> list[dict[str, Any]]:
    assert fapilog.force_flush(10)
    found = [json.loads(line) for line in (tmp_path / "app.log").read_text().splitlines()]
    for line in found:
        jsonschema.validate(line, SCHEMA)
    stats = fapilog.stats()
    assert stats["dropped"] == 0
    assert stats["emitted"] == stats["exported"] == len(found)  # each call: one record
    return found


def test_an_unknown_level_logs_at_info_saying_so(tmp_path: Path) -> None:
    configure(tmp_path)
    assert log.log("bogus", "by a bogus name") is None
    assert log.log(None, "by None") is None
    assert log.log(2.5, "by a float") is None
    assert log.log(" Warning ", "by a spaced name") is None  # known: no marker
    assert log.log(level=40, event="by keywords") is None
    bogus, none, floated, spaced, keywords = lines(tmp_path)
    assert (bogus["level"], bogus["message"]) == ("info", "by a bogus name")
    assert bogus["fapilog.error"] == "unknown level 'bogus', logged at info"
    assert none["fapilog.error"] == "unknown level None, logged at info"
    assert floated["fapilog.error"] == "unknown level 2.5, logged at info"
    assert spaced["level"] == "warning" and "fapilog.error" not in spaced
    assert keywords["level"] == "error" and keywords["message"] == "by keywords"


def test_format_arguments_whose_repr_raises(tmp_path: Path) -> None:
    configure(tmp_path)
    assert log.info("%d", ReprRaises()) is None
    assert log.warning("%s and %s", StrRaises(), 3) is None
    assert log.log("bogus", "%d", "x") is None  # two things wrong: both said
    no_repr, no_str, both = lines(tmp_path)
    assert no_repr["message"] == "%d (<unrepresentable ReprRaises object>,)"
    assert no_repr["fapilog.error"] == "message could not be formatted: TypeError"
    assert no_str["message"] == "%s and %s (<StrRaises>, 3)"
    assert no_str["fapilog.error"] == "message could not be formatted: RuntimeError"
    assert both["message"] == "%d ('x',)"
    assert both["fapilog.error"] == (
        "unknown level 'bogus', logged at info; message could not be formatted: TypeError"
    )


def test_keywords_named_like_the_parameters_are_fields(tmp_path: Path) -> None:
    configure(tmp_path)
    assert log.info("the message", event="a field") is None
    assert log.log(30, "the message", level="a field") is None
    assert log.info(event="the message by keyword") is None
    event_kw, level_kw, by_keyword = lines(tmp_path)
    assert event_kw["message"] == "the message" and event_kw["attr.event"] == "a field"
    assert level_kw["level"] == "warning" and level_kw["attr.level"] == "a field"
    assert by_keyword["message"] == "the message by keyword"
    assert all("fapilog.error" not in line for line in (event_kw, level_kw, by_keyword))


def test_a_failing_processor_leaves_a_salvaged_record(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A chain that fails on an event (a processor of the application's own structlog
    configuration): a record with the level, logger and `fapilog.error`, not the message
    (the chain that failed may be the one that redacts it)."""

    def broken(logger: Any, method_name: str, event_dict: Any) -> Any:
        raise RuntimeError("processor bug")

    configure(tmp_path)
    custom = structlog.wrap_logger(
        get_logger("custom")._logger, processors=[broken, OTelBridge()], wrapper_class=BoundLogger
    )
    assert custom.error("password=hunter2") is None

    (salvaged,) = lines(tmp_path)
    assert salvaged["level"] == "error" and salvaged["logger"] == "custom"
    assert salvaged["message"] == "<record could not be processed>"
    assert salvaged["fapilog.error"] == "record could not be processed: RuntimeError"
    assert "hunter2" not in (tmp_path / "app.log").read_text()
    assert "processor bug" in capfd.readouterr().err  # the diagnostics tell the details

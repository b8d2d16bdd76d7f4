"""Nothing raises into the caller, whatever the arguments: an unknown level, %-arguments
whose repr raises, a stdlib message whose str() raises, keywords named like the
parameters, a request context hook returning the request event's own keys, a processor
that fails. Each call returns normally and leaves a record, marked with ``fapilog.error``
when something had to be degraded; nothing is lost uncounted. Real pipeline, real files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import structlog

import fapilog
from conftest import ROOT, run_python
from fapilog import configure_logging, get_logger, log
from fapilog.capture.logger import BoundLogger
from fapilog.capture.record import OTelBridge
from fastapi_support import get, make_app

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


STDLIB_CASES = """
import logging, sys
import fapilog

class StrRaises:
    def __str__(self): raise RuntimeError("no str")
    def __repr__(self): return "<StrRaises>"

class NothingPrints:
    def __str__(self): raise RuntimeError("no str")
    def __repr__(self): raise RuntimeError("no repr")

fapilog.configure_logging(exporters=["file"], file={"path": sys.argv[1]})
logging.getLogger("lib.x").warning(NothingPrints())
logging.getLogger("lib.x").error("%d of %s", "x", StrRaises())
logging.getLogger("lib.x").warning("the message", extra={"event": "an extra field"})
fapilog.force_flush(10)
print(fapilog.stats()["emitted"], fapilog.stats()["exported"], fapilog.stats()["dropped"])
"""


def test_a_stdlib_message_whose_str_raises(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """In a plain interpreter: under pytest, its own log handler fails on such a message."""
    path = tmp_path / "app.log"
    code, out, err = run_python(
        STDLIB_CASES.replace("sys.argv[1]", repr(str(path))), subprocess_env
    )
    assert code == 0, err
    assert out.split() == ["3", "3", "0"]  # each call: one record, none dropped
    no_str, bad_args, extra = (json.loads(line) for line in path.read_text().splitlines())
    for line in (no_str, bad_args, extra):
        jsonschema.validate(line, SCHEMA)
    assert (no_str["level"], no_str["logger"]) == ("warning", "lib.x")
    assert no_str["message"] == "<unrepresentable NothingPrints object>"
    assert no_str["fapilog.error"] == "message could not be formatted: RuntimeError"
    assert bad_args["level"] == "error"
    assert bad_args["message"] == "%d of %s ('x', <StrRaises>)"
    assert bad_args["fapilog.error"] == "message could not be formatted: TypeError"
    assert extra["message"] == "the message" and extra["attr.event"] == "an extra field"


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

    class Mangle(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.levelname = None  # type: ignore[assignment]
            return True

    stdlib = logging.getLogger("lib.mangled")
    mangle = Mangle()
    stdlib.addFilter(mangle)
    try:
        stdlib.warning("password=hunter2")
    finally:
        stdlib.removeFilter(mangle)

    salvaged, stdlib_salvaged = lines(tmp_path)
    assert salvaged["level"] == "error" and salvaged["logger"] == "custom"
    assert salvaged["message"] == "<record could not be processed>"
    assert salvaged["fapilog.error"] == "record could not be processed: RuntimeError"
    assert stdlib_salvaged["logger"] == "lib.mangled"
    assert stdlib_salvaged["message"] == "<record could not be processed>"
    assert stdlib_salvaged["fapilog.error"] == (
        "stdlib record could not be processed: AttributeError"
    )
    assert "hunter2" not in (tmp_path / "app.log").read_text()
    assert "processor bug" in capfd.readouterr().err  # the diagnostics tell the details


def test_a_context_hook_returning_the_request_events_own_keys(tmp_path: Path) -> None:
    def hook(scope: Any) -> dict[Any, Any]:
        return {"level": "gold", "event": "signup", "message": "hi", 7: "seven"}

    app = make_app()
    configure(tmp_path, app=app, request={"context_hook": hook})
    response = get(app, "/items/1")
    assert response.status_code == 200
    (request,) = [line for line in lines(tmp_path) if line["logger"] == "fapilog.request"]
    assert (request["level"], request["message"]) == ("info", "request completed")
    assert request["http.response.status_code"] == 200
    assert request["attr.level"] == "gold"
    assert request["attr.event"] == "signup"
    assert request["attr.message"] == "hi"
    assert request["7"] == "seven"

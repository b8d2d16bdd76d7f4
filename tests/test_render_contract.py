"""The JSON line's last resort: a record whose fields cannot be read as a LogRecord's (a
foreign record with fields of the wrong types) still becomes one line with the core keys
that can be read and what went wrong. In-process."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.render import ERROR_KEY, JsonRenderer, _unrenderable
from fapilog.otel.logs import SeverityNumber, make_record


class Raising:
    """Any attribute read raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


def good() -> ReadableLogRecord:
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=0,
            observed_timestamp=1_700_000_000_123_456_789,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body="body text",
            attributes={},
            context=None,
        ),
        resource=Resource({"service.name": "api"}),
        instrumentation_scope=InstrumentationScope("app.db"),
    )


def test_the_last_resort_line_keeps_every_core_key_it_can_read() -> None:
    line = json.loads(_unrenderable(good(), TypeError("bad")))
    assert line == {
        "timestamp": "2023-11-14T22:13:20.123456Z",
        "level": "warning",
        "message": "body text",
        "logger": "app.db",
        "service.name": "api",
        ERROR_KEY: "record could not be rendered: TypeError",
    }


def test_the_last_resort_line_of_a_record_nothing_can_be_read_from() -> None:
    class Foreign:
        log_record = Raising()
        instrumentation_scope = Raising()
        resource = Raising()

    line = json.loads(_unrenderable(Foreign(), ValueError("x")))  # type: ignore[arg-type]
    assert line["level"] == "info" and line["timestamp"].endswith("Z")
    assert {k: line[k] for k in ("message", "logger", "service.name", ERROR_KEY)} == {
        "message": "",
        "logger": "",
        "service.name": "",
        ERROR_KEY: "record could not be rendered: ValueError",
    }


def test_no_scope_no_resource_and_a_name_with_a_lone_surrogate() -> None:
    readable = good()
    bare = ReadableLogRecord(log_record=readable.log_record, resource=None)  # type: ignore[arg-type]
    line = json.loads(_unrenderable(bare, KeyError("k")))
    assert (line["logger"], line["service.name"]) == ("", "")
    odd = ReadableLogRecord(
        log_record=readable.log_record,
        resource=Resource({"service.name": "a\ud800"}),
        instrumentation_scope=InstrumentationScope("b\ud800"),
    )
    data = _unrenderable(odd, KeyError("k"))
    assert b'"logger": "b\\ud800"' in data  # the stdlib encoder's escape: valid JSON
    assert json.loads(data)["service.name"] == "a\ud800"


def test_a_record_of_the_wrong_types_renders_as_its_last_resort_line() -> None:
    readable = good()
    readable.log_record.attributes = 42  # type: ignore[assignment]
    data = JsonRenderer().render(readable)
    assert not data.endswith(b"\n")
    assert json.loads(data)[ERROR_KEY].startswith("record could not be rendered: ")
    assert JsonRenderer().render_line(readable) == data + b"\n"

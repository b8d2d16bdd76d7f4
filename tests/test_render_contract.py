"""The JSON line's last resort: a record whose fields cannot be read as a LogRecord's (a
foreign record with fields of the wrong types) still becomes one line with the core keys
that can be read and what went wrong. In-process."""

from __future__ import annotations

import json
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.render import ERROR_KEY, JsonRenderer, _unrenderable, console_value
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
    data = _unrenderable(good(), TypeError("bad"))
    assert b", " not in data and b'": ' not in data  # compact, as every line
    line = json.loads(data)
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


# -- values JSON cannot hold as they are ----------------------------------------------------------


class Shown:
    def __repr__(self) -> str:
        return "Shown()"


class NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def with_attributes(**attributes: Any) -> ReadableLogRecord:
    readable = good()
    readable.log_record.attributes = attributes  # a foreign record's values, as they come
    return readable


def test_values_json_cannot_hold_are_written_as_their_nearest_json() -> None:
    readable = with_attributes(
        text=b"caf\xc3\xa9",
        binary=b"\xff\x00",
        array=bytearray(b"ab"),
        view=memoryview(b"\xfe"),
        mapping=MappingProxyType({"a": 1}),
        numbers=frozenset({3}),
        members={4},
        other=Shown(),
        broken=NoRepr(),
        amount=Decimal("1.50"),
    )
    line = json.loads(JsonRenderer().render(readable))
    assert {k: line[k] for k in readable.log_record.attributes or {}} == {
        "text": "café",
        "binary": "base64:/wA=",
        "array": "ab",
        "view": "base64:/g==",
        "mapping": {"a": 1},
        "numbers": [3],
        "members": [4],
        "other": "Shown()",
        "broken": "<unrepresentable NoRepr object>",
        "amount": "1.50",
    }


def test_a_line_orjson_refuses_is_written_from_its_coerced_values() -> None:
    # an integer beyond 64 bits, with bytes to show (the coerced line still needs the
    # default) and text beyond ASCII kept as it is
    readable = with_attributes(big=2**70, raw=b"\xff", word="é")
    data = JsonRenderer().render(readable)
    assert "é".encode() in data
    assert b", " not in data and b'": ' not in data  # compact, as every line
    line = json.loads(data)
    assert ERROR_KEY not in line
    assert (line["big"], line["raw"], line["word"]) == (
        "1180591620717411303424",
        "base64:/w==",
        "é",
    )


def test_a_lone_surrogate_is_written_by_the_stdlib_encoder_as_an_escape() -> None:
    readable = with_attributes(odd="a\ud800b", word="é", raw=b"\xff")
    data = JsonRenderer().render(readable)
    assert b'"a\\ud800b"' in data and "é".encode() in data
    line = json.loads(data)
    assert ERROR_KEY not in line
    assert (line["odd"], line["word"], line["raw"], line["message"]) == (
        "a\ud800b",
        "é",
        "base64:/w==",
        "body text",
    )


def test_the_last_resort_line_keeps_text_beyond_ascii_as_it_is() -> None:
    readable = good()
    readable.log_record.body = "é \ud800\u2028"
    data = _unrenderable(readable, TypeError("bad"))
    assert "é".encode() in data and b"\\u2028" in data  # and still one line
    assert json.loads(data)["message"] == "é \ud800\u2028"
    readable.log_record.body = "é\u0085"
    data = _unrenderable(readable, TypeError("bad"))
    assert "é".encode() in data and b"\\u0085" in data
    assert json.loads(data)["message"] == "é\u0085"


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("a\u0085b", b"a\\u0085b"),
        ("a\u2028b", b"a\\u2028b"),
        ("a\u2029b", b"a\\u2029b"),
        ("a\u2020b\u00e9", "a\u2020b\u00e9".encode()),  # other characters: as they are
    ],
    ids=["NEL", "LS", "PS", "dagger"],
)
def test_every_unicode_line_break_in_a_line_is_escaped(text: str, written: bytes) -> None:
    renderer = JsonRenderer()
    for readable in (with_attributes(text=text), with_attributes(text=text, big=2**70)):
        data = renderer.render(readable)
        assert written in data
        assert len(data.decode().splitlines()) == 1
        parts = renderer.split(readable)
        assert parts is not None
        assert written in renderer.dumps({**parts[0], **parts[1]}, readable)


# -- a line's keys and the resource's apart (for Loki) ------------------------------------------


def test_split_gives_the_lines_keys_and_the_resources_apart_and_dumps_renders_them() -> None:
    readable = good()
    readable.log_record.attributes = {"service.name": "mine", "k": 1}
    renderer = JsonRenderer()
    parts = renderer.split(readable)
    assert parts is not None
    own, resource = parts
    assert resource == {"service.name": "api"}
    assert own == {
        "timestamp": "2023-11-14T22:13:20.123456Z",
        "level": "warning",
        "message": "body text",
        "logger": "app.db",
        "attr.service.name": "mine",
        "k": 1,
    }
    assert {**own, **resource} == renderer.as_dict(readable)
    assert renderer.dumps({**own, **resource}, readable) == renderer.render(readable)
    assert renderer.resource_attributes(readable.resource) == resource
    assert renderer.resource_attributes(Resource({"telemetry.sdk.name": "x", "a": 1})) == {"a": 1}
    assert renderer.resource_attributes(None) == {}


def test_a_record_split_cannot_read_is_none_and_dumps_never_raises() -> None:
    readable = good()
    readable.log_record.attributes = 42  # type: ignore[assignment]
    renderer = JsonRenderer()
    assert renderer.split(readable) is None
    line = json.loads(renderer.dumps({"k": NoRepr(), "big": 2**70}, readable))
    assert line == {"k": "<unrepresentable NoRepr object>", "big": "1180591620717411303424"}


# -- console values -------------------------------------------------------------------------------


class Painted:
    def __repr__(self) -> str:
        return "a\x1b[31mb\nc"


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class UnprintableMapping(dict):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("two words", "'two words'"),
        ("a=b", "'a=b'"),
        ("it's", '"it\'s"'),
        ("line\nbreak", "'line\\nbreak'"),
        ("", ""),
        (True, "True"),
        (False, "False"),
        (1.5, "1.5"),
        (None, "None"),
        (42, "42"),
        ([1, "x y"], "[1, 'x y']"),
        (Painted(), "a\\x1b[31mb\\nc"),
        (Unprintable(), "<unrepresentable Unprintable object>"),
        (UnprintableMapping(a=1), "{'a': 1}"),
    ],
    ids=[
        "plain",
        "blank",
        "equals",
        "quote",
        "break",
        "empty",
        "true",
        "false",
        "float",
        "none",
        "int",
        "list",
        "escapes",
        "no-repr",
        "no-repr-mapping",
    ],
)
def test_a_console_value_is_its_text_or_its_repr_escaped(value: Any, shown: str) -> None:
    assert console_value(value) == shown


# -- the line's own keys ---------------------------------------------------------------------------


def traced(flags: int) -> Any:
    return set_span_in_context(
        NonRecordingSpan(
            SpanContext(
                trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
                span_id=0x00F067AA0BA902B7,
                is_remote=False,
                trace_flags=TraceFlags(flags),
            )
        )
    )


def made(**fields: Any) -> ReadableLogRecord:
    values: dict[str, Any] = {
        "timestamp": 1_700_000_000_123_456_789,
        "context": None,
        "severity_number": SeverityNumber.WARN,
        "severity_text": "WARN",
        "body": "b",
        "attributes": {},
    }
    values.update(fields)
    return ReadableLogRecord(
        log_record=make_record(**values), resource=Resource({"service.name": "api"})
    )


@pytest.mark.parametrize("flags", [0, 1])
def test_a_traced_line_says_whether_its_trace_was_sampled(flags: int) -> None:
    line = json.loads(JsonRenderer().render(made(context=traced(flags))))
    assert (line["trace_id"], line["span_id"], line["trace.sampled"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        bool(flags),
    )


def test_the_level_comes_from_the_number_when_the_record_has_no_text() -> None:
    readable = made()
    readable.log_record.severity_text = None
    assert json.loads(JsonRenderer().render(readable))["level"] == "warning"


def test_an_event_name_and_a_record_without_a_scope() -> None:
    readable = made(event_name="user.login")
    line = json.loads(JsonRenderer().render(readable))
    assert (line["event.name"], line["logger"]) == ("user.login", "")


def test_attributes_held_to_limits_say_how_many_were_left_out() -> None:
    renderer = JsonRenderer()
    readable = made()
    readable.log_record.attributes = BoundedAttributes(maxlen=1, attributes={"a": 1, "b": 2})
    line = json.loads(renderer.render(readable))
    assert (line["b"], line["fapilog.dropped_attributes"]) == (2, 1)  # the latest kept
    readable.log_record.attributes = BoundedAttributes(maxlen=5, attributes={"a": 1})
    assert "fapilog.dropped_attributes" not in json.loads(renderer.render(readable))
    readable.log_record.attributes = MappingProxyType({"a": 1})  # no count of its own
    line = json.loads(renderer.render(readable))
    assert line["a"] == 1 and "fapilog.dropped_attributes" not in line and ERROR_KEY not in line


@pytest.mark.parametrize(
    "resource", [Resource({}), Resource({"telemetry.sdk.name": "x"})], ids=["empty", "sdk-only"]
)
def test_a_resource_with_nothing_to_show_leaves_a_whole_line(resource: Resource) -> None:
    readable = made()
    readable = ReadableLogRecord(log_record=readable.log_record, resource=resource)
    renderer = JsonRenderer()
    for data in (renderer.render(readable), renderer.render_line(readable)):
        line = json.loads(data)
        assert line["message"] == "b" and "service.name" not in line and ERROR_KEY not in line

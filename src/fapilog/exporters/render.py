"""Render OTel log records as fapilog's JSON line (stdout, file, Loki); escape console text.

The JSON line is flat: ``timestamp``, ``level``, ``message``, ``logger``, ``trace_id``,
``span_id``, then the record's attributes, then the resource attributes (``service.name``,
...). A user attribute whose name collides with one of those reserved names is kept under
``attr.<name>`` instead of overwriting it. docs/json-schema.md documents the schema.

Rendering never raises and is per record: a record whose values JSON cannot hold as they
are (an integer beyond 64 bits, a string with a lone surrogate, a foreign record's odd
values) is rendered from its values coerced as the caller's thread would have coerced them,
and a record that cannot be rendered at all becomes a line of its core keys with a
``fapilog.error`` attribute. One bad record never costs its batch.

For the development console (`fapilog.exporters.console_format`), `console_text` escapes
text from the application or a client, so that a record is one line (its traceback an
indented block under it) and no escape sequence but the console's own colours reaches the
terminal.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import orjson

from fapilog import _levels
from fapilog.capture.coerce import ERROR_KEY, coerce_value, safe_repr, safe_str
from fapilog.otel.logs import ReadableLogRecord

__all__ = [
    "CORE_KEYS",
    "JsonRenderer",
    "console_text",
    "console_value",
    "iso_timestamp",
    "level_name",
]

CORE_KEYS = frozenset(
    {
        "timestamp",
        "level",
        "message",
        "logger",
        "trace_id",
        "span_id",
        "trace_flags",
        "trace.sampled",
    }
)
COLLISION_PREFIX = "attr."
# Resource attributes left out of each line: constant SDK metadata, not useful per line.
_RESOURCE_SKIP_PREFIXES = ("telemetry.",)

_second_cache: list[Any] = [-1, ""]


def iso_timestamp(ns: int) -> str:
    """RFC 3339, UTC, microseconds: ``2026-11-26T12:00:00.123456Z``."""
    seconds, rest = divmod(ns, 1_000_000_000)
    cache = _second_cache
    if cache[0] != seconds:
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        cache[0] = seconds
    return f"{cache[1]}.{rest // 1000:06d}Z"


def level_name(record: Any) -> str:
    """The ``level`` of a record's JSON line (see `fapilog._levels.text_of`)."""
    return _levels.text_of(record.severity_text, record.severity_number)


def _json_default(value: Any) -> Any:
    """A value orjson cannot write itself: bytes as their text (UTF-8, else base64), any
    other as the caller's thread coerces it (`coerce_value`), so that a value is written
    alike whichever way its line is rendered (see `_degraded`)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    return coerce_value(value)


class JsonRenderer:
    """ReadableLogRecord -> one JSON object (bytes, no newline). Resource attributes are
    rendered once per resource and reused: as a dict for `as_dict`, and as the serialized
    tail of the object (spliced in as bytes) for `render`."""

    __slots__ = ("_resource_cache",)

    def __init__(self) -> None:
        self._resource_cache: _ResourceParts | None = None

    def _resource_parts(self, resource: Any) -> _ResourceParts:
        cache = self._resource_cache
        if cache is not None and cache.resource is resource:
            return cache
        attrs = {
            str(k): v
            for k, v in (resource.attributes if resource is not None else {}).items()
            if not str(k).startswith(_RESOURCE_SKIP_PREFIXES)
        }
        cache = self._resource_cache = _ResourceParts(resource, attrs)
        return cache

    def _line(self, readable: ReadableLogRecord, reserved: frozenset[str]) -> dict[str, Any]:
        """The line without the resource attributes."""
        record = readable.log_record
        scope = readable.instrumentation_scope
        line: dict[str, Any] = {
            "timestamp": iso_timestamp(record.timestamp or record.observed_timestamp or 0),
            "level": level_name(record),
            "message": record.body,
            "logger": scope.name if scope is not None else "",
        }
        if record.trace_id:
            line["trace_id"] = format(record.trace_id, "032x")
            line["span_id"] = format(record.span_id, "016x")
            flags = record.trace_flags
            line["trace.sampled"] = bool(flags is not None and flags & 1)
        attributes = record.attributes
        if attributes:
            if reserved.isdisjoint(attributes):
                line.update(attributes)
            else:
                for key, value in attributes.items():
                    if key in reserved:
                        line[COLLISION_PREFIX + key] = value
                    else:
                        line[key] = value
            if type(attributes) is not dict:  # held to the attribute limits
                dropped = getattr(attributes, "dropped", 0)
                if dropped:
                    line["fapilog.dropped_attributes"] = dropped
        if record.event_name is not None:
            line["event.name"] = record.event_name
        return line

    def as_dict(self, readable: ReadableLogRecord) -> dict[str, Any]:
        parts = self._resource_parts(readable.resource)
        line = self._line(readable, parts.reserved)
        line.update(parts.attrs)
        return line

    def render(self, readable: ReadableLogRecord) -> bytes:
        return self._render(readable, False)

    def split(self, readable: ReadableLogRecord) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The line's own keys and the resource attributes, apart (for an exporter that
        places some of them elsewhere; render the line with `dumps`); None for a record that
        cannot be rendered so (`render` gives its last-resort line)."""
        try:
            parts = self._resource_parts(readable.resource)
            return self._line(readable, parts.reserved), parts.attrs
        except Exception:
            return None

    def resource_attributes(self, resource: Any) -> dict[str, Any]:
        """The resource attributes a line shows (read-only)."""
        return self._resource_parts(resource).attrs

    @staticmethod
    def dumps(line: dict[str, Any], readable: ReadableLogRecord) -> bytes:
        """A line assembled from `split`'s parts, rendered as `render` renders (never
        raises)."""
        try:
            return _one_line(orjson.dumps(line, default=_json_default))
        except Exception:
            return _degraded(line, readable)

    def render_line(self, readable: ReadableLogRecord) -> bytes:
        """`render(readable) + b"\n"`, without the extra copy."""
        return self._render(readable, True)

    def _render(self, readable: ReadableLogRecord, newline: bool) -> bytes:
        try:
            parts = self._resource_parts(readable.resource)
            line = self._line(readable, parts.reserved)
        except Exception as exc:  # a foreign record with fields of the wrong types
            data = _unrenderable(readable, exc)
            return data + b"\n" if newline else data
        tail = parts.tail_newline if newline else parts.tail
        if tail is not None:
            # the keys are distinct (attributes colliding with the resource's are renamed),
            # so the object ends with the resource attributes serialized on their own
            try:
                return _one_line(orjson.dumps(line, default=_json_default)[:-1] + tail)
            except Exception:
                pass
        line.update(parts.attrs)
        try:
            data = _one_line(orjson.dumps(line, default=_json_default))
        except Exception:
            data = _degraded(line, readable)
        return data + b"\n" if newline else data


# Line breaks JSON lets a string hold as they are, which orjson writes raw, but which readers
# that split on every Unicode line break (Python's `str.splitlines`, some log viewers) would
# cut a line at: escaped, so that a record is one line for every reader.
_RAW_BREAKS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def _one_line(data: bytes) -> bytes:
    if data.isascii():  # (the common case: one fast pass, no search)
        return data
    if b"\xc2\x85" in data or b"\xe2\x80" in data:
        for raw, escaped in _RAW_BREAKS:
            data = data.replace(raw, escaped)
    return data


def _degraded(line: dict[str, Any], readable: ReadableLogRecord) -> bytes:
    """The line of a record orjson could not serialize as it is: each value coerced (an
    integer beyond 64 bits becomes its decimal string or ``"<int: N digits>"``, ...), then
    orjson again, or the stdlib encoder (it writes lone surrogates as escapes)."""
    try:
        clean = {safe_str(key): coerce_value(value) for key, value in line.items()}
        try:
            return _one_line(orjson.dumps(clean, default=_json_default))
        except Exception:
            return _one_line(
                json.dumps(clean, default=_json_default, ensure_ascii=False).encode(
                    "utf-8", "backslashreplace"
                )
            )
    except Exception as exc:
        return _unrenderable(readable, exc)


def _unrenderable(readable: ReadableLogRecord, exc: BaseException) -> bytes:
    """The last resort: the core keys that can be read, and what went wrong."""
    line: dict[str, Any] = {"timestamp": iso_timestamp(time.time_ns()), "level": "info"}
    try:
        record = readable.log_record
        line["timestamp"] = iso_timestamp(int(record.timestamp or record.observed_timestamp))
    except Exception:
        pass
    try:
        line["level"] = level_name(readable.log_record).lower()
    except Exception:
        pass
    try:
        line["message"] = safe_str(readable.log_record.body)
    except Exception:
        line["message"] = ""
    try:
        scope = readable.instrumentation_scope
        line["logger"] = safe_str(scope.name) if scope is not None else ""
    except Exception:
        line["logger"] = ""
    try:
        resource = readable.resource
        name = resource.attributes.get("service.name") if resource is not None else None
        line["service.name"] = safe_str(name) if name is not None else ""
    except Exception:
        line["service.name"] = ""
    line[ERROR_KEY] = f"record could not be rendered: {type(exc).__name__}"
    try:
        return _one_line(orjson.dumps(line))
    except Exception:  # a lone surrogate in the message or a name
        return _one_line(json.dumps(line, ensure_ascii=False).encode("utf-8", "backslashreplace"))


class _ResourceParts:
    """One resource's attributes as the line shows them, the reserved keys, and their
    serialized tail of the JSON object (``,"service.name":...}``), None when there are no
    resource attributes or orjson cannot serialize them on its own."""

    __slots__ = ("attrs", "reserved", "resource", "tail", "tail_newline")

    def __init__(self, resource: Any, attrs: dict[str, Any]) -> None:
        self.resource = resource  # (held: compared by identity, never by a reused id())
        self.attrs = attrs
        self.reserved = CORE_KEYS | frozenset(attrs)
        self.tail: bytes | None = None
        self.tail_newline: bytes | None = None
        if attrs:
            try:
                self.tail = b"," + orjson.dumps(attrs, default=_json_default)[1:]
                self.tail_newline = self.tail + b"\n"
            except (TypeError, orjson.JSONEncodeError):
                pass


# -- console text ----------------------------------------------------------------------------

# What the console shows escaped in text from the application or a client: C0 controls
# (ESC, CR, LF, TAB, ...), DEL, C1 controls (NEL among them), the line and paragraph
# separators, the bidirectional overrides and isolates (they reorder what a terminal shows)
# and surrogates (a str holds only lone ones). Every character a terminal or
# `str.splitlines` takes as a line break is in this set, and none of it is printable
# (`str.isprintable`), so printable text, the common case, skips the regex.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# a string value is quoted (its repr) when it has one of these
_QUOTED = re.compile(r"[\s='\"]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def console_text(text: str) -> str:
    """`text` as the console shows it: every character that could start a line, move the
    cursor or begin a terminal escape sequence is written as a visible escape (``\\x1b``,
    ``\\n``, ``\\u2028``), so the text stays on its line and shows as what it is."""
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escape, text)


def console_value(value: Any) -> str:
    """A value of a console ``key=value`` pair: a string as it is, or quoted (its repr)
    when it has blanks, ``=``, quotes or characters to escape; anything else as its repr
    (the repr of its coerced value when its own fails: an integer too long to print,
    nested), escaped (`console_text`)."""
    kind = type(value)
    if kind is str:
        text: str = value
        if text.isprintable() and _QUOTED.search(text) is None:
            return text
        return console_text(repr(text))
    if kind is int:
        return safe_repr(value)  # (a number too long for repr is described)
    if kind is bool or kind is float or value is None:
        return repr(value)
    try:
        text = repr(value)
    except Exception:
        coerced = coerce_value(value)
        text = coerced if type(coerced) is str else safe_repr(coerced)
    return console_text(text)

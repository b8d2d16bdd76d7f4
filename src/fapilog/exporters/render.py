"""Render OTel log records as fapilog's JSON line (stdout, file, Loki) or a pretty console line.

The JSON line is flat: ``timestamp``, ``level``, ``message``, ``logger``, ``trace_id``,
``span_id``, then the record's attributes, then the resource attributes (``service.name``,
...). A user attribute whose name collides with one of those reserved names is kept under
``attr.<name>`` instead of overwriting it. docs/json-schema.md documents the schema.

Rendering never raises and is per record: a record whose values JSON cannot hold as they
are (an integer beyond 64 bits, a string with a lone surrogate, a foreign record's odd
values) is rendered from its values coerced as the caller's thread would have coerced them,
and a record that cannot be rendered at all becomes a line of its core keys with a
``fapilog.error`` attribute. One bad record never costs its batch.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from fapilog import _levels
from fapilog.capture.coerce import ERROR_KEY, coerce_value, safe_str
from fapilog.otel.logs import ReadableLogRecord

__all__ = ["CORE_KEYS", "ConsoleRenderer", "JsonRenderer", "iso_timestamp", "level_name"]

CORE_KEYS = frozenset(
    {"timestamp", "level", "message", "logger", "trace_id", "span_id", "trace_flags"}
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
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


class JsonRenderer:
    """ReadableLogRecord -> one JSON object (bytes, no newline). Resource attributes are
    rendered once per resource and reused: as a dict for `as_dict`, and as the serialized
    tail of the object (spliced in as bytes) for `render`."""

    __slots__ = ("_resource_cache",)

    def __init__(self) -> None:
        self._resource_cache: _ResourceParts | None = None

    def _resource_parts(self, resource: Any) -> _ResourceParts:
        cache = self._resource_cache
        if cache is not None and cache.key == id(resource):
            return cache
        attrs = {
            str(k): v
            for k, v in (resource.attributes if resource is not None else {}).items()
            if not str(k).startswith(_RESOURCE_SKIP_PREFIXES)
        }
        cache = self._resource_cache = _ResourceParts(id(resource), attrs)
        return cache

    def _resource(self, resource: Any) -> tuple[dict[str, Any], frozenset[str]]:
        parts = self._resource_parts(resource)
        return parts.attrs, parts.reserved

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
        return line

    def as_dict(self, readable: ReadableLogRecord) -> dict[str, Any]:
        parts = self._resource_parts(readable.resource)
        line = self._line(readable, parts.reserved)
        line.update(parts.attrs)
        return line

    def render(self, readable: ReadableLogRecord) -> bytes:
        return self._render(readable, False)

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
                return orjson.dumps(line, default=_json_default)[:-1] + tail
            except Exception:
                pass
        line.update(parts.attrs)
        try:
            data = orjson.dumps(line, default=_json_default)
        except Exception:
            data = _degraded(line, readable)
        return data + b"\n" if newline else data

    def render_batch(self, batch: Sequence[ReadableLogRecord]) -> bytes:
        render = self.render_line
        return b"".join([render(readable) for readable in batch])


def _degraded(line: dict[str, Any], readable: ReadableLogRecord) -> bytes:
    """The line of a record orjson could not serialize as it is: each value coerced (an
    integer beyond 64 bits becomes its decimal string or ``"<int: N digits>"``, ...), then
    orjson again, or the stdlib encoder (it writes lone surrogates as escapes)."""
    try:
        clean = {safe_str(key): coerce_value(value) for key, value in line.items()}
        try:
            return orjson.dumps(clean, default=_json_default)
        except Exception:
            return json.dumps(clean, default=_json_default, ensure_ascii=False).encode(
                "utf-8", "backslashreplace"
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
        return orjson.dumps(line)
    except Exception:  # a lone surrogate in the message or a name
        return json.dumps(line, ensure_ascii=False).encode("utf-8", "backslashreplace")


class _ResourceParts:
    """One resource's attributes as the line shows them, the reserved keys, and their
    serialized tail of the JSON object (``,"service.name":...}``), None when there are no
    resource attributes or orjson cannot serialize them on its own."""

    __slots__ = ("attrs", "key", "reserved", "tail", "tail_newline")

    def __init__(self, key: int, attrs: dict[str, Any]) -> None:
        self.key = key
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


class ConsoleRenderer:
    """A pretty, aligned, optionally coloured line per record, with readable tracebacks:
    structlog's ConsoleRenderer fed from the OTel record."""

    def __init__(self, colors: bool) -> None:
        import structlog

        self._renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
        self._json = JsonRenderer()

    def render(self, readable: ReadableLogRecord) -> str:
        """The console line of `readable`; never raises (a record the console cannot show
        is shown as its JSON line)."""
        try:
            return self._render(readable)
        except Exception:
            return self._json.render(readable).decode("utf-8", "replace")

    def _render(self, readable: ReadableLogRecord) -> str:
        line = self._json.as_dict(readable)
        event: dict[str, Any] = {
            "timestamp": line.pop("timestamp")[11:23],
            "level": line.pop("level"),
            "event": line.pop("message"),
            "logger": line.pop("logger"),
        }
        stack = line.pop("exception.stacktrace", None)
        line.pop("exception.type", None)
        line.pop("exception.message", None)
        for key in [
            k for k in line if k.startswith(("service.", "deployment.", "host.", "process."))
        ]:
            del line[key]
        event.update(line)
        shown = dict(event)  # (the renderer consumes the dict it is given)
        try:
            text = str(self._renderer(None, event["level"], event))
        except Exception:  # a value whose repr fails (an integer too long to print, ...)
            coerced = {key: coerce_value(value) for key, value in shown.items()}
            text = str(self._renderer(None, coerced["level"], coerced))
        if stack:
            text = f"{text}\n{stack.rstrip()}"
        return text

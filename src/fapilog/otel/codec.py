"""Log records as bytes and back, for the disk spool (`fapilog.pipeline.spool`): what an
exporter needs of a `ReadableLogRecord` (every field of the OpenTelemetry log record, its
resource and its instrumentation scope) survives the round trip, so that a replayed record is
exported exactly as it would have been at first, with its original timestamps.

Three kinds of frames, each an orjson payload after a one-byte kind:

- ``R``: a resource (its attributes and schema URL), numbered in order of appearance;
- ``S``: an instrumentation scope (name, version, schema URL), numbered likewise;
- ``L``: a log record, naming its resource and scope by number.

Resources and scopes are written once per segment (`Tables` keeps the numbering), so a record
costs only its own fields. Values keep their OpenTelemetry types: strings, numbers, booleans,
lists, maps, and bytes (as ``{"__fapilog_bytes__": base64}``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import TraceFlags

from fapilog.otel.logs import LogRecord, ReadableLogRecord, SeverityNumber

__all__ = ["RECORD", "RESOURCE", "SCOPE", "Tables", "decode", "encode"]

RESOURCE = b"R"
SCOPE = b"S"
RECORD = b"L"

_BYTES_TAG = "__fapilog_bytes__"
_BYTES_MARK = _BYTES_TAG.encode()
_EMPTY_CONTEXT = Context()
_FIELDS_WITH_DROPPED = 13  # (an L frame's fields; 12 in segments written before)


def _default(value: Any) -> Any:
    """orjson's fallback: bytes tagged, sets as lists, anything else as its text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # an integer beyond 64 bits (a body may hold one): as its text; a string with a lone
        # surrogate (not UTF-8): with it escaped, as every exporter writes it (``\\udcff``)
        return orjson.dumps(_plain(value), default=_default, option=orjson.OPT_NON_STR_KEYS)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _BYTES_TAG in value:
            return base64.b64decode(value[_BYTES_TAG])
        return {key: _untag(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untag(item) for item in value]
    return value


class Tables:
    """The resources and scopes of one segment, by number: the writer's side assigns the
    numbers (`resource_number`, `scope_number`), the reader's side learns them (`learn`)."""

    def __init__(self) -> None:
        self.resources: list[Resource] = []
        self.scopes: list[InstrumentationScope | None] = []
        # writer: id() of the object -> (number, the object, kept alive so ids stay unique)
        self._resource_ids: dict[int, tuple[int, Resource]] = {}
        self._scope_ids: dict[int, tuple[int, InstrumentationScope | None]] = {}

    def resource_number(self, resource: Resource, out: list[bytes]) -> int:
        known = self._resource_ids.get(id(resource))
        if known is not None:
            return known[0]
        number = len(self.resources)
        self.resources.append(resource)
        self._resource_ids[id(resource)] = (number, resource)
        out.append(
            RESOURCE + _dumps([number, dict(resource.attributes), resource.schema_url or ""])
        )
        return number

    def scope_number(self, scope: InstrumentationScope | None, out: list[bytes]) -> int:
        known = self._scope_ids.get(id(scope))
        if known is not None:
            return known[0]
        number = len(self.scopes)
        self.scopes.append(scope)
        self._scope_ids[id(scope)] = (number, scope)
        if scope is None:
            out.append(SCOPE + _dumps([number, None, None, None]))
        else:
            out.append(SCOPE + _dumps([number, scope.name, scope.version, scope.schema_url or ""]))
        return number

    def learn(self, kind: bytes, payload: bytes) -> None:
        """Read an ``R`` or ``S`` frame's payload (after the kind byte)."""
        number, *fields = orjson.loads(payload)
        if kind == RESOURCE:
            attributes, schema_url = fields
            while len(self.resources) <= number:
                self.resources.append(Resource.get_empty())
            self.resources[number] = Resource(_untag(attributes), schema_url or None)
        else:
            name, version, schema_url = fields
            while len(self.scopes) <= number:
                self.scopes.append(None)
            self.scopes[number] = (
                None if name is None else InstrumentationScope(name, version, schema_url or None)
            )


def encode(readable: ReadableLogRecord, tables: Tables, out: list[bytes]) -> None:
    """Append `readable`'s frames to `out` (its resource and scope first, if new)."""
    record = readable.log_record
    resource = tables.resource_number(readable.resource, out)
    scope = tables.scope_number(readable.instrumentation_scope, out)
    severity = record.severity_number
    attributes = record.attributes
    out.append(
        RECORD
        + _dumps(
            [
                resource,
                scope,
                record.timestamp,
                record.observed_timestamp,
                format(record.trace_id or 0, "x"),  # 128 bits: beyond JSON's integers
                record.span_id or 0,
                int(record.trace_flags or 0),
                severity.value if severity is not None else None,
                record.severity_text,
                record.body,
                dict(attributes) if isinstance(attributes, Mapping) else None,
                getattr(record, "event_name", None),
                # how many attributes the attribute limits left out (OTLP's
                # dropped_attributes_count; absent in segments written before it was kept)
                getattr(attributes, "dropped", 0),
            ]
        )
    )


def decode(payload: bytes, tables: Tables) -> ReadableLogRecord:
    """The record of an ``L`` frame's payload (after the kind byte). Raises ValueError (or
    an orjson error, a ValueError) when the payload is not one."""
    fields = orjson.loads(payload)
    if _BYTES_MARK in payload:
        fields = _untag(fields)
    dropped = fields.pop() if len(fields) == _FIELDS_WITH_DROPPED else 0
    (
        resource,
        scope,
        timestamp,
        observed,
        trace_id,
        span_id,
        flags,
        severity,
        severity_text,
        body,
        attributes,
        event_name,
    ) = fields
    record = LogRecord(
        timestamp=timestamp,
        observed_timestamp=observed,
        context=_EMPTY_CONTEXT,
        severity_text=severity_text,
        severity_number=SeverityNumber(severity) if severity is not None else None,
        body=body,
        attributes=attributes,
        event_name=event_name,
    )
    if dropped and isinstance(attributes, dict):
        counted = BoundedAttributes(
            attributes=attributes, immutable=False, extended_attributes=True
        )
        counted.dropped = dropped
        record.attributes = counted
    # the trace fields as recorded (the constructor would read them from the context)
    record.trace_id = int(trace_id, 16)
    record.span_id = span_id
    record.trace_flags = TraceFlags(flags)
    try:
        found_resource = tables.resources[resource]
        found_scope = tables.scopes[scope]
    except (IndexError, TypeError):
        raise ValueError("a spooled record names a resource or scope never written") from None
    return ReadableLogRecord(
        log_record=record, resource=found_resource, instrumentation_scope=found_scope
    )

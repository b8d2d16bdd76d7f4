"""The one adapter around the OpenTelemetry logs API and SDK (`opentelemetry._logs`,
`opentelemetry.sdk._logs`; the OTLP exporters' `_log_exporter` modules have theirs,
`fapilog.otel.log_exporters`).

That API is still unstable (it changed in 1.35, 1.39, 1.42 and 1.44), so every import of it
and every access to its private attributes lives here, and the rest of fapilog uses these
names. Each shortcut is checked against the installed SDK once, at import, and falls back to
the public API when the check fails. pyproject.toml pins the tested series.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from typing import Any

from opentelemetry import _logs as logs_api
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk._logs import (
    ConcurrentMultiLogRecordProcessor,
    Logger,
    LoggerProvider,
    LogRecordLimits,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
    SynchronousMultiLogRecordProcessor,
)
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from fapilog import _diag
from fapilog.otel.trace import span_context_of
from fapilog.otel.wrapped import inner_provider

__all__ = [
    "InMemoryLogRecordExporter",
    "LogRecord",
    "LogRecordExportResult",
    "LogRecordExporter",
    "LogRecordProcessor",
    "Logger",
    "LoggerProvider",
    "ReadWriteLogRecord",
    "ReadableLogRecord",
    "SeverityNumber",
    "SimpleLogRecordProcessor",
    "add_attribute",
    "bound_attributes",
    "emit",
    "fast_emit_supported",
    "global_sdk_provider",
    "make_record",
    "new_provider",
    "other_log_processors",
    "otlp_log_endpoints",
    "provider_disabled",
    "readable",
    "replace_resource",
    "sdk_logger",
    "sdk_provider_of",
    "set_global_provider",
    "uncached_logger",
    "update_resource",
]

# Highest fapilog tolerates; OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT still wins when set.
_MAX_ATTRIBUTES = 1024


def new_provider(resource: Resource) -> LoggerProvider:
    """A LoggerProvider fapilog owns: no atexit hook of its own (fapilog drains with a
    deadline) and an attribute limit high enough that key-value pairs are never dropped."""
    limit = None
    if not os.environ.get("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT") and not os.environ.get(
        "OTEL_ATTRIBUTE_COUNT_LIMIT"
    ):
        limit = _MAX_ATTRIBUTES
    return LoggerProvider(
        resource=resource,
        shutdown_on_exit=False,
        log_record_limits=LogRecordLimits(max_log_record_attributes=limit),
    )


def update_resource(provider: LoggerProvider, attributes: dict[str, Any]) -> None:
    """Merge `attributes` into the Resource of a provider fapilog owns (a forked child's own
    ``process.pid``), including the Loggers it already handed out."""
    replace_resource(provider, provider.resource.merge(Resource(attributes)))


def replace_resource(provider: LoggerProvider, resource: Resource) -> None:
    """Give a provider fapilog owns a new Resource (a reconfiguration changed the service
    name, version or environment), including the Loggers it already handed out."""
    provider._resource = resource
    loggers = list(getattr(provider, "_logger_cache", {}).values())
    loggers += list(getattr(provider, "_active_loggers", ()))
    for logger in loggers:
        logger._set_resource(resource)


def global_sdk_provider() -> LoggerProvider | None:
    """The globally installed SDK LoggerProvider, if someone (the user,
    `opentelemetry-instrument`, Logfire) installed one, itself or inside a wrapper
    (`sdk_provider_of`)."""
    return sdk_provider_of(logs_api.get_logger_provider())


def sdk_provider_of(provider: object) -> LoggerProvider | None:
    """The SDK LoggerProvider `provider` is, or wraps within a few wrappers (Logfire's
    ProxyLoggerProvider keeps it as ``provider``; `fapilog.otel.wrapped`); None for the API's
    no-op or proxy provider."""
    return inner_provider(provider, LoggerProvider, "get_logger")


# Where a log record processor keeps what it hands records on to: the SDK's multi
# processors (``_log_record_processors``), a wrapping processor (Logfire's ``processor``),
# the batch processor's shared BatchProcessor (``_batch_processor``), the exporter
# (``_exporter``); followed at most _MAX_PROCESSOR_DEPTH deep.
_PROCESSOR_PARTS = ("_log_record_processors", "processor", "_batch_processor", "_exporter")
_MAX_PROCESSOR_DEPTH = 6
_OTLP_LOG_EXPORTER_MODULES = (
    ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "grpc"),
    ("opentelemetry.exporter.otlp.proto.http._log_exporter", "http/protobuf"),
)


def otlp_log_endpoints(provider: LoggerProvider) -> list[tuple[str, str]]:
    """(``grpc`` or ``http/protobuf``, the endpoint as the exporter keeps it) for each SDK
    OTLP log exporter that `provider`'s log record processors export to, found through the
    parts listed above (the gRPC exporter keeps ``host:port``, the HTTP one the URL it posts
    to). Only the exporter modules already imported are looked for: an exporter of a
    module never imported cannot exist."""
    kinds: list[tuple[type, str]] = []
    for module_name, protocol in _OTLP_LOG_EXPORTER_MODULES:
        kind = getattr(sys.modules.get(module_name), "OTLPLogExporter", None)
        if isinstance(kind, type):
            kinds.append((kind, protocol))
    found: list[tuple[str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(getattr(provider, "_multi_log_record_processor", None), 0)]
    while kinds and stack:
        node, depth = stack.pop()
        if node is None or id(node) in seen or depth > _MAX_PROCESSOR_DEPTH:
            continue
        seen.add(id(node))
        sends = next((name for kind, name in kinds if isinstance(node, kind)), None)
        if sends is not None:
            endpoint = getattr(node, "_endpoint", None)
            if isinstance(endpoint, str):
                found.append((sends, endpoint))
            continue
        for name in _PROCESSOR_PARTS:
            try:
                part = object.__getattribute__(node, name)
            except Exception:
                continue
            parts = part if isinstance(part, tuple | list) else (part,)
            stack.extend((item, depth + 1) for item in reversed(parts))
    return found


def set_global_provider(provider: LoggerProvider) -> None:
    logs_api.set_logger_provider(provider)


def sdk_logger(provider: LoggerProvider, name: str) -> Logger:
    """An SDK Logger for `name`. Under OTEL_SDK_DISABLED the SDK hands out no-op loggers;
    fapilog's own local exporters keep working, so the cached SDK logger is used directly."""
    logger = provider.get_logger(name)
    if isinstance(logger, Logger):
        return logger
    return provider._get_logger_cached(name)


def uncached_logger(
    provider: LoggerProvider, name: str, *, only_when_disabled: LogRecordProcessor | None = None
) -> Logger:
    """An SDK Logger for `name` that `provider` does not keep.

    `LoggerProvider.get_logger` keeps every Logger it hands out in a cache by name that
    never shrinks: a process logging under ever new names would grow without bound. The
    caller keeps a bounded number of these instead (the bridge). Each one is still a
    complete SDK Logger, registered (weakly, as `get_logger` does) among the provider's
    active loggers, so a Resource update or a logger configurator reaches it while it is
    in use. Falls back to `sdk_logger` where the SDK's internals differ.

    When `provider` is disabled (``OTEL_SDK_DISABLED=true``: the SDK hands out no-op
    loggers), the Logger hands its records to `only_when_disabled` (fapilog's Router, for
    its local exporters) and to none of the provider's other processors: an SDK batch
    processor exporting over OTLP, the user's, receives nothing, as the SDK would have it."""
    logger = _uncached_logger(provider, name)
    if only_when_disabled is not None and provider_disabled(provider):
        _route_only_to(logger, only_when_disabled)
    return logger


def _uncached_logger(provider: LoggerProvider, name: str) -> Logger:
    if _UNCACHED_LOGGERS:
        active = getattr(provider, "_active_loggers", None)
        lock = getattr(provider, "_active_loggers_lock", None)
        if active is not None and lock is not None:
            logger = provider._get_logger_no_cache(name)
            if isinstance(logger, Logger):
                with lock:
                    active.add(logger)
                return logger
    return sdk_logger(provider, name)


def provider_disabled(provider: LoggerProvider) -> bool:
    """Whether `provider` was built under ``OTEL_SDK_DISABLED=true`` (it hands out no-op
    loggers); where the SDK keeps no such flag, the variable as the SDK reads it."""
    disabled = getattr(provider, "_disabled", None)
    if isinstance(disabled, bool):
        return disabled
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _route_only_to(logger: Logger, processor: LogRecordProcessor) -> None:
    """Have `logger` emit to `processor` alone (the attribute its `emit` hands records to,
    and `emit`'s shortcut too). Where the SDK's Logger has no such attribute, it keeps
    emitting to the provider's processors, and that is said once on stderr."""
    if "_multi_log_record_processor" in vars(logger):
        logger._multi_log_record_processor = processor  # type: ignore[assignment]
        return
    _diag.report(  # pragma: no cover - an SDK change
        "otel-sdk-disabled-route",
        "fapilog: OTEL_SDK_DISABLED=true, but this OpenTelemetry SDK's Logger cannot be "
        "limited to fapilog's exporters: the provider's other log processors receive "
        "fapilog's records",
    )


def other_log_processors(
    provider: LoggerProvider, mine: LogRecordProcessor | None
) -> list[LogRecordProcessor] | None:
    """The log record processors on `provider` other than `mine` (fapilog's Router): an
    SDK batch processor (``opentelemetry-instrument``'s stock configuration), a user's.
    None when the provider does not hold them as checked (`_MULTI_PROCESSORS`): the caller
    then flushes the whole provider (`LoggerProvider.force_flush`)."""
    if not _MULTI_PROCESSORS:
        return None  # pragma: no cover - an SDK change
    multi = getattr(provider, "_multi_log_record_processor", None)
    processors = getattr(multi, "_log_record_processors", None)
    if not isinstance(processors, tuple):
        return None
    return [processor for processor in processors if processor is not mine]


def _multi_processors_check() -> bool:
    """Whether the SDK's multi log record processors keep the processors added to them in a
    tuple ``_log_record_processors`` (checked once, on empty instances)."""
    try:
        return all(
            isinstance(getattr(kind(), "_log_record_processors", None), tuple)
            for kind in (SynchronousMultiLogRecordProcessor, ConcurrentMultiLogRecordProcessor)
        )
    except Exception:  # pragma: no cover - an SDK change
        return False


_MULTI_PROCESSORS = _multi_processors_check()


def _uncached_loggers_check() -> bool:
    """Whether the installed SDK builds a Logger outside its cache as `uncached_logger`
    expects (checked once; otherwise `sdk_logger` and the provider's cache are used)."""
    try:
        method = LoggerProvider._get_logger_no_cache
        names = list(inspect.signature(method).parameters)
        return names[:2] == ["self", "name"]
    except Exception:  # pragma: no cover - an SDK change
        return False


_UNCACHED_LOGGERS = _uncached_loggers_check()


def make_record(
    *,
    timestamp: int,
    context: Context | None,
    severity_number: SeverityNumber,
    severity_text: str,
    body: Any,
    attributes: dict[str, Any],
    span_context: trace.SpanContext | None = None,
    observed_timestamp: int | None = None,
    event_name: str | None = None,
) -> LogRecord:
    """An API LogRecord for a captured event. `context` is the caller's (captured on its
    thread); `span_context`, when the caller already has it, is `span_context_of(context)`;
    `observed_timestamp` defaults to `timestamp`.

    `LogRecord.__init__` reads the worker's current context when `context` is empty and the
    span from the context again; with `_FAST_RECORD` the same fields are set directly."""
    if not _FAST_RECORD:
        return LogRecord(
            timestamp=timestamp,
            observed_timestamp=observed_timestamp or timestamp,
            context=context or _EMPTY_CONTEXT,
            severity_text=severity_text,
            severity_number=severity_number,
            body=body,
            attributes=attributes,
            event_name=event_name,
        )
    if span_context is None:
        span_context = span_context_of(context)
    record = _new_record(LogRecord)
    record.timestamp = timestamp
    record.observed_timestamp = observed_timestamp or timestamp
    record.context = context or _EMPTY_CONTEXT
    record.trace_id = span_context.trace_id
    record.span_id = span_context.span_id
    record.trace_flags = span_context.trace_flags
    record.severity_text = severity_text
    record.severity_number = severity_number
    record.body = body
    record.attributes = attributes
    record.event_name = event_name
    record.exception = None
    return record


_EMPTY_CONTEXT = Context()
_new_record = object.__new__
_RECORD_FIELDS = (
    "timestamp", "observed_timestamp", "context", "trace_id", "span_id", "trace_flags",
    "severity_text", "severity_number", "body", "attributes", "event_name", "exception",
)  # fmt: skip


def _fast_record_check() -> bool:
    """Whether `LogRecord.__init__` sets exactly the fields `make_record` sets (checked once
    against the installed API): otherwise the public constructor is used."""
    try:
        probe = LogRecord(timestamp=1, observed_timestamp=1, context=Context(), body="x")
        return tuple(vars(probe)) == _RECORD_FIELDS
    except Exception:  # pragma: no cover - an API change
        return False


_FAST_RECORD = _fast_record_check()


def fast_emit_supported(logger: Logger) -> bool:
    """Whether `emit` can hand records to the provider's processors directly (the SDK
    internals it relies on are present); otherwise it uses the public `Logger.emit`."""
    return all(
        hasattr(logger, attr)
        for attr in (
            "_is_enabled",
            "_resource",
            "_instrumentation_scope",
            "_log_record_limits",
            "_multi_log_record_processor",
        )
    ) and {"log_record", "resource", "instrumentation_scope", "limits"} <= set(
        getattr(ReadWriteLogRecord, "__dataclass_fields__", {})
    )


def emit(logger: Logger, record: LogRecord, fast: bool) -> None:
    """Emit `record` through `logger` to the provider's processors.

    `Logger.emit` wraps the record in a ReadWriteLogRecord whose construction re-validates
    every attribute (BoundedAttributes), the largest cost in the worker. fapilog's bridge
    has already coerced every value to a valid AnyValue, so with `fast` the same
    ReadWriteLogRecord is built without that second pass and handed to the same processors;
    the provider's attribute limits still apply (`bound_attributes`).
    """
    if not fast:
        logger.emit(record)
        return
    if not logger._is_enabled():
        return
    limits = logger._log_record_limits
    attributes = record.attributes
    if attributes and (
        limits.max_log_record_attribute_length is not None
        or (
            limits.max_log_record_attributes is not None
            and len(attributes) > limits.max_log_record_attributes
        )
    ):
        bound_attributes(record, limits)
    writable = ReadWriteLogRecord.__new__(ReadWriteLogRecord)
    writable.log_record = record
    writable.resource = logger._resource
    writable.instrumentation_scope = logger._instrumentation_scope
    writable.limits = logger._log_record_limits
    logger._multi_log_record_processor.on_emit(writable)


def bound_attributes(record: LogRecord, limits: LogRecordLimits) -> None:
    """Hold `record`'s attributes to `limits` as the SDK's `Logger.emit` does: at most
    ``max_log_record_attributes`` of them (the last ones set, as the SDK's `BoundedAttributes`
    keeps them, so the exception's, set last, stay), text values (also inside lists and maps)
    cut at ``max_log_record_attribute_length`` characters, and the number left out counted
    (the record's ``dropped_attributes``, OTLP's ``dropped_attributes_count``). Done before
    `BoundedAttributes` sees them, which would log a warning for each value it cuts."""
    count = limits.max_log_record_attributes
    length = limits.max_log_record_attribute_length
    items = list((record.attributes or {}).items())
    dropped = 0
    if count is not None and len(items) > count:
        dropped = len(items) - count
        items = items[dropped:]
    if length is not None:
        items = [(key, _cut(value, length)) for key, value in items]
    bounded = BoundedAttributes(
        maxlen=count, attributes=dict(items), immutable=False, extended_attributes=True
    )
    bounded.dropped = dropped
    record.attributes = bounded


def _cut(value: Any, length: int) -> Any:
    """`value` with every text in it cut at `length` characters."""
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, (list, tuple)):
        return tuple(_cut(item, length) for item in value)
    if isinstance(value, dict):
        return {key: _cut(item, length) for key, item in value.items()}
    return value


def add_attribute(record: ReadWriteLogRecord, key: str, value: str) -> None:
    """Give a record someone else emitted an attribute it lacks (the SDK's record holds a
    mutable `BoundedAttributes`, or None when emitted without attributes)."""
    log_record = record.log_record
    attributes = log_record.attributes
    if attributes is None:
        log_record.attributes = {key: value}
    elif key not in attributes:
        attributes[key] = value  # type: ignore[index]


def readable(record: ReadWriteLogRecord) -> ReadableLogRecord:
    """The immutable view exporters receive; built once and shared by every exporter."""
    resource = record.resource if record.resource is not None else Resource.get_empty()
    if _FAST_READABLE:
        # the frozen dataclass's __init__ sets its four fields through object.__setattr__
        view = _new_record(ReadableLogRecord)
        view.__dict__.update(
            log_record=record.log_record,
            resource=resource,
            instrumentation_scope=record.instrumentation_scope,
            limits=record.limits,
        )
        return view
    return ReadableLogRecord(
        log_record=record.log_record,
        resource=resource,
        instrumentation_scope=record.instrumentation_scope,
        limits=record.limits,
    )


def _fast_readable_check() -> bool:
    """Whether ReadableLogRecord is still a plain dataclass of those four fields."""
    try:
        names = tuple(field.name for field in dataclasses.fields(ReadableLogRecord))
        return (
            names == ("log_record", "resource", "instrumentation_scope", "limits")
            and not hasattr(ReadableLogRecord, "__post_init__")
            and not hasattr(ReadableLogRecord, "__slots__")
        )
    except Exception:  # pragma: no cover - an SDK change
        return False


_FAST_READABLE = _fast_readable_check()

"""The structlog -> OpenTelemetry bridge.

On the caller's thread the final processor (`OTelBridge`) only captures: the timestamp, the
level, the logger name, the event dict (non-primitive values coerced to a snapshot), the
current OTel context (so trace/span ids are the caller's, never the worker's) and the
exception. The wrapped logger (`Sink`) puts that capture on the bridge's intake queue. The
bridge's worker turns each capture into one OTel LogRecord and emits it through the SDK
Logger of the LoggerProvider, whose processors fan it out to the exporters.

DESIGN.md's measurements: emitting through the SDK on the caller costs ~18 us per event;
capturing and emitting in a worker costs ~5 us on the caller.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, MutableMapping
from math import isfinite as _isfinite
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace

from fapilog import _diag
from fapilog._coerce import PRIMITIVES, coerce_attributes, coerce_value
from fapilog._otel_logs import (
    Logger,
    LoggerProvider,
    SeverityNumber,
    emit,
    fast_emit_supported,
    make_record,
    sdk_logger,
    span_context_of,
    std_to_severity,
)
from fapilog._pipeline import BatchQueue, collect_batch
from fapilog.settings import QueueSettings

__all__ = [
    "METHOD_LEVELS",
    "Bridge",
    "OTelBridge",
    "Pending",
    "Sink",
    "event_fields",
    "set_bridge",
]


class _Level(NamedTuple):
    stdlib: int
    severity: SeverityNumber
    text: str


METHOD_LEVELS: dict[str, _Level] = {
    "debug": _Level(10, SeverityNumber.DEBUG, "DEBUG"),
    "info": _Level(20, SeverityNumber.INFO, "INFO"),
    "msg": _Level(20, SeverityNumber.INFO, "INFO"),
    "warning": _Level(30, SeverityNumber.WARN, "WARNING"),
    "warn": _Level(30, SeverityNumber.WARN, "WARNING"),
    "error": _Level(40, SeverityNumber.ERROR, "ERROR"),
    "exception": _Level(40, SeverityNumber.ERROR, "ERROR"),
    "critical": _Level(50, SeverityNumber.FATAL, "CRITICAL"),
    "fatal": _Level(50, SeverityNumber.FATAL, "CRITICAL"),
}
_INFO = METHOD_LEVELS["info"]


class Pending(NamedTuple):
    """One captured event, waiting in the intake queue."""

    timestamp: int  # ns since the epoch
    severity: SeverityNumber
    severity_text: str
    logger: str
    event: dict[str, Any]
    context: otel_context.Context
    exception: BaseException | None


class Sink:
    """The wrapped logger at the end of structlog's chain: it hands the capture to the
    bridge. One per logger name (interned), carrying that name's minimum level."""

    __slots__ = ("min_level", "name")

    def __init__(self, name: str, min_level: int = 20) -> None:
        self.name = name
        self.min_level = min_level

    def _put(self, pending: Pending) -> None:
        _STATE.put(pending)

    debug = info = msg = warning = warn = error = exception = critical = fatal = log = _put

    def __repr__(self) -> str:
        return f"<fapilog.Sink {self.name!r}>"


class _StdlibSink(Sink):
    """Sink for one stdlib LogRecord: carries the record's own time and level."""

    __slots__ = ("created_ns", "level")

    def __init__(self, name: str, created_ns: int, level: _Level) -> None:
        super().__init__(name, 0)
        self.created_ns = created_ns
        self.level = level


_get_current = otel_context.get_current
_new_tuple = tuple.__new__
_SPAN_KEY: str = trace._SPAN_KEY  # type: ignore[attr-defined]  # the context key under which OTel stores the current span


def _exception_of(exc_info: Any) -> BaseException | None:
    if exc_info is None or exc_info is False:
        return None
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    return sys.exc_info()[1]  # exc_info=True, or log.exception()


class OTelBridge:
    """The final structlog processor: capture the event for the bridge (see module doc)."""

    __slots__ = ()

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> tuple[tuple[Pending], dict[str, Any]]:
        return ((capture(logger, method_name, event_dict),), {})


def capture(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Pending:
    event = event_dict if type(event_dict) is dict else dict(event_dict)
    exc = None
    if "exc_info" in event:
        exc = _exception_of(event.pop("exc_info"))
    elif method_name == "exception":
        exc = sys.exc_info()[1]
    for value in event.values():
        kind = type(value)
        # a finite float is already an AnyValue: no walk for it (durations, ratios)
        if kind not in PRIMITIVES and (kind is not float or not _isfinite(value)):
            coerce_attributes(event)
            break
    if isinstance(logger, _StdlibSink):
        level = logger.level
        timestamp = logger.created_ns
    else:
        level = METHOD_LEVELS.get(method_name, _INFO)
        timestamp = time.time_ns()
    name = logger.name if isinstance(logger, Sink) else getattr(logger, "name", "structlog")
    # (tuple.__new__ directly: the generated NamedTuple __new__ costs ~0.1 us more)
    return _new_tuple(
        Pending, (timestamp, level.severity, level.text, name, event, _get_current(), exc)
    )


def stdlib_sink(name: str, created: float, levelno: int, levelname: str) -> _StdlibSink:
    level = METHOD_LEVELS.get(levelname.lower())
    if level is None or level.stdlib != levelno:
        level = _Level(levelno, std_to_severity(levelno), levelname)
    return _StdlibSink(name, int(created * 1e9), level)


def _span_context(ctx: otel_context.Context) -> trace.SpanContext | None:
    span: trace.Span | None = ctx.get(_SPAN_KEY)  # type: ignore[assignment]
    if span is None:
        return None
    span_context = span.get_span_context()
    return span_context if span_context.is_valid else None


def event_fields(pending: Pending) -> tuple[Any, dict[str, Any]]:
    """The body and attributes of a captured event: the message comes out of `event`, the
    trace ids move to the record's own fields, the exception becomes the OTel semantic
    convention attributes."""
    body, attributes, _ = _record_fields(pending)
    return body, attributes


def _record_fields(pending: Pending) -> tuple[Any, dict[str, Any], trace.SpanContext]:
    """`event_fields`, plus the span context of the event's OTel context (read once)."""
    attributes = pending.event
    body = attributes.pop("event", None)
    if body is not None and type(body) is not str:
        body = coerce_value(body)
    span_context = span_context_of(pending.context)
    if span_context.is_valid:
        attributes.pop("trace_id", None)
        attributes.pop("span_id", None)
    if pending.exception is not None:
        attributes.update(exception_attributes(pending.exception))
    return body, attributes, span_context


def exception_attributes(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    module = kind.__module__
    name = (
        kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {kind.__qualname__}>"
    try:
        stack = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    except Exception:
        stack = f"{name}: {message}"
    return {"exception.type": name, "exception.message": message, "exception.stacktrace": stack}


class Bridge:
    """The intake queue and its worker, emitting LogRecords through `provider`."""

    def __init__(self, provider: LoggerProvider, settings: QueueSettings) -> None:
        self.provider = provider
        self._loggers: dict[str, tuple[Logger, bool]] = {}
        self.errors = 0
        # the intake hands over immediately: batching happens per exporter
        self.intake: BatchQueue[Pending] = BatchQueue(
            "intake", self._emit_batch, _pending_severity, settings, max_delay=0
        )
        self.put = self.intake.put

    def _emit_batch(self, batch: list[Pending]) -> None:
        with collect_batch():
            self._emit_each(batch)

    def _emit_each(self, batch: list[Pending]) -> None:
        loggers = self._loggers
        for pending in batch:
            try:
                body, attributes, span_context = _record_fields(pending)
                record = make_record(
                    timestamp=pending.timestamp,
                    context=pending.context,
                    severity_number=pending.severity,
                    severity_text=pending.severity_text,
                    body=body,
                    attributes=attributes,
                    span_context=span_context,
                )
                entry = loggers.get(pending.logger)
                if entry is None:
                    logger = sdk_logger(self.provider, pending.logger)
                    entry = loggers[pending.logger] = (logger, fast_emit_supported(logger))
                emit(entry[0], record, entry[1])
            except Exception as exc:
                self.errors += 1
                _diag.report("bridge", f"fapilog could not emit a record: {exc!r}")

    def flush(self, timeout: float) -> bool:
        return self.intake.flush(timeout)

    def shutdown(self, timeout: float) -> bool:
        return self.intake.shutdown(timeout)


def _pending_severity(pending: Pending) -> int:
    return pending.severity.value


class _State:
    """Where sinks put captures: the configured bridge, or the auto-configuration hook."""

    def __init__(self) -> None:
        self.bridge: Bridge | None = None
        self.autoconfigure: Callable[[], Bridge | None] | None = None
        self._lock = threading.Lock()
        self.dropped_unconfigured = 0

    def put(self, pending: Pending) -> None:
        bridge = self.bridge
        if bridge is None:
            hook = self.autoconfigure
            bridge = hook() if hook is not None else None
            if bridge is None:
                self.dropped_unconfigured += 1
                return
        bridge.put(pending)


_STATE = _State()


def set_bridge(bridge: Bridge | None) -> None:
    _STATE.bridge = bridge


def state() -> _State:
    return _STATE

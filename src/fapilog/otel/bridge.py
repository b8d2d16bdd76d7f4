"""The bridge: captured records in, OpenTelemetry LogRecords out.

Loggers hand each `Pending` capture (see `fapilog.capture.record`) to the bridge's intake
queue and return. The bridge's worker turns each into one OpenTelemetry LogRecord (body,
attributes, trace context, exception as semantic-convention attributes) and emits it
through the SDK Logger of the LoggerProvider, whose processors (fapilog's `Router`) fan it
out to the exporters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import time_ns
from typing import Any, NamedTuple

from opentelemetry import trace

from fapilog import _diag
from fapilog._levels import OTEL_TEXT
from fapilog.capture.coerce import coerce_value
from fapilog.capture.record import Pending
from fapilog.otel.logs import (
    Logger,
    LoggerProvider,
    LogRecordProcessor,
    ReadableLogRecord,
    emit,
    fast_emit_supported,
    make_record,
    uncached_logger,
)
from fapilog.otel.semconv import exception_attributes
from fapilog.otel.trace import span_context_of
from fapilog.pipeline.intake import IntakeQueue
from fapilog.pipeline.router import ExportProcessor, collect_batch
from fapilog.pipeline.routes import ROUTES, Routes
from fapilog.settings import QueueSettings

__all__ = ["Bridge", "Forward", "LOGGER_GENERATION", "event_fields"]

_otel_text = OTEL_TEXT.get

# The SDK Loggers the bridge keeps, by logger name: at most two generations of this many
# names. A name used during the current generation stays; one unused for a whole
# generation is forgotten, and its Logger is built again if the name comes back. The
# provider keeps none of them (`uncached_logger`), so memory stays bounded however many
# logger names a process uses.
LOGGER_GENERATION = 1024


class Forward(NamedTuple):
    """A LogRecord someone else emitted on an application thread (the OpenTelemetry logs
    API, FastAPI's own telemetry) on its way to fapilog's exporter queues: it travels
    through the intake too, so no application thread takes an exporter queue's lock."""

    targets: Sequence[ExportProcessor]
    severity: int
    record: ReadableLogRecord


def event_fields(pending: Pending) -> tuple[Any, dict[str, Any]]:
    """The body and attributes of a captured event: the message comes out of `event`, the
    trace ids move to the record's own fields, the exception becomes the OpenTelemetry
    semantic-convention attributes (an ``event.name`` stays among them here)."""
    body, attributes, _, event_name = _record_fields(pending)
    if event_name is not None:
        attributes["event.name"] = event_name
    return body, attributes


def _record_fields(
    pending: Pending,
) -> tuple[Any, dict[str, Any], trace.SpanContext, str | None]:
    """`event_fields`, plus the span context of the event's OTel context (read once) and
    the record's ``event_name``: a text ``event.name`` moves out of the attributes into
    the record's own field, as the logs data model has it."""
    attributes = pending.event
    body = attributes.pop("event", None)
    if type(body) is not str:  # (None, like text, comes back as it is)
        body = coerce_value(body)
    span_context = span_context_of(pending.context)
    if span_context.is_valid:
        attributes.pop("trace_id", None)
        attributes.pop("span_id", None)
    event_name = attributes.pop("event.name", None)
    if event_name is not None and type(event_name) is not str:
        attributes["event.name"] = event_name  # (not a name: an ordinary attribute)
        event_name = None
    if pending.exception is not None:
        attributes.update(exception_attributes(pending.exception))
    return body, attributes, span_context, event_name


def _severity(item: Pending | Forward) -> int:
    if isinstance(item, Forward):
        return item.severity
    return item.severity.value


def _route(
    routes: Routes,
    collected: list[tuple[Sequence[ExportProcessor], ReadableLogRecord]],
    index: int,
    pending: Pending,
) -> None:
    """Leave the record at `index` only to the exporters whose level takes it
    (`fapilog.pipeline.routes`); the others count it as filtered."""
    targets, record = collected[index]
    chosen, left = routes.choose(targets, pending.logger, pending.severity.value)
    if left:
        collected[index] = (chosen, record)
        for target in left:
            target.filtered += 1


class Bridge:
    """The intake queue and its worker, emitting LogRecords through `provider`.

    `earlier`: the bridge this one replaces (a configuration after a shutdown): its figures
    carry over, so `fapilog.stats()` adds up over the process's life."""

    def __init__(
        self,
        provider: LoggerProvider,
        settings: QueueSettings,
        earlier: Bridge | None = None,
        router: LogRecordProcessor | None = None,
    ) -> None:
        self.provider = provider
        # fapilog's processor on `provider`: under OTEL_SDK_DISABLED the only one records
        # reach (`uncached_logger`), as the SDK keeps the others from receiving any
        self.router = router
        # SDK Loggers by name: the current generation and the one before (see
        # LOGGER_GENERATION); and whether `emit` may take its shortcut with them
        self._loggers: dict[str, Logger] = {}
        self._older: dict[str, Logger] = {}
        self._fast = False
        # what a logger name becomes on the way out (redaction): applied once per name
        self._shown: Callable[[str], str] | None = None
        self.errors: int = earlier.errors if earlier is not None else 0
        # the intake hands over immediately: batching happens per exporter
        self.intake: IntakeQueue[Pending | Forward] = IntakeQueue(
            "intake", self._emit_batch, _severity, settings
        )
        if earlier is not None:
            self.intake.inherit(earlier.intake)
        self.put = self.intake.put

    def forward(self, targets: Sequence[ExportProcessor], record: ReadableLogRecord) -> bool:
        """Queue a record emitted on another thread for `targets` (see `Forward`)."""
        number = record.log_record.severity_number
        return self.intake.put(Forward(targets, number.value if number is not None else 0, record))

    def _emit_batch(self, batch: list[Pending | Forward]) -> None:
        with collect_batch(self.intake.is_full, self.intake.gave_up) as collected:
            self._emit_each(batch, collected)

    def _emit_each(
        self,
        batch: list[Pending | Forward],
        collected: list[tuple[Sequence[ExportProcessor], ReadableLogRecord]],
    ) -> None:
        loggers = self._loggers
        fast = self._fast
        routes = ROUTES if ROUTES.active else None
        for pending in batch:
            if isinstance(pending, Forward):
                targets = pending.targets
                if routes is not None:
                    scope = pending.record.instrumentation_scope
                    name = scope.name if scope is not None else ""
                    targets, left = routes.choose(targets, name, pending.severity)
                    for target in left:
                        target.filtered += 1
                collected.append((targets, pending.record))
                continue
            count = len(collected)
            try:
                body, attributes, span_context, event_name = _record_fields(pending)
                record = make_record(
                    timestamp=pending.timestamp,
                    context=pending.context,
                    severity_number=pending.severity,
                    severity_text=_otel_text(pending.severity_text, pending.severity_text),
                    body=body,
                    attributes=attributes,
                    span_context=span_context,
                    # the time the record was observed: a handler's (stdlib), else now
                    observed_timestamp=pending.observed or time_ns(),
                    event_name=event_name,
                )
                logger = loggers.get(pending.logger)
                if logger is None:
                    logger = self._logger_for(pending.logger)
                    loggers = self._loggers
                    fast = self._fast
                emit(logger, record, fast)
            except Exception as exc:
                if len(collected) == count:  # fapilog's Router never got it: lost here
                    self.errors += 1
                    what = _diag.describe(exc)
                    _diag.report("bridge", f"fapilog could not emit a record: {what}")
                    continue
                # a processor after fapilog's Router raised: the record is on its way
                _diag.report(
                    "bridge-after",
                    f"a log record processor after fapilog's raised: {_diag.describe(exc)}; "
                    "fapilog's exporters have the record",
                )
            if routes is not None and len(collected) > count and type(pending) is Pending:
                _route(routes, collected, count, pending)

    def show_names_as(self, shown: Callable[[str], str] | None) -> None:
        """Name each logger's records `shown(name)` from now on (the redactor's text
        redaction: a logger name never carries a secret out). Once per name: the SDK Logger
        of a name is kept."""
        if shown is not self._shown:
            self._shown = shown
            self._loggers, self._older = {}, {}

    def _logger_for(self, name: str) -> Logger:
        """The SDK Logger for `name` (not in the current generation): from the generation
        before, or built; a full generation becomes the older one."""
        logger = self._older.pop(name, None)
        if logger is None:
            shown = self._shown
            shown_name = name if shown is None else shown(name)
            logger = uncached_logger(self.provider, shown_name, only_when_disabled=self.router)
            self._fast = fast_emit_supported(logger)
        loggers = self._loggers
        if len(loggers) >= LOGGER_GENERATION:
            self._older = loggers
            loggers = self._loggers = {}
        loggers[name] = logger
        return logger

    def flush(self, timeout: float) -> bool:
        flushed: bool = self.intake.flush(timeout)
        return flushed

    def shutdown(self, timeout: float) -> bool:
        drained: bool = self.intake.shutdown(timeout)
        return drained

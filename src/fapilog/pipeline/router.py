"""From the LoggerProvider to the exporters: the `Router` fans each record out to one
`ExportProcessor` per exporter, each a `BatchQueue` with its own worker, so a slow or failing
exporter never stalls the caller, the bridge or the other exporters.

Shutdown runs every exporter's drain in parallel under one deadline (`shutdown_processors`);
calls into an exporter that may block on a dead endpoint are bounded (`call_bounded`).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from structlog.contextvars import get_contextvars

from fapilog import _diag
from fapilog._state import STATE, start_worker, worker_thread
from fapilog.exporters.contract import (
    UNKNOWN_OUTCOME,
    Abortable,
    DetailedStats,
    PartialLoss,
    Progress,
    Retryable,
)
from fapilog.otel.logs import (
    LogRecordExporter,
    LogRecordExportResult,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
    add_attribute,
    readable,
)
from fapilog.pipeline import alerts, metrics
from fapilog.pipeline.accounting import IntakeMark
from fapilog.pipeline.direct import Direct, direct_exporters, use_writers, write_foreign
from fapilog.pipeline.queue import BatchQueue, Outcome, Reason
from fapilog.pipeline.routes import ROUTES
from fapilog.pipeline.spool import Spool
from fapilog.pipeline.spooling import SpoolingQueue
from fapilog.settings import QueueSettings

__all__ = [
    "ExportProcessor",
    "Router",
    "call_bounded",
    "collect_batch",
    "shutdown_processors",
]


def call_bounded(name: str, function: Callable[[], Any], timeout: float) -> bool:
    """Run `function` in a daemon thread, waiting at most `timeout` s for it (exporter
    shutdown/flush calls can block on a dead endpoint). Returns whether it finished."""
    run = _quietly(name, function)
    thread = start_worker(name, run)
    if thread is None:  # interpreter shutdown: no new thread; call it here
        run()
        return True
    thread.join(max(0.0, timeout))
    return not thread.is_alive()


# how long an exporter told to abort at the deadline has to return before its batch is
# written off (the one exit bound is shutdown_timeout plus this)
ABORT_GRACE = 0.3
# an export in flight for longer than this does not count as working at the final drain
# (an endpoint that accepts the connection and never answers has not failed yet)
STUCK_AFTER = 1.0


def shutdown_processors(
    processors: Sequence[ExportProcessor], timeout: float, *, working_until: float | None = None
) -> bool:
    """Shut exporters down together under one deadline, in parallel, with no new thread:
    every queue is told to deliver what it holds, then each worker calls its exporter's own
    `shutdown()` and stops. At the deadline an exporter still busy (retrying a dead
    endpoint) is told to abort, if it can (`fapilog.exporters.Abortable`), and given
    `ABORT_GRACE` seconds; what is still queued or in flight then is counted as dropped,
    reason ``shutdown_timeout``. `working_until` (time.monotonic(), later than the
    deadline): how long exporters whose last export succeeded may go on delivering (the
    final drain of an exiting process; see `ExportProcessor.is_working`). Returns whether
    everything was delivered and every exporter's `shutdown()` returned without raising.
    Exporters already shutting down (those a reconfiguration replaced drain on a thread of
    their own) are waited for too, under the same deadline."""
    deadline = time.monotonic() + max(0.0, timeout)
    for processor in processors:
        if not processor._shutdown:
            processor._shutdown = True
            processor.queue.begin_shutdown()
    now = time.monotonic()

    def until(processor: ExportProcessor) -> float:
        if processor.is_working():
            return working_until if working_until is not None else deadline
        # a failing exporter with a spool is not waited for: what it holds goes to disk
        return now if processor.spool is not None else deadline

    stuck = [processor for processor in processors if not processor.queue.join(until(processor))]
    aborted = [processor for processor in stuck if processor.abort()]
    if aborted:
        deadline = time.monotonic() + ABORT_GRACE
    drained = True
    for processor in processors:
        drained = processor.queue.finish_shutdown(deadline) and drained
    return drained


def _quietly(name: str, function: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with worker_thread():
            try:
                function()
            except Exception as exc:
                _diag.report(f"call:{name}", f"fapilog: {name} raised {_diag.describe(exc)}")

    return run


def _record_severity(record: ReadableLogRecord) -> int:
    number = record.log_record.severity_number
    return number.value if number is not None else 0


class ExportProcessor:
    """One exporter behind its own bounded queue and worker: a slow or failing exporter
    never stalls the caller, the bridge or the other exporters."""

    def __init__(
        self,
        name: str,
        exporter: LogRecordExporter,
        settings: QueueSettings,
        *,
        max_delay: float | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.name = name
        self.exporter = exporter
        self.export_timeout = settings.export_timeout
        self.spool = spool
        if spool is not None and isinstance(getattr(exporter, "spooled", None), bool):
            exporter.spooled = True  # type: ignore[attr-defined]  # (what it gives up is kept)
        options: dict[str, Any] = {
            "max_delay": max_delay,
            "on_stop": exporter.shutdown,
            "delivered_so_far": (
                (lambda: exporter.export_progress) if isinstance(exporter, Progress) else None
            ),
        }
        self.queue: BatchQueue[ReadableLogRecord] = (
            SpoolingQueue(name, self._export, _record_severity, settings, spool=spool, **options)
            if spool is not None
            else BatchQueue(name, self._export, _record_severity, settings, **options)
        )
        self._shutdown = False
        # records this exporter did not take: below its level (fapilog.pipeline.routes)
        self.filtered = 0
        # the intake's figures when this exporter started and stopped receiving records
        # (`fapilog.pipeline.accounting`): what was emitted during its life is its own
        self.intake_start: IntakeMark = IntakeMark()
        self.intake_end: IntakeMark | None = None
        # the exporter's optional extras (see fapilog.exporters.contract)
        self._reports_loss = isinstance(exporter, PartialLoss)
        self._details = isinstance(exporter, DetailedStats)
        self._abortable = isinstance(exporter, Abortable)
        self._retryable = isinstance(exporter, Retryable)
        self._after_fork_in_child()
        _PROCESSORS.add(self)

    def _after_fork_in_child(self) -> None:
        self.failures = 0
        self.consecutive_failures = 0
        self.export_seconds = 0.0
        self.export_began: float | None = None  # time.monotonic() of the export in flight

    @property
    def exported(self) -> int:
        return self.queue.delivered

    def put(self, record: ReadableLogRecord) -> None:
        self.queue.put(record)

    def put_many(
        self,
        records: Sequence[ReadableLogRecord],
        upstream_full: Callable[[], bool] | None = None,
        upstream_gone: Callable[[], bool] | None = None,
    ) -> None:
        self.queue.put_many(records, upstream_full, upstream_gone)

    def is_working(self) -> bool:
        """Whether the exporter looks healthy: its last export succeeded and none has been
        in flight for longer than `STUCK_AFTER` seconds."""
        began = self.export_began
        stuck = began is not None and time.monotonic() - began > STUCK_AFTER
        return not self.consecutive_failures and not stuck

    def _export(self, batch: list[ReadableLogRecord]) -> Outcome[ReadableLogRecord]:
        self.export_began = time.monotonic()
        started = time.perf_counter()
        error: str | None = None
        lost: Any = None
        retry: Any = None
        reason: Reason = "export_failed"
        try:
            result = self.exporter.export(batch)
            if self._retryable:
                retry = self.exporter.last_export_retry  # type: ignore[attr-defined]
            if self._reports_loss:
                # how many records of a failed export were lost (fapilog's Loki exporter:
                # a line too long, one request of several rejected), and why
                lost = self.exporter.last_export_dropped  # type: ignore[attr-defined]
                given = getattr(self.exporter, "last_export_reason", None)
                if isinstance(given, str) and given:
                    reason = given
                by_reason = getattr(self.exporter, "last_export_reasons", None)
                if isinstance(by_reason, dict):
                    by_reason = list(by_reason.items())
                if isinstance(by_reason, (list, tuple)) and by_reason:
                    reason = [(str(name), int(count)) for name, count in by_reason]
        except Exception as exc:
            result = LogRecordExportResult.FAILURE
            error = _diag.describe(exc)
        finally:
            self.export_began = None
        raised = error is not None
        elapsed = time.perf_counter() - started
        self.export_seconds += elapsed
        ok = result == LogRecordExportResult.SUCCESS
        if ok:
            self.consecutive_failures = 0
        else:
            self.failures += 1
            self.consecutive_failures += 1
            if error is None:
                error = f"export returned {result!r}"
        metrics.record_export(self.name, ok, elapsed)
        alerts.note_export(
            self.name,
            ok,
            records=len(batch),
            consecutive=self.consecutive_failures,
            error=error,
        )
        if elapsed > self.export_timeout:
            _diag.report(
                f"export-slow:{self.name}",
                f"fapilog exporter {self.name!r} took {elapsed:.1f} s for one export, more "
                f"than export_timeout ({self.export_timeout} s)",
                exporter=self.name,
            )
        if ok:
            return None
        if type(lost) is not int or not 0 <= lost < len(batch):
            lost = len(batch)
        if self.spool is None:
            return (reason, lost)
        if not isinstance(retry, list):  # not told: all of a batch lost whole may be retried
            retry = list(batch) if lost == len(batch) and not raised else []
        return (reason, lost, retry)

    def force_flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        flushed = self.queue.flush(timeout)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            millis = int(remaining * 1000)
            call_bounded(f"{self.name}-flush", lambda: self.exporter.force_flush(millis), remaining)
        return flushed

    def shutdown(self, timeout: float) -> bool:
        """Drain and stop, at most `timeout` s however the exporter behaves."""
        return shutdown_processors([self], timeout)

    def abort(self) -> bool:
        """The deadline passed with the exporter still busy: tell it to give up now (it
        returns at once). Returns whether it was told (only exporters that can,
        `Abortable`)."""
        if not self._abortable:
            return False
        try:
            self.exporter.abort()  # type: ignore[attr-defined]
        except Exception as exc:
            what = _diag.describe(exc)
            _diag.report(f"abort:{self.name}", f"fapilog: {self.name}.abort() raised {what}")
            return False
        return True

    def stats(self) -> dict[str, Any]:
        queue = self.queue
        figures: dict[str, Any] = {
            "offered": queue.offered,
            "exported": queue.delivered,
            "dropped": queue.total_dropped(),
            "dropped_by_reason": dict(queue.dropped),
            "queued": queue.depth,
            "in_flight": queue.in_flight,
            "accepted": queue.accepted,
            "capacity": queue.max_size,
            "filtered": self.filtered,
            "export_failures": self.failures,
            "export_seconds": round(self.export_seconds, 6),
        }
        # records whose fate the exporter cannot know: a term of their own, not dropped
        unknown = figures["dropped_by_reason"].pop(UNKNOWN_OUTCOME, 0)
        figures["dropped"] -= unknown
        figures["unknown_outcome"] = unknown
        spool = self.spool
        if spool is not None and spool.torn:  # cut off by a crash, found when adopted
            figures["dropped_by_reason"]["spool_torn"] = spool.torn
            figures["dropped"] += spool.torn
        figures["spooled"] = spool.pending if spool is not None else 0
        figures["adopted"] = spool.adopted if spool is not None else 0
        if self._details:
            try:
                figures["details"] = self.exporter.stats()  # type: ignore[attr-defined]
            except Exception as exc:  # an exporter's own figures must not break stats()
                what = _diag.describe(exc)
                _diag.report(f"stats:{self.name}", f"fapilog: {self.name}.stats() raised {what}")
        if spool is not None:
            figures["spool"] = spool.stats()
        return figures


class _Collecting(threading.local):
    """Per thread: the records Routers collected while that thread emits a batch."""

    records: list[tuple[Sequence[ExportProcessor], ReadableLogRecord]] | None = None


_COLLECTING = _Collecting()


class collect_batch:
    """Context manager for a thread that emits a batch of records (the bridge's worker):
    while it is active, Routers collect that thread's records and hand them to each
    exporter queue once at the end (`put_many`: one lock acquisition per batch instead of
    one per record), in the order they were emitted. Other threads are not affected.
    `as` gives the list being collected (the bridge adds forwarded records to it).
    `upstream_full()` and `upstream_gone()`, if given, say whether the emitting thread's own
    queue is full, or past its shutdown deadline (see `BatchQueue.put_many`)."""

    __slots__ = ("_outer", "_upstream_full", "_upstream_gone")

    def __init__(
        self,
        upstream_full: Callable[[], bool] | None = None,
        upstream_gone: Callable[[], bool] | None = None,
    ) -> None:
        self._upstream_full = upstream_full
        self._upstream_gone = upstream_gone

    def __enter__(self) -> list[tuple[Sequence[ExportProcessor], ReadableLogRecord]]:
        self._outer = _COLLECTING.records
        collected: list[tuple[Sequence[ExportProcessor], ReadableLogRecord]] = []
        _COLLECTING.records = collected
        return collected

    def __exit__(self, *exc: object) -> None:
        collected = _COLLECTING.records
        _COLLECTING.records = self._outer
        if collected:
            _dispatch(collected, self._upstream_full, self._upstream_gone)


def _dispatch(
    collected: list[tuple[Sequence[ExportProcessor], ReadableLogRecord]],
    upstream_full: Callable[[], bool] | None,
    upstream_gone: Callable[[], bool] | None,
) -> None:
    """Hand collected records to their targets: each run of records routed to the same
    target set goes to each target in one `put_many`."""
    start = 0
    count = len(collected)
    while start < count:
        targets = collected[start][0]
        end = start + 1
        while end < count and collected[end][0] is targets:
            end += 1
        records = [pair[1] for pair in collected[start:end]]
        for target in targets:
            try:
                target.put_many(records, upstream_full, upstream_gone)
            except Exception as exc:  # (put_many never raises by design)
                _diag.report("router", f"fapilog could not queue records: {exc!r}")
        start = end


class Router(LogRecordProcessor):
    """The single LogRecordProcessor fapilog adds to a LoggerProvider.

    Added once per provider (the SDK has no way to remove a processor), it fans each record
    out to the current set of `ExportProcessor`s, which a reconfiguration swaps. On a thread
    inside `collect_batch` (the bridge's worker) it collects the records and queues them at
    the end of the batch. A record someone else emits on an application thread goes through
    the bridge's lock-free intake (`Bridge.forward`): no application thread ever takes an
    exporter queue's lock, so a signal handler's drain never waits on one. The console,
    which writes on the calling thread, writes such a record first
    (`fapilog.pipeline.direct`).
    """

    def __init__(self) -> None:
        self._targets: Sequence[ExportProcessor] = ()
        self.direct: tuple[Direct, ...] = ()

    @property
    def targets(self) -> Sequence[ExportProcessor]:
        return self._targets

    @targets.setter
    def targets(self, targets: Sequence[ExportProcessor]) -> None:
        """The exporters from now on (a configuration sets them): those that write on the
        calling thread (the console) write each capture there from now on."""
        self._targets = targets
        ROUTES.name_writers(targets)
        self.direct = direct_exporters(getattr(target, "exporter", None) for target in targets)
        use_writers(self.direct)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        targets = self._targets
        if not targets:
            return
        collected = _COLLECTING.records
        if collected is not None:
            collected.append((targets, readable(log_record)))
            return
        # a record someone else emitted on an application thread (FastAPI's telemetry,
        # OpenTelemetry's LoggingHandler) belongs to the request being handled, if any
        _with_request_id(log_record)
        record = readable(log_record)
        writers = self.direct
        if writers and ROUTES.active:  # (only what reaches the console's own level)
            scope = record.instrumentation_scope
            number = record.log_record.severity_number
            name, severity = (scope.name if scope else ""), (number.value if number else 0)
            writers = tuple(w for w in writers if ROUTES.writes(w, name, severity))
        if writers:  # the console writes it now, in call order
            write_foreign(writers, record)
        bridge = STATE.bridge
        if bridge is not None and not STATE.shut_down:
            bridge.forward(targets, record)
            return
        for target in targets:  # no bridge (shut down): queued (or counted) directly
            target.put(record)

    def shutdown(self) -> None:
        return None  # fapilog shuts its processors down itself, with a deadline

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _with_request_id(log_record: ReadWriteLogRecord) -> None:
    """Give the record the request's `request_id` (bound by fapilog's request middleware),
    as every line fapilog logs during the request has it. Never fails the record."""
    request_id = get_contextvars().get("request_id")
    if request_id is None:
        return
    try:
        add_attribute(log_record, "request_id", str(request_id))
    except Exception as exc:  # an SDK record of another shape: the record goes on without
        _diag.report("foreign-request-id", f"fapilog could not add request_id: {exc!r}")


_PROCESSORS: weakref.WeakSet[ExportProcessor] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for processor in list(_PROCESSORS):
        processor._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)

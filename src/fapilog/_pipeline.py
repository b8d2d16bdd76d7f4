"""The non-blocking pipeline: bounded queues, background workers, overflow policies.

`BatchQueue` is the one mechanism: a bounded deque guarded by a condition, one daemon worker
woken by notification (never polling), a consumer called with batches. It backs both the
bridge's intake queue (captured events -> LogRecords) and each exporter's queue
(`ExportProcessor`). Every record that enters is accounted for: consumed, or dropped and
counted by reason. Errors are the last records shed under every policy.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from fapilog import _diag
from fapilog._otel_logs import (
    LogRecordExporter,
    LogRecordExportResult,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
    readable,
)
from fapilog.settings import QueueSettings

__all__ = [
    "ERROR_SEVERITY",
    "WARN_SEVERITY",
    "BatchQueue",
    "ExportProcessor",
    "Router",
    "worker_thread_ids",
]

T = TypeVar("T")
WARN_SEVERITY = 13  # OTel SeverityNumber.WARN
ERROR_SEVERITY = 17  # OTel SeverityNumber.ERROR

# Idents of fapilog's worker threads: logging done on them (an SDK warning, an exporter's
# own library) must not re-enter the pipeline.
_WORKER_IDS: set[int] = set()


def worker_thread_ids() -> set[int]:
    return _WORKER_IDS


class BatchQueue(Generic[T]):
    """A bounded queue drained in batches by one background worker.

    `severity(item)` ranks items for shedding (OTel severity numbers). `consume(batch)` runs
    on the worker; it must not raise (exceptions are reported and the batch counted dropped).
    """

    def __init__(
        self,
        name: str,
        consume: Callable[[list[T]], None],
        severity: Callable[[T], int],
        settings: QueueSettings,
        *,
        max_delay: float | None = None,
    ) -> None:
        self.name = name
        self._consume = consume
        self._severity = severity
        self.max_size = settings.max_size
        self.batch_size = min(settings.batch_size, settings.max_size)
        self.max_delay = settings.max_delay if max_delay is None else max_delay
        self.overflow = settings.overflow
        self.block_timeout = settings.block_timeout
        self.sample_ratio = settings.sample_ratio
        self.high_water = max(1, int(settings.max_size * settings.high_water))
        self._random = random.Random()
        self._init_state()
        self.accepted = 0  # items that entered the queue
        self.consumed = 0  # items handed to consume()
        self.dropped: dict[str, int] = {}
        self._sync = False
        _QUEUES.add(self)

    def _init_state(self) -> None:
        self._queue: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._settled = 0  # items that left the queue (consumed or evicted)
        self._entered = 0
        self._busy = False
        self._first_at = 0.0
        self._flushers = 0
        self._stopping = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # -- caller side -------------------------------------------------------------------

    def put(self, item: T) -> bool:
        """Enqueue without waiting on the consumer (except policy `block`, bounded).
        Returns whether the item was accepted."""
        if self._thread is None and not self._sync:
            self._start()
        if self._sync:
            return self._put_sync(item)
        cond = self._cond
        with cond:
            if self._stopped:
                self._count_drop("shutdown")
                return False
            queue = self._queue
            size = len(queue)
            if (
                size >= self.high_water
                and self.overflow == "sample"
                and self._severity(item) < WARN_SEVERITY
                and self._random.random() >= self.sample_ratio
            ):
                self._count_drop("sampled")
                return False
            if size >= self.max_size:
                if self.overflow == "block" and not self._wait_for_room():
                    if not self._make_room(item, "block_timeout"):
                        return False
                elif self.overflow != "block" and not self._make_room(item, "queue_full"):
                    return False
            queue.append(item)
            self.accepted += 1
            self._entered += 1
            size = len(queue)
            if size == 1:
                self._first_at = time.monotonic()
                cond.notify()
            elif size == self.batch_size:
                cond.notify()
        return True

    def _wait_for_room(self) -> bool:
        """Policy block: wait (holding no lock) for room, at most block_timeout.
        A queue's own worker never waits on itself."""
        if self._thread is threading.current_thread():
            return False
        deadline = time.monotonic() + self.block_timeout
        while len(self._queue) >= self.max_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopped:
                return False
            self._cond.wait(remaining)
        return True

    def _make_room(self, item: T, reason: str) -> bool:
        """The queue is full: evict one record, or reject `item`. Below-ERROR records go first."""
        queue = self._queue
        severity = self._severity
        incoming_error = severity(item) >= ERROR_SEVERITY
        if self.overflow in ("drop_oldest",):
            for index, queued in enumerate(queue):
                if severity(queued) < ERROR_SEVERITY:
                    del queue[index]
                    self._evicted(reason)
                    return True
            if incoming_error:  # all queued are errors: the oldest error goes
                queue.popleft()
                self._evicted(reason)
                return True
            self._count_drop(reason)
            return False
        # drop_newest, block (timed out), sample (full): the incoming record is shed unless it
        # is an error and a lesser record can make room for it
        if incoming_error:
            for index in range(len(queue) - 1, -1, -1):
                if severity(queue[index]) < ERROR_SEVERITY:
                    del queue[index]
                    self._evicted(reason)
                    return True
        self._count_drop(reason)
        return False

    def _evicted(self, reason: str) -> None:
        self._settled += 1
        self._count_drop(reason)

    def _count_drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        _diag.report(
            f"drop:{self.name}:{reason}",
            f"fapilog dropped records from queue {self.name!r} ({reason}); "
            "see fapilog.stats() for totals",
            queue=self.name,
            reason=reason,
        )

    def _put_sync(self, item: T) -> bool:
        """No worker could be started (interpreter shutting down, thread limit): deliver on
        the caller's thread rather than lose the record."""
        self.accepted += 1
        self._entered += 1
        self._run_consume([item])
        with self._cond:
            self._settled += 1
        return True

    # -- worker ------------------------------------------------------------------------

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopped:
                return
            thread = threading.Thread(target=self._run, name=f"fapilog-{self.name}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # can't start new thread / interpreter shutdown
                self._sync = True
                return
            self._thread = thread

    def _run(self) -> None:
        ident = threading.get_ident()
        _WORKER_IDS.add(ident)
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run_consume(batch)
                with self._cond:
                    self._busy = False
                    self._settled += len(batch)
                    self._cond.notify_all()
        finally:
            _WORKER_IDS.discard(ident)

    def _next_batch(self) -> list[T] | None:
        cond = self._cond
        with cond:
            queue = self._queue
            while not queue:
                if self._stopping:
                    return None
                cond.wait()
            if (
                len(queue) < self.batch_size
                and self.max_delay > 0
                and not self._flushers
                and not self._stopping
            ):
                deadline = self._first_at + self.max_delay
                while len(queue) < self.batch_size and not self._flushers and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
            count = min(len(queue), self.batch_size)
            batch = [queue.popleft() for _ in range(count)]
            if queue:
                self._first_at = time.monotonic()
            self._busy = True
            cond.notify_all()  # room for blocked callers
            return batch

    def _run_consume(self, batch: list[T]) -> None:
        self.consumed += len(batch)
        try:
            self._consume(batch)
        except BaseException as exc:  # the worker must survive anything
            self._count_drop("consumer_error", len(batch))
            _diag.report(
                f"consume:{self.name}",
                f"fapilog queue {self.name!r} failed to process a batch: {exc!r}",
            )

    # -- control -----------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until everything accepted so far has been consumed, at most `timeout` s."""
        deadline = time.monotonic() + max(0.0, timeout)
        cond = self._cond
        with cond:
            target = self._entered
            if self._settled >= target:
                return True
            if self._thread is None or not self._thread.is_alive():
                return self._settled >= target
            self._flushers += 1
            cond.notify_all()
            try:
                while self._settled < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    cond.wait(remaining)
                return True
            finally:
                self._flushers -= 1

    def shutdown(self, timeout: float) -> bool:
        """Drain, stop the worker, and count whatever the deadline left behind as dropped."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._stopped:
                return True
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        drained = True
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            drained = not thread.is_alive()
        with self._cond:
            self._stopped = True
            left = len(self._queue)
            if left:
                self._queue.clear()
                self._settled += left
                self._count_drop("shutdown_timeout", left)
                drained = False
            self._cond.notify_all()
        return drained

    @property
    def depth(self) -> int:
        return len(self._queue)

    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def _after_fork_in_child(self) -> None:
        """The parent keeps (and exports) what was queued at fork time; the child starts
        empty with fresh locks and starts its own worker on first use."""
        self._init_state()
        self.accepted = 0
        self.consumed = 0
        self.dropped = {}
        self._sync = False


_QUEUES: weakref.WeakSet[BatchQueue[Any]] = weakref.WeakSet()


def _reinit_queues_after_fork() -> None:
    _WORKER_IDS.clear()
    for queue in list(_QUEUES):
        queue._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_queues_after_fork)


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
    ) -> None:
        self.name = name
        self.exporter = exporter
        self.export_timeout = settings.export_timeout
        self.exported = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.export_seconds = 0.0
        self.queue: BatchQueue[ReadableLogRecord] = BatchQueue(
            name, self._export, _record_severity, settings, max_delay=max_delay
        )
        self._shutdown = False

    def put(self, record: ReadableLogRecord) -> None:
        self.queue.put(record)

    def _export(self, batch: list[ReadableLogRecord]) -> None:
        started = time.perf_counter()
        try:
            result = self.exporter.export(batch)
        except Exception as exc:
            result = LogRecordExportResult.FAILURE
            _diag.report(f"export:{self.name}", f"fapilog exporter {self.name!r} raised: {exc!r}")
        self.export_seconds += time.perf_counter() - started
        if result == LogRecordExportResult.SUCCESS:
            self.exported += len(batch)
            self.consecutive_failures = 0
        else:
            self.failures += 1
            self.consecutive_failures += 1
            self.queue._count_drop("export_failed", len(batch))
            _diag.report(
                f"export-failed:{self.name}",
                f"fapilog exporter {self.name!r} failed to export {len(batch)} records",
                exporter=self.name,
                consecutive_failures=self.consecutive_failures,
            )

    def force_flush(self, timeout: float) -> bool:
        flushed = self.queue.flush(timeout)
        try:
            self.exporter.force_flush(int(max(0.0, timeout) * 1000))
        except Exception:
            pass
        return flushed

    def shutdown(self, timeout: float) -> bool:
        if self._shutdown:
            return True
        self._shutdown = True
        drained = self.queue.shutdown(timeout)
        try:
            self.exporter.shutdown()  # type: ignore[no-untyped-call]
        except Exception as exc:
            _diag.report(f"shutdown:{self.name}", f"exporter {self.name!r} shutdown: {exc!r}")
        return drained

    def stats(self) -> dict[str, Any]:
        return {
            "exported": self.exported,
            "dropped": self.queue.total_dropped(),
            "dropped_by_reason": dict(self.queue.dropped),
            "queued": self.queue.depth,
            "accepted": self.queue.accepted,
            "export_failures": self.failures,
            "export_seconds": round(self.export_seconds, 6),
        }


class Router(LogRecordProcessor):
    """The single LogRecordProcessor fapilog adds to a LoggerProvider.

    Added once per provider (the SDK has no way to remove a processor), it fans each record
    out to the current set of `ExportProcessor`s, which a reconfiguration swaps.
    """

    def __init__(self) -> None:
        self.targets: Sequence[ExportProcessor] = ()

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        targets = self.targets
        if not targets:
            return
        record = readable(log_record)
        for target in targets:
            target.put(record)

    def shutdown(self) -> None:
        return None  # fapilog shuts its processors down itself, with a deadline

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

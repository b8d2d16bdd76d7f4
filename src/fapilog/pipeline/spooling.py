"""`SpoolingQueue`: an exporter queue backed by a disk spool (`fapilog.pipeline.spool`), for
the network exporters (docs/delivery.md).

While the sink accepts records, the queue works as any `BatchQueue`, in memory. It
*engages* the spool when the sink stops keeping up:

- the queue is full (the bridge does not wait for room: the spool takes the records);
- an export failed, leaving records a later attempt may deliver (the exporter's retryable
  records, `fapilog.exporters.Retryable`; those a sink refused for good are dropped and
  counted, never spooled);
- an export has been in flight for `ENGAGE_AFTER` seconds (a sink down or hanging: the
  exporter is retrying). A watchdog thread notices this even when nothing else is logged.

Engaged, the queue writes what it holds (and a copy of the batch in flight) to disk, and
every new record goes to disk too, so that nothing waits in memory for a sink that may not
come back before the process dies. The worker replays from disk, oldest first, with a
back-off between failed attempts (`RETRY_MIN` doubling to `RETRY_MAX`), and disengages once
everything this process wrote is delivered. Segments of processes that are gone are
replayed the same way: taken over when the spool opens, when the sink comes back after
failing, and when this process's own backlog is delivered.

At shutdown, what is still queued or in flight when the deadline passes is written to disk
instead of being dropped; an exporter already failing is not waited for at all.

Accounting (`fapilog.stats()`): records on disk are `spooled`, records taken over from a
process that is gone are `adopted`, so that per exporter
``emitted + adopted == exported + dropped + queued + in_flight + spooled``.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from fapilog import _diag
from fapilog._state import start_worker
from fapilog.otel.logs import ReadableLogRecord
from fapilog.pipeline import alerts
from fapilog.pipeline.queue import FLUSH_POLL, BatchQueue, Outcome, Reason, split_outcome
from fapilog.pipeline.spool import Mark, Replay, Spool

__all__ = ["ENGAGE_AFTER", "RETRY_MAX", "RETRY_MIN", "SpoolingQueue"]

ENGAGE_AFTER = 0.5  # seconds an export may take before new records go to disk
RETRY_MIN = 0.5  # first wait before replaying after a failed attempt
RETRY_MAX = 30.0  # longest wait between two attempts
ALERT_SHARE = 0.8  # the spool_filling alert fires past this share of the cap

Record = ReadableLogRecord


class SpoolingQueue(BatchQueue[Record]):
    """A `BatchQueue` of log records with a disk spool (see the module docstring)."""

    def __init__(self, *args: Any, spool: Spool, **kwargs: Any) -> None:
        self.spool = spool
        self._batch: list[Record] | None = None  # the batch being exported
        self._copy: list[Mark] | None = None  # its copy on disk, once engaged
        self._replaying = False
        self._retry_at = 0.0
        self._streak = 0  # failed attempts in a row
        self._failures = 0  # failed attempts in all
        self._rescan = False  # look for segments of dead processes when next idle
        self._jitter = random.Random()
        super().__init__(*args, **kwargs)
        spool.wake = self._wake

    def _wake(self) -> None:
        """The spool took over records (another spool of this process closed): replay."""
        with self._lock:
            self._wakeup.notify()

    def _init_state(self) -> None:
        super()._init_state()
        self._engaged = False

    # -- records in ----------------------------------------------------------------------

    def put_many(
        self,
        items: Sequence[Record],
        upstream_full: Callable[[], bool] | None = None,
        upstream_gone: Callable[[], bool] | None = None,
    ) -> None:
        with self._lock:
            self._engage_if_slow()
            if self._engaged and not self._stopped:
                self.offered += len(items)
                written = self._spill(items)
                self.offered -= len(items) - written  # offered again below
                items = items[written:]
        if items:  # (`upstream_*` only tell how long to wait for room: never, here)
            super().put_many(items)

    def _divert(self, item: Record) -> bool:
        self._engage()
        return self._spill([item]) == 1

    def _wait_for_handoff(
        self,
        upstream_full: Callable[[], bool] | None,
        upstream_gone: Callable[[], bool] | None,
    ) -> bool:
        return False  # to disk rather than wait: the bridge's queue never fills behind it

    def _write(self, items: Sequence[Record]) -> tuple[list[Mark], int]:
        """(Lock held.) Write `items` to the spool, counting what it removed to make room
        and raising the alert past 80 % of the cap. Returns (where they went, how many of
        them were written: a prefix)."""
        marks, evicted = self.spool.write(items)
        self._note_disk(evicted)
        return marks, sum(mark[2] for mark in marks)

    def _spill(self, items: Sequence[Record]) -> int:
        """Write records that never entered the queue to disk (lock held). Returns how
        many were written (the rest found no room)."""
        _, written = self._write(items)
        self.accepted += written
        if written:
            self._wakeup.notify()
        return written

    def _note_disk(self, evicted: int) -> None:
        if evicted:
            self._count_drop("spool_full", evicted)
        spool = self.spool
        used = spool.disk_bytes()
        if used > ALERT_SHARE * spool.max_bytes:
            alerts.note_spool(self.name, used, spool.max_bytes, spool.directory)

    # -- engaging ------------------------------------------------------------------------

    def _engage_if_slow(self) -> None:
        """(Lock held.) Engage if the export in flight has taken `ENGAGE_AFTER` seconds."""
        if (
            not self._engaged
            and self._busy
            and not self._replaying
            and time.monotonic() - self._batch_started >= ENGAGE_AFTER
        ):
            self._engage()

    def _engage(self) -> None:
        """(Lock held.) From now on records go to disk: first a copy of the batch in flight,
        then what is queued."""
        if self._engaged or self._stopped:
            return
        self._engaged = True
        batch = self._batch
        if (
            batch is not None
            and self._busy
            and not self._replaying
            and self._copy is None
            and not self._written_off
        ):
            marks, written = self._write(batch)
            if written == len(batch):
                self._copy = marks
            elif marks:  # a partial copy is no copy: its records stay in flight
                self._settle_copy(marks)
        self._spill_queue()

    def _spill_queue(self) -> None:
        """(Lock held.) Move what is queued to disk, as much as fits."""
        queue = self._queue
        if not queue:
            return
        _, written = self._write(list(queue))
        for _ in range(written):
            queue.popleft()
        self._settled += written
        self._progress.notify_all()
        if written:
            self._wakeup.notify()

    # -- the worker ----------------------------------------------------------------------

    def _idle_wait(self) -> float | None:
        if self._stopping and self._streak:
            return None  # exiting with a failing sink: what is on disk stays for later
        if self._rescan and not self._stopping:
            # the sink is back, or this process's backlog is delivered: take over what
            # processes that died meanwhile left (their locks are free now)
            self._rescan = False
            self.spool.adopt_orphans()
        if self.spool.has_unread():
            wait = self._retry_at - time.monotonic()
            return 0 if wait <= 0 else wait
        if self._engaged and self.spool.own_pending() == 0:
            self._engaged = False  # everything this process wrote is delivered: and theirs?
            return 0 if self.spool.adopt_orphans()[0] else None
        return None

    def _taken(self, batch: list[Record]) -> None:
        # in the same critical section as the queue's pop: a queue that engages from now on
        # copies this batch to disk (it is no longer among the queued records it spills)
        self._batch = batch

    def _process(self, batch: list[Record]) -> None:
        _WATCHDOG.export_started(self)
        try:
            super()._process(batch)
        finally:
            with self._lock:
                self._batch = None
                self._copy = None

    def _account(self, batch: list[Record], failed: Outcome[Record]) -> None:
        copy = self._copy
        self._copy = None
        self._batch = None  # settled here: engaging from now on copies nothing
        if failed is None:
            self._succeeded()
            if copy is not None:
                self._settle_copy(copy)
            self.delivered += len(batch)
            return
        reason, lost, retry = split_outcome(failed, len(batch))
        if retry:
            self._failed()
        if copy is not None and len(retry) == len(batch):
            return  # nothing delivered: the copy on disk is replayed as it is
        self.delivered += len(batch) - lost
        self._keep(reason, lost, retry)  # (written before the copy goes: a crash loses none)
        if copy is not None:
            self._settle_copy(copy)

    def _settle_copy(self, copy: list[Mark]) -> None:
        """(Lock held.) The batch in flight is accounted for: its copy on disk goes. Copied
        records whose segment was removed to make room were counted as dropped
        (``spool_full``) then; the batch's outcome counts them now, so they are taken off
        that count (else one record counts twice)."""
        self._uncount_evicted(self.spool.settle(copy))

    def _uncount_evicted(self, gone: int) -> None:
        """(Lock held.) `gone` records of a batch just accounted for (a copy of the batch
        in flight, a replay) had been removed from disk meanwhile to make room, and counted
        as dropped (``spool_full``) then: the batch's outcome counts them now, so they are
        taken off that count (else one record counts twice)."""
        if gone:
            left = self.dropped.get("spool_full", 0) - gone
            if left > 0:
                self.dropped["spool_full"] = left
            else:
                self.dropped.pop("spool_full", None)

    def _keep(self, reason: Reason, lost: int, retry: list[Record]) -> None:
        """(Lock held.) `lost` records were not delivered: `retry` of them go to disk, the
        rest (and what does not fit) are dropped."""
        written = 0
        if retry and not self._stopped:
            _, written = self._write(retry)  # first: older than what is queued
            self._engage()
        if written < len(retry):
            reason_left = "shutdown" if self._stopped else "spool_full"
            self._count_drop(reason_left, len(retry) - written)
        if lost > len(retry):
            self._count_drop(reason, lost - len(retry))

    def _replay(self) -> None:
        try:
            replay = self.spool.read(self.batch_size)
        except Exception as exc:  # an unreadable disk: try again later, never die
            _diag.report(
                f"spool-read:{self.name}",
                f"fapilog could not read the spool {self.spool.directory}: {exc!r}",
                level="error",
            )
            with self._lock:
                self._failed()
            return
        if replay is None:
            return
        with self._lock:
            self._busy = True
            self._replaying = True
            self._batch_started = time.monotonic()
        failed: Outcome[Record] = None
        if replay.records:
            failed = self._consume_safely(replay.records)
        with self._lock:
            try:
                if not self._written_off:  # else the shutdown deadline left it on disk
                    self._settle_replay(replay, failed)
            finally:
                self._replaying = False
                self._done_with_batch()

    def _settle_replay(self, replay: Replay, failed: Outcome[Record]) -> None:
        size = len(replay.records)
        if failed is None:
            self._succeeded()
            self._drop_unsendable(replay)
            self.delivered += size
            self._uncount_evicted(self.spool.complete(replay, size))
            return
        reason, lost, retry = split_outcome(failed, size)
        if retry:
            self._failed()
        if retry and len(retry) == size:  # nothing delivered: read it again after the back-off
            self.spool.give_back(replay)
            return
        self._drop_unsendable(replay)
        self.delivered += size - lost
        self._keep(reason, lost, retry)  # (written before the batch is acknowledged)
        self._uncount_evicted(self.spool.complete(replay, size - lost))

    def _drop_unsendable(self, replay: Replay) -> None:
        if replay.too_old:
            self._count_drop("too_old", replay.too_old)
        if replay.unreadable:
            self._count_drop("spool_unreadable", replay.unreadable)

    def _succeeded(self) -> None:
        if self._streak:
            self._rescan = True  # the sink is back
        self._streak = 0
        self._retry_at = 0.0

    def _failed(self) -> None:
        self._streak += 1
        self._failures += 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(self._streak - 1, 16))
        self._retry_at = time.monotonic() + self._jitter.uniform(delay, min(RETRY_MAX, 1.5 * delay))

    def flush(self, timeout: float) -> bool:
        """Wait until everything accepted so far is delivered or settled, records this
        process wrote to disk included, at most `timeout` s. What waits on disk is tried
        now (not after the back-off); if an attempt fails meanwhile, the sink is still
        failing: returns False at once (the records stay on disk, safe)."""
        deadline = time.monotonic() + max(0.0, timeout)
        spool = self.spool
        if not super().flush(timeout):
            return False
        with self._lock:
            target = spool.written  # what was queued has been delivered or written by now
            failures = self._failures
            self._retry_at = 0.0
            while spool.settled_own < target and not spool.closed:
                remaining = deadline - time.monotonic()
                if (
                    remaining <= 0
                    or self._failures > failures
                    or self._thread is None
                    or not self._thread.is_alive()
                ):
                    return False
                self._wakeup.notify()
                self._progress.wait(min(remaining, FLUSH_POLL))  # (a dead worker notifies no one)
        return True

    # -- shutdown ------------------------------------------------------------------------

    def _stop_for_good(self, thread: threading.Thread | None, drained: bool) -> bool:
        """Whatever the deadline left queued or in flight goes to disk, not to waste."""
        if not self._stopped and self._busy and self._replaying:
            self._written_off = True  # a replay in flight stays on disk: nothing to count
        if not self._stopped:
            left = len(self._queue)
            self._spill_queue()
            if len(self._queue) < left:
                drained = False
            batch = self._batch
            if (
                self._busy
                and not self._replaying
                and not self._written_off
                and batch is not None
                and thread is not threading.current_thread()
            ):
                done = self._delivered_in_flight(len(batch))
                rest = batch[done:]
                # (with a copy, already on disk)
                written = self._write(rest)[1] if self._copy is None else len(rest)
                # counted here, as the base class counts a batch written off
                self._written_off = True
                self._settled += len(batch)
                self.delivered += done
                if written < len(rest):
                    self._count_drop("shutdown_timeout", len(rest) - written)
                drained = False
        result = super()._stop_for_good(thread, drained)
        left = self.spool.own_pending()
        self.spool.close()
        return result and not left  # what waits on disk is not delivered yet

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._batch = None
        self._copy = None
        self._replaying = False
        self._retry_at = 0.0
        self._streak = 0
        self._rescan = False


class _Watchdog:
    """One thread for every spooling queue: engages a queue whose export has been in flight
    for `ENGAGE_AFTER` seconds, so that records never wait in memory on a sink that does
    not answer. Idle (no export in flight) it waits without a timeout."""

    def __init__(self) -> None:
        self._fresh()

    def _fresh(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._started: dict[int, tuple[float, weakref.ref[SpoolingQueue]]] = {}
        self._thread: threading.Thread | None = None

    def export_started(self, queue: SpoolingQueue) -> None:
        with self._cond:
            self._started[id(queue)] = (time.monotonic(), weakref.ref(queue))
            if self._thread is None:
                self._thread = start_worker("spool-watchdog", self._run)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            due: list[SpoolingQueue] = []
            with self._cond:
                while not self._started:
                    self._cond.wait()  # no timeout: an idle worker costs nothing
                now = time.monotonic()
                soonest = None
                for key, (began, ref) in list(self._started.items()):
                    queue = ref()
                    if queue is None:
                        del self._started[key]
                    elif now - began >= ENGAGE_AFTER:
                        del self._started[key]
                        due.append(queue)
                    else:
                        at = began + ENGAGE_AFTER
                        soonest = at if soonest is None else min(soonest, at)
                if not due and soonest is not None:
                    self._cond.wait(soonest - now)
            for queue in due:
                with queue._lock:
                    queue._engage_if_slow()


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG._fresh)  # its thread is the parent's

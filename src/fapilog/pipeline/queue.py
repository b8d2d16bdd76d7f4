"""The non-blocking pipeline: bounded queues, background workers, overflow policies.

`BatchQueue` is the queue in front of each exporter (`ExportProcessor`): a bounded deque
guarded by one lock, one daemon worker woken by notification (an idle worker waits on a
condition with no timeout: no polling), a consumer called with batches. Only fapilog's own
threads put records into it (the bridge's worker); the application's threads hand records to
the bridge through the lock-free intake (`fapilog.pipeline.intake`).

Accounting is exact: every record offered to a queue is either accepted or dropped, and
every accepted record is eventually delivered, dropped (evicted, failed, abandoned at the
shutdown deadline) or still queued; drops are counted by reason. Errors are the last
records shed under every policy (and, under `sample`, warnings the last but errors).

The caller never waits on an exporter, except under policy `block`, and then at most
`block_timeout` per stall: once a wait times out the queue sheds instead of waiting until its
worker makes progress again, so a dead exporter costs the application one bounded wait, not
one per record.

`fapilog.pipeline.router` puts one `BatchQueue` in front of each exporter.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, Union

from fapilog import _diag
from fapilog._levels import ERROR_SEVERITY, WARN_SEVERITY
from fapilog._state import hand_over_gil, start_worker, under_lock_at_exit, worker_thread
from fapilog.exporters.contract import shares
from fapilog.pipeline import alerts
from fapilog.settings import QueueSettings

__all__ = ["BatchQueue", "FLUSH_POLL", "Outcome", "Reason", "split_outcome"]

T = TypeVar("T")

# why records were lost: one reason for all, or (reason, records) pairs (in order: those
# refused for good first, then those a later attempt may deliver; a reason may come twice)
Reason = Union[str, Sequence[tuple[str, int]]]  # noqa: UP007 (a runtime alias)
# what a consumer returns: None (delivered), a reason (the batch lost), (reason, lost), or
# (reason, lost, retry): `retry`, the lost records a later attempt may deliver (spooled)
Outcome = Union[None, str, tuple[Reason, int], tuple[Reason, int, list[T]]]  # noqa: UP007 (generic)

# how many times a crowded queue's producer hands over the GIL before going on
_YIELDS = 3
# how often a worker waiting to hand records over looks at its own queue's fill level
_HANDOFF_POLL = 0.005
# how often a flush waiting on the worker looks whether it is still alive
FLUSH_POLL = 0.05


class BatchQueue(Generic[T]):
    """A bounded queue drained in batches by one background worker.

    `severity(item)` ranks items for shedding (OTel severity numbers). `consume(batch)` runs
    on the worker and returns None when the batch was delivered, the reason it was not
    (the whole batch counted as dropped), or ``(reason, lost)`` when only `lost` records of
    it were not delivered; it must not raise (if it does, the batch counts as dropped,
    reason ``consumer_error``). `on_stop()`, if given, is the worker's last act once it has
    delivered everything at shutdown (an exporter's own shutdown: run on the worker, it needs
    no new thread, which an exiting interpreter may refuse to start). `delivered_so_far()`,
    if given, says how many records of the batch in progress the consumer has delivered,
    read when the shutdown deadline cuts that batch off.
    """

    def __init__(
        self,
        name: str,
        consume: Callable[[list[T]], Outcome[T]],
        severity: Callable[[T], int],
        settings: QueueSettings,
        *,
        max_delay: float | None = None,
        on_stop: Callable[[], object] | None = None,
        delivered_so_far: Callable[[], int] | None = None,
    ) -> None:
        self.name = name
        self._consume = consume
        self._on_stop = on_stop
        self._delivered_so_far = delivered_so_far
        self._severity = severity
        self.max_size = settings.max_size
        self.batch_size = min(settings.batch_size, settings.max_size)
        self.max_delay = settings.max_delay if max_delay is None else max_delay
        self.overflow = settings.overflow
        self.block_timeout = settings.block_timeout
        self.export_timeout = settings.export_timeout
        self.sample_ratio = settings.sample_ratio
        self.high_water = max(1, int(settings.max_size * settings.high_water))
        self._yield_mark = max(1, (settings.max_size * 3) // 4)
        self._random = random.Random()
        self._sync = False
        self._init_state()
        self._init_counters()
        _QUEUES.add(self)
        # start the worker now, on the configuring thread: started lazily from another
        # worker (the intake's first record), the start waits for GIL hand-overs that a
        # busy application thread delays by up to a switch interval each
        self._start()

    def _init_counters(self) -> None:
        self.offered = 0  # put() calls: records that reached this queue
        self.accepted = 0  # records that entered the queue
        self.delivered = 0  # records the consumer delivered
        self.dropped: dict[str, int] = {}  # by reason: rejected, evicted, failed, abandoned

    def _init_state(self) -> None:
        self._queue: deque[T] = deque()
        # reentrant: a signal handler's drain may run on the thread of a frame that holds it
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)  # the worker waits here
        self._progress = threading.Condition(self._lock)  # blocked callers and flushers
        self._settled = 0  # accepted records that left for good (delivered or dropped)
        self._entered = 0
        self._busy = False
        self._inflight = 0  # size of the batch the worker is processing
        self._written_off = False  # that batch was counted dropped at the shutdown deadline
        self._stalled = False  # policy block: a wait timed out; shed until the worker moves
        self._first_at = 0.0
        self._batch_started = 0.0  # when the worker took the batch it is processing
        self._flushers = 0
        self._stopping = False
        self._stopped = False
        self._stop_failed = False  # on_stop() raised
        self._thread: threading.Thread | None = None

    # -- caller side -------------------------------------------------------------------

    def put(self, item: T) -> bool:
        """Enqueue without waiting on the consumer (except policy `block`, bounded).
        Returns whether the item was accepted."""
        if self._thread is None and not self._sync:
            self._start()
        if self._sync:
            return self._put_sync(item)
        with self._lock:
            accepted = self._offer(item)
            crowded = len(self._queue) >= self._yield_mark
        if crowded:
            self._yield_to_worker()
        return accepted

    def put_many(
        self,
        items: Sequence[T],
        upstream_full: Callable[[], bool] | None = None,
        upstream_gone: Callable[[], bool] | None = None,
    ) -> None:
        """`put` each of `items` in order, under one lock acquisition: the same counting as
        many separate `put` calls. For the producer that is itself a worker (the bridge
        handing a batch on to the exporter queues), a full queue is waited for, whatever the
        policy, for as long as this queue's worker is making progress (see
        `_wait_for_handoff`): a burst that a healthy exporter absorbs a moment later is not
        shed between two workers. `upstream_full()`, if given, says whether the producer's
        own queue is full: then waiting would only move the shedding upstream, and this
        queue sheds by its policy instead (except under `block`). `upstream_gone()`, if
        given, says whether the producer's queue is past its shutdown deadline: then nothing
        waits."""
        if self._thread is None and not self._sync:
            self._start()
        if self._sync:
            for item in items:
                self._put_sync(item)
            return
        with self._lock:
            offer = self._offer
            queue = self._queue
            for item in items:
                if (
                    len(queue) >= self.max_size
                    and not self._stalled
                    and not self._wait_for_handoff(upstream_full, upstream_gone)
                ):
                    self._stalled = True  # until the worker takes its next batch
                offer(item)
            crowded = len(queue) >= self._yield_mark
        if crowded:
            self._yield_to_worker()

    def _wait_for_handoff(
        self,
        upstream_full: Callable[[], bool] | None,
        upstream_gone: Callable[[], bool] | None,
    ) -> bool:
        """A worker hands records over into this full queue (lock held): wait for room as
        long as this queue's worker is making progress, that is, until room appears, or the
        batch it is exporting has taken longer than `export_timeout` (the exporter is stuck,
        or retrying an outage), or `upstream_full()` (not under policy `block`, whose
        callers upstream wait in turn). Returns whether there is room. The application's
        threads never wait here."""
        if self._thread is threading.current_thread():
            return False
        queue = self._queue
        while len(queue) >= self.max_size:  # (a stop empties the queue: the wait ends)
            if self._stalled:
                return False
            if self._busy and time.monotonic() - self._batch_started >= self.export_timeout:
                return False
            if upstream_full is not None and self.overflow != "block" and upstream_full():
                return False
            if upstream_gone is not None and upstream_gone():
                return False
            self._progress.wait(_HANDOFF_POLL)
        return True

    def _yield_to_worker(self) -> None:
        """The queue is filling faster than its worker empties it, which under the GIL
        mostly means the worker is runnable but waiting for the interpreter: let it run now
        (`hand_over_gil`) rather than shed records at the end of this
        thread's time slice. A worker blocked in I/O (a slow exporter) does not want the
        GIL, so this returns at once: the caller never waits on an exporter."""
        if self._thread is threading.current_thread():
            return
        queue = self._queue
        for attempt in range(_YIELDS):  # bounded: a worker not taking the lock is not waited for
            hand_over_gil(attempt)
            if len(queue) < self._yield_mark:
                return

    def _offer(self, item: T) -> bool:
        """One record offered (lock held): accept it, make room for it, or drop it."""
        self.offered += 1
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
        if size >= self.max_size or self._engaged:
            if self._divert(item):  # to disk (`SpoolingQueue`)
                return True
            if size >= self.max_size and not self._make_room(item):
                return False
        queue.append(item)
        self.accepted += 1
        self._entered += 1
        size = len(queue)
        if size == 1:
            self._first_at = time.monotonic()
            self._wakeup.notify()
        elif size == self.batch_size:
            self._wakeup.notify()
        return True

    # a queue with a disk spool (`fapilog.pipeline.spooling.SpoolingQueue`) overrides these
    _engaged = False  # records go to disk rather than into the queue

    def _divert(self, item: T) -> bool:
        """The queue is full (or engaged, lock held): put `item` somewhere else. Returns
        whether it was taken (and counted)."""
        return False

    def _idle_wait(self) -> float | None:
        """The queue is empty (lock held): how long the worker may wait for a record (None:
        until one comes), or 0 to replay from elsewhere now (`_replay`)."""
        return None

    def _replay(self) -> None:
        """Deliver what waits elsewhere (see `_idle_wait`); on the worker, without the lock."""

    def _make_room(self, item: T) -> bool:
        """The queue is full (lock held): make room for `item` by evicting a lesser record,
        or reject `item` (counted). Returns whether there is room now."""
        overflow = self.overflow
        reason = "queue_full"
        if overflow == "block":
            reason = "block_timeout"
            if not self._stalled:
                if self._wait_for_room():
                    if not self._stopped:
                        return True
                    # the queue stopped (and emptied) while the caller waited
                    self._count_drop("shutdown")
                    return False
                self._stalled = True  # until the worker takes its next batch
        queue = self._queue
        severity = self._severity
        incoming = severity(item)
        if overflow == "drop_oldest":
            for index, queued in enumerate(queue):
                if severity(queued) < ERROR_SEVERITY:
                    return self._evict(index, reason)
            if incoming >= ERROR_SEVERITY:  # only errors queued: the oldest error goes
                return self._evict(0, reason)
        else:
            # drop_newest, block (timed out), sample (full): the incoming record is shed,
            # unless a lesser record can make room for it (the newest such record goes)
            limits = (WARN_SEVERITY, ERROR_SEVERITY) if overflow == "sample" else (ERROR_SEVERITY,)
            for limit in limits:
                if incoming >= limit:
                    for index in range(len(queue) - 1, -1, -1):
                        if severity(queue[index]) < limit:
                            return self._evict(index, reason)
        self._count_drop(reason)
        return False

    def _wait_for_room(self) -> bool:
        """Policy block (lock held): wait for room, at most block_timeout. The queue's own
        worker never waits on itself."""
        if self._thread is threading.current_thread():
            return False
        deadline = time.monotonic() + self.block_timeout
        while len(self._queue) >= self.max_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stalled:
                return False
            self._progress.wait(remaining)
        return True

    def _evict(self, index: int, reason: str) -> bool:
        del self._queue[index]
        self._settled += 1
        self._count_drop(reason)
        return True

    def _count_drop(self, reason: Reason, count: int = 1) -> None:
        """Count dropped records (lock held) and tell the monitor (cheap, never calls out)."""
        if not isinstance(reason, str):
            for name, share in shares(reason, count):
                self._count_drop(name, share)
            return
        total = self.dropped.get(reason, 0) + count
        self.dropped[reason] = total
        alerts.note_drop(self.name, reason, count, total)

    def _put_sync(self, item: T) -> bool:
        """No worker could be started (interpreter shutting down, thread limit): deliver on
        the caller's thread rather than lose the record."""
        with self._lock:
            self.offered += 1
            self.accepted += 1
            self._entered += 1
        self._process([item])
        return True

    # -- worker ------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped or self._sync:
                return
            self._thread = start_worker(self.name, self._run)
            self._sync = self._thread is None

    def _run(self) -> None:
        with worker_thread():
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                if batch:
                    self._process(batch)
                else:
                    self._replay()
            if self._on_stop is not None:
                try:
                    self._on_stop()
                except Exception as exc:
                    self._stop_failed = True  # (shutdown() reports it: not all went well)
                    what = _diag.describe(exc)
                    _diag.report(
                        f"stop:{self.name}", f"fapilog {self.name!r}: shutdown raised {what}"
                    )

    def join(self, deadline: float) -> bool:
        """Wait for the worker to stop, until `deadline` (time.monotonic()). Returns whether
        it stopped (or never ran)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    def _next_batch(self) -> list[T] | None:
        with self._lock:
            queue = self._queue
            wakeup = self._wakeup
            while not queue:
                wait = self._idle_wait()
                if wait == 0:
                    return []
                if self._stopping:
                    return None
                wakeup.wait(wait)  # no timeout (None) but to replay: an idle worker costs nothing
            # a partial batch waits up to max_delay for more (0: the deadline has passed)
            deadline = self._first_at + self.max_delay
            while len(queue) < self.batch_size and not self._flushers and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wakeup.wait(remaining)
            count = min(len(queue), self.batch_size)
            batch = [queue.popleft() for _ in range(count)]
            if queue:
                self._first_at = time.monotonic()
            self._busy = True
            self._batch_started = time.monotonic()
            self._inflight = count
            self._written_off = False
            self._stalled = False
            self._taken(batch)
            self._progress.notify_all()  # room for blocked callers
            return batch

    def _taken(self, batch: list[T]) -> None:
        """(Lock held.) The worker took `batch` from the queue and is about to process it."""

    def _process(self, batch: list[T]) -> None:
        """Run the consumer on `batch` and account for every record of it."""
        failed = self._consume_safely(batch)
        with self._lock:
            if not self._written_off:  # else already counted at the shutdown deadline
                self._settled += len(batch)
                self._account(batch, failed)
            self._done_with_batch()

    def _consume_safely(self, batch: list[T]) -> Outcome[T]:
        try:
            return self._consume(batch)
        except BaseException as exc:  # the worker must survive anything
            _diag.report(
                f"consume:{self.name}",
                f"fapilog queue {self.name!r} failed to process a batch: {_diag.describe(exc)}",
            )
            return "consumer_error"

    def _account(self, batch: list[T], failed: Outcome[T]) -> None:
        """Count the batch's records as delivered or dropped (lock held)."""
        size = len(batch)
        if failed is None:
            self.delivered += size
            return
        reason, lost, _ = split_outcome(failed, size)
        self.delivered += size - lost
        if lost:
            self._count_drop(reason, lost)

    def _delivered_in_flight(self, size: int) -> int:
        """How many records of the batch in flight the consumer has delivered, when it can
        tell (`delivered_so_far`), between 0 and `size`."""
        if self._delivered_so_far is None:
            return 0
        try:
            return min(max(int(self._delivered_so_far()), 0), size)
        except Exception:
            return 0

    def _done_with_batch(self) -> None:
        """The worker is free again (lock held)."""
        self._busy = False
        self._inflight = 0
        self._written_off = False
        self._progress.notify_all()

    # -- control -----------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until everything accepted so far has been consumed, at most `timeout` s.
        False as soon as the worker is seen dead, before the wait or while it waits (looked
        at every `FLUSH_POLL` s: a dead worker delivers nothing more and notifies no one)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            target = self._entered
            if self._settled >= target:
                return True
            thread = self._thread
            if thread is None:
                return False
            self._flushers += 1
            self._wakeup.notify()
            try:
                while self._settled < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not thread.is_alive():
                        return False
                    self._progress.wait(min(remaining, FLUSH_POLL))
                return True
            finally:
                self._flushers -= 1

    def shutdown(self, timeout: float) -> bool:
        """Drain, stop the worker, and count whatever the deadline left behind (queued, or
        in the hands of a stuck consumer) as dropped, reason ``shutdown_timeout``."""
        deadline = time.monotonic() + max(0.0, timeout)
        self.begin_shutdown()
        return self.finish_shutdown(deadline)

    def begin_shutdown(self) -> None:
        """Tell the worker to drain what is queued and stop (returns at once)."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()

    def finish_shutdown(self, deadline: float) -> bool:
        """Wait for the worker until `deadline` (time.monotonic()), then stop for good."""
        thread = self._thread
        drained = True
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            drained = not thread.is_alive()
        return under_lock_at_exit(
            self._lock, "exporter queue", lambda: self._stop_for_good(thread, drained)
        )

    def _stop_for_good(self, thread: threading.Thread | None, drained: bool) -> bool:
        """`finish_shutdown()`'s end (the lock held): count what is left as dropped."""
        if self._stopped:
            return True
        self._stopped = True
        left = len(self._queue)
        if left:
            self._queue.clear()
            self._settled += left
            self._count_drop("shutdown_timeout", left)
            drained = False
        if self._busy and not self._written_off and thread is not threading.current_thread():
            # the batch of a consumer still at work: what it has delivered of it (when it
            # can tell) counts as delivered, the rest as dropped
            self._written_off = True
            done = self._delivered_in_flight(self._inflight)
            self._settled += self._inflight
            self.delivered += done
            self._count_drop("shutdown_timeout", self._inflight - done)
            drained = False
        self._progress.notify_all()
        return drained and not self._stop_failed

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Records of the batch the consumer is working on (not yet delivered or dropped)."""
        return 0 if self._written_off else self._inflight

    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def _after_fork_in_child(self) -> None:
        """The parent keeps (and exports) what was queued at fork time; the child starts
        empty, with fresh locks and counters, and starts its own worker on first use."""
        self._init_state()
        self._init_counters()
        self._sync = False


def split_outcome(failed: Outcome[T], size: int) -> tuple[Reason, int, list[T]]:
    """(reason, records lost, records to retry) of a batch of `size` that was not wholly
    delivered: a reason alone loses the whole batch; `lost` is bounded by the batch and the
    records to retry by `lost`."""
    if isinstance(failed, tuple):
        lost = min(max(failed[1], 0), size)
        retry = list(failed[2]) if len(failed) == 3 else []
        return failed[0], lost, retry[:lost]
    return failed or "export_failed", size, []


_QUEUES: weakref.WeakSet[BatchQueue[Any]] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for queue in list(_QUEUES):
        queue._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)

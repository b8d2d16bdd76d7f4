"""The intake: the hand-off from the application's threads to the bridge's worker.

`IntakeQueue.put` is the one step of a log call that another thread consumes, so it is
where a log call could wait on state held by someone else. It takes no lock: the record goes
into a `queue.SimpleQueue` (whose `put` is implemented in C and documented as reentrant,
safe in signal handlers) and the counts are `itertools.count` objects advanced with one C
call each. So the path a signal handler takes when it logs, or when it drains fapilog on
SIGTERM, never waits on a lock that the frame it interrupted can be holding: a handler that
logs, or a SIGTERM that arrives in the middle of a log call, cannot deadlock the process.

The queue's bound and overflow policy are kept as for the exporter queues
(`fapilog.pipeline.queue`), split between the two sides:

- the caller sheds what can be decided from the queue's size alone (the `sample` policy's
  sampling, a full `block` queue after its bounded wait, anything beyond twice the bound);
- the worker, which alone removes records, trims what is over the bound by the policy
  (`drop_oldest` evicts the oldest, the others the newest; errors, and under `sample`
  warnings, go last), so memory stays bounded and errors are shed last, as everywhere.

Accounting is exact once the pipeline is quiet: every record offered is delivered to the
bridge, dropped (by reason), still queued, or in the batch being emitted (`in_flight`).
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fapilog import _diag
from fapilog._levels import ERROR_SEVERITY, WARN_SEVERITY
from fapilog._state import hand_over_gil, start_worker, under_lock_at_exit, worker_thread
from fapilog.pipeline import alerts
from fapilog.settings import QueueSettings

__all__ = ["IntakeQueue", "count_of", "counter"]

T = TypeVar("T")

_WAKE = object()  # put by flush and shutdown to wake the worker; not a record
_CALLER_REASONS = ("sampled", "queue_full", "block_timeout", "shutdown")
_YIELDS = 3  # how many times a crowded queue's producer hands over the GIL
_BLOCK_POLL = 0.0005  # seconds between two looks at a full queue under policy block
_GIVE_UP_GRACE = 0.1  # seconds the worker has, past the deadline, to hand its batch on


def counter(start: int = 0) -> itertools.count[int]:
    """A counter that any thread, and a signal handler, advances without a lock:
    ``next(counter)`` is one C call, atomic under the interpreter lock."""
    return itertools.count(start)


def count_of(count: itertools.count[int]) -> int:
    """How far `count` has been advanced (its repr is ``count(N)``)."""
    return int(repr(count)[6:-1])


class IntakeQueue(Generic[T]):
    """A bounded, lock-free-for-the-caller queue drained by one background worker (see the
    module docstring). `consume(batch)` runs on the worker and must not raise (if it does,
    the batch counts as dropped, reason ``consumer_error``)."""

    def __init__(
        self,
        name: str,
        consume: Callable[[list[T]], object],
        severity: Callable[[T], int],
        settings: QueueSettings,
    ) -> None:
        self.name = name
        self._consume = consume
        self._severity = severity
        self.max_size = settings.max_size
        self.batch_size = min(settings.batch_size, settings.max_size)
        self.overflow = settings.overflow
        self.block_timeout = settings.block_timeout
        self.sample_ratio = settings.sample_ratio
        self.high_water = max(1, int(settings.max_size * settings.high_water))
        # up to twice the bound before the worker trims it back: the caller sheds beyond;
        # errors (under `sample`, warnings too) still enter up to three times the bound, so
        # that the worker sheds lesser records for them (errors are shed last)
        self._hard_cap = 2 * settings.max_size
        self._error_cap = 3 * settings.max_size
        self._keep_from = WARN_SEVERITY if settings.overflow == "sample" else ERROR_SEVERITY
        self._yield_mark = max(1, (settings.max_size * 3) // 4)
        self._random = random.Random()
        self._init_state()
        _QUEUES.add(self)
        self._start()

    def _init_state(self) -> None:
        self._incoming: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._offered = counter()
        self._shed = {reason: counter() for reason in _CALLER_REASONS}
        self._wakes = counter()  # wake-ups put by flush and shutdown (not records)
        self._wakes_taken = 0
        # the worker's side, written by the worker (and by a shutdown's write-off) only
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)
        self._buffer: deque[T] = deque()
        self.delivered = 0
        self._dropped: dict[str, int] = {}
        self._inflight = 0
        self._written_off = False
        self._stalled = False  # policy block: a wait timed out; shed until the worker moves
        self._stopping = False
        self._stopped = False
        self._giving_up = False
        self._sync = False
        self._thread: threading.Thread | None = None

    # -- the caller's side: no lock ------------------------------------------------------

    def put(self, item: T) -> bool:
        """Hand `item` to the worker without taking a lock (see the module docstring).
        Waits only under policy `block`, at most `block_timeout`. Returns whether it was
        accepted."""
        if self._stopped:
            return self._shed_one("shutdown")
        if self._sync:
            return self._put_sync(item)
        size = self._incoming.qsize() + len(self._buffer)
        if size >= self.high_water:
            if (
                self.overflow == "sample"
                and self._severity(item) < WARN_SEVERITY
                and self._random.random() >= self.sample_ratio
            ):
                return self._shed_one("sampled")
            if size >= self.max_size:
                if self.overflow == "block" and not self._stalled:
                    room = self._wait_for_room()
                    if room is None:  # shut down while this caller waited: no worker
                        return self._shed_one("shutdown")
                    size = room
                if size >= self._hard_cap and (
                    size >= self._error_cap or self._severity(item) < self._keep_from
                ):
                    return self._shed_one(
                        "block_timeout" if self.overflow == "block" else "queue_full"
                    )
        self._incoming.put(item)
        next(self._offered)
        if size + 1 >= self._yield_mark:
            self._yield_to_worker()
        return True

    def _shed_one(self, reason: str) -> bool:
        shed = self._shed[reason]
        next(shed)
        next(self._offered)
        # the total for the reason: the callers' and the worker's (`dropped`), read cheaply
        alerts.note_drop(self.name, reason, 1, count_of(shed) + self._dropped.get(reason, 0))
        return False

    def _wait_for_room(self) -> int | None:
        """Policy block: look at the queue until it has room, at most block_timeout (no
        lock, no condition: a short sleep between looks). Returns the size last seen, or
        None when the intake was stopped meanwhile."""
        if self._thread is threading.current_thread():
            return self._incoming.qsize() + len(self._buffer)
        deadline = time.monotonic() + self.block_timeout
        while True:
            size = self._incoming.qsize() + len(self._buffer)
            if self._stopped:
                return None
            if size < self.max_size:
                return size
            if self._stalled or time.monotonic() >= deadline:
                self._stalled = True  # until the worker takes its next batch
                return size
            time.sleep(_BLOCK_POLL)

    def _yield_to_worker(self) -> None:
        """The queue is filling faster than its worker empties it, which under the GIL
        mostly means the worker is runnable but waiting for the interpreter: let it run now
        rather than shed at the end of this thread's time slice (`hand_over_gil`)."""
        if self._thread is threading.current_thread():
            return
        for attempt in range(_YIELDS):
            hand_over_gil(attempt)
            if self._incoming.qsize() + len(self._buffer) < self._yield_mark:
                return

    def _put_sync(self, item: T) -> bool:
        """No worker could be started (interpreter shutdown, thread limit): deliver on the
        caller's thread rather than lose the record."""
        next(self._offered)
        self._process([item])
        return True

    # -- the worker ------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the worker (after `_init_state()`: at construction, in a forked child)."""
        self._thread = start_worker(self.name, self._run)
        self._sync = self._thread is None

    def _run(self) -> None:
        with worker_thread():
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._process(batch)

    def _next_batch(self) -> list[T] | None:
        incoming = self._incoming
        buffer = self._buffer
        while not buffer:
            with self._lock:
                if self._stopping and incoming.qsize() == 0:
                    return None
            item = incoming.get()  # no timeout: an idle worker costs nothing
            with self._lock:
                if item is _WAKE:
                    self._wakes_taken += 1
                else:
                    buffer.append(item)
        with self._lock:
            while True:  # take what else has arrived, without waiting
                try:
                    item = incoming.get_nowait()
                except queue.Empty:
                    break
                if item is _WAKE:
                    self._wakes_taken += 1
                else:
                    buffer.append(item)
            # under `block` the callers wait for room, and one can count a record the
            # worker is moving as gone and go one over the bound: that is not shed; what
            # callers put after a wait timed out (`_stalled`) is
            if len(buffer) > self.max_size and (self.overflow != "block" or self._stalled):
                self._trim()
            count = min(len(buffer), self.batch_size)
            batch = [buffer.popleft() for _ in range(count)]
            self._inflight = count
            self._written_off = False
            self._stalled = False
            return batch

    def _trim(self) -> None:
        """Over the bound (lock held): shed what the policy sheds first, errors last."""
        buffer = self._buffer
        excess = len(buffer) - self.max_size
        newest_first = self.overflow != "drop_oldest"
        limits = (WARN_SEVERITY, ERROR_SEVERITY) if self.overflow == "sample" else ()
        reason = "block_timeout" if self.overflow == "block" else "queue_full"
        items = list(buffer)
        keep = [True] * len(items)
        order = range(len(items))[::-1] if newest_first else range(len(items))
        severity = self._severity
        for limit in (*limits, ERROR_SEVERITY, None):
            for index in order:
                if excess == 0:
                    break
                if keep[index] and (limit is None or severity(items[index]) < limit):
                    keep[index] = False
                    excess -= 1
            if excess == 0:
                break
        shed = keep.count(False)
        buffer.clear()
        buffer.extend(itertools.compress(items, keep))
        self._count_drop(reason, shed)

    def _count_drop(self, reason: str, count: int) -> None:
        """Count records the worker dropped (lock held; `count` is at least 1) and tell the
        monitor."""
        self._dropped[reason] = self._dropped.get(reason, 0) + count
        alerts.note_drop(self.name, reason, count, self.dropped[reason])  # the callers' too

    def _process(self, batch: list[T]) -> None:
        failed = False
        try:
            self._consume(batch)
        except BaseException as exc:  # the worker must survive anything
            failed = True
            _diag.report(
                f"consume:{self.name}",
                f"fapilog queue {self.name!r} failed to process a batch: {_diag.describe(exc)}",
            )
        with self._lock:
            if not self._written_off:  # else already counted at the shutdown deadline
                if failed:
                    self._count_drop("consumer_error", len(batch))
                else:
                    self.delivered += len(batch)
            self._inflight = 0
            self._written_off = False
            self._progress.notify_all()

    # -- control -----------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until everything offered so far has left the queue (delivered to the
        bridge, or dropped), at most `timeout` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        target = count_of(self._offered)
        if self._settled() >= target:
            return True
        thread = self._thread
        if thread is None or not thread.is_alive():
            return False
        self._wake()
        with self._lock:
            while self._settled() < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not thread.is_alive():  # (a dead worker notifies no one)
                    return False
                # (a record shed by a caller settles without notifying: look again soon)
                self._progress.wait(min(remaining, 0.05))
            return True

    def _wake(self) -> None:
        next(self._wakes)
        self._incoming.put(_WAKE)

    def _settled(self) -> int:
        return self.delivered + self.total_dropped()

    def shutdown(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        self.begin_shutdown()
        return self.finish_shutdown(deadline)

    def begin_shutdown(self) -> None:
        """Tell the worker to deliver what is queued and stop (returns at once)."""
        with self._lock:
            self._stopping = True
        self._wake()

    def finish_shutdown(self, deadline: float) -> bool:
        """Wait for the worker until `deadline` (time.monotonic()), then stop for good:
        what is left is counted as dropped, reason ``shutdown_timeout``."""
        thread = self._thread
        drained = True
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # the worker is handing a batch on and waiting for room (see `gave_up`):
                # let it hand the rest over without waiting, so that each exporter counts
                # those records exactly, rather than this queue writing the batch off
                self._giving_up = True
                thread.join(_GIVE_UP_GRACE)
            drained = not thread.is_alive()
        return under_lock_at_exit(
            self._lock, "intake", lambda: self._stop_for_good(thread, drained)
        )

    def _stop_for_good(self, thread: threading.Thread | None, drained: bool) -> bool:
        """`finish_shutdown()`'s end (the lock held): count what is left as dropped."""
        if self._stopped:
            return drained
        self._stopped = True
        left = len(self._buffer)
        while True:
            try:
                item = self._incoming.get_nowait()
            except queue.Empty:
                break
            if item is _WAKE:
                self._wakes_taken += 1
            else:
                left += 1
        self._buffer.clear()
        if left > 0:
            self._count_drop("shutdown_timeout", left)
            drained = False
        stuck = (
            thread is not None and thread is not threading.current_thread() and thread.is_alive()
        )
        if self._inflight and not self._written_off and stuck:
            self._written_off = True
            self._count_drop("shutdown_timeout", self._inflight)
            drained = False
        self._progress.notify_all()
        return drained

    # -- figures -------------------------------------------------------------------------

    @property
    def offered(self) -> int:
        return count_of(self._offered)

    @property
    def accepted(self) -> int:
        return self.offered - sum(count_of(shed) for shed in self._shed.values())

    @property
    def dropped(self) -> dict[str, int]:
        """Drops by reason, the caller's and the worker's."""
        reasons = {reason: count_of(shed) for reason, shed in self._shed.items()}
        for reason, count in list(self._dropped.items()):
            reasons[reason] = reasons.get(reason, 0) + count
        return {reason: count for reason, count in reasons.items() if count}

    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def depth(self) -> int:
        """Records waiting (wake-ups not counted)."""
        wakes = count_of(self._wakes) - self._wakes_taken
        return max(0, self._incoming.qsize() - wakes + len(self._buffer))

    @property
    def in_flight(self) -> int:
        return 0 if self._written_off else self._inflight

    def gave_up(self) -> bool:
        """Whether the shutdown deadline has passed with the worker still at work: what it
        hands on now must not wait for room."""
        return self._giving_up

    def is_full(self) -> bool:
        """Whether the queue holds its bound or more (its caller is about to shed, or to
        wait under policy `block`)."""
        return self._incoming.qsize() + len(self._buffer) >= self.max_size

    def inherit(self, earlier: IntakeQueue[Any]) -> None:
        """Carry the figures of the intake this one replaces (a configuration after a
        shutdown), before any record is offered to this one, so that `fapilog.stats()` keeps
        adding up over the process's life."""
        self._offered = counter(earlier.offered)
        self._shed = {reason: counter(count_of(shed)) for reason, shed in earlier._shed.items()}
        with self._lock:
            self.delivered = earlier.delivered
            self._dropped = dict(earlier._dropped)

    def _after_fork_in_child(self) -> None:
        """The parent keeps (and delivers) what was queued at fork time; the child starts
        empty, with fresh locks and counters, and starts its own worker."""
        self._init_state()
        self._start()


_QUEUES: weakref.WeakSet[IntakeQueue[Any]] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for intake in list(_QUEUES):
        intake._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)

"""Noise control at the caller: per-logger rate limits (``FAPILOG_RATE_LIMITS``) and the
folding of identical repeated records (``FAPILOG_FOLD_REPEATS``), with their counts.

- A rate limit is a token bucket per configured logger name (its descendants share it):
  `rate` records a second, bursts up to `rate`. A record over it is not captured; the next
  record let through carries ``fapilog.rate_limited``, how many were held back since.
- Folding: a record identical to the one before it of the same logger (level, message,
  fields, trace context) within `window` seconds is counted, not exported; when the run
  ends (another record, the window over, a flush) one line says
  ``"<message> (repeated N times in S s)"`` with ``fapilog.repeated`` = N.

`stats()` shows ``rate_limited`` (by logger) and ``folded``. Neither reaches the intake, so
neither is part of an exporter's sum.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from fapilog._state import STATE, start_worker
from fapilog.capture.record import Pending

__all__ = [
    "Bucket",
    "FOLDING",
    "Folding",
    "NOISE",
    "Noise",
    "figures",
    "follows_trace",
    "limiter_for",
    "reset_counts",
]


class Bucket:
    """A token bucket: `rate` records a second, bursts up to `rate` (at least 1)."""

    __slots__ = ("capacity", "held_back", "name", "rate", "stamp", "tokens")

    def __init__(self, name: str, rate: float) -> None:
        self.name = name
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.held_back = 0  # since the last record let through

    def take(self, pending: Pending) -> bool:
        now = time.monotonic()
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            self.held_back += 1
            NOISE.limited[self.name] = NOISE.limited.get(self.name, 0) + 1
            return False
        self.tokens = tokens - 1.0
        if self.held_back:
            pending.event["fapilog.rate_limited"] = self.held_back
            self.held_back = 0
        return True


class Noise:
    """The configured limits, and what they held back."""

    __slots__ = ("buckets", "limited", "sampled_out")

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}  # by configured logger name
        self.limited: dict[str, int] = {}  # records over the limit, by configured name
        self.sampled_out = 0  # request events sampled out, records of unsampled traces

    def configure(self, rates: dict[str, float]) -> None:
        """The limits from now on; a name whose rate is unchanged keeps its bucket."""
        kept = self.buckets
        self.buckets = {
            name: kept[name] if name in kept and kept[name].rate == rate else Bucket(name, rate)
            for name, rate in rates.items()
        }


NOISE = Noise()


def limiter_for(name: str) -> Bucket | None:
    """The bucket of logger `name`: its own, or its closest dotted ancestor's."""
    buckets = NOISE.buckets
    if not buckets:
        return None
    probe = name
    while True:
        bucket = buckets.get(probe)
        if bucket is not None or "." not in probe:
            return bucket
        probe = probe.rsplit(".", 1)[0]


class _Run:
    """The last record of one logger and how many identical ones followed it."""

    __slots__ = ("count", "event", "ids", "last", "pending", "started")

    def __init__(self, pending: Pending, ids: tuple[int, int], now: float) -> None:
        self.pending = pending
        self.event = dict(pending.event)  # (the bridge takes the message out of the original)
        self.ids = ids
        self.started = now
        self.last = now
        self.count = 0


def _ids(pending: Pending) -> tuple[int, int]:
    context = trace.get_current_span(pending.context).get_span_context()
    return (context.trace_id, context.span_id)


class Folding:
    """Identical consecutive records per logger (see the module docstring). A lock guards
    the runs (reentrant: a signal handler may log in the middle); a timer thread ends the
    runs whose window is over."""

    def __init__(self) -> None:
        self.window: float | None = None
        self.folded = 0
        # writes a summary line with the exporters that write on the calling thread (set
        # with the configuration: fapilog.pipeline.direct.write_released)
        self.write: Callable[[Pending], Pending] | None = None
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def configure(self, window: float | None) -> None:
        """Fold from now on within `window` seconds (None: not at all). The timer thread
        starts here, not on a log call (starting a thread takes a lock of the threading
        module a signal handler must not wait on)."""
        self.flush()
        with self._lock:
            self.window = window
            self._wake.notify_all()  # (the timer thread ends when folding is off)
            if window is not None and (self._thread is None or not self._thread.is_alive()):
                self._thread = start_worker("fold", self._expire)

    def admit(self, name: str, pending: Pending) -> bool:
        """Whether `pending` goes on (else it is folded into the run before it). A run
        that ends puts its summary line first."""
        window = self.window
        if window is None:
            return True
        ids = _ids(pending)
        now = time.monotonic()
        with self._lock:
            run = self._runs.get(name)
            if (
                run is not None
                and now - run.started < window
                and pending.severity is run.pending.severity
                and ids == run.ids
                and pending.event == run.event
            ):
                run.count += 1
                run.last = now
                self.folded += 1
                if run.count == 1:
                    self._start_timer()
                return False
            if run is not None:
                self._end(run)
            if len(self._runs) >= _MAX_RUNS:  # (their folded records get their line first)
                for earlier in self._runs.values():
                    self._end(earlier)
                self._runs.clear()
            self._runs[name] = _Run(pending, ids, now)
        return True

    def _end(self, run: _Run) -> None:
        """Put the summary line of a run that folded something."""
        if not run.count:
            return
        first = run.pending
        event = dict(run.event)
        message = event.get("event")
        seconds = run.last - run.started
        event["event"] = f"{message} (repeated {run.count:,} times in {seconds:.1f} s)"
        event["fapilog.repeated"] = run.count
        stamp = first.timestamp + int(seconds * 1e9)
        summary: Pending = tuple.__new__(
            Pending,
            (
                stamp,
                first.severity,
                first.severity_text,
                first.logger,
                event,
                first.context,
                None,
                0,
            ),
        )
        write = self.write
        if write is not None:
            summary = write(summary)
        STATE.put(summary)
        run.count = 0

    def flush(self) -> None:
        """End every run now (`fapilog.force_flush()`, `shutdown()`, a reconfiguration).
        Waits for the runs' lock half a second at most (a drain never hangs on it)."""
        if not self._lock.acquire(timeout=0.5):
            return
        try:
            runs = list(self._runs.values())
            self._runs.clear()
            for run in runs:
                self._end(run)
        finally:
            self._lock.release()

    def _start_timer(self) -> None:
        if self._thread is None:  # (a forked child: the parent's thread is not here)
            self._thread = start_worker("fold", self._expire)
        else:
            self._wake.notify()

    def _expire(self) -> None:
        """The timer thread: end each run whose window is over (the summary comes out
        within a window of the last repetition even when nothing else is logged). It
        waits without a timeout while nothing is being folded, and ends when folding is
        turned off."""
        with self._lock:
            while True:
                window = self.window
                if window is None:
                    self._thread = None
                    return
                folding = [run for run in self._runs.values() if run.count]
                if not folding:
                    self._wake.wait()
                    continue
                now = time.monotonic()
                due = min(run.started for run in folding) + window
                if due > now:
                    self._wake.wait(timeout=due - now)
                    continue
                for name, run in list(self._runs.items()):
                    if run.count and now - run.started >= window:
                        self._end(run)
                        del self._runs[name]

    def after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread = None
        self._runs = {}
        if self.window is not None:  # (here, not on a log call: see `configure`)
            self._thread = start_worker("fold", self._expire)


# loggers whose last record is remembered at most (a process logging under ever new names)
_MAX_RUNS = 4096

FOLDING = Folding()


def follows_trace(pending: Pending) -> bool:
    """Whether `pending` belongs to a sampled trace, or to none."""
    context = trace.get_current_span(pending.context).get_span_context()
    return not context.is_valid or context.trace_flags.sampled


def reset_counts() -> None:
    """Zero the counts (tests)."""
    NOISE.limited.clear()
    NOISE.sampled_out = 0
    FOLDING.folded = 0


def figures() -> dict[str, Any]:
    return {
        "rate_limited": dict(NOISE.limited),
        "folded": FOLDING.folded,
        "sampled_out": NOISE.sampled_out,
    }


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FOLDING.after_fork_in_child)

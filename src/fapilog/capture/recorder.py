"""The flight recorder: a request's (or a job's) records below the exported level, held
until the outcome is known.

While a `Recorder` is current (a context variable: the request middleware sets one per
request when ``FAPILOG_REQUEST__BUFFER__ENABLED``; `flight_recorder()` for a job), records
below their logger's exported level and at or above the recorder's level are held instead
of dropped. At the end, `release()` hands them on, in their order and with their own
timestamps and trace context, ahead of the request event; `discard()` forgets them. A
recorder is bounded in records and bytes, and all recorders together in bytes
(`TOTALS`); what does not fit is counted as overflow, oldest first.

The counts are kept without a lock (a signal handler may log while a request's records
are being held); each is changed by one statement. `stats()` shows them under
``recorder``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from math import isfinite
from threading import RLock
from time import time_ns
from typing import Any

from opentelemetry.context import get_current as _get_current
from structlog import DropEvent

from fapilog._levels import (
    BY_NAME,
    WARN_SEVERITY,
    Level,
    normalise,
    number_of,
    severity_for_number,
)
from fapilog._state import NO_FLOOR, STATE
from fapilog.capture.record import Pending, Released, capture, salvage

__all__ = [
    "DEFERRED",
    "Deferred",
    "LIMITS",
    "Limits",
    "RECORDER",
    "Recorder",
    "TOTALS",
    "Totals",
    "flight_recorder",
    "hold_call",
    "recorder_wants",
]

RECORDER: ContextVar[Recorder | None] = ContextVar("fapilog_recorder", default=None)
"""The recorder of the request or job being run here, if any."""


class Deferred:
    """How a record bound for a recorder is processed (set by each configuration): the
    chain's steps that read the call's state (`before`: the contextvars, the enrichers)
    run when it is logged; redaction (`after`, a pure function of the event) only when its
    recorder releases it, with the steps of the configuration it was held under. A
    discarded record (the common case) never pays for redaction or trace formatting (the
    trace ids come from the record's context when it is emitted). `active` False: records
    take the whole chain."""

    __slots__ = ("active", "after", "before", "write")

    def __init__(self) -> None:
        self.active = False
        # writes a released record with the exporters that write on the calling thread
        # (the console), returning it marked as written (`fapilog.pipeline.direct`)
        self.write: Callable[[Pending], Pending] | None = None
        self.before: list[Any] = []
        self.after: list[Any] = []

    def set(self, before: list[Any], after: list[Any]) -> None:
        self.before, self.after, self.active = list(before), list(after), True

    def clear(self) -> None:
        self.before, self.after, self.active = [], [], False


DEFERRED = Deferred()


def hold_call(
    sink: Any, method: str, event_dict: dict[str, Any], recorder: Recorder, level: Level
) -> None:
    """Hold a record of `level` logged below its logger's exported level under
    `recorder`: the `DEFERRED.before` steps now, redaction at release. The values are
    snapshotted now, as `capture` does, and sized in the same pass; a record with a value
    that is not plain (a container, an object) is redacted now, before its values are
    converted, as the chain does. Never raises (a failing step: the record is salvaged)."""
    try:
        after = DEFERRED.after
        for step in DEFERRED.before:
            event_dict = step(sink, method, event_dict)
        size = _BASE_SIZE
        plain = "exc_info" not in event_dict
        for value in event_dict.values():
            kind = type(value)
            if kind is str:
                size += _ITEM_SIZE + len(value)
                continue
            size += _ITEM_SIZE
            if kind is bool or value is None:
                continue
            if kind is int:
                if -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
                    continue
            elif kind is float and isfinite(value):
                continue
            plain = False
        if not plain:
            for step in after:
                event_dict = step(sink, method, event_dict)
            pending = capture(sink, method, event_dict)  # (converts the values)
            recorder.put(pending, None, estimated_size(pending))
            return
        pending = tuple.__new__(
            Pending,
            (time_ns(), level.severity, level.name, sink.name, event_dict, _get_current(), None, 0),
        )
        recorder.put(pending, after, size)
    except DropEvent:
        return
    except Exception as exc:
        salvage(sink, method, "record could not be processed", exc)


def _finished(pending: Pending, after: list[Any]) -> Pending:
    """A held record through the steps it was held without (redaction) at release."""
    event: Any = pending.event
    method = pending.severity_text.lower()
    for step in after:
        event = step(None, method, event)
    if event is not pending.event:
        pending = pending._replace(event=dict(event))
    return pending


class Limits:
    """The bounds and level of recorders (the current configuration's buffer settings)."""

    __slots__ = ("level", "max_bytes", "max_records", "total_max_bytes")

    def __init__(
        self,
        level: int = 10,
        max_records: int = 1000,
        max_bytes: int = 262_144,
        total_max_bytes: int = 33_554_432,
    ) -> None:
        self.level = level
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.total_max_bytes = total_max_bytes


LIMITS = Limits()


class Totals:
    """Figures over all recorders of the process."""

    __slots__ = ("captured", "discarded", "held", "held_bytes", "overflowed", "released")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.held = 0  # records held now
        self.held_bytes = 0  # their estimated size
        self.captured = 0  # records ever held
        self.released = 0  # ... exported when their recorder released them
        self.discarded = 0  # ... forgotten with their recorder (the outcome was good)
        self.overflowed = 0  # ... pushed out, or never taken, by a bound

    def figures(self) -> dict[str, int]:
        return {
            "held": self.held,
            "held_bytes": self.held_bytes,
            "captured": self.captured,
            "released": self.released,
            "discarded": self.discarded,
            "overflowed": self.overflowed,
        }


TOTALS = Totals()


_BASE_SIZE = 480  # a held record: its tuple, its event dict, its context
_ITEM_SIZE = 120  # each of its values (plus a string's length)
_WALK_AT_MOST = 100_000  # values of a nested value walked to size it


def value_size(value: Any) -> int:
    """What `value` costs in memory, roughly, containers walked (at most `_WALK_AT_MOST`
    values: a value larger than that counts as over every bound)."""
    size = 0
    walked = 0
    stack = [value]
    while stack:
        item = stack.pop()
        walked += 1
        if walked > _WALK_AT_MOST:
            return _OVER_EVERY_BOUND
        kind = type(item)
        if kind is str:
            size += 50 + len(item)
        elif kind is bytes or kind is bytearray:
            size += 33 + len(item)
        elif kind is dict:
            size += 64 + 104 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple or kind is set or kind is frozenset:
            size += 56 + 8 * len(item)
            stack.extend(item)
        else:
            size += 32
    return size


_OVER_EVERY_BOUND = 1 << 62


def estimated_size(pending: Pending) -> int:
    """What holding `pending` costs in memory, roughly (the tuple, the event dict and its
    values, containers walked): a bound counted in these units holds as a bound in bytes
    (tested with tracemalloc)."""
    return _event_size(pending.event)


def _event_size(event: dict[str, Any]) -> int:
    size = _BASE_SIZE
    for value in event.values():
        size += _ITEM_SIZE
        kind = type(value)
        if kind is str:
            size += len(value)
        elif kind is not int and kind is not float and kind is not bool and value is not None:
            size += value_size(value)
    return size


_SEVERITY_OF = {n: severity_for_number(n).value for n in (0, 10, 20, 30, 40, 50)}
_LOCK = RLock()


class Recorder:
    """The held records of one request or job (see the module docstring).

    `floor`: the lowest stdlib level held (None: the logger's exported level, for a
    recorder that only follows trace sampling). `boundary`: the severity from which
    records are exported as logged (None: each logger's exported level; 0: everything at
    or above `floor`, the debug header; WARN: an unsampled trace, docs/sampling.md).

    A reentrant lock guards the records (one for all recorders: its sections are a few
    statements long, and a request creates none): threads the request started share its
    recorder, and a signal handler that logs may interrupt a `hold` on the same thread."""

    __slots__ = (
        "alarm",
        "boundary",
        "floor",
        "floor_severity",
        "open",
        "overflowed",
        "records",
        "released",
        "size",
        "token",
    )

    def __init__(self, floor: int | None = None, boundary: int | None = None) -> None:
        # (None: nothing below the logger's exported level is held: above every level)
        self.floor = floor if floor is not None else NO_FLOOR
        self.floor_severity: int | None = None
        if floor is not None:
            known = _SEVERITY_OF.get(floor)
            self.floor_severity = known if known is not None else severity_for_number(floor).value
        self.boundary = boundary
        # (record, its size, the steps it still has to take at release, if any)
        self.records: deque[tuple[Pending, int, list[Any] | None]] = deque()
        self.size = 0
        self.overflowed = 0
        self.alarm = False  # a WARNING-or-above record was logged under it
        self.open = True
        # (a request's recorder: the token that made it current, and whether the request
        # went badly and its records were exported)
        self.token: Any = None
        self.released = False

    def hold(self, pending: Pending) -> None:
        """Hold `pending`, a record that took the whole chain."""
        self.put(pending, None, estimated_size(pending))

    def put(self, pending: Pending, after: list[Any] | None, size: int) -> None:
        """`hold`, of an estimated `size`. A record that arrives once the recorder is
        closed (a thread the request started, still logging) is counted as discarded."""
        limits = LIMITS
        totals = TOTALS
        with _LOCK:
            totals.captured += 1
            if not self.open:
                totals.discarded += 1
                return
            if (
                len(self.records) >= limits.max_records
                or self.size + size > limits.max_bytes
                or totals.held_bytes + size > limits.total_max_bytes
            ) and not self._make_room(size):
                return
            self.records.append((pending, size, after))
            self.size += size
            totals.held += 1
            totals.held_bytes += size

    def _make_room(self, size: int) -> bool:
        """(Lock held.) Push the oldest records out until one of `size` fits the bounds.
        A record that cannot fit even so (over the per-request bound alone, or the total
        bound taken by other recorders) is refused without pushing any out. Counted either
        way; returns whether it fits now."""
        limits = LIMITS
        records = self.records
        if size > limits.max_bytes or TOTALS.held_bytes - self.size + size > limits.total_max_bytes:
            self.overflowed += 1
            TOTALS.overflowed += 1
            return False
        while records and (
            len(records) >= limits.max_records
            or self.size + size > limits.max_bytes
            or TOTALS.held_bytes + size > limits.total_max_bytes
        ):
            self._forget(records.popleft()[1])
            self.overflowed += 1
            TOTALS.overflowed += 1
        return True

    def _forget(self, size: int) -> None:
        self.size -= size
        TOTALS.held -= 1
        TOTALS.held_bytes -= size

    def _take_all(self) -> deque[tuple[Pending, int, list[Any] | None]]:
        """Close the recorder and take its records, counted as released."""
        with _LOCK:
            self.open = False
            records, self.records = self.records, deque()
            TOTALS.held -= len(records)
            TOTALS.held_bytes -= self.size
            TOTALS.released += len(records)
            self.size = 0
        return records

    def release(self) -> int:
        """Hand the held records on, in order (each as a `Released`; written at once by a
        console that writes on the calling thread, so they come before what is logged
        next); returns how many."""
        records = self._take_all()
        put = STATE.put
        write = DEFERRED.write
        for held, _, after in records:
            pending = held
            if after:
                try:
                    pending = _finished(held, after)
                except Exception as exc:  # the record's steps failed: a salvaged one instead
                    salvage(_Named(held.logger), "debug", "record could not be processed", exc)
                    continue
            released: Pending = tuple.__new__(Released, pending)
            if write is not None:
                released = write(released)
            put(released)
        return len(records)

    def discard(self) -> int:
        """Forget the held records; returns how many."""
        with _LOCK:
            self.open = False
            count = len(self.records)
            if count:
                self.records = deque()
                TOTALS.held -= count
                TOTALS.held_bytes -= self.size
                TOTALS.discarded += count
                self.size = 0
        return count

    def close(self, keep: bool) -> int:
        """End the recorder: release its records (`keep`: the outcome was bad, or a
        WARNING-or-above record was logged under it) or discard them. Returns how many."""
        return self.release() if keep or self.alarm else self.discard()


def recorder_wants(levelno: int) -> bool:
    """Whether the current recorder takes a record of stdlib level `levelno` (a record
    below its logger's exported level, at the caller's gate)."""
    recorder = RECORDER.get()
    return recorder is not None and recorder.open and levelno >= recorder.floor


@contextmanager
def flight_recorder(level: Any = None) -> Iterator[Recorder]:
    """Hold the block's records below the exported level (DEBUG and up, or `level`) and
    export them, in order and with their own timestamps, only if the block raises or logs
    a WARNING-or-above record; otherwise they are discarded (counted in
    ``fapilog.stats()["recorder"]``). For background jobs and tasks::

        with fapilog.flight_recorder():
            run_job()

    Works whatever ``FAPILOG_REQUEST__BUFFER__ENABLED`` says (and before
    `configure_logging()`: fapilog is configured from the environment first); its bounds
    are the buffer settings'. Nested in a request or another block, the outer recorder's
    records stay apart: the block has its own. The exception propagates unchanged. The
    block must begin and end in the same context (one thread, one task)."""
    floor = LIMITS.level if level is None else number_of(_level_name(level))
    if STATE.pipeline is None and STATE.autoconfigure is not None:
        STATE.autoconfigure()  # (a configuration resets the levels: it comes first)
    recorder = Recorder(floor)
    done = STATE.want_capture(floor)
    token = RECORDER.set(recorder)
    failed = False
    try:
        yield recorder
    except BaseException:
        failed = True
        raise
    finally:
        try:
            recorder.close(failed)
        finally:
            try:
                RECORDER.reset(token)
            except ValueError:  # ended in another context: that one keeps nothing of it
                pass
            done()


def _level_name(level: Any) -> str:
    name = normalise(level)
    if isinstance(name, str) and name in BY_NAME:
        return name
    raise ValueError(f"flight_recorder(level={level!r}): use debug, info, warning or error")


class _Named:
    """A stand-in logger for a salvaged record of a released recorder."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = RLock()  # (a parent thread may have held it at the fork)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# a record at or above this severity sets off its recorder (released at the end)
ALARM_SEVERITY = WARN_SEVERITY

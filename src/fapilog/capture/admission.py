"""Admission: at the end of the chain, what happens to a capture once fapilog knows its
logger, its level and its trace context. Installed (`fapilog.capture.record.ADMISSION`)
only while a feature needs it; a plain configuration runs none of this.

In order:

1. Under a flight recorder (`fapilog.capture.recorder`): a record at WARNING or above
   sets the recorder off (its records will be released); a record below the recorder's
   boundary is held (or, below the recorder's level, dropped); the debug header's
   recorder lets everything through, marked `Released` so that every exporter takes it.
2. Without one: a record below its logger's exported level (let through the caller's gate
   for recorders) is dropped; with ``follow_trace_sampling``, a record below WARNING of an
   unsampled trace is dropped and counted (``sampled_out``).
3. The logger's rate limit, then folding of repeats (`fapilog.capture.noise`).
"""

from __future__ import annotations

from structlog import DropEvent

from fapilog._levels import WARN_SEVERITY
from fapilog.capture.noise import FOLDING, NOISE, follows_trace
from fapilog.capture.record import ADMISSION, Pending, Released, Sink, StdlibSink
from fapilog.capture.recorder import RECORDER

__all__ = ["FOLLOW", "admit", "install"]


class _Follow:
    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False  # FAPILOG_REQUEST__FOLLOW_TRACE_SAMPLING


FOLLOW = _Follow()


def admit(sink: object, pending: Pending) -> Pending:
    """The capture to hand on (see the module docstring); raises DropEvent otherwise."""
    if not isinstance(sink, Sink):
        return pending
    severity = pending.severity.value
    if ADMISSION.plain and WARN_SEVERITY > severity >= sink.export_severity:
        return pending
    recorder = RECORDER.get()
    if recorder is not None and recorder.open:
        export = sink.export_severity
        if severity >= WARN_SEVERITY and (severity >= export or recorder.boundary == 0):
            recorder.alarm = True  # (not a warning below its logger's level: held as such)
        else:
            boundary = recorder.boundary
            if boundary is None or (boundary and boundary < export):
                boundary = export
            if severity < boundary:
                floor = recorder.floor_severity
                if severity >= (sink.export_severity if floor is None else floor):
                    recorder.hold(pending)
                raise DropEvent
            if severity < sink.export_severity:  # the debug header: exported everywhere
                pending = tuple.__new__(Released, pending)
    else:
        # (a stdlib record below fapilog's level for its logger: that logger's own stdlib
        # level let it through, it is exported as without a recorder)
        if severity < sink.export_severity and not isinstance(sink, StdlibSink):
            raise DropEvent
        if FOLLOW.on and severity < WARN_SEVERITY and not follows_trace(pending):
            NOISE.sampled_out += 1
            raise DropEvent
    limiter = sink.limiter
    if limiter is not None and not limiter.take(pending):
        raise DropEvent
    if FOLDING.window is not None and not FOLDING.admit(sink.name, pending):
        raise DropEvent
    return pending


def install(needed: bool, plain: bool = True) -> None:
    """Run `admit` on every capture from now on (`needed`), or none; `plain`: no
    trace-following, rate limit or folding is configured."""
    ADMISSION.admit = admit if needed else None
    ADMISSION.plain = plain

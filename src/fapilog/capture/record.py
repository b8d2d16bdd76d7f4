"""What the caller's thread captures of one event, and the two ends of structlog's chain.

The final processor (`OTelBridge`) only captures: the timestamp, the level, the logger name,
the event dict (non-primitive values coerced to a snapshot), the current OpenTelemetry
context (so trace and span ids are the caller's, never a worker's) and the exception. The
wrapped logger (`Sink`) hands that `Pending` record to the process's bridge
(`fapilog.otel.bridge`), which turns it into an OpenTelemetry LogRecord on its worker.
Emitting through the SDK on the caller's thread would cost several times more
(docs/benchmarks.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, MutableMapping
from math import isfinite as _isfinite
from typing import Any, NamedTuple

from opentelemetry import context as otel_context

from fapilog import _diag, _levels
from fapilog._state import STATE
from fapilog.capture.coerce import (
    ERROR_KEY,
    coerce_attributes,
    safe_repr,
    safe_str,
)
from fapilog.otel.logs import SeverityNumber

__all__ = [
    "ADMISSION",
    "Admission",
    "OTelBridge",
    "Pending",
    "Released",
    "SALVAGED_MESSAGE",
    "Sink",
    "StdlibSink",
    "capture",
    "exception_of",
    "salvage",
    "stdlib_sink",
    "unformatted",
]


class Pending(NamedTuple):
    """One captured event, on its way to the bridge."""

    timestamp: int  # ns since the epoch
    severity: SeverityNumber
    severity_text: str
    logger: str
    event: dict[str, Any]
    context: otel_context.Context
    exception: BaseException | None
    # when a handler observed a record made earlier elsewhere (a stdlib LogRecord: its
    # `created` is `timestamp`), ns since the epoch; 0: the bridge's emit time is the
    # observed time (fapilog's own loggers: no second clock read on the caller's thread)
    observed: int


class Released(Pending):
    """A capture exported although it is below its logger's exported level: a flight
    recorder released it, or the request asked for DEBUG (docs/sampling.md). It goes to
    every exporter, whatever their levels."""

    __slots__ = ()


class Sink:
    """The wrapped logger at the end of structlog's chain: it hands the capture to the
    bridge. One per logger name (interned), carrying that name's levels: `min_level`, the
    caller's gate (the lowest level anything wants of the logger: an exporter, a flight
    recorder), and `export_level`, the lowest level exported as it is logged (records
    between the two go only to a flight recorder); `limiter`, its rate limit, if any."""

    __slots__ = ("export_level", "export_severity", "limiter", "min_level", "name")

    def __init__(self, name: str, min_level: int = 20) -> None:
        self.name = name
        self.min_level = min_level
        self.export_level = min_level
        self.export_severity = _levels.severity_for_number(min_level).value if min_level else 0
        self.limiter: Any = None  # fapilog.capture.noise.Bucket

    def _put(self, pending: Pending) -> None:
        _put(pending)

    debug = info = msg = warning = warn = error = exception = critical = fatal = log = _put

    def __repr__(self) -> str:
        return f"<fapilog.Sink {self.name!r}>"


_put = STATE.put


class StdlibSink(Sink):
    """Sink for one stdlib LogRecord: carries the record's own time and level."""

    __slots__ = ("created_ns", "level", "observed_ns")

    def __init__(
        self, name: str, created_ns: int, level: _levels.Level, named: Sink | None = None
    ) -> None:
        super().__init__(name, 0)
        self.created_ns = created_ns
        self.observed_ns = time.time_ns()  # when fapilog's handler saw the record
        self.level = level
        if named is not None:  # the levels and rate limit of the logger's own Sink
            self.export_level = named.export_level
            self.export_severity = named.export_severity
            self.limiter = named.limiter


def stdlib_sink(
    name: str, created: float, levelno: int, levelname: str, named: Sink | None = None
) -> StdlibSink:
    level = _levels.BY_METHOD.get(levelname.lower())
    if level is None or level.number != levelno:
        level = _levels.level_for_number(levelno, levelname)
    return StdlibSink(name, int(created * 1e9), level, named)


class Admission:
    """What decides, at the end of the chain, whether a capture goes on now: set
    (`admit`) while a flight recorder, a rate limit, folding or trace-following sampling
    are configured (`fapilog.capture.admission`), and run by the chain's last processor
    then (`fapilog.pipeline.direct.AdmittingBridge`); None otherwise. `admit(sink,
    pending)` returns the capture to hand on, or raises structlog's DropEvent (held,
    limited, folded, sampled out)."""

    __slots__ = ("admit", "plain")

    def __init__(self) -> None:
        self.admit: Callable[[Any, Pending], Pending] | None = None
        # neither trace-following, nor rate limits, nor folding: a record at or above its
        # logger's exported level and below WARNING goes on untouched (the common case
        # under flight recorders)
        self.plain = True


ADMISSION = Admission()


_PLAIN = frozenset({str, bool, type(None)})
_get_current = otel_context.get_current
_new_tuple = tuple.__new__
_BY_METHOD = _levels.BY_METHOD
_INFO = _levels.BY_NAME["INFO"]


def exception_of(exc_info: Any) -> BaseException | None:
    """The exception an ``exc_info`` value means: an exception, a ``sys.exc_info()`` tuple,
    or True (the exception being handled)."""
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
        exc = exception_of(event.pop("exc_info"))
    elif method_name == "exception":
        exc = sys.exc_info()[1]
    for value in event.values():
        kind = type(value)
        if kind in _PLAIN:
            continue
        # an int within signed 64 bits and a finite float are already AnyValues: no walk
        # for them (ids, counts, durations); the bounds, INT64_MIN and INT64_MAX, are
        # written as literals (constants: cheaper than reading two globals)
        if kind is int:
            if -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
                continue
        elif kind is float and _isfinite(value):
            continue
        coerce_attributes(event)
        break
    observed = 0
    if isinstance(logger, StdlibSink):
        level = logger.level
        timestamp = logger.created_ns
        observed = logger.observed_ns
    else:
        level = _BY_METHOD.get(method_name, _INFO)
        timestamp = time.time_ns()
    name = logger.name if isinstance(logger, Sink) else getattr(logger, "name", "structlog")
    # (tuple.__new__ directly: cheaper than the generated NamedTuple __new__)
    return _new_tuple(
        Pending,
        (timestamp, level.severity, level.name, name, event, _get_current(), exc, observed),
    )


SALVAGED_MESSAGE = "<record could not be processed>"


def salvage(logger: Any, method_name: str, what: str, exc: BaseException) -> None:
    """Hand over a best-effort record in place of one that failed (`what` failed with
    `exc`): its time, level, logger name and trace context, with ``fapilog.error`` saying
    what failed. The message and values are left out: the chain that failed may be the one
    that redacts them (fapilog's diagnostics on stderr show the exception). Never raises."""
    error = f"{what}: {type(exc).__name__}"
    _diag.report(f"salvage:{what}", f"fapilog: {what}: {safe_repr(exc)}")
    try:
        method = "error" if method_name == "exception" else method_name
        _put(capture(logger, method, {"event": SALVAGED_MESSAGE, ERROR_KEY: error}))
    except Exception as lost:
        _diag.report("salvage", f"fapilog lost a record: {error}; {safe_repr(lost)}")


def unformatted(message: Any, args: Any) -> str:
    """The text of a message its %-arguments did not format: the message and the arguments
    as they are (``"%d items ('x',)"``), each part's text failing alone. Never raises."""
    if not args:
        return safe_str(message)
    if isinstance(args, tuple):
        items = ", ".join(safe_repr(arg) for arg in args)
        shown = f"({items},)" if len(args) == 1 else f"({items})"
    else:
        shown = safe_repr(args)
    return f"{safe_str(message)} {shown}"

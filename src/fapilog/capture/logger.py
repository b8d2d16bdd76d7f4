"""The logging facade: `log`, `get_logger()` and the structlog wrapper class behind them.

The level gate is the first thing a call does (a filtered call costs one attribute read),
and it reads the level from the logger's `Sink`, so a reconfiguration changes the level of
loggers that already exist. The processor chain is one list object (`STATE.chain`), mutated
in place on reconfiguration, for the same reason (structlog's own `capture_logs` relies on
this too).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.contextvars import merge_contextvars
from structlog.typing import Processor

from fapilog import _levels
from fapilog._state import STATE
from fapilog.capture.coerce import ERROR_KEY, safe_repr, safe_str
from fapilog.capture.noise import limiter_for
from fapilog.capture.processors import add_trace_context
from fapilog.capture.record import OTelBridge, Sink, salvage, unformatted
from fapilog.capture.recorder import DEFERRED, RECORDER, Recorder, hold_call, recorder_wants

__all__ = [
    "BoundLogger",
    "CHAIN",
    "configure_structlog",
    "default_chain",
    "gate_levels",
    "get_logger",
    "levels_of",
    "log",
    "restore_levels",
    "saved_levels",
    "set_capture_floor",
    "set_levels",
    "sink_for",
]


def _configure_first(logger: Any, method_name: str, event_dict: Any) -> Any:
    """The chain's first processor until fapilog is configured: the first event configures
    fapilog from the environment BEFORE it is processed, so it gets the configured enrichers
    and redaction like every later event (no secret in the very first line). Configuring
    replaces CHAIN's contents in place, and a `for` loop over a list continues by index, so
    the processors run after this one are the configured chain's (trace context, enrichers,
    redaction, bridge); this one stands in for the configured chain's merge_contextvars."""
    if (
        STATE.bridge is None
        and STATE.autoconfigure is not None
        and CHAIN[0] is _configure_first
        and isinstance(CHAIN[-1], OTelBridge)  # not inside capture_logs()
    ):
        STATE.autoconfigure()
        # the level gate let this event through before there was a configuration: the
        # configured level (FAPILOG_LEVEL, logger_levels) applies to it too
        level = _levels.BY_METHOD.get(method_name)
        if isinstance(logger, Sink) and level is not None and logger.min_level > level.number:
            raise structlog.DropEvent
    return merge_contextvars(logger, method_name, event_dict)


def default_chain() -> list[Processor]:
    """The chain before configuration (and after a reset)."""
    return [_configure_first, add_trace_context, OTelBridge()]


# The processor chain shared by every fapilog logger (see module doc).
CHAIN: list[Processor] = STATE.chain
CHAIN[:] = default_chain()


class _NamedSink(Sink):
    """The interned Sink of one logger name (weakly referenceable, see `_SINKS`)."""

    __slots__ = ("__weakref__",)


# One interned Sink per logger name, as long as a logger holds it: the table itself keeps
# no Sink alive, so a process that logs under ever new names (a name per request, per
# tenant) does not grow, and `set_levels` still reaches every live logger's Sink. A name
# whose loggers are all gone gets a new Sink, at the configured level, when next used.
_SINKS: weakref.WeakValueDictionary[str, Sink] = weakref.WeakValueDictionary()
_SINKS_LOCK = threading.RLock()  # reentrant: a signal handler may create a logger


def _export_level_for(name: str) -> int:
    """The lowest level any exporter takes from `name` as it is logged: its logger_levels
    entry, else the lowest of `level` and the exporters' own levels."""
    entry = STATE.entry_for(name)
    return entry if entry is not None else min(STATE.default_level, STATE.exporter_floor)


def _apply_to(sink: Sink) -> None:
    """Give `sink` the current levels and rate limit of its name."""
    export = _export_level_for(sink.name)
    sink.export_level = export
    sink.export_severity = _levels.severity_for_number(export).value if export else 0
    sink.limiter = limiter_for(sink.name)
    # the caller's gate: also what a flight recorder or the debug header may want
    sink.min_level = min(export, STATE.capture_floor)


def sink_for(name: str) -> Sink:
    sink = _SINKS.get(name)
    if sink is None:
        with _SINKS_LOCK:
            sink = _SINKS.get(name)
            if sink is None:
                sink = _NamedSink(name)
                _apply_to(sink)
                _SINKS[name] = sink
    return sink


def set_levels(
    default: int,
    per_logger: dict[str, int],
    *,
    exporter_floor: int | None = None,
    capture_floor: int | None = None,
) -> None:
    """Set the minimum levels (stdlib numbers), for existing loggers too; the floors (the
    lowest exporter level, the lowest level recorders capture) stay unless given."""
    with _SINKS_LOCK:  # a Sink created meanwhile gets the new levels too
        STATE.default_level = default
        STATE.logger_levels = dict(per_logger)
        if exporter_floor is not None:
            STATE.exporter_floor = exporter_floor
        if capture_floor is not None:
            STATE.capture_floor = capture_floor
        _refresh()
    _notify()


def _refresh() -> None:
    # an INFO call may be below its logger's exported level, let through for a recorder,
    # only while recorders capture INFO: then `info` checks (one more attribute read).
    # Swapped before the gates are lowered, after they are raised; and only when it
    # changes (each class attribute assignment costs the class a version tag)
    checked = STATE.capture_floor <= 20
    if checked:
        _use_info(BoundLogger._info_checked)
    for sink in list(_SINKS.values()):
        _apply_to(sink)
    if not checked:
        _use_info(BoundLogger._info_fast)


def _use_info(method: Any) -> None:
    if BoundLogger.__dict__["info"] is not method:
        BoundLogger.info = BoundLogger.msg = method


def _notify() -> None:
    """Tell the level listeners (stdlib routing), outside the Sinks' lock: they take
    logging's own lock."""
    for listener in list(STATE.level_listeners):
        listener()


def set_capture_floor(level: int) -> None:
    """From now on, let records from `level` up through the caller's gate for flight
    recorders (outside one they are dropped right after it); `NO_FLOOR`: none."""
    if level != STATE.capture_floor:
        with _SINKS_LOCK:
            STATE.capture_floor = level
            _refresh()


def levels_of(settings_level: str, logger_levels: Mapping[str, str]) -> tuple[int, dict[str, int]]:
    """Level names of the settings as stdlib numbers: (default, per logger)."""
    return _levels.number_of(settings_level), {
        name: _levels.number_of(level) for name, level in logger_levels.items()
    }


def gate_levels() -> tuple[int, dict[str, int]]:
    """The levels stdlib logging gets: the root's (the lowest level an exporter takes from
    a logger without an entry) and each logger_levels entry's. Flight recorders do not
    lower them (stdlib handlers other than fapilog's would receive what they let through):
    a stdlib record reaches a recorder when its logger's level lets it through."""
    root = min(STATE.default_level, STATE.exporter_floor)
    return root, dict(STATE.logger_levels)


def saved_levels() -> tuple[int, dict[str, int], dict[str, int]]:
    """The levels now (default, per logger, per existing sink), for `restore_levels`."""
    return (
        STATE.default_level,
        dict(STATE.logger_levels),
        {name: sink.min_level for name, sink in _SINKS.items()},
    )


def restore_levels(saved: tuple[int, dict[str, int], dict[str, int]]) -> None:
    """Put back what `saved_levels` saw; a Sink created since gets the restored levels."""
    default, per_logger, sinks = saved
    with _SINKS_LOCK:
        STATE.default_level = default
        STATE.logger_levels = per_logger
        for sink in list(_SINKS.values()):
            level = sinks.get(sink.name)
            _apply_to(sink)
            if level is not None:
                sink.min_level = level


def configure_structlog() -> None:
    """Point structlog at fapilog's chain, wrapper class and sinks, so that
    `structlog.get_logger()` in user code goes through the same pipeline."""
    structlog.configure(
        processors=CHAIN,
        wrapper_class=BoundLogger,
        context_class=dict,
        logger_factory=_factory,
        cache_logger_on_first_use=True,
    )


def _factory(name: str | None = None, *args: Any) -> Sink:
    """structlog logger factory: `structlog.get_logger("x")` gets the interned sink "x"."""
    return sink_for(name if isinstance(name, str) else "app")


class BoundLogger(structlog.BoundLoggerBase):
    """fapilog's structlog wrapper class: the usual level methods with a live level gate.

    `log.info("paid", order_id=7)`; `log.info("%s paid", "alice")` formats stdlib-style;
    `log.exception("failed")` inside an `except` block adds the exception; `bind()`,
    `unbind()`, `new()` and `try_unbind()` come from structlog. The `a*` variants exist for
    code written against structlog's async API; they do not need an executor here because
    logging never blocks.

    No call raises, whatever its arguments: what cannot be honoured (an unknown level, a
    message its arguments do not format) is logged as well as it can be, with a
    ``fapilog.error`` attribute saying what was wrong. The message and the level are
    positional-only, so ``event=`` and ``level=`` keywords beside them are fields like any
    other (``event=`` next to a message is kept as ``attr.event``); alone, they still mean
    the message (``log.info(event="x")``) and the level (``log.log(level=30, ...)``).
    """

    _logger: Sink

    def _emit(self, method_name: str, event: Any, event_kw: dict[str, Any]) -> Any:
        """structlog's `_proxy_to_logger` for the level methods, without its detours (the
        keyword arguments packed twice more, one more call layer, the result's type tested
        through a chain of isinstance): the same event dict (bound context, then the
        keyword arguments, then ``event``), the same chain, `DropEvent` honoured, the
        final processor's result handed to the wrapped logger's method as structlog does.
        A chain that fails on the event hands over a best-effort record instead
        (`fapilog.capture.record.salvage`): nothing raises into the caller."""
        event_dict: Any = self._context.copy()
        if event_kw:
            event_dict.update(event_kw)
            if event is not None and "event" in event_kw:
                event_dict["attr.event"] = event_kw["event"]  # not overwritten by the message
        if event is not None:
            event_dict["event"] = event
        logger = self._logger
        try:
            # the list object itself, not a copy: `_configure_first` relies on it
            for proc in self._processors:
                event_dict = proc(logger, method_name, event_dict)
            if isinstance(event_dict, tuple):  # the bridge's (args, kwargs), checked first
                return getattr(logger, method_name)(*event_dict[0], **event_dict[1])
            if isinstance(event_dict, (str, bytes, bytearray)):
                return getattr(logger, method_name)(event_dict)
            if isinstance(event_dict, dict):
                return getattr(logger, method_name)(**event_dict)
            raise ValueError(
                "Last processor didn't return an appropriate value.  Valid return values are "
                "a dict, a tuple of (args, kwargs), bytes, or a str."
            )
        except structlog.DropEvent:
            return None
        except Exception as exc:
            salvage(logger, method_name, "record could not be processed", exc)
            return None

    def _holds_here(self) -> bool:
        """Whether a record for a flight recorder may take the held path (the contextvars
        and enrichers now, redaction at release): the logger runs fapilog's configured
        chain (not its own processors, not inside `capture_logs()`)."""
        return DEFERRED.active and self._processors is CHAIN and isinstance(CHAIN[-1], OTelBridge)

    def _event_dict(self, event: Any, event_kw: dict[str, Any]) -> dict[str, Any]:
        """The event dict `_emit` builds (bound context, keywords, message)."""
        event_dict: dict[str, Any] = self._context.copy()
        if event_kw:
            event_dict.update(event_kw)
            if event is not None and "event" in event_kw:
                event_dict["attr.event"] = event_kw["event"]
        if event is not None:
            event_dict["event"] = event
        return event_dict

    def _gate(self, method: str, levelno: int, event: Any, args: tuple[Any, ...], kw: Any) -> Any:
        sink = self._logger
        if sink.min_level > levelno:
            return None
        held: Recorder | None = None
        if sink.export_level > levelno:  # let through for flight recorders only
            held = RECORDER.get()
            if held is None or not held.open or levelno < held.floor:
                return None
        if args:
            try:
                event = event % args
            except Exception as exc:  # the message and its arguments as they are
                event = unformatted(event, args)
                _note(kw, f"message could not be formatted: {type(exc).__name__}")
        if held is not None and held.boundary != 0 and "exc_info" not in kw and self._holds_here():
            level = _levels.BY_METHOD.get(method, _levels.BY_NAME["INFO"])
            return hold_call(sink, method, self._event_dict(event, kw), held, level)
        return self._emit(method, event, kw)

    def debug(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        sink = self._logger
        if sink.min_level > 10:
            return None
        if sink.export_level > 10 and not args:  # for a flight recorder only: held now
            held = RECORDER.get()
            if held is None or not held.open or held.floor > 10:
                return None
            if held.boundary != 0 and "exc_info" not in kw and self._holds_here():
                return hold_call(sink, "debug", self._event_dict(event, kw), held, _DEBUG)
        return self._gate("debug", 10, event, args, kw)

    def _info_fast(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        """`info` while no recorder captures INFO (see `_refresh`)."""
        if self._logger.min_level > 20:
            return None
        if args:
            return self._gate("info", 20, event, args, kw)
        return self._emit("info", event, kw)

    def _info_checked(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        """`info` while recorders capture INFO: below the logger's exported level, only
        for the current recorder."""
        sink = self._logger
        if sink.min_level > 20:
            return None
        if args or sink.export_level > 20:
            return self._gate("info", 20, event, args, kw)
        return self._emit("info", event, kw)

    info = msg = _info_fast

    def warning(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        if self._logger.min_level > 30:
            return None
        return self._gate("warning", 30, event, args, kw)

    warn = warning

    def error(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        if self._logger.min_level > 40:
            return None
        return self._gate("error", 40, event, args, kw)

    def exception(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        if self._logger.min_level > 40:
            return None
        kw.setdefault("exc_info", sys.exc_info()[1] or True)
        return self._gate("error", 40, event, args, kw)

    def critical(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        if self._logger.min_level > 50:
            return None
        return self._gate("critical", 50, event, args, kw)

    fatal = critical

    def log(self, level: Any = None, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        """Log at a level given as a number (stdlib) or a name (``"warning"``). Anything
        else logs at info, with ``fapilog.error`` naming the level given."""
        if level is None and "level" in kw:  # log(level=30, event="...")
            level = kw.pop("level")
        if isinstance(level, int):
            return self._gate(_levels.method_for_number(level), level, event, args, kw)
        if isinstance(level, str):
            method = level.strip().lower()
            known = _levels.BY_METHOD.get(method)
            if known is not None:
                return self._gate(method, known.number, event, args, kw)
        if self._logger.min_level > 20:
            return None
        _note(kw, f"unknown level {safe_repr(level)[:64]}, logged at info")
        return self._gate("info", 20, event, args, kw)

    def is_enabled_for(self, level: int) -> bool:
        sink = self._logger
        return sink.min_level <= level and (sink.export_level <= level or recorder_wants(level))

    isEnabledFor = is_enabled_for

    async def adebug(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        return self.debug(event, *args, **kw)

    async def ainfo(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        return self.info(event, *args, **kw)

    async def awarning(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        return self.warning(event, *args, **kw)

    async def aerror(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        return self.error(event, *args, **kw)

    async def aexception(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", sys.exc_info()[1] or True)
        return self.error(event, *args, **kw)

    async def acritical(self, event: Any = None, /, *args: Any, **kw: Any) -> Any:
        return self.critical(event, *args, **kw)

    @property
    def name(self) -> str:
        return self._logger.name


_DEBUG = _levels.BY_NAME["DEBUG"]


def _note(kw: dict[str, Any], error: str) -> None:
    """Add `error` to the record's ``fapilog.error`` (after any note already there)."""
    earlier = kw.get(ERROR_KEY)
    kw[ERROR_KEY] = error if earlier is None else f"{safe_str(earlier)}; {error}"


def get_logger(name: str | None = None, **initial_values: Any) -> BoundLogger:
    """A logger named `name` (default: the calling module's `__name__`), bound to
    `initial_values`. Works before `configure_logging()`: the first event configures
    fapilog from the environment."""
    if name is None:
        frame = sys._getframe(1)
        name = frame.f_globals.get("__name__", "app")
    return BoundLogger(sink_for(str(name)), CHAIN, initial_values)


log: BoundLogger = BoundLogger(sink_for("app"), CHAIN, {})

"""Route stdlib `logging` (the application's, libraries', uvicorn's) into fapilog.

One handler on the root logger turns each LogRecord into an event dict and runs it through
the same processor chain as `log.info()` (so enrichment and redaction apply), ending at the
bridge. `extra={...}` fields become attributes. Records logged on fapilog's own worker
threads (an SDK or HTTP-library warning raised while exporting) go to stderr instead, so the
pipeline never feeds itself.

A logging configuration made after `configure_logging()` (`logging.config.dictConfig()`,
`fileConfig()`, `logging.basicConfig()`: Alembic's env.py, Celery, uvicorn.run) would take
stdlib logging away from fapilog: while stdlib capture is on, fapilog puts its handler back
on the root logger after each one (the handlers the call configured stay; one that prints
the same lines a second time is named once on stderr). Either at once, when the call went
through the `logging` modules' attributes, or before the next record is made, however the
function was imported (the configuration closes fapilog's handler: `FapilogHandler.close`).

OpenTelemetry's own `LoggingHandler` on the root logger (the SDK's, the logging
instrumentation's) would send every stdlib record to OpenTelemetry a second time: while
fapilog captures stdlib logging it takes such a handler off the root logger, when it
starts capturing and after each of those configuration calls, naming it once on stderr,
and puts the one it took last back when it stops capturing (`uninstall`).
"""

from __future__ import annotations

import functools
import logging
import logging.config
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from structlog import DropEvent

from fapilog import _diag
from fapilog._state import STATE
from fapilog.capture.coerce import ERROR_KEY, safe_str
from fapilog.capture.logger import gate_levels, sink_for
from fapilog.capture.record import Sink, salvage, stdlib_sink, unformatted
from fapilog.integrations.access_lines import ACCESS_FILTER, CLEANED_LOGGERS

if TYPE_CHECKING:
    from fapilog.settings import LoggingSettings

__all__ = [
    "FapilogHandler",
    "TAKEN_OVER",
    "install",
    "install_config_guard",
    "installed_handler",
    "is_otel_logging_handler",
    "remove_otel_handlers",
    "reroute",
    "route",
    "uninstall",
    "uninstall_config_guard",
]

# LogRecord attributes that are not user `extra` fields.
# color_message: uvicorn's ANSI-coloured copy of the message, meant for its own formatter;
# otel*: what OpenTelemetry's logging instrumentation adds to every record under
# OTEL_PYTHON_LOG_CORRELATION=true (for text formats), the record's own trace fields and
# resource again
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
    | {"otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName"}
)
# A message that is not text, logged without %-arguments (``logging.info({"id": 7})``), is
# the record's body as it is, as the SDK's handler keeps it: a map stays a map
_BODY_KINDS = (Mapping, list, tuple, bytes, bool, int, float, type(None))
# Loggers that ship their own handlers writing plain text: they propagate to fapilog instead.
TAKEN_OVER = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn", "gunicorn.error",
              "gunicorn.access", "hypercorn.error", "hypercorn.access", "_granian",
              "granian.access")  # fmt: skip

_local = threading.local()
_MAX_DEPTH = 2


class FapilogHandler(logging.Handler):
    """A stdlib handler feeding fapilog's processor chain."""

    def __init__(self, chain: list[Any], level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._chain = chain

    def createLock(self) -> None:
        self.lock = None  # emit is thread-safe on its own: no handler lock, no contention

    def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None

    def close(self) -> None:
        """`logging.config.dictConfig()`/`fileConfig()` and `basicConfig(force=True)` close
        every handler before they configure anew: fapilog takes stdlib logging back before
        the next record is made (see the module doc)."""
        routing: StdlibRouting | None = STATE.stdlib
        if routing is not None and routing.handler is self:
            routing.dirty = True
        super().close()

    def handle(self, record: logging.LogRecord) -> bool:
        # stdlib filters, then emit (without the handler lock, see createLock)
        rv: Any = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a record
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        # one nested record goes through (a signal handler that logs while this thread was
        # inside emit); a record logged from deeper (a processor that logs) goes to stderr,
        # so the pipeline never feeds itself
        depth = getattr(_local, "depth", 0)
        if depth >= _MAX_DEPTH or threading.get_ident() in STATE.worker_ids:
            _to_stderr(record)
            return
        _local.depth = depth + 1
        try:
            self._process(record)
        except Exception as exc:  # never raise into the application: a best-effort record
            _salvage(record, exc)
        finally:
            _local.depth = depth

    def _process(self, record: logging.LogRecord) -> None:
        # (a record below fapilog's level for its logger got here because that logger's
        # own stdlib level lets it through: it is exported, or held by a flight recorder)
        named = _NAMED.get(record.name)
        if named is None:
            named = _named(record.name)
        event: dict[str, Any] = {}
        message: Any = record.msg
        if record.args or type(message) is str or not isinstance(message, _BODY_KINDS):
            try:
                message = record.getMessage()
            except Exception as exc:  # bad %-format args, a str() that raises: the parts
                message = unformatted(record.msg, record.args)
                event[ERROR_KEY] = f"message could not be formatted: {type(exc).__name__}"
        event["event"] = message
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                # extra={"event": ...} is a field, not the message
                event["attr.event" if key == "event" else key] = value
        if record.exc_info and record.exc_info[1] is not None:
            event["exc_info"] = record.exc_info
        if record.stack_info:
            event["stack_info"] = record.stack_info
        method = record.levelname.lower()
        sink = stdlib_sink(record.name, record.created, record.levelno, record.levelname, named)
        processed: Any = event
        try:
            for processor in self._chain:
                processed = processor(sink, method, processed)
        except DropEvent:
            return
        args, kwargs = processed
        sink._put(*args, **kwargs)


# the Sinks of stdlib logger names, held (the interned table holds none): a stdlib record
# reads its logger's levels there; at most `_NAMED_AT_MOST` names
_NAMED: dict[str, Sink] = {}
_NAMED_AT_MOST = 1024


def _named(name: str) -> Sink:
    if len(_NAMED) >= _NAMED_AT_MOST:
        _NAMED.clear()
    sink = _NAMED[name] = sink_for(name)
    return sink


def apply_levels() -> None:
    """The loggers' levels changed (`fapilog.set_level`, a flight recorder): stdlib
    logging's levels follow, if fapilog routes it."""
    routing: StdlibRouting | None = STATE.stdlib
    if routing is None or routing.handler is None:
        return
    root_level, per_logger = gate_levels()
    logging.getLogger().setLevel(root_level)
    _set_logger_levels(routing, per_logger)


def _set_logger_levels(routing: StdlibRouting, per_logger: dict[str, int]) -> None:
    """Give the named stdlib loggers their levels; a logger fapilog no longer names gets
    back the level it had before fapilog first set one (its own, often NOTSET)."""
    for name in routing.leveled - set(per_logger):
        logging.getLogger(name).setLevel(routing.own_levels.pop(name, logging.NOTSET))
    for name, value in per_logger.items():
        logger = logging.getLogger(name)
        if name not in routing.leveled and name not in routing.own_levels:
            routing.own_levels[name] = logger.level
        logger.setLevel(value)
    routing.leveled = set(per_logger)


STATE.level_listeners.append(apply_levels)


def _salvage(record: logging.LogRecord, exc: Exception) -> None:
    """A record the chain failed on: a best-effort record in its place (see `salvage`)."""
    try:
        sink = stdlib_sink(record.name, record.created, record.levelno, record.levelname)
    except Exception:  # a record whose time or level are not what logging makes
        sink = stdlib_sink(safe_str(record.name), time.time(), logging.WARNING, "WARNING")
    salvage(sink, "warning", "stdlib record could not be processed", exc)


def _to_stderr(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        message = unformatted(record.msg, record.args)
    _diag.report(
        f"internal:{record.name}:{message[:80]}",
        message,
        level=record.levelname.lower(),
        source_logger=record.name,
    )


class StdlibRouting:
    """What `install` changed in stdlib logging, to undo it (kept as `STATE.stdlib`)."""

    def __init__(self) -> None:
        self.handler: FapilogHandler | None = None
        self.removed: list[tuple[logging.Logger, logging.Handler]] = []
        self.saved: dict[str, tuple[bool, int]] = {}  # logger name -> (propagate, level)
        self.root_level = logging.WARNING
        # a logging configuration closed fapilog's handler: take logging back (module doc)
        self.dirty = False
        # the LogRecord factory fapilog put in front of `previous_factory` (module doc)
        self.factory: Callable[..., logging.LogRecord] | None = None
        self.previous_factory: Callable[..., logging.LogRecord] | None = None
        # console handlers already named in a warning, each once (the same configuration
        # applied again builds new handler objects): (logger, handler name, type, stream)
        self.warned: set[tuple[str, str, str, str]] = set()
        self.leveled: set[str] = set()  # loggers given a level of logger_levels
        # OpenTelemetry LoggingHandlers taken off the root logger last (put back by
        # `uninstall`), and the handler types already named in a warning, each once
        self.otel_removed: list[logging.Handler] = []
        self.otel_warned: set[str] = set()
        self.own_levels: dict[str, int] = {}  # ... and the level each had before


def _routing() -> StdlibRouting:
    routing: StdlibRouting | None = STATE.stdlib
    if routing is None:
        routing = STATE.stdlib = StdlibRouting()
    return routing


def _is_console_handler(handler: logging.Handler) -> bool:
    if isinstance(handler, FapilogHandler):
        return True
    if type(handler) is logging.StreamHandler:
        return handler.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return False


def install(
    chain: list[Any], level: int, logger_levels: dict[str, int], *, keep_console: bool = False
) -> None:
    """Put the handler on the root logger (once), take over uvicorn/gunicorn loggers, and
    apply levels. Plain console handlers on the root logger are removed (they would print
    text beside the JSON), unless `keep_console` (a configuration made after fapilog's:
    see `reroute`); file and other handlers are left alone."""
    root = logging.getLogger()
    routing = _routing()
    if routing.handler is None:
        routing.root_level = root.level
        routing.handler = FapilogHandler(chain)
    handler = routing.handler
    if routing.factory is None:
        routing.previous_factory = logging.getLogRecordFactory()
        routing.factory = _record_factory(routing, routing.previous_factory)
        logging.setLogRecordFactory(routing.factory)
    for existing in list(root.handlers):
        if existing is handler or not _is_console_handler(existing):
            continue
        if not keep_console or isinstance(existing, FapilogHandler):
            root.removeHandler(existing)
            routing.removed.append((root, existing))
    remove_otel_handlers()
    if handler not in root.handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in TAKEN_OVER:
        logger = logging.getLogger(name)
        if name not in routing.saved and not logger.propagate and not logger.handlers:
            continue  # silenced on purpose (`uvicorn --no-access-log`): keep it silent
        if name not in routing.saved:
            routing.saved[name] = (logger.propagate, logger.level)
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
            routing.removed.append((logger, existing))
        logger.propagate = True
        if name in CLEANED_LOGGERS and ACCESS_FILTER not in logger.filters:
            logger.addFilter(ACCESS_FILTER)  # the servers' request lines: no query strings
        if name not in logger_levels:
            logger.setLevel(logging.NOTSET)
    _set_logger_levels(routing, logger_levels)
    logging.captureWarnings(True)


def uninstall() -> None:
    """Undo `install` (tests, `fapilog.shutdown(restore_logging=True)`), and stop following
    logging configuration calls; nothing at all if stdlib logging was never routed."""
    uninstall_config_guard()
    routing: StdlibRouting | None = STATE.stdlib
    if routing is None:
        return
    root = logging.getLogger()
    if routing.factory is not None and logging.getLogRecordFactory() is routing.factory:
        logging.setLogRecordFactory(routing.previous_factory or logging.LogRecord)
    routing.factory = None  # (one installed on top of it now only passes records on)
    if routing.handler is not None:
        root.removeHandler(routing.handler)
        routing.handler = None
    for logger, handler in [*routing.removed, *((root, h) for h in routing.otel_removed)]:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    _set_logger_levels(routing, {})  # the loggers fapilog gave a level get their own back
    for name, (propagate, level) in routing.saved.items():
        logger = logging.getLogger(name)
        logger.propagate = propagate
        logger.setLevel(level)
        logger.removeFilter(ACCESS_FILTER)
    STATE.stdlib = None
    root.setLevel(routing.root_level)
    logging.captureWarnings(False)


def installed_handler() -> FapilogHandler | None:
    routing: StdlibRouting | None = STATE.stdlib
    return routing.handler if routing is not None else None


def route(settings: LoggingSettings) -> None:
    """Route stdlib logging as `settings` say: through fapilog's chain at the configured
    levels, following later logging configuration calls (``capture_stdlib``, the
    default), or not at all."""
    if not settings.capture_stdlib:
        uninstall()
        return
    level, per_logger = gate_levels()
    install(STATE.chain, level, per_logger)
    install_config_guard()


def _intact() -> bool:
    handler = installed_handler()
    taken = [logging.getLogger(name) for name in TAKEN_OVER]
    return (
        handler is not None
        and handler in logging.getLogger().handlers
        and all(logger.propagate and not logger.handlers for logger in taken)
    )


def reroute(*, when_broken: bool = False) -> None:
    """Route stdlib logging into fapilog again after something else configured logging
    (uvicorn's `dictConfig` at start-up, a `logging.config` call), if fapilog is
    configured with ``capture_stdlib``: fapilog's handler back on the root logger, the
    servers' loggers propagating to it, fapilog's levels. The handlers that configuration
    added stay; a console handler among them that prints what fapilog writes is named in
    a warning, once. `when_broken`: only if fapilog's handler left the root logger or a
    server's logger has handlers again."""
    settings = STATE.settings
    routing: StdlibRouting | None = STATE.stdlib
    if settings is None or not settings.capture_stdlib or not STATE.is_configured():
        return
    if when_broken and _intact():
        return
    if routing is not None:
        routing.dirty = False
    level, per_logger = gate_levels()
    install(STATE.chain, level, per_logger, keep_console=True)
    _warn_duplicates(_routing())


# -- OpenTelemetry's own handlers on the root logger ------------------------------------------


def is_otel_logging_handler(handler: logging.Handler) -> bool:
    """Whether `handler` is (or subclasses) an OpenTelemetry `LoggingHandler`: the SDK's
    (``opentelemetry.sdk._logs``) or the logging instrumentation's, each of which sends
    every record it handles to an OpenTelemetry LoggerProvider."""
    return any(
        kind.__name__ == "LoggingHandler" and kind.__module__.startswith("opentelemetry.")
        for kind in type(handler).__mro__
    )


def remove_otel_handlers() -> list[logging.Handler]:
    """Take OpenTelemetry's `LoggingHandler`s off the root logger and return them. While
    fapilog routes stdlib logging they are kept to be put back by `uninstall`, and each
    handler type is named in a warning on stderr once."""
    root = logging.getLogger()
    removed = [h for h in list(root.handlers) if is_otel_logging_handler(h)]
    for handler in removed:
        root.removeHandler(handler)
    routing: StdlibRouting | None = STATE.stdlib
    if routing is None or not removed:
        return removed
    routing.otel_removed = removed  # the latest configuration's: the ones to put back
    for handler in removed:
        kind = f"{type(handler).__module__}.{type(handler).__qualname__}"
        if kind in routing.otel_warned:
            continue
        routing.otel_warned.add(kind)
        name = handler.get_name()
        label = f"{name!r} ({kind})" if name else kind
        _diag.report(
            f"stdlib-otel-handler:{kind}",
            f"fapilog: removed the OpenTelemetry logging handler {label} from the root "
            "logger: fapilog already sends every stdlib record to OpenTelemetry, so each "
            "would be exported twice; it is put back if fapilog stops capturing stdlib "
            "logging (FAPILOG_CAPTURE_STDLIB=false)",
            handler=label,
        )
    return removed


# -- console handlers beside fapilog's --------------------------------------------------------


def _console_stream(handler: logging.Handler) -> str | None:
    """``stdout`` or ``stderr`` when `handler` prints records there."""
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return None
    stream = getattr(handler, "stream", None)
    if stream is None:
        return None
    if stream is sys.stdout or stream is sys.__stdout__:
        return "stdout"
    if stream is sys.stderr or stream is sys.__stderr__:
        return "stderr"
    return None


def _reaches_root(logger: logging.Logger) -> bool:
    """Whether what `logger` handles also reaches the root logger's handlers."""
    current: logging.Logger | None = logger
    while current is not None and current.parent is not None:
        if not current.propagate:
            return False
        current = current.parent
    return True


def _duplicate_handlers() -> list[tuple[str, logging.Handler, str]]:
    """Console handlers printing the records fapilog's root handler also writes, as
    (logger name, handler, stream): on the root logger, or on a logger whose records
    propagate to it."""
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in list(root.manager.loggerDict.values())
        if isinstance(logger, logging.Logger) and logger.handlers and not logger.disabled
    ]
    found = []
    for logger in loggers:
        if not _reaches_root(logger):
            continue
        for handler in list(logger.handlers):
            stream = _console_stream(handler)
            if stream is not None:
                found.append((logger.name, handler, stream))
    return found


def _warn_duplicates(routing: StdlibRouting) -> None:
    for logger_name, handler, stream in _duplicate_handlers():
        name = handler.get_name()
        seen = (logger_name, name or "", type(handler).__name__, stream)
        if seen in routing.warned:
            continue
        routing.warned.add(seen)
        kind = f"{type(handler).__name__} to {stream}"
        label = f"{name!r} ({kind})" if name else kind
        where = (
            "the root logger"
            if logger_name == "root"
            else f"the logger {logger_name!r}, which propagates to the root logger"
        )
        _diag.report(
            f"stdlib-duplicate:{':'.join(seen)}",
            f"fapilog: the logging handler {label} on {where} prints the records fapilog "
            "also writes, so each line appears twice: remove it from the logging "
            "configuration, or set FAPILOG_CAPTURE_STDLIB=false to leave stdlib logging "
            "to it",
            handler=name or repr(handler),
            source_logger=logger_name,
        )


# -- following later logging configuration calls ------------------------------------------

# the functions that configure logging anew: (module, attribute)
_CONFIG_CALLS = (
    (logging.config, "dictConfig"),
    (logging.config, "fileConfig"),
    (logging, "basicConfig"),
)
_GUARD_MARK = "_fapilog_guard"
# run after each take-back (the opentelemetry-instrument distro removes OpenTelemetry's
# own root handlers there): a registry, kept for the process
_after_config: list[Callable[[], None]] = []


def _take_back() -> None:
    """After a logging configuration call: `reroute`, then the registered hooks. Never
    raises: the application's configuration call must return as it would have."""
    try:
        reroute()
        for hook in list(_after_config):
            hook()
    except Exception as exc:
        _diag.report("stdlib-retake", f"fapilog could not take stdlib logging back: {exc!r}")


def _guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def configure(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        finally:
            _take_back()

    setattr(configure, _GUARD_MARK, True)
    return configure


def _record_factory(
    routing: StdlibRouting, previous: Callable[..., logging.LogRecord]
) -> Callable[..., logging.LogRecord]:
    """A LogRecord factory in front of `previous` that takes stdlib logging back before
    the record is handled, when a configuration closed fapilog's handler or took it off the
    root logger (a function imported before fapilog wrapped it, Celery's root hijack)."""
    root = logging.getLogger()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if routing.factory is not None and (routing.dirty or routing.handler not in root.handlers):
            _take_back()
        return record

    return factory


def install_config_guard(after: Callable[[], None] | None = None) -> None:
    """Wrap `logging.config.dictConfig` / `fileConfig` and `logging.basicConfig` so that
    after each call fapilog takes stdlib logging back (`reroute`), then runs `after`.
    Once per process (until `uninstall_config_guard`)."""
    if after is not None and after not in _after_config:
        _after_config.append(after)
    if STATE.stdlib_guard:
        return
    STATE.stdlib_guard = True
    for module, name in _CONFIG_CALLS:
        setattr(module, name, _guarded(getattr(module, name)))


def uninstall_config_guard() -> None:
    """Put the original functions back where fapilog's wrappers are still in place (one
    wrapped again by someone else stays, and fapilog's part of it does nothing while stdlib
    capture is off)."""
    if not STATE.stdlib_guard:
        return
    STATE.stdlib_guard = False
    for module, name in _CONFIG_CALLS:
        current = getattr(module, name)
        if getattr(current, _GUARD_MARK, False):
            setattr(module, name, current.__wrapped__)

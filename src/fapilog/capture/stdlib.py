"""Route stdlib `logging` (the application's, libraries', uvicorn's) into fapilog.

One handler on the root logger turns each LogRecord into an event dict and runs it through
the same processor chain as `log.info()` (so enrichment and redaction apply), ending at the
bridge. `extra={...}` fields become attributes. Records logged on fapilog's own worker
threads (an SDK or HTTP-library warning raised while exporting) go to stderr instead, so the
pipeline never feeds itself.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from structlog import DropEvent

from fapilog import _diag
from fapilog._state import STATE
from fapilog.capture.coerce import ERROR_KEY, safe_str
from fapilog.capture.logger import levels_of
from fapilog.capture.record import salvage, stdlib_sink, unformatted

if TYPE_CHECKING:
    from fapilog.settings import LoggingSettings

__all__ = [
    "FapilogHandler",
    "TAKEN_OVER",
    "install",
    "installed_handler",
    "reroute",
    "route",
    "uninstall",
]

# LogRecord attributes that are not user `extra` fields.
# color_message: uvicorn's ANSI-coloured copy of the message, meant for its own formatter
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)
# Loggers that ship their own handlers writing plain text: they propagate to fapilog instead.
TAKEN_OVER = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn", "gunicorn.error",
              "gunicorn.access")  # fmt: skip

_local = threading.local()


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

    def handle(self, record: logging.LogRecord) -> bool:
        # stdlib filters, then emit (without the handler lock, see createLock)
        rv: Any = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a record
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() in STATE.worker_ids or getattr(_local, "active", False):
            _to_stderr(record)
            return
        _local.active = True
        try:
            self._process(record)
        except Exception as exc:  # never raise into the application: a best-effort record
            _salvage(record, exc)
        finally:
            _local.active = False

    def _process(self, record: logging.LogRecord) -> None:
        event: dict[str, Any] = {}
        try:
            message = record.getMessage()
        except Exception as exc:  # bad %-format args, a str() that raises: the parts as they are
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
        sink = stdlib_sink(record.name, record.created, record.levelno, record.levelname)
        processed: Any = event
        try:
            for processor in self._chain:
                processed = processor(sink, method, processed)
        except DropEvent:
            return
        args, kwargs = processed
        sink._put(*args, **kwargs)


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


def install(chain: list[Any], level: int, logger_levels: dict[str, int]) -> None:
    """Put the handler on the root logger (once), take over uvicorn/gunicorn loggers, and
    apply levels. Plain console handlers on the root logger are removed (they would print
    text beside the JSON); file and other handlers are left alone."""
    root = logging.getLogger()
    routing = _routing()
    if routing.handler is None:
        routing.root_level = root.level
        routing.handler = FapilogHandler(chain)
    handler = routing.handler
    for existing in list(root.handlers):
        if existing is not handler and _is_console_handler(existing):
            root.removeHandler(existing)
            routing.removed.append((root, existing))
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
        if name not in logger_levels:
            logger.setLevel(logging.NOTSET)
    for name, value in logger_levels.items():
        logging.getLogger(name).setLevel(value)
    logging.captureWarnings(True)


def uninstall() -> None:
    """Undo `install` (tests, `fapilog.shutdown(restore_logging=True)`)."""
    root = logging.getLogger()
    routing = _routing()
    if routing.handler is not None:
        root.removeHandler(routing.handler)
        routing.handler = None
    for logger, handler in routing.removed:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    for name, (propagate, level) in routing.saved.items():
        logger = logging.getLogger(name)
        logger.propagate = propagate
        logger.setLevel(level)
    STATE.stdlib = None
    root.setLevel(routing.root_level)
    logging.captureWarnings(False)


def installed_handler() -> FapilogHandler | None:
    routing: StdlibRouting | None = STATE.stdlib
    return routing.handler if routing is not None else None


def route(settings: LoggingSettings) -> None:
    """Route stdlib logging as `settings` say: through fapilog's chain at the configured
    levels (``capture_stdlib``, the default), or not at all."""
    if not settings.capture_stdlib:
        uninstall()
        return
    level, per_logger = levels_of(settings.level, settings.logger_levels)
    install(STATE.chain, level, per_logger)


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
    (uvicorn's `dictConfig` at start-up, a `logging.config` call): the configured routing
    once more, if fapilog is configured with ``capture_stdlib``. `when_broken`: only if
    fapilog's handler left the root logger or a server's logger has handlers again."""
    settings = STATE.settings
    if settings is None or not settings.capture_stdlib or not STATE.is_configured():
        return
    if when_broken and _intact():
        return
    route(settings)

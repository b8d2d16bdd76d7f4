"""Unhandled exceptions as records: fapilog's `sys.excepthook` and `threading.excepthook`.

An exception nothing caught ends the program (in the main thread) or a thread, and Python
prints its traceback on stderr as plain text. With ``capture_exceptions`` (the default) the
hooks installed by `configure_logging()` first log it as one ERROR record with the
structured exception (``exception.type``, ``exception.message``,
``exception.stacktrace``, as `log.exception()` gives), then call the hook that was there
before (Python's own or another library's), so the traceback on stderr and the exit
status stay as they were. In the main thread the record is flushed (briefly, bounded)
before that hook runs; the exit drain delivers whatever is left. `reset()` and
``capture_exceptions=False`` put the previous hooks back.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fapilog import _diag
from fapilog._state import STATE
from fapilog.capture.logger import get_logger
from fapilog.lifecycle.drain import force_flush

if TYPE_CHECKING:
    from fapilog.settings import LoggingSettings

__all__ = ["LOGGER", "MESSAGE", "install", "route", "uninstall"]

LOGGER = "fapilog.excepthook"
MESSAGE = "unhandled exception"
# longest the main thread's hook waits for its record before Python's traceback: the
# exit drain (bounded by shutdown_timeout) delivers it anyway, this only keeps the order
_FLUSH_SECONDS = 1.0


class _Hooks:
    """fapilog's two hooks and the ones they call next (kept as `STATE.excepthooks`).
    A hook someone else installed on top of fapilog's may still call it after `uninstall`:
    then it only passes the exception on (`active` is False)."""

    def __init__(self) -> None:
        self.active = True
        self.previous_sys = sys.excepthook
        self.previous_threading = threading.excepthook
        self.sys_hook = self._on_sys
        self.threading_hook = self._on_threading

    def _on_sys(
        self,
        exc_type: type[BaseException],
        exc: BaseException,
        traceback: TracebackType | None,
    ) -> None:
        if self.active:
            _log(exc, traceback, threading.current_thread(), main=True)
        self.previous_sys(exc_type, exc, traceback)

    def _on_threading(self, args: threading.ExceptHookArgs) -> None:
        if self.active:
            _log(args.exc_value, args.exc_traceback, args.thread, main=False)
        self.previous_threading(args)


def _log(
    exc: BaseException | None,
    traceback: TracebackType | None,
    thread: threading.Thread | None,
    *,
    main: bool,
) -> None:
    """One ERROR record for `exc`; never raises (the previous hook must still run).
    A KeyboardInterrupt (Ctrl-C) is a deliberate stop, and SystemExit in a thread is how
    a thread exits quietly: neither is an error."""
    if exc is None or isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return
    try:
        if exc.__traceback__ is None and traceback is not None:
            exc = exc.with_traceback(traceback)
        fields: dict[str, Any] = {}
        if thread is not None:
            fields = {"thread.name": thread.name, "thread.id": thread.ident}
        get_logger(LOGGER).error(MESSAGE, exc_info=exc, **fields)
        if main:
            settings = STATE.settings
            budget = settings.shutdown_timeout if settings is not None else _FLUSH_SECONDS
            force_flush(min(_FLUSH_SECONDS, budget))
    except Exception as error:
        _diag.report("excepthook", f"fapilog could not log an unhandled exception: {error!r}")


def install() -> None:
    """Put fapilog's hooks in front of the installed ones (once; again if someone replaced
    them since)."""
    hooks: _Hooks | None = STATE.excepthooks
    if (
        hooks is not None
        and sys.excepthook is hooks.sys_hook
        and threading.excepthook is hooks.threading_hook
    ):
        return
    uninstall()
    hooks = STATE.excepthooks = _Hooks()
    sys.excepthook = hooks.sys_hook
    threading.excepthook = hooks.threading_hook


def uninstall() -> None:
    """Put back the hooks fapilog's replaced, where fapilog's are still the installed ones
    (a hook installed on top of them stays, and fapilog's then only pass exceptions on)."""
    hooks: _Hooks | None = STATE.excepthooks
    if hooks is None:
        return
    hooks.active = False
    if sys.excepthook is hooks.sys_hook:
        sys.excepthook = hooks.previous_sys
    if threading.excepthook is hooks.threading_hook:
        threading.excepthook = hooks.previous_threading
    STATE.excepthooks = None


def route(settings: LoggingSettings) -> None:
    """Install or remove the hooks as ``capture_exceptions`` says."""
    if settings.capture_exceptions:
        install()
    else:
        uninstall()

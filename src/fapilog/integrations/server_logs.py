"""The server's side of request logging: the ASGI lifespan and the server's own error
log, for `RequestLoggingMiddleware`.

- At lifespan startup, stdlib logging is routed into fapilog again: `uvicorn.run(app)`
  re-adds uvicorn's plain-text handlers (its `dictConfig`) after `configure_logging()`.
- At lifespan shutdown the one exit deadline starts, and once the app's shutdown handlers
  have run, what they and the requests logged is flushed (off the event loop).
- uvicorn's "Exception in ASGI application" record is dropped when the request event
  already carried that exception (`LOGGED`), so an exception is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread

from fapilog import _diag
from fapilog.capture import stdlib
from fapilog.lifecycle.drain import begin_exit, force_flush

__all__ = [
    "LOGGED",
    "install_duplicate_filter",
    "lifespan_receive",
    "lifespan_send",
    "reroute_stdlib",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOGGED = "_fapilog_logged"  # set on an exception the request event already carried


def lifespan_receive(receive: Receive) -> Receive:
    async def receive_lifespan() -> Message:
        message = await receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            reroute_stdlib()
        elif kind == "lifespan.shutdown":
            begin_exit()  # the server is going: one deadline from here to the process's end
        return message

    return receive_lifespan


def lifespan_send(send: Send) -> Send:
    async def send_lifespan(message: Message) -> None:
        if message.get("type") == "lifespan.shutdown.complete":
            # the app's shutdown handlers have run: deliver what they (and the requests
            # before them) logged, bounded by shutdown_timeout, off the event loop
            await to_thread.run_sync(force_flush)
        await send(message)

    return send_lifespan


def reroute_stdlib() -> None:
    """Route stdlib logging into fapilog again if something (uvicorn's `dictConfig`, run
    by `uvicorn.run()` after configure_logging()) put plain-text handlers back."""
    try:
        stdlib.reroute(when_broken=True)
    except Exception as exc:  # never fail the application's startup
        _diag.report("reroute-stdlib", f"fapilog could not re-route stdlib logging: {exc!r}")


class _AlreadyLogged(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record when fapilog's request event
    already carried that exception (with its stack trace and the trace id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        return not (exc_info and getattr(exc_info[1], LOGGED, False))


_DUPLICATE_FILTER = _AlreadyLogged()
_SERVER_ERROR_LOGGERS = ("uvicorn.error",)


def install_duplicate_filter() -> None:
    for name in _SERVER_ERROR_LOGGERS:
        logger = logging.getLogger(name)
        if _DUPLICATE_FILTER not in logger.filters:
            logger.addFilter(_DUPLICATE_FILTER)

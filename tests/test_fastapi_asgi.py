"""FastAPI integration beyond plain HTTP routes: other app shapes (Starlette, not an
app), websockets, lifespan startup and shutdown, and RequestLoggingMiddleware on raw
ASGI apps."""

from __future__ import annotations

import asyncio
import logging
import logging.config
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket

import fapilog.testing
from conftest import MemoryExporter
from fapilog import (
    ConfigurationError,
    configure_logging,
    get_logger,
    log,
)
from fapilog.fastapi import RequestLoggingMiddleware
from fapilog.settings import RequestSettings
from fapilog.testing import capture_logs
from fastapi_support import (
    TRACE_ID,
    TRACEPARENT,
    get,
    make_app,
    requests_of,
)

Message = dict[str, Any]


# ------------------------------------------------------------------ other app shapes


def test_plain_starlette_app(tracing_mode: str) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        log.info("hello")
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello/{who}", hello)])
    configure_logging(app=app)
    with capture_logs() as logs:
        get(app, "/hello/bob", headers={"traceparent": TRACEPARENT})
    (event,) = requests_of(logs)
    assert event["http.route"] == "/hello/{who}"
    assert event["trace_id"] == TRACE_ID
    (hello_line,) = [e for e in logs if e["message"] == "hello"]
    assert hello_line["span_id"] == event["span_id"]


def test_not_an_app_or_an_app_already_serving_is_a_configuration_error() -> None:
    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    with pytest.raises(ConfigurationError, match="FastAPI or Starlette application"):
        configure_logging(app=raw_asgi)
    app = make_app()
    get(app, "/items/1")  # builds the middleware stack
    with pytest.raises(ConfigurationError, match="before the application starts"):
        configure_logging(app=app)


def test_websocket_passes_through_with_trace_context(tracing_mode: str) -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        log.info("ws message", text=text)
        await websocket.send_text(text.upper())
        await websocket.close()

    configure_logging(app=app)
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"traceparent", TRACEPARENT.encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    inbound: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbound.pop(0) if inbound else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    with capture_logs() as logs:
        asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "HI"
    (line,) = [e for e in logs if e["message"] == "ws message"]
    assert line["trace_id"] == TRACE_ID  # the instrumentation's span for the connection
    assert requests_of(logs) == []  # websockets get no request event
    assert "request_id" not in line


# ---------------------------------------------------------------------------- lifespan


async def run_lifespan(app: Any) -> list[Message]:
    inbound: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbound.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


def test_uvicorn_loggers_are_taken_back_right_after_dictconfig() -> None:
    from uvicorn.config import LOGGING_CONFIG

    configure_logging()
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    try:
        logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn.run() does after our call
        for name in names:
            logger = logging.getLogger(name)
            assert logger.handlers == [] and logger.propagate
    finally:
        fapilog.testing.reset()


def test_lifespan_startup_takes_back_uvicorn_loggers() -> None:
    """Handlers put on uvicorn's loggers by other means than a logging configuration call
    are taken away when the application starts."""
    app = make_app()
    configure_logging(app=app)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    try:
        for name in names:
            logger = logging.getLogger(name)
            logger.addHandler(logging.StreamHandler())
            logger.propagate = False
        with capture_logs() as logs:
            sent = asyncio.run(run_lifespan(app))
            logging.getLogger("uvicorn.error").info("uvicorn says hi")
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        for name in names:
            logger = logging.getLogger(name)
            assert logger.handlers == [] and logger.propagate
        (line,) = [e for e in logs if e["message"] == "uvicorn says hi"]
        assert line["logger"] == "uvicorn.error"
    finally:
        fapilog.testing.reset()
        for name in names:  # leave no uvicorn handlers for the next tests
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)


def test_lifespan_shutdown_delivers_what_shutdown_handlers_logged(
    memory_exporter: MemoryExporter,
) -> None:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        get_logger("shop").info("closing pools")

    app = FastAPI(lifespan=lifespan)
    configure_logging(app=app, exporters=[memory_exporter.name], queue={"max_delay": 30})
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # no force_flush here: the middleware flushed when the app completed its shutdown
    bodies = [r.log_record.body for r in memory_exporter.exporter.get_finished_logs()]
    assert "closing pools" in bodies


# ------------------------------------------------------- the middleware on raw ASGI apps


async def drive(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[Message]:
    sent: list[Message] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str = "/file", **extra: Any) -> dict[str, Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example"), (b"content-length", b"not-a-number")],
        "client": ("10.1.2.3", 5000),
        "server": ("example", 80),
    }
    scope.update(extra)
    return scope


def test_middleware_with_fixed_settings_pathsend_and_cancellation() -> None:
    async def pathsend_app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"77")]}
        )
        await send({"type": "http.response.pathsend", "path": "/tmp/file.bin"})

    async def cancelled_app(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    settings = RequestSettings(request_id=False, status_levels={"default": "DEBUG"})
    configure_logging(level="DEBUG")
    with capture_logs() as logs:
        sent = asyncio.run(drive(RequestLoggingMiddleware(pathsend_app, settings), http_scope()))
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(drive(RequestLoggingMiddleware(cancelled_app), http_scope("/gone")))
    assert sent[0]["headers"] == [(b"content-length", b"77")]  # no request id echoed
    file_event, cancelled = requests_of(logs)
    assert file_event["level"] == "debug"
    assert file_event["http.response.body.size"] == 77
    assert file_event["http.request.body.size"] == 0
    assert "request_id" not in file_event
    assert cancelled["message"] == "request cancelled" and cancelled["level"] == "warning"
    assert "http.response.status_code" not in cancelled


def test_lifespan_and_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            message = await receive()
            seen.append(message["type"])

    middleware = RequestLoggingMiddleware(inner)

    async def main() -> None:
        async def receive() -> Message:
            return {"type": "lifespan.startup"}

        async def send(message: Message) -> None:  # pragma: no cover - not called
            pass

        await middleware({"type": "lifespan"}, receive, send)
        await middleware({"type": "custom"}, receive, send)

    with capture_logs() as logs:
        asyncio.run(main())
    assert seen == ["lifespan", "lifespan.startup", "custom"]
    assert requests_of(logs) == []

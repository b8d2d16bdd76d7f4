"""FastAPI exceptions: an unhandled exception gives one error event with the exception
and the client Starlette's 500, and still reaches the app's error handlers and the server.
In process: real FastAPI/Starlette apps driven through httpx.ASGITransport.

Every trace-related test runs in both tracing modes (the `tracing_mode` fixture of
conftest.py): fapilog's native server span and opentelemetry-instrumentation-fastapi's."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fapilog import (
    configure_logging,
)
from fapilog.middleware import REQUEST_LOGGER
from fapilog.testing import capture_logs
from fastapi_support import (
    get,
    made_by,
    make_app,
    run,
    server_spans,
)

# -------------------------------------------------------------------------- exceptions


def test_unhandled_exception_gives_one_error_event_and_the_client_a_500(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app)
    with capture_logs() as logs:
        response = get(app, "/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"  # Starlette's own error response
    errors = logs.by_level("error")
    (event,) = errors
    (server,) = server_spans(spans)
    assert made_by(server) == tracing_mode
    assert event["logger"] == REQUEST_LOGGER
    assert event["message"] == "request failed"
    assert event["http.response.status_code"] == 500
    assert event["http.route"] == "/boom"
    assert event["exception.type"] == "ValueError"
    assert event["exception.message"] == "kaboom"
    assert "Traceback (most recent call last)" in event["exception.stacktrace"]
    assert 'raise ValueError("kaboom")' in event["exception.stacktrace"]
    assert event["trace_id"] == format(server.context.trace_id, "032x")
    (before,) = [e for e in logs if e["message"] == "before failure"]
    assert before["trace_id"] == event["trace_id"] and before["request_id"] == event["request_id"]
    assert server.status.status_code is trace.StatusCode.ERROR  # the span saw it too


def test_exception_still_reaches_starlette_error_handling_and_the_server(tracing_mode: str) -> None:
    app = make_app()
    handled: list[str] = []

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        handled.append(type(exc).__name__)
        return JSONResponse({"detail": "custom"}, status_code=500)

    configure_logging(app=app)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/boom")

    with capture_logs() as logs:
        response = run(app, scenario)
        assert response.json() == {"detail": "custom"}
        assert handled == ["ValueError"]

        async def raising() -> None:
            transport = httpx.ASGITransport(app=app)  # raise_app_exceptions=True
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await client.get("/boom")

        with pytest.raises(ValueError, match="kaboom"):
            asyncio.run(raising())  # re-raised to the server after the 500 was sent
    assert len([e for e in logs.by_level("error") if e["logger"] == REQUEST_LOGGER]) == 2

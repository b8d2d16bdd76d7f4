"""Helpers shared by the FastAPI test files: the app they drive, the in-process client,
and readers for the server spans and request events it produces."""

from __future__ import annotations

import asyncio
import logging
import logging.config
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fapilog import (
    log,
)
from fapilog.fastapi import current_request_id
from fapilog.middleware import REQUEST_LOGGER
from fapilog.testing import CapturedLogs

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


PARENT_SPAN_ID = "00f067aa0ba902b7"


TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


HEX32 = set("0123456789abcdef")


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def made_by(span: ReadableSpan) -> str:
    """Which tracing mode created a server span (its instrumentation scope)."""
    scope = span.instrumentation_scope
    assert scope is not None
    return {"fapilog": "native"}.get(scope.name, "instrumentation")


def span_path(span: ReadableSpan) -> Any:
    """The request path of a server span, in either semantic-convention generation."""
    attributes = span.attributes or {}
    return attributes.get("url.path") or attributes.get("http.target")


def make_app(factory: Callable[[], FastAPI] = FastAPI) -> FastAPI:
    app = factory()

    async def audit(request: Request) -> str:
        log.info("dependency ran")
        return "ok"

    @app.get("/items/{item_id}")
    async def item(item_id: int, _: str = Depends(audit)) -> dict[str, Any]:
        log.info("endpoint", item_id=item_id)
        logging.getLogger("lib.db").warning("stdlib in endpoint", extra={"item_id": item_id})
        return {"item_id": item_id}

    @app.get("/sync")
    def sync_endpoint() -> dict[str, str | None]:
        log.info("sync endpoint")
        return {"request_id": current_request_id()}

    @app.get("/boom")
    async def boom() -> None:
        log.info("before failure")
        raise ValueError("kaboom")

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404, detail="nope")

    @app.get("/teapot")
    async def teapot() -> JSONResponse:
        return JSONResponse({"short": "stout"}, status_code=418)

    @app.get("/health")
    async def health() -> dict[str, str]:
        log.info("health endpoint")
        return {"status": "ok"}

    @app.get("/static/{name}")
    async def static(name: str) -> dict[str, str]:
        return {"name": name}

    return app


def run(app: Any, scenario: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await scenario(c)

    return asyncio.run(main())


def get(app: Any, path: str, **kwargs: Any) -> httpx.Response:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(path, **kwargs)

    response: httpx.Response = run(app, scenario)
    return response


def requests_of(logs: CapturedLogs) -> list[dict[str, Any]]:
    return [e for e in logs if e["logger"] == REQUEST_LOGGER]


def app_lines(logs: CapturedLogs) -> list[dict[str, Any]]:
    """Everything but the test client's own `httpx` lines."""
    return [e for e in logs if e["logger"] != "httpx"]

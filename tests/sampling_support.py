"""Helpers of the tests of outcome-driven logging (flight recorder, sampling, levels): an
app whose endpoints log DEBUG lines and end as asked, and the JSON lines of a real file
exporter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import fapilog
from fapilog import get_logger

REQUEST = "fapilog.request"

log = get_logger("app.work")


def make_app(steps: int = 5) -> FastAPI:
    """Endpoints that log `steps` DEBUG lines (``n`` 0..steps-1, with their ``tag``), then:
    /ok returns 200, /fail 500, /raise raises, /warn logs a warning, /missing 404,
    /slow waits ``ms`` milliseconds, /sync is a sync endpoint (the threadpool)."""
    app = FastAPI()

    async def steps_of(tag: str) -> None:
        for n in range(steps):
            log.debug("step", n=n, tag=tag)
            await asyncio.sleep(0)  # interleave with the other requests

    @app.get("/ok")
    async def ok(tag: str = "") -> dict[str, str]:
        await steps_of(tag)
        return {"tag": tag}

    @app.get("/fail")
    async def fail(tag: str = "") -> JSONResponse:
        await steps_of(tag)
        return JSONResponse({"tag": tag}, status_code=500)

    @app.get("/raise")
    async def boom(tag: str = "") -> None:
        await steps_of(tag)
        raise RuntimeError(f"boom {tag}")

    @app.get("/warn")
    async def warn(tag: str = "") -> dict[str, str]:
        await steps_of(tag)
        log.warning("something odd", tag=tag)
        return {"tag": tag}

    @app.get("/missing")
    async def missing(tag: str = "") -> JSONResponse:
        await steps_of(tag)
        return JSONResponse({"tag": tag}, status_code=404)

    @app.get("/slow")
    async def slow(tag: str = "", ms: float = 0) -> dict[str, str]:
        await steps_of(tag)
        await asyncio.sleep(ms / 1000)  # the scenario: a request that takes this long
        return {"tag": tag}

    @app.get("/sync")
    def sync(tag: str = "") -> dict[str, str]:
        for n in range(steps):
            log.debug("step", n=n, tag=tag)
        return {"tag": tag}

    return app


def serve(
    app: Any,
    paths: list[str],
    headers: dict[str, str] | None = None,
    *,
    concurrency: int = 1,
) -> list[httpx.Response]:
    """Request `paths` in-process, `concurrency` at a time (all at once: len(paths))."""

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:

            async def one(path: str) -> httpx.Response:
                async with limit:
                    return await c.get(path, headers=headers)

            return await asyncio.gather(*(one(path) for path in paths))

    return asyncio.run(main())


def lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines the file exporter wrote, after a flush."""
    fapilog.force_flush(10)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def requests_in(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in found if line["logger"] == REQUEST]


def steps_in(found: list[dict[str, Any]], tag: str | None = None) -> list[dict[str, Any]]:
    return [
        line
        for line in found
        if line["message"] == "step" and (tag is None or line.get("tag") == tag)
    ]


Scenario = Callable[[httpx.AsyncClient], Awaitable[Any]]

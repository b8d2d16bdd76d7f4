"""The application the request-isolation tests serve under uvicorn: a `context_hook` that
binds ``user.id`` from an ``X-User`` header, upload endpoints that read the whole body and
a plain endpoint, each logging a line; a stream a client can abandon; an endpoint for
HEAD."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

import fapilog


def user_context(scope: Mapping[str, Any]) -> dict[str, str]:
    for name, value in scope.get("headers", ()):
        if name == b"x-user":
            return {"user.id": value.decode("latin-1")}
    return {}


app = FastAPI()
fapilog.configure_logging(app=app, request={"context_hook": user_context})
log = fapilog.get_logger("app")


@app.post("/upload")
async def upload(request: Request) -> dict[str, int]:
    body = await request.body()
    log.info("uploaded", size=len(body))
    return {"size": len(body)}


@app.post("/upload/{n}")
async def numbered_upload(n: int, request: Request) -> dict[str, int]:
    body = await request.body()
    log.info("uploaded", n=n, size=len(body))
    return {"n": n}


@app.get("/plain/{n}")
async def plain(n: int) -> dict[str, int]:
    log.info("plain", n=n)
    return {"n": n}


@app.get("/stream")
async def stream() -> StreamingResponse:
    """Five chunks of 700 bytes; after the second, a pause long enough for a client that
    stops reading to go away."""

    async def chunks() -> AsyncIterator[bytes]:
        for k in range(5):
            if k == 2:
                await asyncio.sleep(1.0)
            yield b"x" * 700

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.api_route("/head", methods=["GET", "HEAD"])
async def head() -> dict[str, str]:
    return {"body": "what a GET gets, and a HEAD does not"}

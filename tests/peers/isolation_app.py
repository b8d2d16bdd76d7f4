"""The application the request-isolation tests serve under uvicorn: a `context_hook` that
binds ``user.id`` from an ``X-User`` header, an upload endpoint that reads the whole body,
and a plain endpoint; both log a line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request

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


@app.get("/plain/{n}")
async def plain(n: int) -> dict[str, int]:
    log.info("plain", n=n)
    return {"n": n}

"""The application the server tests run under each server: everything from the
environment (`configure_logging(app=app)`), one line per request, one more per worker when
the app shuts down."""

from __future__ import annotations

import os

from fastapi import FastAPI

import fapilog

app = FastAPI()
fapilog.configure_logging(app=app)
log = fapilog.get_logger("app")


@app.get("/work/{n}")
async def work(n: int) -> dict[str, int]:
    log.info("work", n=n, pid=os.getpid())
    return {"n": n, "pid": os.getpid()}


@app.on_event("shutdown")
async def bye() -> None:
    log.info("worker shutting down", pid=os.getpid())

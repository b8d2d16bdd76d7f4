"""The application the FastAPI-telemetry tests serve under uvicorn: FastAPI's own native
telemetry given a TracerProvider explicitly (``FastAPI(telemetry={"tracer_provider": tp})``),
then `configure_logging(app=app)`. Every span ended is written to the file ``SPANS_FILE``
names, one JSON line each."""

from __future__ import annotations

import os

from fastapi import FastAPI
from mounted_app import SpansToFile
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import fapilog

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(SpansToFile(os.environ["SPANS_FILE"])))
app = FastAPI(telemetry={"tracer_provider": provider})
fapilog.configure_logging(app=app)
log = fapilog.get_logger("app")


@app.get("/items/{n}")
async def item(n: int) -> dict[str, int]:
    log.info("endpoint", n=n)
    return {"n": n}


@app.get("/boom")
async def boom() -> None:
    log.info("before failure")
    raise ValueError("kaboom")

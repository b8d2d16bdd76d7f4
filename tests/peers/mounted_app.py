"""The application the mounted sub-app tests serve under uvicorn: a FastAPI app with a
FastAPI sub-app mounted at ``/sub``. `configure_logging(app=...)` on the parent only, or
(``CONFIGURE_SUB=1``) on the sub-app first and then on the parent. Every span ended is
written to the file ``SPANS_FILE`` names, one JSON line each."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import fapilog


class SpansToFile(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                line = {
                    "name": span.name,
                    "kind": span.kind.name,
                    "span_id": format(context.span_id, "016x"),
                    "scope": span.instrumentation_scope.name
                    if span.instrumentation_scope
                    else None,
                }
                out.write(json.dumps(line) + "\n")
        return SpanExportResult.SUCCESS


app = FastAPI()
sub = FastAPI()
log = fapilog.get_logger("app")


@sub.get("/items/{n}")
async def item(n: int) -> dict[str, int]:
    log.info("endpoint", n=n)
    return {"n": n}


@sub.get("/boom")
async def boom() -> None:
    log.info("before failure")
    raise ValueError("kaboom")


app.mount("/sub", sub)

if os.environ.get("CONFIGURE_SUB"):
    fapilog.configure_logging(app=sub)
fapilog.configure_logging(app=app)
provider = trace.get_tracer_provider()
provider.add_span_processor(SimpleSpanProcessor(SpansToFile(os.environ["SPANS_FILE"])))  # type: ignore[attr-defined]

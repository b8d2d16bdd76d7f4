"""FastAPI per-request overhead: the same app bare, with the OpenTelemetry FastAPI
instrumentation alone, and with fapilog (`configure_logging(app=app)`: server span, one
request event, one log line in the endpoint, stdout JSON). `fapilog` uses the default
tracing mode (fapilog's native server span); `fapilog-instrumentation` the same with
``request.tracing="instrumentation"`` (the span from opentelemetry-instrumentation-fastapi);
`fapilog-recorder` is `fapilog` with the flight recorder on and an endpoint that also logs
two DEBUG lines (held, then discarded: the request succeeds), `fapilog-recorder-info` the
same app as `fapilog` (one INFO line) with the recorder on; `fapilog-spans` is `fapilog`
with a (no-op) span processor on the TracerProvider, so the
native server span is a recorded SDK span (without one, nothing would receive it and it
carries the trace context only: docs/fastapi.md, "Spans nobody records").

    python bench/fastapi_bench.py inprocess VARIANT REQUESTS   # drive the ASGI app directly
    BENCH_VARIANT=fapilog uvicorn --factory fastapi_bench:app_factory ...   # under uvicorn

Results go to stderr as one ``RESULT {json}`` line; stdout carries the app's log lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

VARIANTS = (
    "bare",
    "otel",
    "fapilog",
    "fapilog-instrumentation",
    "fapilog-spans",
    "fapilog-recorder",
    "fapilog-recorder-info",
)


def make_app(variant: str) -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    log: Any = None
    if variant.startswith("fapilog"):
        import fapilog

        request: dict[str, Any] = {}
        if variant == "fapilog-instrumentation":
            request = {"tracing": "instrumentation"}
        elif (
            variant == "fapilog-recorder"
            and "buffer" in fapilog.settings.RequestSettings.model_fields
        ):
            # the flight recorder on (a source tree without it, in an A/B run: off, and the
            # endpoint's DEBUG lines are filtered at the gate, as they were there)
            request = {"buffer": {"enabled": True}}
        fapilog.configure_logging(app=app, exporters=["stdout"], json_console=True, request=request)
        log = fapilog.get_logger("bench")
        if variant == "fapilog-spans":
            from opentelemetry import trace
            from opentelemetry.sdk.trace import SpanProcessor

            # the base class's hooks do nothing: spans are recorded, then discarded, as
            # they are for the `otel` variant (a provider without processors)
            trace.get_tracer_provider().add_span_processor(SpanProcessor())  # type: ignore[attr-defined]
    elif variant == "otel":
        from opentelemetry import trace
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)

    if variant == "fapilog-recorder":

        @app.get("/items/{item_id}")
        async def item_detailed(item_id: int) -> dict[str, Any]:
            log.debug("cache lookup", item_id=item_id, hit=False)
            log.debug("row fetched", item_id=item_id, columns=4)
            log.info("item read", item_id=item_id)
            return {"item_id": item_id, "name": "widget"}

    elif log is not None:

        @app.get("/items/{item_id}")
        async def item_logged(item_id: int) -> dict[str, Any]:
            log.info("item read", item_id=item_id)
            return {"item_id": item_id, "name": "widget"}

    else:

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, Any]:
            return {"item_id": item_id, "name": "widget"}

    return app


def app_factory() -> Any:
    return make_app(os.environ.get("BENCH_VARIANT", "bare"))


async def _drive(app: Any, count: int) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/7",
        "raw_path": b"/items/7",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(count):
        await app(dict(scope), receive, send)
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"unexpected statuses: {set(statuses)}")


def inprocess(variant: str, count: int) -> dict[str, Any]:
    try:
        app = make_app(variant)
    except NotImplementedError as exc:
        return {"variant": variant, "error": f"not ready: {exc}"}
    asyncio.run(_drive(app, 500))  # warm up
    cpu0 = time.process_time_ns()
    wall0 = time.perf_counter_ns()
    asyncio.run(_drive(app, count))
    wall1 = time.perf_counter_ns()
    cpu1 = time.process_time_ns()
    result: dict[str, Any] = {
        "variant": variant,
        "requests": count,
        "us_per_request": (wall1 - wall0) / count / 1000,
        "cpu_us_per_request": (cpu1 - cpu0) / count / 1000,
    }
    if variant.startswith("fapilog"):
        import fapilog

        fapilog.shutdown(30)
        cpu2 = time.process_time_ns()
        result["cpu_us_per_request_drained"] = (cpu2 - cpu0) / count / 1000
        result["stats"] = {k: fapilog.stats()[k] for k in ("emitted", "exported", "dropped")}
    return result


def main() -> None:
    mode, variant, count = sys.argv[1:4]
    if mode != "inprocess":
        raise SystemExit(f"unknown mode {mode}")
    result = inprocess(variant, int(count))
    sys.stderr.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

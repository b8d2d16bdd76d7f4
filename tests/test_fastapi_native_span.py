"""FastAPI tracing, fapilog's native server span (the default tracing mode): its
semantic-convention attributes and status, streaming bodies and baggage, deferring to
instrumentation added later, and the context-only span when nothing would receive a
recorded one. In process: real FastAPI/Starlette apps driven through httpx.ASGITransport."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fapilog import (
    configure_logging,
    log,
)
from fapilog.fastapi import RequestLoggingMiddleware
from fapilog.otel.trace import tracer_unobserved
from fapilog.testing import capture_logs
from fastapi_support import (
    PARENT_SPAN_ID,
    TRACE_ID,
    TRACEPARENT,
    app_lines,
    get,
    make_app,
    requests_of,
    run,
    server_spans,
    span_path,
)

# ------------------------------------------------------------ the native server span


def test_native_span_has_the_http_semantic_convention_attributes(
    spans: InMemorySpanExporter,
) -> None:
    app = make_app()
    configure_logging(app=app)  # native is the default
    assert app._telemetry["tracing"] is False  # FastAPI's own spans step aside
    assert [m.kwargs for m in app.user_middleware] == [
        {"tracer_provider": trace.get_tracer_provider()}
    ]
    response = get(
        app,
        "/items/7",
        headers={"traceparent": TRACEPARENT, "user-agent": "probe/1.0", "host": "shop:8443"},
    )
    assert response.status_code == 200
    (server,) = server_spans(spans)
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "fapilog"
    assert server.name == "GET /items/{item_id}"
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/items/7",
        "url.scheme": "http",
        "server.address": "shop",
        "server.port": 8443,
        "user_agent.original": "probe/1.0",
        "network.protocol.version": "1.1",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }
    assert server.status.status_code is trace.StatusCode.UNSET
    assert server.parent is not None and server.parent.is_remote


def test_native_span_status_errors_and_unknown_methods(spans: InMemorySpanExporter) -> None:
    app = make_app()

    @app.get("/unavailable")
    async def unavailable_endpoint() -> JSONResponse:
        return JSONResponse({}, status_code=503)

    @app.api_route("/odd", methods=["PURGE"])
    async def odd_method() -> dict[str, bool]:
        return {"ok": True}

    configure_logging(app=app)

    async def scenario(client: httpx.AsyncClient) -> None:
        await client.get("/missing")
        await client.get("/unavailable")
        await client.get("/boom")
        await client.request("PURGE", "/odd")

    run(app, scenario)
    missing, unavailable, boom, odd = server_spans(spans)
    assert missing.status.status_code is trace.StatusCode.UNSET  # 4xx: the client's error
    assert (missing.attributes or {})["http.response.status_code"] == 404
    assert unavailable.status.status_code is trace.StatusCode.ERROR
    assert (unavailable.attributes or {})["error.type"] == "503"
    assert boom.status.status_code is trace.StatusCode.ERROR
    assert (boom.attributes or {})["error.type"] == "ValueError"
    assert (boom.attributes or {})["http.response.status_code"] == 500
    (event,) = boom.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.message"] == "kaboom"
    assert odd.name == "HTTP /odd"
    assert (odd.attributes or {})["http.request.method"] == "_OTHER"
    assert (odd.attributes or {})["http.request.method_original"] == "PURGE"


def test_native_span_ends_after_a_streaming_body_and_carries_baggage(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry import baggage

    app = FastAPI()
    seen: list[object] = []

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        seen.append(baggage.get_baggage("tenant"))

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.02)
                yield b"x"

        return StreamingResponse(chunks())

    configure_logging(app=app)
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc", "baggage": "tenant=acme"}
    get(app, "/stream", headers=headers)
    (server,) = server_spans(spans)
    assert seen == ["acme"]
    assert server.parent is not None and server.parent.trace_state.get("vendor") == "abc"
    assert server.end_time is not None and server.start_time is not None
    assert (server.end_time - server.start_time) / 1e6 >= 60.0  # to the end of the body


def test_native_mode_defers_to_instrumentation_added_later_and_fastapi_telemetry(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = make_app()
    configure_logging(app=app)
    FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])  # outermost
    with capture_logs() as logs:
        get(app, "/items/1")
    (server,) = server_spans(spans)
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name.startswith("opentelemetry.instrumentation")
    (event,) = requests_of(logs)
    assert event["span_id"] == format(server.context.span_id, "016x")
    spans.clear()

    # FastAPI's native telemetry, given its own provider by the user, keeps tracing
    own = make_app(lambda: FastAPI(telemetry={"tracer_provider": trace.get_tracer_provider()}))
    configure_logging(app=own)
    assert own._telemetry["tracing"] is True
    with capture_logs() as logs:
        get(own, "/items/1")
    (server,) = server_spans(spans)
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "fastapi"
    (event,) = requests_of(logs)
    assert event["trace_id"] == format(server.context.trace_id, "032x")


def test_native_mode_honours_the_instrumentations_excluded_urls_variable(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "/static/.*")
    app = make_app()
    configure_logging(app=app)
    with capture_logs() as logs:
        get(app, "/static/a.css")
        get(app, "/items/1")
    assert [span_path(s) for s in server_spans(spans)] == ["/items/1"]
    assert [e["url.path"] for e in requests_of(logs)] == ["/static/a.css", "/items/1"]


def test_native_span_for_a_hand_added_middleware_and_the_response_propagator(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry.instrumentation.propagators import (
        TraceResponsePropagator,
        get_global_response_propagator,
        set_global_response_propagator,
    )

    app = make_app()
    app.add_middleware(RequestLoggingMiddleware)
    configure_logging(app=app)  # the hand-added middleware now starts the span
    configure_logging(app=app)
    assert len(app.user_middleware) == 1
    saved = get_global_response_propagator()
    set_global_response_propagator(TraceResponsePropagator())
    try:
        response = get(app, "/items/1", headers={"traceparent": TRACEPARENT})
    finally:
        set_global_response_propagator(saved)  # type: ignore[arg-type]
    (server,) = server_spans(spans)
    assert response.headers["traceresponse"] == (
        f"00-{TRACE_ID}-{format(server.context.span_id, '016x')}-01"
    )


# ------------------------------------- no span processor: the span carries the context only


def context_app() -> FastAPI:
    """An app whose endpoint reports the span it runs in and the headers an outgoing
    call would carry."""
    from opentelemetry import propagate

    app = FastAPI()

    @app.get("/ctx")
    async def ctx() -> dict[str, Any]:
        span = trace.get_current_span()
        outgoing: dict[str, str] = {}
        propagate.inject(outgoing)
        log.info("in endpoint")
        return {
            "recording": span.is_recording(),
            "type": type(span).__name__,
            "trace_id": format(span.get_span_context().trace_id, "032x"),
            "span_id": format(span.get_span_context().span_id, "016x"),
            "traceparent": outgoing.get("traceparent"),
        }

    return app


def test_without_a_span_processor_the_native_span_carries_the_context_only(
    trace_globals: None,
) -> None:
    """Nothing would receive a recorded span, so none is built: the span is the SDK's
    NonRecordingSpan with the ids, flags and trace state the SDK tracer would give it."""
    app = context_app()
    configure_logging(app=app)
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    with capture_logs() as logs:
        continued = get(app, "/ctx", headers={"traceparent": TRACEPARENT}).json()
        unsampled = get(
            app, "/ctx", headers={"traceparent": TRACEPARENT[:-2] + "00", "tracestate": "k=v"}
        ).json()
        fresh = get(app, "/ctx").json()
    for body in (continued, unsampled, fresh):
        assert body["type"] == "NonRecordingSpan" and body["recording"] is False
        assert body["span_id"] != PARENT_SPAN_ID and int(body["span_id"], 16) != 0
    assert continued["trace_id"] == unsampled["trace_id"] == TRACE_ID
    assert fresh["trace_id"] != TRACE_ID and int(fresh["trace_id"], 16) != 0
    # outgoing calls continue the trace from this span, with the sampler's decision
    assert continued["traceparent"] == f"00-{TRACE_ID}-{continued['span_id']}-01"
    assert unsampled["traceparent"] == f"00-{TRACE_ID}-{unsampled['span_id']}-00"
    # (a new trace id is random: the SDK sets the W3C level 2 random-trace-id flag too)
    assert fresh["traceparent"] == f"00-{fresh['trace_id']}-{fresh['span_id']}-03"
    # every line of a request carries that request's ids
    by_trace: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in app_lines(logs):
        by_trace[(event["trace_id"], event["span_id"])].append(event["message"])
    assert sorted(by_trace) == sorted(
        (body["trace_id"], body["span_id"]) for body in (continued, unsampled, fresh)
    )
    for events in by_trace.values():
        assert sorted(events) == ["in endpoint", "request completed"]


def test_the_providers_sampler_still_decides_without_a_span_processor(
    trace_globals: None,
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_OFF))
    app = context_app()
    configure_logging(app=app)
    body = get(app, "/ctx").json()
    assert body["type"] == "NonRecordingSpan"
    assert body["traceparent"] == f"00-{body['trace_id']}-{body['span_id']}-02"  # random, unsampled


def test_a_span_processor_added_later_gets_full_server_spans(trace_globals: None) -> None:
    app = context_app()
    configure_logging(app=app)
    assert get(app, "/ctx").json()["recording"] is False
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    body = get(app, "/ctx", headers={"traceparent": TRACEPARENT}).json()
    assert body["recording"] is True
    (server,) = server_spans(exporter)
    assert server.name == "GET /ctx"
    assert format(server.context.span_id, "016x") == body["span_id"]
    assert dict(server.attributes or {})["http.route"] == "/ctx"


def test_a_non_sdk_tracer_gets_its_own_start_span() -> None:
    """Anything but an SDK tracer (another SDK, a proxy) is asked for its span as usual."""
    assert tracer_unobserved(trace.NoOpTracer()) is False
    assert tracer_unobserved(object()) is False

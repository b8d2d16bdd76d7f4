"""FastAPI tracing: an upstream traceparent continued (or a malformed one replaced),
one trace per request under concurrency, the tracing switches, never a second
instrumentation of an app, and which TracerProvider the server spans come from.
In process: real FastAPI/Starlette apps driven through httpx.ASGITransport, real OTel server spans
(SDK TracerProvider + in-memory span exporter).

Every trace-related test runs in both tracing modes (the `tracing_mode` fixture of
conftest.py): fapilog's native server span and opentelemetry-instrumentation-fastapi's."""

from __future__ import annotations

import asyncio
import logging
import logging.config
from collections import defaultdict

import httpx
import pytest
import structlog
from fastapi import BackgroundTasks, FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import MemoryExporter
from fapilog import (
    ConfigurationError,
    LoggingSettings,
    configure_logging,
    log,
)
from fapilog._state import STATE
from fapilog.fastapi import RequestLoggingMiddleware
from fapilog.integrations import tracing as _tracing
from fapilog.settings import RequestSettings
from fapilog.testing import capture_logs
from fastapi_support import (
    HEX32,
    PARENT_SPAN_ID,
    TRACE_ID,
    TRACEPARENT,
    app_lines,
    get,
    made_by,
    make_app,
    requests_of,
    run,
    server_spans,
)

# ------------------------------------------------ an upstream traceparent is continued


def test_upstream_traceparent_is_continued_with_the_server_span_id(
    spans: InMemorySpanExporter, memory_exporter: MemoryExporter, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app, exporters=[memory_exporter.name])
    response = get(app, "/items/7", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200

    (server,) = server_spans(spans)
    assert made_by(server) == tracing_mode
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN_ID
    records = [r for r in memory_exporter.records() if r.instrumentation_scope.name != "httpx"]
    by_body = {r.log_record.body: r.log_record for r in records}
    assert set(by_body) == {"dependency ran", "endpoint", "stdlib in endpoint", "request completed"}
    for record in by_body.values():
        assert format(record.trace_id, "032x") == TRACE_ID
        assert record.span_id == server.context.span_id  # the server span, not the upstream one
        assert format(record.span_id, "016x") != PARENT_SPAN_ID


def test_request_without_traceparent_starts_a_fresh_trace(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app)
    with capture_logs() as logs:
        get(app, "/items/1")
        get(app, "/items/2")
    first, second = server_spans(spans)
    assert first.parent is None and second.parent is None
    trace_ids = {e["trace_id"] for e in app_lines(logs)}
    assert trace_ids == {
        format(first.context.trace_id, "032x"),
        format(second.context.trace_id, "032x"),
    }
    for trace_id in trace_ids:
        assert len(trace_id) == 32 and set(trace_id) <= HEX32 and int(trace_id, 16) != 0


# ------------------------------------------------------------- a malformed traceparent


@pytest.mark.parametrize(
    "traceparent",
    [
        pytest.param(f"00-{TRACE_ID[:-1]}-{PARENT_SPAN_ID}-01", id="short-trace-id"),
        pytest.param(f"00-{TRACE_ID}0-{PARENT_SPAN_ID}-01", id="long-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_SPAN_ID[:-2]}-01", id="short-span-id"),
        pytest.param(f"00-{TRACE_ID[:-1]}g-{PARENT_SPAN_ID}-01", id="non-hex-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_SPAN_ID[:-1]}z-01", id="non-hex-span-id"),
        pytest.param(f"00-{'0' * 32}-{PARENT_SPAN_ID}-01", id="zero-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="zero-span-id"),
        pytest.param(f"ff-{TRACE_ID}-{PARENT_SPAN_ID}-01", id="forbidden-version"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01-extra", id="v00-trailing-data"),
        pytest.param(TRACEPARENT + "a" * 10240, id="10KB-header"),
        pytest.param("x" * 10240, id="10KB-garbage"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_traceparent_never_crashes_and_starts_a_new_trace(
    spans: InMemorySpanExporter, traceparent: str, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app)
    with capture_logs() as logs:
        response = get(app, "/items/3", headers={"traceparent": traceparent})
    assert response.status_code == 200
    (server,) = server_spans(spans)
    assert made_by(server) == tracing_mode
    assert server.parent is None
    trace_id = format(server.context.trace_id, "032x")
    assert trace_id != TRACE_ID and int(trace_id, 16) != 0
    # (the propagator itself warns about an over-long header, outside the request span)
    lines = [e for e in app_lines(logs) if not e["logger"].startswith("opentelemetry")]
    assert len(lines) == 4
    assert {e["trace_id"] for e in lines} == {trace_id}


# ---------------------------------------- no context leaks between concurrent requests


def test_1000_concurrent_requests_keep_their_own_context(tracing_mode: str) -> None:
    app = FastAPI()
    worker = logging.getLogger("lib.worker")

    @app.get("/work")
    async def work(qid: str, background: BackgroundTasks) -> dict[str, str]:
        log.info("step one", qid=qid)
        await asyncio.sleep(0)  # let the other requests interleave
        worker.info("step two", extra={"qid": qid})
        await asyncio.sleep(0)
        background.add_task(log.info, "background", qid=qid)
        return {"qid": qid}

    configure_logging(app=app, logger_levels={"httpx": "WARNING"})
    count = 1000

    left: list[dict[str, object]] = []

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        limit = asyncio.Semaphore(count)  # all in flight at once, but bounded

        async def one(i: int) -> httpx.Response:
            async with limit:
                response = await client.get(
                    "/work", params={"qid": str(i)}, headers={"X-Request-ID": f"req-{i}"}
                )
            # (the app was called in this task's context: what it bound must be gone)
            left.append(structlog.contextvars.get_contextvars())
            return response

        return await asyncio.gather(*(one(i) for i in range(count)))

    with capture_logs() as logs:
        responses = run(app, scenario)
    assert [r.status_code for r in responses] == [200] * count
    assert all(r.headers["x-request-id"] == f"req-{i}" for i, r in enumerate(responses))

    traces: dict[str, set[str]] = defaultdict(set)
    lines_per_request: dict[str, int] = defaultdict(int)
    for event in logs:
        request_id = event["request_id"]
        if "qid" in event:
            assert request_id == f"req-{event['qid']}", event
        traces[request_id].add(event["trace_id"])
        lines_per_request[request_id] += 1
    assert len(traces) == count
    assert all(len(ids) == 1 for ids in traces.values())  # one trace per request...
    assert len({ids.pop() for ids in traces.values()}) == count  # ...never shared
    assert set(lines_per_request.values()) == {4}  # step one, step two, background, request
    assert left == [{}] * count


# -------------------------------------------------------------------- tracing switches


def test_tracing_off_means_request_logging_only(trace_globals: None) -> None:
    app = make_app()
    configure_logging(app=app, request={"tracing": False})
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    with capture_logs() as logs:
        get(app, "/items/1")
    (event,) = requests_of(logs)
    assert event["http.route"] == "/items/{item_id}"
    assert "trace_id" not in event


def test_internal_spans_can_be_kept(spans: InMemorySpanExporter) -> None:
    app = make_app()
    configure_logging(app=app, request={"tracing": "instrumentation", "internal_spans": True})
    get(app, "/items/1")
    kinds = [s.kind for s in spans.get_finished_spans()]
    assert kinds.count(SpanKind.SERVER) == 1
    assert kinds.count(SpanKind.INTERNAL) >= 2  # http send (start and body)


def test_default_has_only_the_server_span(spans: InMemorySpanExporter, tracing_mode: str) -> None:
    app = make_app()
    configure_logging(app=app)
    get(app, "/items/1")
    assert [s.kind for s in spans.get_finished_spans()] == [SpanKind.SERVER]


def test_tracing_setting_accepts_booleans_and_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, mode in [
        ("true", "native"),
        ("1", "native"),
        ("FALSE", "off"),
        ("no", "off"),
        ("Instrumentation", "instrumentation"),
        ("native", "native"),
        ("off", "off"),
    ]:
        monkeypatch.setenv("FAPILOG_REQUEST__TRACING", value)
        assert LoggingSettings().request.tracing == mode, value
    assert RequestSettings(tracing=True).tracing == "native"  # type: ignore[arg-type]
    assert RequestSettings(tracing=False).tracing == "off"  # type: ignore[arg-type]
    assert RequestSettings().tracing == "native"
    monkeypatch.setenv("FAPILOG_REQUEST__TRACING", "sometimes")
    with pytest.raises(ConfigurationError, match="FAPILOG_REQUEST__TRACING"):
        LoggingSettings()


# ----------------------------------------------------------- never double-instrumented


def test_configure_twice_gives_one_span_and_one_request_event(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app)
    configure_logging(app=app)
    configure_logging(app=app, level="DEBUG")
    assert [m.cls for m in app.user_middleware] == [RequestLoggingMiddleware]
    with capture_logs() as logs:
        get(app, "/items/1")
    assert len(server_spans(spans)) == 1
    assert made_by(server_spans(spans)[0]) == tracing_mode
    assert len(requests_of(logs)) == 1


def test_app_instrumented_by_the_user_first(spans: InMemorySpanExporter, tracing_mode: str) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = make_app()
    FastAPIInstrumentor.instrument_app(app)  # the user's own call (internal spans included)
    configure_logging(app=app)
    configure_logging(app=app)
    with capture_logs() as logs:
        get(app, "/items/1", headers={"traceparent": TRACEPARENT})
    (server,) = server_spans(spans)
    assert made_by(server) == "instrumentation"  # deferred to, in both modes
    (event,) = requests_of(logs)
    assert event["trace_id"] == TRACE_ID
    assert event["span_id"] == format(server.context.span_id, "016x")


def test_app_instrumented_like_opentelemetry_instrument(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    import fastapi
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    instrumentor = FastAPIInstrumentor()
    instrumentor.instrument()  # what `opentelemetry-instrument` does: FastAPI is patched
    try:
        app = make_app(fastapi.FastAPI)
        assert app._is_instrumented_by_opentelemetry  # type: ignore[attr-defined]
        configure_logging(app=app)
        with capture_logs() as logs:
            get(app, "/items/1")
    finally:
        instrumentor.uninstrument()
    (server,) = server_spans(spans)
    assert made_by(server) == "instrumentation"  # deferred to, in both modes
    (event,) = requests_of(logs)
    assert event["span_id"] == format(server.context.span_id, "016x")


def test_hand_added_otel_middleware_and_hand_added_request_middleware(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = make_app()
    app.add_middleware(OpenTelemetryMiddleware)
    configure_logging(app=app)  # fapilog's middleware goes inside the span
    assert [m.cls for m in app.user_middleware] == [
        OpenTelemetryMiddleware,
        RequestLoggingMiddleware,
    ]
    with capture_logs() as logs:
        get(app, "/items/1")
    (server,) = server_spans(spans)
    assert made_by(server) == "instrumentation"  # deferred to, in both modes
    (event,) = requests_of(logs)
    assert event["span_id"] == format(server.context.span_id, "016x")

    manual = make_app()
    manual.add_middleware(RequestLoggingMiddleware)
    configure_logging(app=manual)
    assert [m.cls for m in manual.user_middleware] == [RequestLoggingMiddleware]
    with capture_logs() as logs:
        get(manual, "/items/1")
    assert len(requests_of(logs)) == 1


# ----------------------------------------------------------------- the tracer provider


def test_existing_sdk_tracer_provider_is_used(trace_globals: None, tracing_mode: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "users-own"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    app = make_app()
    settings = configure_logging(app=app, service_name="ignored-for-traces")
    assert _tracing.ensure_tracer_provider(settings) is provider
    assert STATE.tracer_provider is None
    with capture_logs() as logs:
        get(app, "/items/1")
    (server,) = server_spans(exporter)
    assert server.resource.attributes["service.name"] == "users-own"
    (event,) = requests_of(logs)
    assert event["trace_id"] == format(server.context.trace_id, "032x")


def test_created_tracer_provider_shares_the_log_resource(
    trace_globals: None, tracing_mode: str
) -> None:
    settings = configure_logging(
        app=make_app(), service_name="shop", service_version="2.1", env="staging"
    )
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert _tracing.ensure_tracer_provider(settings) is provider  # idempotent
    assert _tracing.ensure_tracer_provider(LoggingSettings()) is provider
    log_resource = STATE.pipeline.provider.resource  # type: ignore[union-attr]
    for key in ("service.name", "service.version", "deployment.environment.name", "host.name"):
        assert provider.resource.attributes[key] == log_resource.attributes[key]
    assert provider.resource.attributes["service.name"] == "shop"


def test_non_sdk_global_provider_is_left_alone(trace_globals: None, tracing_mode: str) -> None:
    trace.set_tracer_provider(trace.NoOpTracerProvider())
    app = make_app()
    configure_logging(app=app)
    assert isinstance(trace.get_tracer_provider(), trace.NoOpTracerProvider)
    with capture_logs() as logs:
        get(app, "/items/1", headers={"traceparent": TRACEPARENT})
    (event,) = requests_of(logs)
    assert event["trace_id"] == TRACE_ID  # fapilog's own provider traced the app

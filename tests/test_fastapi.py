"""FastAPI integration, in process: real FastAPI/Starlette apps driven through
httpx.ASGITransport, real OTel server spans (SDK TracerProvider + in-memory span exporter),
events read with `capture_logs()` or through the real export pipeline.

Every trace-related test runs in both tracing modes (`tracing_mode`): fapilog's native
server span and opentelemetry-instrumentation-fastapi's."""

from __future__ import annotations

import asyncio
import logging
import logging.config
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
import structlog
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

import fapilog._config
from conftest import MemoryExporter
from fapilog import (
    ConfigurationError,
    LoggingSettings,
    _tracing,
    configure_logging,
    get_logger,
    log,
)
from fapilog._sections.request import RequestSettings
from fapilog.fastapi import RequestLoggingMiddleware, current_request_id
from fapilog.middleware import REQUEST_LOGGER, valid_request_id
from fapilog.testing import CapturedLogs, capture_logs

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
HEX32 = set("0123456789abcdef")
Message = dict[str, Any]


# --------------------------------------------------------------------------- fixtures

MODES = ["native", "instrumentation"]


@pytest.fixture(params=MODES)
def tracing_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each way of creating server spans (FAPILOG_REQUEST__TRACING)."""
    mode: str = request.param
    monkeypatch.setenv("FAPILOG_REQUEST__TRACING", mode)
    return mode


@pytest.fixture
def trace_globals() -> Iterator[None]:
    """Unset OTel's global TracerProvider for the test (it can be set once per process),
    and forget the one fapilog created; both are restored afterwards."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, list(_tracing._owned))
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    _tracing._owned.clear()
    try:
        yield
    finally:
        # (providers stay alive: FastAPIInstrumentor's BackgroundTask patch keeps the
        # tracer of the first app it instrumented, whichever test that was)
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, owned = saved
        _tracing._owned[:] = owned


@pytest.fixture
def spans(trace_globals: None) -> InMemorySpanExporter:
    """The spans of the TracerProvider fapilog creates for this test."""
    provider = _tracing.ensure_tracer_provider(LoggingSettings())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


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


# ------------------------------------------------------- acceptance 1: traceparent continued


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


# ------------------------------------------------------ acceptance 2: malformed traceparent


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


# -------------------------------------------------------- acceptance 3: no leakage at scale


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

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        limit = asyncio.Semaphore(count)  # all in flight at once, but bounded

        async def one(i: int) -> httpx.Response:
            async with limit:
                return await client.get(
                    "/work", params={"qid": str(i)}, headers={"X-Request-ID": f"req-{i}"}
                )

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
    assert structlog.contextvars.get_contextvars() == {}


# -------------------------------------------------- acceptance 4: the request event's fields


def test_request_event_fields_duration_and_sizes(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    app = FastAPI()

    @app.post("/echo/{name}", status_code=201)
    async def echo(name: str, request: Request) -> dict[str, Any]:
        body = await request.body()
        await asyncio.sleep(0.05)
        return {"name": name, "received": len(body)}

    configure_logging(app=app)
    payload = b"x" * 1234
    with capture_logs() as logs:
        response = get_post(app, "/echo/abc", payload)
    assert response.status_code == 201
    (event,) = requests_of(logs)
    (server,) = server_spans(spans)
    assert event["message"] == "request completed"
    assert event["level"] == "info"
    assert event["http.request.method"] == "POST"
    assert event["http.route"] == "/echo/{name}"
    assert event["url.path"] == "/echo/abc"
    assert event["http.response.status_code"] == 201
    assert event["duration_ms"] >= 50.0
    assert event["http.request.body.size"] == 1234
    assert event["http.response.body.size"] == len(response.content)
    assert event["network.protocol.version"] == "1.1"
    assert event["user_agent.original"].startswith("python-httpx/")
    assert "client.address" in event
    assert event["trace_id"] == format(server.context.trace_id, "032x")
    assert event["span_id"] == format(server.context.span_id, "016x")
    assert valid_request_id(event["request_id"])
    assert event["request_id"] == response.headers["x-request-id"]


def get_post(app: Any, path: str, content: bytes) -> httpx.Response:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(path, content=content)

    response: httpx.Response = run(app, scenario)
    return response


def test_unread_request_body_size_comes_from_content_length() -> None:
    app = FastAPI()

    @app.post("/ignore")
    async def ignore() -> dict[str, bool]:
        return {"ok": True}

    configure_logging(app=app)
    with capture_logs() as logs:
        get_post(app, "/ignore", b"y" * 300)
    (event,) = requests_of(logs)
    assert event["http.request.body.size"] == 300


def test_streaming_response_is_timed_to_the_end_of_the_body(tracing_mode: str) -> None:
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(0.02)
                yield f"chunk-{i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    configure_logging(app=app)
    with capture_logs() as logs:
        response = get(app, "/stream")
    (event,) = requests_of(logs)
    assert response.text == "chunk-0\nchunk-1\nchunk-2\n"
    assert event["http.response.body.size"] == len(response.content) == 24
    assert event["duration_ms"] >= 60.0


def test_route_templates_of_routers_and_mounts() -> None:
    from fastapi import APIRouter
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = FastAPI()
    router = APIRouter(prefix="/api/v1")

    @router.get("/users/{user_id}/orders/{order_id}")
    async def order(user_id: int, order_id: str) -> dict[str, str]:
        return {"order": order_id}

    app.include_router(router)
    sub = FastAPI()

    @sub.get("/reports/{year}")
    async def report(year: int) -> dict[str, int]:
        return {"year": year}

    app.mount("/admin", sub)

    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("plain")

    app.mount("/legacy", Starlette(routes=[Route("/pages/{slug}", plain)]))
    configure_logging(app=app)

    async def scenario(client: httpx.AsyncClient) -> None:
        for path in [
            "/api/v1/users/3/orders/x9",
            "/admin/reports/2026",
            "/legacy/pages/a",
            "/nope",
        ]:
            await client.get(path)

    with capture_logs() as logs:
        run(app, scenario)
    events = {e["url.path"]: e for e in requests_of(logs)}
    assert (
        events["/api/v1/users/3/orders/x9"]["http.route"]
        == "/api/v1/users/{user_id}/orders/{order_id}"
    )
    assert events["/admin/reports/2026"]["http.route"] == "/admin/reports/{year}"
    assert events["/legacy/pages/a"]["http.route"] == "/legacy/pages/{slug}"
    assert "http.route" not in events["/nope"]
    assert events["/nope"]["http.response.status_code"] == 404


# --------------------------------------------------------------- acceptance 5: exceptions


def test_unhandled_exception_gives_one_error_event_and_the_client_a_500(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app)
    with capture_logs() as logs:
        response = get(app, "/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"  # Starlette's own error response
    errors = logs.by_level("error")
    (event,) = errors
    (server,) = server_spans(spans)
    assert made_by(server) == tracing_mode
    assert event["logger"] == REQUEST_LOGGER
    assert event["message"] == "request failed"
    assert event["http.response.status_code"] == 500
    assert event["http.route"] == "/boom"
    assert event["exception.type"] == "ValueError"
    assert event["exception.message"] == "kaboom"
    assert "Traceback (most recent call last)" in event["exception.stacktrace"]
    assert 'raise ValueError("kaboom")' in event["exception.stacktrace"]
    assert event["trace_id"] == format(server.context.trace_id, "032x")
    (before,) = [e for e in logs if e["message"] == "before failure"]
    assert before["trace_id"] == event["trace_id"] and before["request_id"] == event["request_id"]
    assert server.status.status_code is trace.StatusCode.ERROR  # the span saw it too


def test_exception_still_reaches_starlette_error_handling_and_the_server(tracing_mode: str) -> None:
    app = make_app()
    handled: list[str] = []

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        handled.append(type(exc).__name__)
        return JSONResponse({"detail": "custom"}, status_code=500)

    configure_logging(app=app)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/boom")

    with capture_logs() as logs:
        response = run(app, scenario)
        assert response.json() == {"detail": "custom"}
        assert handled == ["ValueError"]

        async def raising() -> None:
            transport = httpx.ASGITransport(app=app)  # raise_app_exceptions=True
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await client.get("/boom")

        with pytest.raises(ValueError, match="kaboom"):
            asyncio.run(raising())  # re-raised to the server after the 500 was sent
    assert len([e for e in logs.by_level("error") if e["logger"] == REQUEST_LOGGER]) == 2


def test_levels_by_outcome_and_configurable_levels() -> None:
    app = make_app()
    configure_logging(app=app)

    async def scenario(client: httpx.AsyncClient) -> None:
        for path in ["/items/1", "/missing", "/teapot", "/nope"]:
            await client.get(path)

    with capture_logs() as logs:
        run(app, scenario)
    assert [(e["url.path"], e["level"]) for e in requests_of(logs)] == [
        ("/items/1", "info"),
        ("/missing", "warning"),
        ("/teapot", "warning"),
        ("/nope", "warning"),
    ]
    configure_logging(
        app=app, level="DEBUG", request={"status_levels": {"404": "INFO", "2xx": "DEBUG"}}
    )
    with capture_logs() as logs:
        run(app, scenario)
    assert [(e["url.path"], e["level"]) for e in requests_of(logs)] == [
        ("/items/1", "debug"),
        ("/missing", "info"),
        ("/teapot", "warning"),
        ("/nope", "info"),
    ]


def test_request_logger_level_gates_request_events() -> None:
    app = make_app()
    configure_logging(app=app, logger_levels={REQUEST_LOGGER: "WARNING"})
    with capture_logs() as logs:
        get(app, "/items/1")
        get(app, "/missing")
    assert [e["url.path"] for e in requests_of(logs)] == ["/missing"]


# ------------------------------------------------------------------------ request ids


@pytest.mark.parametrize(
    ("inbound", "accepted"),
    [
        ("abc-123", True),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("tenant:a/b+c=@d_e.f", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ('quote"d', False),
        ("new\\nline", False),
        ("tab\tchar", False),
        ("ünïcode", False),
    ],
)
def test_inbound_request_id_is_validated(inbound: str, accepted: bool) -> None:
    app = make_app()
    configure_logging(app=app)
    with capture_logs() as logs:
        response = get(app, "/items/1", headers={"X-Request-ID": inbound.encode("utf-8")})
    echoed = response.headers["x-request-id"]
    if accepted:
        assert echoed == inbound
    else:
        assert echoed != inbound and len(echoed) == 32 and set(echoed) <= HEX32
    assert {e["request_id"] for e in app_lines(logs)} == {echoed}


def test_request_id_options() -> None:
    app = FastAPI()

    @app.get("/own")
    async def own() -> JSONResponse:
        return JSONResponse({}, headers={"X-Correlation-ID": "set-by-app"})

    @app.get("/plain")
    async def plain() -> dict[str, str | None]:
        log.info("inside")
        return {"id": current_request_id()}

    configure_logging(app=app, request={"request_id_header": "X-Correlation-ID"})
    with capture_logs() as logs:
        response = get(app, "/own", headers={"X-Correlation-ID": "from-client"})
        assert response.headers.get_list("x-correlation-id") == ["set-by-app"]  # not doubled
        response = get(app, "/plain", headers={"X-Correlation-ID": "from-client"})
        assert response.json() == {"id": "from-client"}
        assert response.headers["x-correlation-id"] == "from-client"
        assert "x-request-id" not in response.headers
    assert {e["request_id"] for e in app_lines(logs)} == {"from-client"}

    configure_logging(app=app, request={"request_id": False})
    with capture_logs() as logs:
        response = get(app, "/plain", headers={"X-Request-ID": "ignored"})
    assert response.json() == {"id": None}
    assert "x-request-id" not in response.headers
    assert all("request_id" not in e for e in logs)


def test_sync_endpoints_and_dependencies_carry_the_request_context(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app)
    with capture_logs() as logs:
        response = get(app, "/sync", headers={"X-Request-ID": "sync-1"})
        get(app, "/items/5", headers={"X-Request-ID": "async-1"})
    assert response.json() == {"request_id": "sync-1"}  # read in the threadpool
    first, second = server_spans(spans)
    expected = {
        "sync-1": format(first.context.trace_id, "032x"),
        "async-1": format(second.context.trace_id, "032x"),
    }
    lines = app_lines(logs)
    assert {e["message"] for e in lines} == {
        "sync endpoint",
        "dependency ran",
        "endpoint",
        "stdlib in endpoint",
        "request completed",
    }
    for event in lines:
        assert event["trace_id"] == expected[event["request_id"]]
    assert structlog.contextvars.get_contextvars() == {}  # nothing leaked into the caller


# ------------------------------------------------------------ exclusions and switches


def test_excluded_paths_get_neither_request_events_nor_spans(
    spans: InMemorySpanExporter, tracing_mode: str
) -> None:
    app = make_app()
    configure_logging(app=app, request={"exclude_paths": ["/health", "/static/*"]})

    async def scenario(client: httpx.AsyncClient) -> None:
        for path in ["/health", "/static/logo.png", "/items/1", "/healthz"]:
            await client.get(path)

    with capture_logs() as logs:
        run(app, scenario)
    assert [e["url.path"] for e in requests_of(logs)] == ["/items/1", "/healthz"]
    assert [span_path(s) for s in server_spans(spans)] == ["/items/1", "/healthz"]
    (health,) = [e for e in logs if e["message"] == "health endpoint"]
    assert "trace_id" not in health and "request_id" not in health


def test_request_events_off_keeps_request_ids() -> None:
    app = make_app()
    configure_logging(app=app, request={"enabled": False})
    with capture_logs() as logs:
        response = get(app, "/items/1", headers={"X-Request-ID": "kept"})
    assert requests_of(logs) == []
    assert response.headers["x-request-id"] == "kept"
    assert {e["request_id"] for e in app_lines(logs)} == {"kept"}


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
    assert _tracing._unobserved(trace.NoOpTracer()) is False
    assert _tracing._unobserved(object()) is False


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


# ------------------------------------------------------------- user and session hook


def session_hook(scope: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Reads the session cookie at the start and the user an auth dependency stored."""
    fields: dict[str, Any] = {}
    for name, value in scope.get("headers") or ():
        if name == b"x-session":
            fields["session.id"] = value.decode()
    user = scope.get("state", {}).get("user")
    if user:
        fields["user.id"] = user
    return fields


def test_context_hook_adds_user_and_session() -> None:
    app = FastAPI()

    async def authenticate(request: Request) -> str:
        request.state.user = "alice"
        structlog.contextvars.bind_contextvars(**{"user.id": "alice"})
        return "alice"

    @app.get("/me")
    async def me(user: str = Depends(authenticate)) -> dict[str, str]:
        log.info("profile read")
        return {"user": user}

    @app.get("/public")
    async def public() -> dict[str, str]:
        log.info("public read")
        return {}

    configure_logging(app=app, request={"context_hook": session_hook})
    with capture_logs() as logs:
        get(app, "/me", headers={"X-Session": "s-1"})
        get(app, "/public")
    me_lines = [e for e in logs if e.get("url.path") == "/me" or e["message"] == "profile read"]
    assert [(e["session.id"], e["user.id"]) for e in me_lines] == [("s-1", "alice")] * 2
    public_lines = [e for e in logs if e["message"] in ("public read", "request completed")][-2:]
    for event in public_lines:
        assert "session.id" not in event and "user.id" not in event
    assert structlog.contextvars.get_contextvars() == {}


def test_context_hook_from_an_import_path_and_a_failing_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_REQUEST__CONTEXT_HOOK", "test_fastapi:session_hook")
    assert LoggingSettings().request.context_hook is session_hook

    def broken(scope: Mapping[str, Any]) -> Mapping[str, Any]:
        raise RuntimeError("hook bug")

    app = make_app()
    configure_logging(app=app, request={"context_hook": broken})
    with capture_logs() as logs:
        response = get(app, "/items/1")
    assert response.status_code == 200  # a broken hook never breaks the request
    assert len(requests_of(logs)) == 1


# -------------------------------------------------- acceptance 7: never double-instrumented


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


def test_existing_sdk_tracer_provider_is_used(trace_globals: None, tracing_mode: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "users-own"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    app = make_app()
    settings = configure_logging(app=app, service_name="ignored-for-traces")
    assert _tracing.ensure_tracer_provider(settings) is provider
    assert _tracing._owned == []
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
    log_resource = fapilog._config._pipeline.provider.resource  # type: ignore[union-attr]
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


# ------------------------------------------------------------------ other app shapes


def test_plain_starlette_app(tracing_mode: str) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        log.info("hello")
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello/{who}", hello)])
    configure_logging(app=app)
    with capture_logs() as logs:
        get(app, "/hello/bob", headers={"traceparent": TRACEPARENT})
    (event,) = requests_of(logs)
    assert event["http.route"] == "/hello/{who}"
    assert event["trace_id"] == TRACE_ID
    (hello_line,) = [e for e in logs if e["message"] == "hello"]
    assert hello_line["span_id"] == event["span_id"]


def test_not_an_app_or_an_app_already_serving_is_a_configuration_error() -> None:
    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    with pytest.raises(ConfigurationError, match="FastAPI or Starlette application"):
        configure_logging(app=raw_asgi)
    app = make_app()
    get(app, "/items/1")  # builds the middleware stack
    with pytest.raises(ConfigurationError, match="before the application starts"):
        configure_logging(app=app)


def test_websocket_passes_through_with_trace_context(tracing_mode: str) -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        log.info("ws message", text=text)
        await websocket.send_text(text.upper())
        await websocket.close()

    configure_logging(app=app)
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"traceparent", TRACEPARENT.encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    inbound: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbound.pop(0) if inbound else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    with capture_logs() as logs:
        asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "HI"
    (line,) = [e for e in logs if e["message"] == "ws message"]
    assert line["trace_id"] == TRACE_ID  # the instrumentation's span for the connection
    assert requests_of(logs) == []  # websockets get no request event
    assert "request_id" not in line


async def run_lifespan(app: Any) -> list[Message]:
    inbound: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbound.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


def test_lifespan_startup_takes_back_uvicorn_loggers_after_dictconfig() -> None:
    from uvicorn.config import LOGGING_CONFIG

    app = make_app()
    configure_logging(app=app)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    try:
        logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn.run() does after our call
        assert logging.getLogger("uvicorn").handlers  # plain-text handlers are back
        with capture_logs() as logs:
            sent = asyncio.run(run_lifespan(app))
            logging.getLogger("uvicorn.error").info("uvicorn says hi")
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        for name in names:
            logger = logging.getLogger(name)
            assert logger.handlers == [] and logger.propagate
        (line,) = [e for e in logs if e["message"] == "uvicorn says hi"]
        assert line["logger"] == "uvicorn.error"
    finally:
        fapilog._config.reset()
        for name in names:  # leave no uvicorn handlers for the next tests
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)


# ------------------------------------------------------- the middleware on raw ASGI apps


async def drive(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[Message]:
    sent: list[Message] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str = "/file", **extra: Any) -> dict[str, Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example"), (b"content-length", b"not-a-number")],
        "client": ("10.1.2.3", 5000),
        "server": ("example", 80),
    }
    scope.update(extra)
    return scope


def test_middleware_with_fixed_settings_pathsend_and_cancellation() -> None:
    async def pathsend_app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"77")]}
        )
        await send({"type": "http.response.pathsend", "path": "/tmp/file.bin"})

    async def cancelled_app(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    settings = RequestSettings(request_id=False, status_levels={"default": "DEBUG"})
    configure_logging(level="DEBUG")
    with capture_logs() as logs:
        sent = asyncio.run(drive(RequestLoggingMiddleware(pathsend_app, settings), http_scope()))
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(drive(RequestLoggingMiddleware(cancelled_app), http_scope("/gone")))
    assert sent[0]["headers"] == [(b"content-length", b"77")]  # no request id echoed
    file_event, cancelled = requests_of(logs)
    assert file_event["level"] == "debug"
    assert file_event["http.response.body.size"] == 77
    assert file_event["http.request.body.size"] == 0
    assert "request_id" not in file_event
    assert cancelled["message"] == "request cancelled" and cancelled["level"] == "warning"
    assert "http.response.status_code" not in cancelled


def test_lifespan_and_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            message = await receive()
            seen.append(message["type"])

    middleware = RequestLoggingMiddleware(inner)

    async def main() -> None:
        async def receive() -> Message:
            return {"type": "lifespan.startup"}

        async def send(message: Message) -> None:  # pragma: no cover - not called
            pass

        await middleware({"type": "lifespan"}, receive, send)
        await middleware({"type": "custom"}, receive, send)

    with capture_logs() as logs:
        asyncio.run(main())
    assert seen == ["lifespan", "lifespan.startup", "custom"]
    assert requests_of(logs) == []


# ------------------------------------------------------------------ settings and helpers


def test_request_settings_validation_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="FAPILOG_REQUEST__STATUS_LEVELS"):
        LoggingSettings(request={"status_levels": {"6xx": "INFO"}})
    with pytest.raises(ConfigurationError, match="FAPILOG_REQUEST__STATUS_LEVELS"):
        LoggingSettings(request={"status_levels": {"404": "LOUD"}})
    with pytest.raises(ConfigurationError, match="FAPILOG_REQUEST__REQUEST_ID_HEADER"):
        LoggingSettings(request={"request_id_header": "Bad Header"})
    with pytest.raises(ConfigurationError, match="FAPILOG_REQUEST__EXCLUDE_PATHS"):
        LoggingSettings(request={"exclude_paths": ["health"]})
    with pytest.raises(ConfigurationError, match=r"FAPILOG_REQUEST__CONTEXT_HOOK.*cannot import"):
        LoggingSettings(request={"context_hook": "no_such_module:hook"})
    with pytest.raises(ConfigurationError, match="not callable"):
        LoggingSettings(request={"context_hook": "fapilog.middleware:REQUEST_LOGGER"})
    with pytest.raises(ConfigurationError, match="import path"):
        LoggingSettings(request={"context_hook": "nodots"})


def test_request_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAPILOG_REQUEST__EXCLUDE_PATHS", "/health,/metrics")
    monkeypatch.setenv("FAPILOG_REQUEST__STATUS_LEVELS", "404=info,2XX=debug")
    monkeypatch.setenv("FAPILOG_REQUEST__TRACING", "false")
    monkeypatch.setenv("FAPILOG_REQUEST__CONTEXT_HOOK", "")
    request = LoggingSettings().request
    assert request.exclude_paths == ["/health", "/metrics"]
    assert request.status_levels == {"404": "INFO", "2xx": "DEBUG"}
    assert request.tracing == "off"
    assert request.context_hook is None


def test_excluded_urls_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.util.http import parse_excluded_urls

    assert _tracing.excluded_urls([]) is None
    patterns = parse_excluded_urls(
        _tracing.excluded_urls(["/health", "/static/*", "/odd,path"]) or ""
    )
    assert patterns.url_disabled("http://host:8000/health")
    assert not patterns.url_disabled("http://host:8000/healthz")
    assert not patterns.url_disabled("http://host/api/health")
    assert patterns.url_disabled("https://host/static/css/app.css")
    assert patterns.url_disabled("http://host/odd,path")
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "ready")
    assert parse_excluded_urls(_tracing.excluded_urls(["/health"]) or "").url_disabled(
        "http://h/ready"
    )


# ------------------------------------------------------------------------------ docs


def test_docs_page_lists_every_request_setting_and_event_field(
    memory_exporter: MemoryExporter,
) -> None:
    from conftest import ROOT
    from fapilog._sections.enrichment import RequestEnrichmentFields
    from fapilog.settings import env_var_for

    page = (ROOT / "docs" / "fastapi.md").read_text()
    for name in set(RequestSettings.model_fields) - set(RequestEnrichmentFields.model_fields):
        assert f"`{env_var_for('request', name)}`" in page, name
    app = make_app()
    configure_logging(app=app, exporters=[memory_exporter.name])
    get(app, "/items/1")
    get(app, "/boom")
    events = [
        r for r in memory_exporter.records() if r.instrumentation_scope.name == REQUEST_LOGGER
    ]
    assert len(events) == 2
    for record in events:
        for key in record.log_record.attributes or {}:
            assert f"`{key}`" in page, key
        assert f"`{record.log_record.body}`" in page


def test_lifespan_shutdown_delivers_what_shutdown_handlers_logged(
    memory_exporter: MemoryExporter,
) -> None:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        get_logger("shop").info("closing pools")

    app = FastAPI(lifespan=lifespan)
    configure_logging(app=app, exporters=[memory_exporter.name], queue={"max_delay": 30})
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # no force_flush here: the middleware flushed when the app completed its shutdown
    bodies = [r.log_record.body for r in memory_exporter.exporter.get_finished_logs()]
    assert "closing pools" in bodies

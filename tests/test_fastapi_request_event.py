"""FastAPI request events: the fields of the one event per request (sizes, duration,
route templates), its level by outcome, request ids, excluded paths, the user and
session hook, the request settings, and the docs page that lists them.
In process: real FastAPI/Starlette apps driven through httpx.ASGITransport, events read with
`capture_logs()` or through the real export pipeline.

Every trace-related test runs in both tracing modes (the `tracing_mode` fixture of
conftest.py): fapilog's native server span and opentelemetry-instrumentation-fastapi's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import MemoryExporter
from fapilog import (
    ConfigurationError,
    LoggingSettings,
    configure_logging,
    log,
)
from fapilog.fastapi import current_request_id
from fapilog.integrations import tracing as _tracing
from fapilog.middleware import REQUEST_LOGGER, valid_request_id
from fapilog.settings import RequestSettings
from fapilog.testing import capture_logs
from fastapi_support import (
    HEX32,
    app_lines,
    get,
    make_app,
    requests_of,
    run,
    server_spans,
    span_path,
)

# ---------------------------------------------------------- the request event's fields


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


# ------------------------------------------------------------------------------ levels


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

    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, dict[str, Any]]:
        # (both requests called in this task's context, as a server does on one connection)
        response = await client.get("/sync", headers={"X-Request-ID": "sync-1"})
        await client.get("/items/5", headers={"X-Request-ID": "async-1"})
        return response, structlog.contextvars.get_contextvars()

    with capture_logs() as logs:
        response, left = run(app, scenario)
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
    assert left == {}  # nothing leaked into the context the app was called in


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

    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        # (one context for both, as on a keep-alive connection: /public must not get alice)
        await client.get("/me", headers={"X-Session": "s-1"})
        await client.get("/public")
        return structlog.contextvars.get_contextvars()

    with capture_logs() as logs:
        left = run(app, scenario)
    me_lines = [e for e in logs if e.get("url.path") == "/me" or e["message"] == "profile read"]
    assert [(e["session.id"], e["user.id"]) for e in me_lines] == [("s-1", "alice")] * 2
    public_lines = [e for e in logs if e["message"] in ("public read", "request completed")][-2:]
    for event in public_lines:
        assert "session.id" not in event and "user.id" not in event
    assert left == {}  # the hook's fields and the dependency's binding ended with /me


def test_context_hook_from_an_import_path_and_a_failing_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_REQUEST__CONTEXT_HOOK", "test_fastapi_request_event:session_hook")
    assert LoggingSettings().request.context_hook is session_hook

    def broken(scope: Mapping[str, Any]) -> Mapping[str, Any]:
        raise RuntimeError("hook bug")

    app = make_app()
    configure_logging(app=app, request={"context_hook": broken})
    with capture_logs() as logs:
        response = get(app, "/items/1")
    assert response.status_code == 200  # a broken hook never breaks the request
    assert len(requests_of(logs)) == 1


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
    from fapilog.settings import env_var_for
    from fapilog.settings.request import RequestEnrichmentFields

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

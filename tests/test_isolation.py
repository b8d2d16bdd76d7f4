"""Request isolation under a real uvicorn: a request on a reused keep-alive connection
starts from a clean context, whatever the previous request on it left in the context its
task was created in (uvicorn on the asyncio loop resumes reading a large body from inside
the application's `receive()`, and asyncio keeps that context for the callback that starts
the next requests).

Each uvicorn event loop and HTTP implementation, native tracing and the OpenTelemetry
instrumentation."""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import json
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars

from conftest import ROOT
from fapilog import bind_context, log
from fapilog.fastapi import RequestLoggingMiddleware
from fapilog.integrations import isolation
from fapilog.settings import RequestSettings
from fapilog.testing import capture_logs
from test_fastapi_uvicorn import Server, json_lines

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
SIZES = [70_000, 200_000, 2_000_000, 10_000_000]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


LOOPS = [pytest.param("asyncio"), pytest.param("uvloop", marks=pytest.mark.skipif(
    not _installed("uvloop"), reason="uvloop is not installed"))]  # fmt: skip
HTTPS = [pytest.param("h11"), pytest.param("httptools", marks=pytest.mark.skipif(
    not _installed("httptools"), reason="httptools is not installed"))]  # fmt: skip


def _serve(env: dict[str, str], loop: str, http: str, tracing: str) -> Server:
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "peers"), env["PYTHONPATH"]]),
    }
    command = [sys.executable, "-m", "uvicorn", "isolation_app:app", "--port", "0"]
    command += ["--loop", loop, "--http", http]
    if tracing == "opentelemetry-instrument":  # the OpenTelemetry CLI, fapilog's distro
        env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
        command = [str(Path(sys.executable).parent / "opentelemetry-instrument"), *command]
    else:
        env["FAPILOG_REQUEST__TRACING"] = tracing
    return Server(command, env)


def _lines(server: Server, message: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(server.stdout) if line.get("message") == message]


@pytest.mark.slow
@pytest.mark.parametrize("tracing", ["native", "instrumentation", "opentelemetry-instrument"])
@pytest.mark.parametrize("http", HTTPS)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_large_upload_leaks_nothing_into_later_requests_on_its_connection(
    subprocess_env: dict[str, str], tmp_path: Path, loop: str, http: str, tracing: str
) -> None:
    server = _serve(subprocess_env, loop, http, tracing)
    try:
        port = server.port()
        uploads: list[str] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            n = 0
            for size in SIZES:  # one keep-alive connection throughout
                response = client.post("/upload", content=b"x" * size, headers={"X-User": "alice"})
                assert response.json() == {"size": size}
                uploads.append(response.headers["x-request-id"])
                for _ in range(3):
                    n += 1
                    assert client.get(f"/plain/{n}").status_code == 200
            n += 1
            assert client.get(f"/plain/{n}", headers={"traceparent": TRACEPARENT}).is_success
        assert server.stop() in (0, -15)
    finally:
        server.kill()
    uploaded = _lines(server, "uploaded")
    assert [line["request_id"] for line in uploaded] == uploads
    assert all(line["user.id"] == "alice" for line in uploaded)
    alice_traces = {line["trace_id"] for line in uploaded}
    plain = _lines(server, "plain")
    assert len(plain) == n
    for line in plain:
        assert "user.id" not in line, line
        assert line["trace_id"] not in alice_traces, line
        assert line["request_id"] not in uploads, line
    assert plain[-1]["trace_id"] == TRACE_ID  # its own traceparent is continued
    events = [e for e in _lines(server, "request completed") if e.get("http.route") == "/plain/{n}"]
    assert len(events) == n
    for event in events:
        assert "user.id" not in event and event["trace_id"] not in alice_traces, event


CONNECTIONS, PER_CONNECTION = 20, 15


def _identity(n: int) -> dict[str, str]:
    """What request `n` says about itself, and what each of its lines must carry."""
    trace_id = f"{n + 1:032x}"
    return {
        "request_id": f"req-{n}",
        "user.id": f"user-{n}",
        "trace_id": trace_id,
        "traceparent": f"00-{trace_id}-{n + 1:016x}-01",
    }


def _connection(port: int, first: int) -> None:
    """One keep-alive connection: uploads of 200 KB and plain requests, alternating."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for n in range(first, first + PER_CONNECTION):
            who = _identity(n)
            headers = {
                "X-Request-ID": who["request_id"],
                "X-User": who["user.id"],
                "traceparent": who["traceparent"],
            }
            if n % 2:
                response = client.post(f"/upload/{n}", content=b"x" * 200_000, headers=headers)
            else:
                response = client.get(f"/plain/{n}", headers=headers)
            assert response.json()["n"] == n


@pytest.mark.slow
@pytest.mark.parametrize(("loop", "http"), [("asyncio", "h11"), ("uvloop", "httptools")])
def test_concurrent_requests_over_keep_alive_connections_each_keep_their_own_context(
    subprocess_env: dict[str, str], loop: str, http: str
) -> None:
    """300 concurrent requests, uploads and plain ones mixed, over 20 keep-alive
    connections: every line carries its own request's request_id, trace_id and user.id."""
    if not (_installed(loop) or loop == "asyncio") or not (_installed(http) or http == "h11"):
        pytest.skip(f"{loop}/{http} is not installed")
    server = _serve(subprocess_env, loop, http, "native")
    try:
        port = server.port()
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            starts = range(0, CONNECTIONS * PER_CONNECTION, PER_CONNECTION)
            for done in [pool.submit(_connection, port, first) for first in starts]:
                done.result()
        assert server.stop() in (0, -15)
    finally:
        server.kill()
    lines = _lines(server, "uploaded") + _lines(server, "plain")
    assert sorted(line["n"] for line in lines) == list(range(CONNECTIONS * PER_CONNECTION))
    for line in lines:
        who = _identity(line["n"])
        assert {key: line.get(key) for key in ("request_id", "user.id", "trace_id")} == {
            key: who[key] for key in ("request_id", "user.id", "trace_id")
        }, line
    events = _lines(server, "request completed")
    assert len(events) == CONNECTIONS * PER_CONNECTION
    for event in events:
        n = int(event["url.path"].rsplit("/", 1)[1])
        who = _identity(n)
        assert (event["request_id"], event["user.id"], event["trace_id"]) == (
            who["request_id"], who["user.id"], who["trace_id"]
        ), event  # fmt: skip


@pytest.mark.slow
def test_a_stream_the_client_abandons_is_a_cancelled_request_and_a_head_sends_no_body(
    subprocess_env: dict[str, str],
) -> None:
    """A client that goes away mid-stream gives `request cancelled` with what was sent; a
    HEAD reports the body bytes that went on the wire: none."""
    server = _serve(subprocess_env, "asyncio", "h11", "native")
    try:
        port = server.port()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
            received = b""
            while received.count(b"x" * 700) < 2:  # two chunks, then the client goes away
                data = client.recv(65536)
                assert data, received
                received += data
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            response = http.head("/head")
            assert response.status_code == 200 and response.content == b""
            declared = int(response.headers["content-length"])
        # uvicorn's graceful shutdown waits for the stream, which ends once it finds the
        # client gone (after its pause)
        assert server.stop() in (0, -15)
    finally:
        server.kill()
    events = {e["url.path"]: e for e in _lines(server, "request cancelled")}
    completed = {e["url.path"]: e for e in _lines(server, "request completed")}
    assert "/stream" not in completed, completed.get("/stream")
    abandoned = events["/stream"]
    assert abandoned["level"] == "warning"
    assert abandoned["http.response.status_code"] == 200
    assert abandoned["http.response.body.size"] == 1400  # the two chunks that were sent
    assert declared > 0 and completed["/head"]["http.response.body.size"] == 0


# -- in process: what counts as inherited --------------------------------------------------


@pytest.fixture
def tracer() -> Any:
    return TracerProvider().get_tracer("isolation-test")


def test_a_span_an_earlier_request_was_served_under_is_cleared_and_put_back(tracer: Any) -> None:
    earlier: dict[str, Any] = {"type": "http"}
    span = tracer.start_span("earlier request")
    token = otel_context.attach(trace.set_span_in_context(span))
    bind_contextvars(request_id="earlier", **{"user.id": "alice"})
    try:
        isolation.note_current_span(earlier)  # it served a request: later ones inherit it
        scope: dict[str, Any] = {"type": "http"}
        entry = isolation.enter(scope)
        assert entry is not None
        assert not trace.get_current_span().get_span_context().is_valid
        assert get_contextvars() == {}
        bind_contextvars(request_id="this one")
        isolation.leave(entry)
        assert trace.get_current_span() is span
        assert get_contextvars() == {"request_id": "earlier", "user.id": "alice"}
    finally:
        clear_contextvars()
        otel_context.detach(token)
        span.end()


def test_a_live_span_of_an_outer_layer_is_kept_and_an_ended_one_is_not(tracer: Any) -> None:
    outer = tracer.start_span(
        "an OpenTelemetry middleware outside the app", kind=trace.SpanKind.SERVER
    )
    token = otel_context.attach(trace.set_span_in_context(outer))
    try:
        kept = isolation.enter({"type": "http"})  # nothing to clear
        assert kept is not None and kept.token is None and not kept.inherited
        assert trace.get_current_span() is outer
        outer.end()  # a span that has ended belongs to a request that is over
        entry = isolation.enter({"type": "http"})
        assert entry is not None and not trace.get_current_span().get_span_context().is_valid
        isolation.leave(entry)
    finally:
        otel_context.detach(token)


def test_an_inherited_span_that_is_not_a_server_span_is_cleared(tracer: Any) -> None:
    """A child span (an endpoint's own, FastAPI's operation span) current where the context
    was captured is never this request's server span, even if no request was noted under
    it and it has not ended."""
    child = tracer.start_span("an earlier request's child span")  # INTERNAL
    token = otel_context.attach(trace.set_span_in_context(child))
    try:
        entry = isolation.enter({"type": "http"})
        assert entry is not None and not trace.get_current_span().get_span_context().is_valid
        isolation.leave(entry)
        assert trace.get_current_span() is child
    finally:
        otel_context.detach(token)
        child.end()


def test_a_mounted_apps_layer_keeps_the_outer_layers_span_and_bindings(tracer: Any) -> None:
    """One scope travels through a mounted app: the inner fapilog layer finds the request
    already cleared by the outer one, and its span noted for this very scope."""
    scope: dict[str, Any] = {"type": "http"}
    outer = isolation.enter(scope)
    assert outer is not None and not outer.inherited
    span = tracer.start_span("this request")
    token = otel_context.attach(trace.set_span_in_context(span))
    bind_contextvars(request_id="this one")
    try:
        isolation.note_current_span(scope)
        assert isolation.enter(scope) is None  # the outer layer's entry serves both
        assert trace.get_current_span() is span
        assert get_contextvars() == {"request_id": "this one"}
        assert not isolation._stale(span, scope)
        assert isolation._stale(span, {"type": "http"})  # for any other request, it is
    finally:
        clear_contextvars()
        otel_context.detach(token)
        span.end()


# -- in process: the requests of one connection, called the way a server calls them -------

Message = dict[str, Any]


def _user_hook(scope: Any) -> dict[str, str]:
    """The context hook: the user a request names (bound by the middleware, by token)."""
    user = dict(scope["headers"]).get(b"x-user")
    return {"user.id": user.decode()} if user else {}


async def _shop(scope: Any, receive: Any, send: Any) -> None:
    """The application: binds a value of its own (nothing resets it but the isolation)."""
    await receive()
    bound = sorted(get_contextvars())
    user = dict(scope["headers"]).get(b"x-user")
    if user:
        bind_context(cart=f"cart of {user.decode()}")
    log.info("handled", bound_on_entry=bound)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class _Connection:
    """One keep-alive connection of a server: the application is called for each request
    from the server's task, in its context (no copy per request), and `captured` is the
    context current inside the application's last `receive()`, the one asyncio keeps for
    the reader callback that starts the next requests (`fapilog.integrations.isolation`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.captured = contextvars.copy_context()

    async def request(self, n: int, user: str | None = None) -> list[Message]:
        headers = [(b"host", b"shop"), (b"x-request-id", f"req-{n}".encode())]
        if user is not None:
            headers.append((b"x-user", user.encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": f"/orders/{n}",
            "raw_path": f"/orders/{n}".encode(), "root_path": "", "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 5000), "server": ("shop", 80),
        }  # fmt: skip
        sent: list[Message] = []

        async def receive() -> Message:
            self.captured = contextvars.copy_context()
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return sent


def test_requests_on_one_connection_start_clean_and_leave_nothing_behind() -> None:
    """The middleware added by hand (no `configure_logging(app=app)` isolation around the
    app): request 1 binds a user (the hook) and a cart (the application); request 2 runs
    next in the same task and context; request 3 in a task created in the context captured
    inside request 1 (uvicorn on the asyncio loop, after a large upload). Neither carries
    anything of request 1, nor its trace; the connection's own bindings are put back after
    each request."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = RequestLoggingMiddleware(
        _shop, RequestSettings(context_hook=_user_hook), tracer_provider=provider
    )
    connection = _Connection(app)

    async def serve() -> list[dict[str, Any]]:
        bind_context(worker="w1")  # the server task's own binding
        left = [get_contextvars()]
        await connection.request(1, user="alice")
        left.append(get_contextvars())
        inside_request_1 = connection.captured
        await connection.request(2)
        left.append(get_contextvars())
        loop = asyncio.get_running_loop()
        await inside_request_1.run(loop.create_task, connection.request(3))
        return left

    with capture_logs() as logs:
        left = asyncio.run(serve())
    assert left == [{"worker": "w1"}] * 3  # after each request: the task's own, nothing else
    handled = {line["request_id"]: line for line in logs if line["message"] == "handled"}
    events = {line["request_id"]: line for line in logs if line["logger"] == "fapilog.request"}
    assert sorted(handled) == sorted(events) == ["req-1", "req-2", "req-3"]
    assert handled["req-1"]["bound_on_entry"] == ["request_id", "user.id"]
    assert (handled["req-1"]["user.id"], handled["req-1"]["cart"]) == ("alice", "cart of alice")
    for request_id in ("req-2", "req-3"):
        assert handled[request_id]["bound_on_entry"] == ["request_id"]
        for line in (handled[request_id], events[request_id]):
            assert not {"user.id", "cart", "worker"} & set(line), line
    spans = {span.attributes["url.path"]: span for span in exporter.get_finished_spans()}
    assert all(span.parent is None for span in spans.values())  # each a trace of its own
    traces = {line["request_id"]: line["trace_id"] for line in [*handled.values()]}
    assert len(set(traces.values())) == 3, traces
    assert traces["req-3"] == format(spans["/orders/3"].context.trace_id, "032x")


# -- mounted apps: one span, one event, one exception record ------------------------------


def _serve_peer(env: dict[str, str], module: str, spans_file: Path, **extra: str) -> Server:
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "peers"), env["PYTHONPATH"]]),
        "SPANS_FILE": str(spans_file),
        **extra,
    }
    return Server([sys.executable, "-m", "uvicorn", f"{module}:app", "--port", "0"], env)


def _server_spans(spans_file: Path) -> list[dict[str, Any]]:
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    return [span for span in spans if span["kind"] == "SERVER"]


def _one_span_and_one_event_each(
    lines: list[dict[str, Any]], servers: list[dict[str, Any]], request_ids: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Each request has one request event, and every line it logged carries the event's
    span_id, one of the server spans'. Returns the events."""
    events = []
    for request_id in request_ids:
        mine = [line for line in lines if line.get("request_id") == request_id]
        found = [line for line in mine if line.get("logger") == "fapilog.request"]
        assert len(found) == 1, found
        (event,) = found
        assert {line["span_id"] for line in mine} == {event["span_id"]}, mine
        assert event["span_id"] in {span["span_id"] for span in servers}
        events.append(event)
    return events


@pytest.mark.slow
@pytest.mark.parametrize("configured", ["parent", "both"])
def test_a_mounted_sub_app_gives_one_span_one_event_and_one_exception_record(
    subprocess_env: dict[str, str], tmp_path: Path, configured: str
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    extra = {"CONFIGURE_SUB": "1"} if configured == "both" else {}
    server = _serve_peer(subprocess_env, "mounted_app", spans_file, **extra)
    try:
        port = server.port()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/sub/items/1", headers={"X-Request-ID": "one"}).json() == {"n": 1}
            assert client.get("/sub/boom", headers={"X-Request-ID": "two"}).status_code == 500
        assert server.stop() in (0, -15)
    finally:
        server.kill()
    lines = json_lines(server.stdout)
    servers = _server_spans(spans_file)
    assert len(servers) == 2, servers  # one per request
    events = _one_span_and_one_event_each(lines, servers, ("one", "two"))
    assert all(event["http.route"].startswith("/sub/") for event in events), events
    errors = [line for line in lines if "kaboom" in json.dumps(line)]
    assert len(errors) == 1, errors  # the request event carries the exception, once


@pytest.mark.slow
def test_fastapi_telemetry_given_its_own_provider_keeps_one_span_and_one_exception_record(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """`FastAPI(telemetry={"tracer_provider": tp})`: FastAPI's server span is the request's
    span (no second one), endpoint lines carry it, the exception is logged once, and the
    records FastAPI emits through OpenTelemetry carry the request's request_id."""
    spans_file = tmp_path / "spans.jsonl"
    server = _serve_peer(subprocess_env, "telemetry_app", spans_file)
    try:
        port = server.port()
        # a connection per request: uvicorn closes the connection of a request that raised
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, limits=no_keepalive
        ) as client:
            assert client.get("/items/1", headers={"X-Request-ID": "one"}).json() == {"n": 1}
            assert client.get("/boom", headers={"X-Request-ID": "two"}).status_code == 500
            invalid = client.get("/items/x", headers={"X-Request-ID": "three"})
            assert invalid.status_code == 422
        assert server.stop() in (0, -15)
    finally:
        server.kill()
    lines = json_lines(server.stdout)
    servers = _server_spans(spans_file)
    assert len(servers) == 3 and {span["scope"] for span in servers} == {"fastapi"}, servers
    _one_span_and_one_event_each(lines, servers, ("one", "two"))
    errors = [line for line in lines if "kaboom" in json.dumps(line)]
    assert len(errors) == 1, errors
    validation = [line for line in lines if line.get("message") == "Request validation failed"]
    assert [line.get("request_id") for line in validation] == ["three"], validation

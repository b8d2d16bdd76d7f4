"""Nothing the request middleware does for logging raises into the application.

Each guard of `fapilog.integrations.middleware` (and of what it calls: the request event,
the context hook, the lifespan hand-over, the servers' access lines, stdlib records) is fed
an input that makes the code it guards fail: a span processor or a response propagator of
the application's OpenTelemetry set-up that raises, a header value that is not bytes, an
exception type that refuses attributes, a context hook that raises, a client that goes
away from a WebSocket. The application gets exactly what it would have without fapilog
(the response it sent, its own exception), and the failure is reported the documented
way: a diagnostic line on stderr (`fapilog.diagnostic`), or a record marked with
``fapilog.error``. Real pipeline (the file exporter), real OpenTelemetry SDK parts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from opentelemetry import trace
from opentelemetry.instrumentation.propagators import (
    ResponsePropagator,
    get_global_response_propagator,
    set_global_response_propagator,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.websockets import WebSocketDisconnect

from fapilog import _diag, log
from fapilog.capture import stdlib
from fapilog.fastapi import RequestLoggingMiddleware
from test_logging_never_raises import configure, lines

Message = dict[str, Any]
TOKEN = "an-admin-token-of-32-characters!"


class Diagnostics:
    """fapilog's diagnostic reports (what goes to stderr), as (key, message)."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []

    def __call__(self, key: str, message: str, fields: dict[str, Any]) -> None:
        self.reports.append((key, message))

    def said(self, key: str) -> list[str]:
        return [message for reported, message in self.reports if reported == key]


@pytest.fixture
def diagnostics() -> Iterator[Diagnostics]:
    listener = Diagnostics()
    _diag.add_listener(listener)
    try:
        yield listener
    finally:
        _diag.remove_listener(listener)


class FailsAtStart(SpanProcessor):
    """A span processor of the application's with a bug when a span starts."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("span processor bug at start")


class FailsAtEnd(SpanProcessor):
    """A span processor of the application's with a bug when a span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("span processor bug at end")


def provider(*processors: SpanProcessor) -> TracerProvider:
    tracer_provider = TracerProvider()
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    return tracer_provider


def http_scope(*extra_headers: tuple[bytes, Any]) -> dict[str, Any]:
    headers = [(b"host", b"shop"), (b"x-request-id", b"req-1"), *extra_headers]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/orders", "raw_path": b"/orders", "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("shop", 80),
    }  # fmt: skip


def serve(app: Any, scope: dict[str, Any], inbound: Sequence[Message] = ()) -> list[Message]:
    """Call the ASGI `app` once, as a server does; what it sent."""
    messages = list(inbound) or [{"type": "http.request", "body": b"{}", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


class Shop:
    """The application: logs a line, answers 201, and notes that its last send returned."""

    def __init__(self, *headers: tuple[bytes, Any]) -> None:
        self.headers = [(b"content-type", b"text/plain"), *headers]
        self.finished = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        log.info("handled")
        await send({"type": "http.response.start", "status": 201, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"created"})
        self.finished = True

    def response(self) -> list[Message]:
        """What the server must get: the app's own messages, the request id echoed."""
        headers = [*self.headers, (b"x-request-id", b"req-1")]
        return [
            {"type": "http.response.start", "status": 201, "headers": headers},
            {"type": "http.response.body", "body": b"created"},
        ]


def request_event(found: list[dict[str, Any]]) -> dict[str, Any]:
    (event,) = [line for line in found if line["logger"] == "fapilog.request"]
    return event


# -- the server span ------------------------------------------------------------------------


def test_a_span_that_cannot_start_leaves_the_request_served_without_one(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    configure(tmp_path)
    shop = Shop()
    app = RequestLoggingMiddleware(shop, tracer_provider=provider(FailsAtStart()))
    assert serve(app, http_scope()) == shop.response()
    assert shop.finished
    handled, event = lines(tmp_path)
    assert handled["message"] == "handled" and "trace_id" not in handled
    assert (event["message"], event["http.response.status_code"]) == ("request completed", 201)
    assert event["request_id"] == "req-1"
    (said,) = diagnostics.said("server-span")
    assert "could not start a server span" in said and "span processor bug at start" in said


def test_a_span_that_cannot_end_does_not_fail_the_applications_last_send(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    """The span ends when the response body is complete, inside the application's own
    `send()`: that call returns normally all the same."""
    configure(tmp_path)
    shop = Shop()
    app = RequestLoggingMiddleware(shop, tracer_provider=provider(FailsAtEnd()))
    assert serve(app, http_scope()) == shop.response()
    assert shop.finished
    handled, event = lines(tmp_path)
    assert handled["trace_id"] == event["trace_id"]  # the span was current meanwhile
    assert (event["message"], event["http.response.status_code"]) == ("request completed", 201)
    (said,) = diagnostics.said("server-span")
    assert "could not end a server span" in said and "span processor bug at end" in said


@pytest.mark.parametrize(
    "host", [b"shop:\xb2", b"shop:" + b"9" * 5000], ids=["superscript-two", "5000-digits"]
)
def test_a_host_port_that_is_not_a_port_number_still_gets_the_request_its_span(
    tmp_path: Path, diagnostics: Diagnostics, host: bytes
) -> None:
    """``Host: shop:\xb2`` (a superscript two: a digit to `str.isdigit`, not to `int`) and a
    port of 5,000 digits (past `int()`'s digit limit) are ports that do not count, like any
    other that is not a port number: the span is started, without ``server.address``."""
    configure(tmp_path)
    spans = InMemorySpanExporter()
    shop = Shop()
    app = RequestLoggingMiddleware(shop, tracer_provider=provider(SimpleSpanProcessor(spans)))
    scope = http_scope()
    scope["headers"][0] = (b"host", host)
    assert serve(app, scope) == shop.response()
    (span,) = spans.get_finished_spans()
    assert (span.attributes or {})["http.response.status_code"] == 201
    assert "server.address" not in (span.attributes or {})
    handled, event = lines(tmp_path)
    assert handled["trace_id"] == event["trace_id"] == format(span.context.trace_id, "032x")
    assert diagnostics.said("server-span") == []


class FailingResponsePropagator(ResponsePropagator):
    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        raise RuntimeError("response propagator bug")


def test_a_response_propagator_that_fails_leaves_the_response_as_the_app_sent_it(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    configure(tmp_path)
    shop = Shop()
    app = RequestLoggingMiddleware(shop, tracer_provider=provider())
    saved = get_global_response_propagator()
    set_global_response_propagator(FailingResponsePropagator())
    try:
        sent = serve(app, http_scope())
    finally:
        set_global_response_propagator(saved)  # type: ignore[arg-type]
    assert sent == shop.response()
    assert request_event(lines(tmp_path))["http.response.status_code"] == 201
    (said,) = diagnostics.said("server-span")
    assert "could not inject response headers" in said and "response propagator bug" in said


# -- the flight recorder, the request event, the context hook ---------------------------------


def test_a_debug_header_that_is_not_bytes_leaves_the_request_without_a_recorder(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    """An outer layer that adds the debug header with a `str` value (ASGI wants bytes)."""
    configure(tmp_path, admin={"token": TOKEN})
    shop = Shop()
    app = RequestLoggingMiddleware(shop)
    assert serve(app, http_scope((b"x-fapilog-debug", TOKEN))) == shop.response()
    handled, event = lines(tmp_path)
    assert handled["message"] == "handled"
    assert (event["message"], event["http.response.status_code"]) == ("request completed", 201)
    (said,) = diagnostics.said("request-recorder")
    assert "no flight recorder" in said and "TypeError" in said


def test_a_request_event_that_cannot_be_built_is_salvaged_and_the_response_kept(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    """An allowlisted response header whose value the application sent as a `str` (h11
    accepts it; the request event cannot read it): a best-effort record in its place."""
    configure(tmp_path, request={"headers": ["x-shop-version"]})
    shop = Shop((b"x-shop-version", "7"))
    app = RequestLoggingMiddleware(shop)
    assert serve(app, http_scope()) == shop.response()
    handled, salvaged = lines(tmp_path)
    assert handled["message"] == "handled"
    assert (salvaged["logger"], salvaged["level"]) == ("fapilog.request", "warning")
    assert salvaged["message"] == "<record could not be processed>"
    assert salvaged["fapilog.error"] == "request event could not be logged: AttributeError"
    (said,) = diagnostics.said("salvage:request event could not be logged")
    assert "AttributeError" in said


def test_a_context_hook_that_raises_is_reported_and_the_request_served(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    def hook(scope: Any) -> dict[str, Any]:
        raise RuntimeError("hook bug")

    configure(tmp_path, request={"context_hook": hook})
    shop = Shop()
    app = RequestLoggingMiddleware(shop)
    assert serve(app, http_scope()) == shop.response()
    handled, event = lines(tmp_path)
    assert handled["request_id"] == event["request_id"] == "req-1"
    assert (event["message"], event["http.response.status_code"]) == ("request completed", 201)
    (said,) = diagnostics.said("request-context-hook")  # rate-limited: once for two calls
    assert "hook bug" in said


@dataclasses.dataclass(frozen=True)
class Declined(Exception):
    """An application's exception type that refuses new attributes."""

    code: int


def test_an_exception_that_refuses_attributes_is_logged_once_and_raised_unchanged(
    tmp_path: Path,
) -> None:
    """The request event marks the exception it carried (so the server's own record of it
    is dropped); an exception that cannot be marked leaves the event as it is."""
    declined = Declined(402)

    async def pay(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise declined

    configure(tmp_path)
    with pytest.raises(Declined) as raised:
        serve(RequestLoggingMiddleware(pay), http_scope())
    assert raised.value is declined
    found = lines(tmp_path)
    assert len(found) == 1, found  # the request event only: nothing salvaged beside it
    (event,) = found
    assert (event["logger"], event["message"]) == ("fapilog.request", "request failed")
    assert event["exception.type"].endswith("Declined")
    assert "fapilog.error" not in event


# -- WebSockets -------------------------------------------------------------------------------


def ws_scope() -> dict[str, Any]:
    return {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/ws",
        "raw_path": b"/ws", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"shop")], "client": ("127.0.0.1", 5000),
        "server": ("shop", 80), "subprotocols": [],
    }  # fmt: skip


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            text = await websocket.receive_text()  # raises WebSocketDisconnect at the close
            log.info("echo", text=text)
            if text == "bye":
                await websocket.close()
                return
            await websocket.send_text(text.upper())

    return app


def conversation(*texts: str, close: int | None = None) -> list[Message]:
    inbound: list[Message] = [{"type": "websocket.connect"}]
    inbound += [{"type": "websocket.receive", "text": text} for text in texts]
    if close is not None:
        inbound.append({"type": "websocket.disconnect", "code": close})
    return inbound


def test_a_websocket_whose_span_cannot_start_is_served_all_the_same(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    configure(tmp_path)
    app = RequestLoggingMiddleware(echo_app(), tracer_provider=provider(FailsAtStart()))
    sent = serve(app, ws_scope(), conversation("hi", "bye"))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "HI"
    first, second = lines(tmp_path)
    assert (first["text"], second["text"]) == ("hi", "bye")
    (said,) = diagnostics.said("server-span")
    assert "could not start a server span" in said


def test_a_websocket_closed_abnormally_is_an_error_span_and_the_apps_exception_goes_on(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    """The client goes away (1006): the connection's span ends as an error, and the
    `WebSocketDisconnect` the application lets out reaches the server unchanged, even with
    a span processor that fails at the end. A normal close (1000) let out alike is no
    error."""
    configure(tmp_path)
    spans = InMemorySpanExporter()
    app = RequestLoggingMiddleware(
        echo_app(), tracer_provider=provider(SimpleSpanProcessor(spans), FailsAtEnd())
    )
    for code in (1006, 1000):
        with pytest.raises(WebSocketDisconnect) as raised:
            serve(app, ws_scope(), conversation("hi", close=code))
        assert raised.value.code == code
    abnormal, normal = spans.get_finished_spans()
    assert abnormal.status.status_code is trace.StatusCode.ERROR
    assert "WebSocketDisconnect" in (abnormal.attributes or {})["error.type"]
    assert normal.status.status_code is trace.StatusCode.UNSET
    assert "error.type" not in (normal.attributes or {})
    first, second = lines(tmp_path)  # each connection's line, in its own trace
    assert first["trace_id"] == format(abnormal.context.trace_id, "032x")
    assert second["trace_id"] == format(normal.context.trace_id, "032x")
    (said,) = diagnostics.said("server-span")  # rate-limited: once for two
    assert "could not end a server span" in said


# -- lifespan, access lines, stdlib records ------------------------------------------------


def test_a_failed_stdlib_take_back_at_startup_does_not_fail_the_startup(
    tmp_path: Path, diagnostics: Diagnostics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stdlib.reroute` raising is simulated (no real configuration makes it fail): the
    guard under test is the middleware's around it."""

    def broken(*, when_broken: bool = False) -> None:
        raise RuntimeError("reroute bug")

    configure(tmp_path)
    monkeypatch.setattr(stdlib, "reroute", broken)
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    sent = serve(
        RequestLoggingMiddleware(app),
        {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    (said,) = diagnostics.said("reroute-stdlib")
    assert "reroute bug" in said


class ReadOnlyAtoms(dict[str, Any]):
    """A server's access-log atoms in a mapping that refuses writes."""

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError("read-only atoms")


def test_an_access_line_that_cannot_be_cleaned_is_withheld_not_raised(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    configure(tmp_path)
    atoms = ReadOnlyAtoms({"r": "GET /cb?code=hunter2 HTTP/1.1", "s": "200"})
    assert logging.getLogger("gunicorn.access").info('"%(r)s" %(s)s', atoms) is None
    (line,) = lines(tmp_path)
    assert line["logger"] == "gunicorn.access"
    assert line["message"] == "access line withheld: fapilog could not remove its query string"
    assert "hunter2" not in (tmp_path / "app.log").read_text()
    (said,) = diagnostics.said("access-line")
    assert "read-only atoms" in said


def test_a_stdlib_call_whose_arguments_do_not_fit_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (pytest's own log handler would raise on this record: it is told not
    to, as logging's handlers are by default in production)."""
    monkeypatch.setattr(logging, "raiseExceptions", False)
    configure(tmp_path)
    assert logging.getLogger("lib.orders").info("%d orders", "notanumber") is None
    (line,) = lines(tmp_path)
    assert (line["logger"], line["level"]) == ("lib.orders", "info")
    assert line["message"] == "%d orders ('notanumber',)"
    assert line["fapilog.error"] == "message could not be formatted: TypeError"

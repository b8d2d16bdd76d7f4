"""`RequestLoggingMiddleware`: one structured event per HTTP request, and the request's
context on every log line logged while handling it.

Pure ASGI (never `BaseHTTPMiddleware`, which copies the context and costs several times
more; see docs/benchmarks.md).
`configure_logging(app=app)` adds it inside the OpenTelemetry server span; by hand::

    app.add_middleware(RequestLoggingMiddleware)

- ``http``: binds ``request_id`` (a valid inbound ``X-Request-ID`` or a new one, echoed in
  the response) and the fields of the `context_hook` with structlog's contextvars for the
  duration of the request (reset by token afterwards), then logs the request event when
  the request completes: method, route template, path, status, duration to the end of
  the body, body sizes, client and user agent (see docs/fastapi.md for the fields).
  An unhandled exception is logged once, with its stack trace, and re-raised.
- ``websocket``: passed through untouched (log lines inside still carry the trace ids).
- ``lifespan``: passed through; at startup stdlib logging is routed into fapilog again,
  because `uvicorn.run(app)` re-adds uvicorn's plain-text handlers after configure_logging().

What the request settings mean (levels by status, excluded paths, the request id header,
the context hook, enrichment) is worked out when `configure_logging()` runs and handed to
every middleware that follows the configuration; a request reads the ASGI scope's headers
once (`fapilog.integrations.request_head`) for the span, the event and enrichment alike.
"""

from __future__ import annotations

import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextvars import Token
from typing import TYPE_CHECKING, Any

from structlog.contextvars import bind_contextvars, get_contextvars, reset_contextvars

from fapilog import _diag, _levels
from fapilog._state import STATE
from fapilog.capture.logger import get_logger
from fapilog.capture.record import salvage
from fapilog.capture.recorder import Recorder
from fapilog.integrations import isolation
from fapilog.integrations.admin import AdminRoute
from fapilog.integrations.request_event import (
    REQUEST_LOGGER,
    Exchange,
    call_hook,
    finish_request,
)
from fapilog.integrations.request_fields import EnrichmentPlan
from fapilog.integrations.request_head import HeadReader, RequestHead, content_length
from fapilog.integrations.request_outcome import OutcomePlan
from fapilog.integrations.server_logs import (
    install_duplicate_filter,
    lifespan_receive,
    lifespan_send,
)
from fapilog.integrations.server_span import ServerSpan, ServerSpans
from fapilog.settings import AdminSettings, LoggingSettings, RequestSettings
from fapilog.settings.redaction import DEFAULT_MARKER
from fapilog.settings.request import DEFAULT_STATUS_LEVELS

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = [
    "REQUEST_LOGGER",
    "RequestLoggingMiddleware",
    "RequestPlan",
    "current_request_id",
    "valid_request_id",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# Inbound request ids: 1-128 characters of a conservative charset (no spaces, quotes,
# control characters or newlines), so a client cannot forge log lines through it.
_REQUEST_ID_PATTERN = r"[A-Za-z0-9._:+/=@-]{1,128}"
_REQUEST_ID = re.compile(_REQUEST_ID_PATTERN)
_valid_request_id_bytes = re.compile(_REQUEST_ID_PATTERN.encode("ascii")).fullmatch
_CONTENT_LENGTH = b"content-length"

_log = get_logger(REQUEST_LOGGER)  # (the request event's: for a salvaged record)
_random_bits = random.getrandbits


def valid_request_id(value: str) -> bool:
    """Whether an inbound request id is accepted (1-128 of ``A-Z a-z 0-9 . _ : + / = @ -``)."""
    return _REQUEST_ID.fullmatch(value) is not None


def current_request_id() -> str | None:
    """The request id bound to the request being handled, if any."""
    value = get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def _new_request_id() -> str:
    # a correlation id, not a secret: the fast PRNG (reseeded after fork) is enough;
    # os.urandom costs a system call per request
    return f"{_random_bits(128):032x}"


class RequestPlan:
    """Everything derived from one `RequestSettings` (and the redaction marker), computed
    once per configuration."""

    __slots__ = (
        "_level_cache",
        "_levels",
        "_readers",
        "active",
        "admin",
        "admin_settings",
        "enrichment",
        "exact",
        "hook",
        "log",
        "outcome",
        "prefixes",
        "request_id_header",
        "settings",
    )

    def __init__(
        self,
        settings: RequestSettings,
        marker: str | None = None,
        admin: AdminSettings | None = None,
    ) -> None:
        self.settings = settings
        self.admin_settings = admin
        # the level route, only with a token (fapilog.integrations.admin)
        self.admin = AdminRoute.of(admin)
        # held records, the debug header, sampling (fapilog.integrations.request_outcome)
        self.outcome = OutcomePlan(settings, admin)
        # (the redaction marker of the current configuration unless given)
        # (the debug header carries the admin token: always shown as the marker)
        secret = (admin.debug_header,) if admin is not None else ()
        self.enrichment = EnrichmentPlan(
            settings, marker or _marker(STATE.settings), ("X-Fapilog-Debug", *secret)
        )
        self._readers: dict[frozenset[bytes] | None, HeadReader] = {}
        self.log = settings.enabled
        self.request_id_header: bytes | None = (
            settings.request_id_header.lower().encode("latin-1") if settings.request_id else None
        )
        paths = settings.exclude_paths
        self.exact = frozenset(p for p in paths if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))
        levels = {**DEFAULT_STATUS_LEVELS, **settings.status_levels}
        self._levels = {key: _levels.number_of(name) for key, name in levels.items()}
        self._level_cache: dict[int, int] = {}
        self.hook = settings.context_hook
        self.active = bool(self.log or self.request_id_header or self.hook or self.outcome.active)

    def reader(self, propagation: frozenset[bytes] | None) -> HeadReader:
        """The head reader for this plan and the propagator's header names."""
        reader = self._readers.get(propagation)
        if reader is None:
            enrichment = self.enrichment
            reader = self._readers[propagation] = HeadReader(
                request_id=self.request_id_header,
                valid_id=_valid_request_id_bytes,
                propagation=propagation or (),
                shown=enrichment.request_headers,
                proxies=bool(enrichment.proxies),
            )
        return reader

    def excluded(self, path: str) -> bool:
        return path in self.exact or bool(self.prefixes and path.startswith(self.prefixes))

    def level_for(self, status: int) -> int:
        level = self._level_cache.get(status)
        if level is None:
            levels = self._levels
            level = levels.get(str(status)) or levels.get(f"{status // 100}xx") or levels["default"]
            if len(self._level_cache) < 1024:
                self._level_cache[status] = level
        return level


class RequestLoggingMiddleware:
    """Pure ASGI request logging middleware (see the module docstring).

    `settings`: fixed request settings; by default the middleware follows the settings of
    the current `configure_logging()` (so a reconfiguration applies to it too).

    `tracer_provider`: also start the request's server span (fapilog's native tracing,
    what `configure_logging(app=app)` sets up by default): continued from an inbound W3C
    ``traceparent``, current while the request is handled, ended when the response body
    is complete. No span is started when one is already current (an outer OpenTelemetry
    middleware owns the request).
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: RequestSettings | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.app = app
        self._spans = ServerSpans(tracer_provider) if tracer_provider is not None else None
        if settings is not None:
            self._plan = RequestPlan(settings)
        else:  # follows the configuration: configure_logging() hands it each new plan
            self._plan = _current_plan()
            _FOLLOWERS.add(self)
        install_duplicate_filter()

    def _read_head(self, plan: RequestPlan, scope: Scope) -> RequestHead:
        spans = self._spans
        fields = spans.propagation_fields() if spans is not None else None
        reader = plan._readers.get(fields)
        if reader is None:
            reader = plan.reader(fields)
        return reader.read(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, lifespan_receive(receive), lifespan_send(send))
            elif kind == "websocket" and self._spans is not None and _HANDLED not in scope:
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        plan = self._plan
        admin = plan.admin
        if admin is not None and scope.get("path") == admin.path and _HANDLED not in scope:
            await admin(scope, receive, send)
            return
        if (
            (not plan.active and self._spans is None)
            or _HANDLED in scope  # an outer fapilog middleware (of a parent app) has it
            or plan.excluded(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        scope[_HANDLED] = True
        await self._handle(plan, scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket connection: no request event, but a server span (native tracing)
        from the handshake to the end of the connection, current for its log lines."""
        assert self._spans is not None
        plan = self._plan
        if plan.excluded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        scope[_HANDLED] = True
        server_span: ServerSpan | None = None
        entry = isolation.enter(scope)
        try:
            server_span = self._spans.start(scope, self._read_head(plan, scope))
        except Exception as exc:  # never raise into the application
            _diag.report("server-span", f"fapilog could not start a server span: {exc!r}")
        _one_server_span(scope)
        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            failure = exc if not _normal_close(exc) else None
            raise
        finally:
            if server_span is not None:
                exchange = Exchange(0.0, scope.get("root_path", ""), None)
                _end_span(server_span, scope, exchange, failure)
                try:
                    server_span.detach()
                except Exception:  # pragma: no cover - a different context: nothing to undo
                    pass
            isolation.leave(entry)

    async def _handle(self, plan: RequestPlan, scope: Scope, receive: Receive, send: Send) -> None:
        entry = isolation.enter(scope)  # nothing inherited from another request
        head = self._read_head(plan, scope)
        exchange = Exchange(time.perf_counter(), scope.get("root_path", ""), head)
        server_span: ServerSpan | None = None
        if self._spans is not None:
            try:
                server_span = self._spans.start(scope, head)
            except Exception as exc:  # never raise into the application
                _diag.report("server-span", f"fapilog could not start a server span: {exc!r}")
        _one_server_span(scope)
        recording: Recorder | None = None
        if plan.outcome.active:
            try:
                recording = plan.outcome.begin(scope)
            except Exception as exc:  # never raise into the application
                _diag.report("request-recorder", f"fapilog: no flight recorder: {exc!r}")
        bound: list[Mapping[str, Token[Any]]] = []
        id_header = plan.request_id_header
        echo: tuple[bytes, bytes] | None = None
        if id_header is not None:
            inbound = head.request_id
            request_id = inbound.decode("latin-1") if inbound is not None else _new_request_id()
            echo = (id_header, inbound if inbound is not None else request_id.encode("latin-1"))
            bound.append(bind_contextvars(request_id=request_id))
        if plan.hook is not None:
            fields = call_hook(plan.hook, scope)
            if fields:
                bound.append(bind_contextvars(**fields))

        # what went on the wire: a HEAD response's body is never sent (the server drops
        # it), nor is what the application sends after the client went away
        counts_body = scope.get("method") != "HEAD"

        async def receive_counting() -> Message:
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                exchange.request_bytes += len(message.get("body", b""))
            elif kind == "http.disconnect" and exchange.ended is None:
                exchange.disconnected = True
            return message

        async def send_watching(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                if counts_body and not exchange.disconnected:
                    exchange.response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    exchange.ended = time.perf_counter()
                    await send(message)
                    if server_span is not None:
                        _end_span(server_span, scope, exchange, None)
                    return
            elif kind == "http.response.start":
                status = exchange.status = message["status"]
                headers = message.get("headers") or ()
                extra: list[tuple[bytes, bytes]] = []
                if echo is not None and all(name.lower() != echo[0] for name, _ in headers):
                    extra.append(echo)
                if server_span is not None:
                    server_span.status = status
                    _inject_response(server_span, extra)
                if extra:
                    headers = [*headers, *extra]
                    message = {**message, "headers": headers}
                exchange.response_headers = headers
            elif kind == "http.response.pathsend":
                exchange.ended = time.perf_counter()
                exchange.response_bytes = _content_length(exchange.response_headers)
                await send(message)
                if server_span is not None:
                    _end_span(server_span, scope, exchange, None)
                return
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive_counting, send_watching)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            try:
                if server_span is not None:
                    _end_span(server_span, scope, exchange, failure)
                finish_request(plan, scope, exchange, failure, recording)
            except Exception as exc:  # never raise into the application: a best-effort record
                salvage(_log._logger, "warning", "request event could not be logged", exc)
            finally:
                for tokens in reversed(bound):
                    try:
                        reset_contextvars(**tokens)
                    except Exception:  # pragma: no cover - a different context: nothing to undo
                        pass
                if server_span is not None:
                    try:
                        server_span.detach()
                    except Exception:  # pragma: no cover - a different context: nothing to undo
                        pass
                isolation.leave(entry)


# set in the scope by the fapilog middleware that handles the request: the request
# middleware of a mounted app that also called configure_logging() lets it through
_HANDLED = "fapilog.request"
# FastAPI's native telemetry skips a request whose scope has this key: it is how a FastAPI
# app keeps the FastAPI apps mounted in it from starting a second server span
_FASTAPI_TELEMETRY = "fastapi.telemetry"


def _one_server_span(scope: Scope) -> None:
    """The request has its server span (fapilog's, the OpenTelemetry instrumentation's, or
    an outer layer's): note it for the layers inside (`isolation.note_current_span`), and
    keep the FastAPI apps the request reaches (mounted sub-apps) from starting another and
    from logging its exception again. A request without a span is left to them."""
    isolation.note_current_span(scope)
    if isolation.SCOPE_KEY in scope and _FASTAPI_TELEMETRY not in scope:
        scope[_FASTAPI_TELEMETRY] = None


def _end_span(
    span: ServerSpan, scope: Scope, exchange: Exchange, failure: BaseException | None
) -> None:
    if span.ended:
        return
    try:
        span.end(exchange.route_of(scope), failure)
    except Exception as exc:  # never raise into the application
        _diag.report("server-span", f"fapilog could not end a server span: {exc!r}")


def _normal_close(exc: BaseException) -> bool:
    """A WebSocket closed normally (1000, 1001): not an error."""
    return type(exc).__name__ == "WebSocketDisconnect" and getattr(exc, "code", None) in (
        1000,
        1001,
    )


def _inject_response(span: ServerSpan, headers: list[tuple[bytes, bytes]]) -> None:
    try:
        span.inject_response(headers)
    except Exception as exc:  # never raise into the application
        _diag.report("server-span", f"fapilog could not inject response headers: {exc!r}")


def _marker(settings: LoggingSettings | None) -> str:
    return settings.redaction.marker if settings is not None else DEFAULT_MARKER


def _current_plan() -> RequestPlan:
    """The plan of the current configuration (the defaults before configure_logging())."""
    settings = STATE.settings
    if settings is None:
        return RequestPlan(RequestSettings(), _marker(settings))
    return RequestPlan(settings.request, _marker(settings), settings.admin)


# the middlewares that follow the configuration (not given fixed settings)
_FOLLOWERS: weakref.WeakSet[RequestLoggingMiddleware] = weakref.WeakSet()


def _on_configure(settings: LoggingSettings) -> None:
    """configure_logging() ran: hand the middlewares that follow it the new plan (unless
    the request settings and the marker are the same as before)."""
    followers = list(_FOLLOWERS)
    if not followers:
        return
    current = followers[0]._plan
    if (
        current.settings == settings.request
        and current.enrichment.marker == _marker(settings)
        and current.admin_settings == settings.admin
    ):
        return
    plan = RequestPlan(settings.request, _marker(settings), settings.admin)
    for middleware in followers:
        middleware._plan = plan


STATE.listeners.append(_on_configure)


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The response's valid ``Content-Length`` (`content_length`), else 0."""
    for name, value in headers:
        if name.lower() == _CONTENT_LENGTH:
            return content_length(value) or 0
    return 0

"""`RequestLoggingMiddleware`: one structured event per HTTP request, and the request's
context on every log line logged while handling it.

Pure ASGI (never `BaseHTTPMiddleware`, which copies the context and costs ~8x more).
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
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextvars import Token
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from structlog.contextvars import bind_contextvars, get_contextvars, reset_contextvars

from fapilog import _config, _diag
from fapilog._logger import get_logger
from fapilog._request_enrichment import request_fields, response_fields
from fapilog._sections.request import DEFAULT_STATUS_LEVELS, RequestSettings
from fapilog._tracing import ServerSpan, ServerSpans

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = [
    "REQUEST_LOGGER",
    "RequestLoggingMiddleware",
    "current_request_id",
    "valid_request_id",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_LOGGER = "fapilog.request"
"""The logger name of request events (``FAPILOG_LOGGER_LEVELS=fapilog.request=WARNING``)."""

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
# Inbound request ids: 1-128 characters of a conservative charset (no spaces, quotes,
# control characters or newlines), so a client cannot forge log lines through it.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")
_LOGGED = "_fapilog_logged"  # set on an exception the request event already carried
_CONTENT_LENGTH = b"content-length"

_log = get_logger(REQUEST_LOGGER)
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


class _Plan:
    """Everything derived from one `RequestSettings`, computed once."""

    __slots__ = (
        "_level_cache",
        "_levels",
        "active",
        "exact",
        "hook",
        "log",
        "prefixes",
        "request_id_header",
        "settings",
    )

    def __init__(self, settings: RequestSettings) -> None:
        self.settings = settings
        self.log = settings.enabled
        self.request_id_header: bytes | None = (
            settings.request_id_header.lower().encode("latin-1") if settings.request_id else None
        )
        paths = settings.exclude_paths
        self.exact = frozenset(p for p in paths if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))
        levels = {**DEFAULT_STATUS_LEVELS, **settings.status_levels}
        self._levels = {key: _LEVELS[name] for key, name in levels.items()}
        self._level_cache: dict[int, int] = {}
        self.hook = settings.context_hook
        self.active = bool(self.log or self.request_id_header or self.hook)

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


class _Exchange:
    """What the middleware saw of one request/response."""

    __slots__ = (
        "content_length",
        "ended",
        "entry_root",
        "request_bytes",
        "response_bytes",
        "response_headers",
        "route",
        "started",
        "status",
    )

    def __init__(self, started: float, entry_root: str) -> None:
        self.started = started
        self.entry_root = entry_root  # root_path where this middleware sits (for http.route)
        self.content_length: int | None = None  # the request's Content-Length header
        self.status: int | None = None
        self.request_bytes = 0
        self.response_bytes = 0
        self.response_headers: Iterable[tuple[bytes, bytes]] = ()
        self.ended: float | None = None
        self.route: str | bool | None = False  # False: not looked up yet

    def route_of(self, scope: Scope) -> str | None:
        route = self.route
        if route is False:
            route = self.route = _route_template(scope, self.entry_root)
        return route  # type: ignore[return-value]


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
        self._fixed = _Plan(settings) if settings is not None else None
        self._plan: _Plan | None = None
        self._spans = ServerSpans(tracer_provider) if tracer_provider is not None else None
        install_duplicate_filter()

    def _current_plan(self) -> _Plan:
        if self._fixed is not None:
            return self._fixed
        configured = _config.current_settings()
        settings = configured.request if configured is not None else _DEFAULT_SETTINGS
        plan = self._plan
        if plan is None or plan.settings is not settings:
            plan = self._plan = _Plan(settings)
        return plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, _lifespan_receive(receive), _lifespan_send(send))
            elif kind == "websocket" and self._spans is not None:
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        plan = self._current_plan()
        if (not plan.active and self._spans is None) or plan.excluded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        await self._handle(plan, scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket connection: no request event, but a server span (native tracing)
        from the handshake to the end of the connection, current for its log lines."""
        assert self._spans is not None
        if self._current_plan().excluded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        server_span: ServerSpan | None = None
        try:
            server_span = self._spans.start(scope)
        except Exception as exc:  # never raise into the application
            _diag.report("server-span", f"fapilog could not start a server span: {exc!r}")
        if server_span is None:
            await self.app(scope, receive, send)
            return
        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            failure = exc if not _normal_close(exc) else None
            raise
        finally:
            _end_span(server_span, scope, _Exchange(0.0, scope.get("root_path", "")), failure)
            try:
                server_span.detach()
            except Exception:  # pragma: no cover - a different context: nothing to undo
                pass

    async def _handle(self, plan: _Plan, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange(time.perf_counter(), scope.get("root_path", ""))
        server_span: ServerSpan | None = None
        if self._spans is not None:
            try:
                server_span = self._spans.start(scope)
            except Exception as exc:  # never raise into the application
                _diag.report("server-span", f"fapilog could not start a server span: {exc!r}")
        bound: list[Mapping[str, Token[Any]]] = []
        request_id: str | None = None
        id_header = plan.request_id_header
        for name, value in scope.get("headers") or ():
            if name == id_header and request_id is None:
                candidate = value.decode("latin-1")
                if valid_request_id(candidate):
                    request_id = candidate
            elif name == _CONTENT_LENGTH:
                try:
                    exchange.content_length = int(value)
                except ValueError:
                    pass
        echo: tuple[bytes, bytes] | None = None
        if id_header is not None:
            if request_id is None:
                request_id = _new_request_id()
            echo = (id_header, request_id.encode("latin-1"))
            bound.append(bind_contextvars(request_id=request_id))
        if plan.hook is not None:
            fields = _call_hook(plan.hook, scope)
            if fields:
                bound.append(bind_contextvars(**fields))

        async def receive_counting() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.request_bytes += len(message.get("body", b""))
            return message

        async def send_watching(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
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
                if plan.log:
                    _log_request(plan, scope, exchange, failure)
            except Exception as exc:  # never raise into the application
                _diag.report("request-log", f"fapilog could not log a request: {exc!r}")
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


def _end_span(
    span: ServerSpan, scope: Scope, exchange: _Exchange, failure: BaseException | None
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


def _log_request(
    plan: _Plan, scope: Scope, exchange: _Exchange, failure: BaseException | None
) -> None:
    status = exchange.status
    exception: BaseException | None = None
    if failure is None:
        level = plan.level_for(status if status is not None else 500)
        message = "request completed"
    elif isinstance(failure, Exception):
        exception = failure
        level = max(40, plan.level_for(status if status is not None else 500))
        message = "request failed"
        if status is None:
            status = 500  # what Starlette's ServerErrorMiddleware sends
    else:  # cancelled: the client went away or the server is shutting down
        level = 30
        message = "request cancelled"
    if not _log.is_enabled_for(level):
        return
    ended = exchange.ended if exchange.ended is not None else time.perf_counter()
    event: dict[str, Any] = {
        "http.request.method": scope.get("method", ""),
        "url.path": scope.get("path", ""),
    }
    route = exchange.route_of(scope)
    if route is not None:
        event["http.route"] = route
    if status is not None:
        event["http.response.status_code"] = status
    event["duration_ms"] = round((ended - exchange.started) * 1000.0, 3)
    event["http.request.body.size"] = exchange.request_bytes or exchange.content_length or 0
    event["http.response.body.size"] = exchange.response_bytes
    version = scope.get("http_version")
    if version:
        event["network.protocol.version"] = version
    settings = plan.settings
    event.update(request_fields(scope, settings))
    event.update(response_fields(exchange.response_headers, settings))
    if plan.hook is not None:
        # values set during the request (request.state.user by an auth dependency)
        event.update(_call_hook(plan.hook, scope))
    if exception is not None:
        event["exc_info"] = exception
    _log.log(level, message, **event)
    if exception is not None:
        try:
            setattr(exception, _LOGGED, True)
        except Exception:  # pragma: no cover - an exception type with __slots__
            pass


_DEFAULT_SETTINGS = RequestSettings()


def _call_hook(hook: Callable[[Mapping[str, Any]], Any], scope: Scope) -> dict[str, Any]:
    try:
        result = hook(scope)
        return dict(result) if result else {}
    except Exception as exc:
        _diag.report("request-context-hook", f"fapilog: request context_hook failed: {exc!r}")
        return {}


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name.lower() == _CONTENT_LENGTH:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _route_template(scope: Scope, entry_root: str) -> str | None:
    """The matched route's path template relative to where this middleware sits: Starlette
    and FastAPI put the route in ``scope["route"]``; a Mount adds its prefix to
    ``root_path``."""
    route = scope.get("route")
    if route is None:
        return None
    root = scope.get("root_path", "")
    prefix = root[len(entry_root) :] if root != entry_root and root.startswith(entry_root) else ""
    if hasattr(route, "routes"):  # a Mount (or Host) handled the request as a whole
        return f"{prefix}/{{path}}" if prefix else None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    return prefix + template


def _lifespan_receive(receive: Receive) -> Receive:
    async def receive_lifespan() -> Message:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            reroute_stdlib()
        return message

    return receive_lifespan


def _lifespan_send(send: Send) -> Send:
    async def send_lifespan(message: Message) -> None:
        if message.get("type") == "lifespan.shutdown.complete":
            # the app's shutdown handlers have run: deliver what they (and the requests
            # before them) logged, bounded by shutdown_timeout, off the event loop
            await to_thread.run_sync(_config.force_flush)
        await send(message)

    return send_lifespan


def reroute_stdlib() -> None:
    """Route stdlib logging into fapilog again if something (uvicorn's `dictConfig`, run
    by `uvicorn.run()` after configure_logging()) put plain-text handlers back."""
    try:
        from fapilog import _stdlib
        from fapilog._logger import CHAIN

        settings = _config.current_settings()
        if settings is None or not settings.capture_stdlib or not _config.is_configured():
            return
        handler = _stdlib.installed_handler()
        taken = [logging.getLogger(name) for name in _stdlib.TAKEN_OVER]
        if (
            handler is not None
            and handler in logging.getLogger().handlers
            and all(logger.propagate and not logger.handlers for logger in taken)
        ):
            return
        levels = {name: _LEVELS[level] for name, level in settings.logger_levels.items()}
        _stdlib.install(CHAIN, _LEVELS[settings.level], levels)
    except Exception as exc:  # never fail the application's startup
        _diag.report("reroute-stdlib", f"fapilog could not re-route stdlib logging: {exc!r}")


class _AlreadyLogged(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record when fapilog's request event
    already carried that exception (with its stack trace and the trace id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        return not (exc_info and getattr(exc_info[1], _LOGGED, False))


_DUPLICATE_FILTER = _AlreadyLogged()
_SERVER_ERROR_LOGGERS = ("uvicorn.error",)


def install_duplicate_filter() -> None:
    for name in _SERVER_ERROR_LOGGERS:
        logger = logging.getLogger(name)
        if _DUPLICATE_FILTER not in logger.filters:
            logger.addFilter(_DUPLICATE_FILTER)

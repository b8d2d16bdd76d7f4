"""Every request starts from a clean context, whatever its task inherited.

An ASGI server runs each request in a task that copies the context current when the task is
created. On a keep-alive connection that can be a context captured inside the previous
request: uvicorn on the plain asyncio loop resumes reading a large body from inside the
application's ``receive()``, asyncio's ``add_reader`` keeps the context current then for
its callback, and that callback starts the next requests on the connection. Those requests
would inherit the earlier one's structlog bindings (its ``request_id``, its
``context_hook`` fields such as ``user.id``) and its current span.

`enter()` clears both for the duration of a request, and `leave()` puts back what was
there:

- structlog bindings are unbound on entry and bound again on exit;
- the current OpenTelemetry span is this request's only when it is a server span that no
  earlier request was served under: a span noted as a request's span (`note_current_span`)
  is stale unless this request's own scope carries it (an outer fapilog middleware of a
  mounted app), and so is a span that has ended, and any span that is not a server span
  (an operation or child span of the request the context was captured in). A stale
  context is replaced by an empty one, so the request continues its inbound
  ``traceparent`` or starts a new trace. A server span started for this request by a
  layer outside the application (an OpenTelemetry ASGI middleware wrapped around it by
  hand, FastAPI's own telemetry given a provider) is kept.

`IsolatingApp` does this around a whole application, outside every middleware of it, so
that an OpenTelemetry middleware inside does not take a stale span for its parent.
"""

from __future__ import annotations

import weakref
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from structlog.contextvars import bind_contextvars, get_contextvars, unbind_contextvars

__all__ = ["Entry", "IsolatingApp", "SCOPE_KEY", "enter", "isolate", "leave", "note_current_span"]

# the ASGI scope key under which a request's span is kept for the layers inside it
SCOPE_KEY = "fapilog.request_span"
# set in the scope by the outermost fapilog layer that cleared the request's context
_ENTERED = "fapilog.isolated"
# every span some request was served under (weak: gone with the span)
_SERVED: weakref.WeakSet[Any] = weakref.WeakSet()


class Entry:
    """What `enter()` cleared, for `leave()` to put back."""

    __slots__ = ("inherited", "token")

    def __init__(self, inherited: dict[str, Any], token: Token[Any] | None) -> None:
        self.inherited = inherited
        self.token = token


def enter(scope: Any) -> Entry | None:
    """Clear what the request's task inherited from another request; None when an outer
    fapilog layer cleared it already."""
    if _ENTERED in scope:
        return None
    scope[_ENTERED] = True
    token: Token[Any] | None = None
    span = trace.get_current_span()
    if span.get_span_context().is_valid and _stale(span, scope):
        token = otel_context.attach(otel_context.Context())
    inherited = get_contextvars()
    if inherited:
        unbind_contextvars(*inherited)
    return Entry(inherited, token)


def leave(entry: Entry | None) -> None:
    """Drop what the request bound and put back what `enter()` cleared (after its span
    was detached)."""
    if entry is None:
        return
    if entry.token is not None:
        try:
            otel_context.detach(entry.token)
        except Exception:  # pragma: no cover - a different context: nothing to undo
            pass
    # what the request bound itself ends with it: an app called in the caller's own task
    # (httpx's ASGITransport, a test) leaves nothing bound in the caller
    bound = get_contextvars()
    if bound:
        unbind_contextvars(*bound)
    if entry.inherited:
        bind_contextvars(**entry.inherited)


def note_current_span(scope: Any) -> None:
    """The current span is the one this request is served under: layers inside this
    request (a mounted app's middleware) keep it; later requests that inherit it do not."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return
    scope[SCOPE_KEY] = span
    try:
        _SERVED.add(span)
    except TypeError:  # pragma: no cover - a span type that takes no weak reference
        pass


def _stale(span: Any, scope: Any) -> bool:
    """Whether the current `span` is not this request's: it has ended, it is not a server
    span (an operation or child span of whatever request the context was captured in), or
    an earlier request was served under it. A live server span no request has claimed is
    the one an outer layer started for this request."""
    if getattr(span, "end_time", None) is not None:  # an SDK span that has ended
        return True
    if scope.get(SCOPE_KEY) is span:
        return False
    kind = getattr(span, "kind", None)  # an SDK span's; other spans (context-only) have none
    if kind is not None and kind is not trace.SpanKind.SERVER:
        return True
    try:
        return span in _SERVED
    except TypeError:  # pragma: no cover - a span type that takes no weak reference
        return False


class IsolatingApp:
    """An ASGI application run with `enter()` and `leave()` around each HTTP request and
    WebSocket connection (see the module doc)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        entry = enter(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            leave(entry)


_MARK = "_fapilog_isolating"


def isolate(app: Any) -> None:
    """Have a Starlette or FastAPI `app` run each request inside `IsolatingApp`, outside
    every middleware it builds (OpenTelemetry's too, when it was instrumented first).
    Idempotent; takes effect when the app builds its middleware stack.

    Starlette's stack starts with its `ServerErrorMiddleware`; the isolation goes right
    inside it, so that the stack keeps that shape (OpenTelemetry's FastAPI instrumentation,
    applied later, checks it and would otherwise skip the app)."""
    build = app.build_middleware_stack
    if getattr(build, _MARK, False):
        return

    def build_isolated() -> Any:
        stack = build()
        if _is_server_error_middleware(stack):
            stack.app = IsolatingApp(stack.app)
            return stack
        return IsolatingApp(stack)

    setattr(build_isolated, _MARK, True)
    build_isolated.__doc__ = build.__doc__
    app.build_middleware_stack = build_isolated


def _is_server_error_middleware(stack: Any) -> bool:
    """Starlette's outermost layer (checked by name: Starlette is not a dependency)."""
    return any(
        cls.__name__ == "ServerErrorMiddleware" and cls.__module__.startswith("starlette.")
        for cls in type(stack).__mro__
    ) and hasattr(stack, "app")

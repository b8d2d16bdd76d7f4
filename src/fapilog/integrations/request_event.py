"""The request event: what the request middleware logs when a request is over (see
docs/fastapi.md for its fields), after the request's outcome has decided about its held
records and whether the event is sampled (`fapilog.integrations.request_outcome`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Protocol

from fapilog import _diag
from fapilog.capture.coerce import safe_str
from fapilog.capture.logger import get_logger
from fapilog.capture.recorder import RECORDER, Recorder
from fapilog.integrations.request_fields import EnrichmentPlan, request_fields, response_fields
from fapilog.integrations.request_head import RequestHead
from fapilog.integrations.request_outcome import OutcomePlan, event_kept
from fapilog.integrations.server_logs import LOGGED
from fapilog.integrations.tracing import fastapi_saw_exception


class EventPlan(Protocol):
    """What of `fapilog.integrations.middleware.RequestPlan` the request event reads."""

    log: bool
    outcome: OutcomePlan
    enrichment: EnrichmentPlan
    hook: Callable[[Mapping[str, Any]], Any] | None

    def level_for(self, status: int) -> int: ...


__all__ = [
    "EventPlan",
    "Exchange",
    "REQUEST_LOGGER",
    "call_hook",
    "finish_request",
    "route_template",
]

Scope = MutableMapping[str, Any]

REQUEST_LOGGER = "fapilog.request"
"""The logger name of request events (``FAPILOG_LOGGER_LEVELS=fapilog.request=WARNING``)."""

_log = get_logger(REQUEST_LOGGER)


class Exchange:
    """What the middleware saw of one request/response."""

    __slots__ = (
        "disconnected",
        "ended",
        "entry_root",
        "head",
        "request_bytes",
        "response_bytes",
        "response_headers",
        "route",
        "started",
        "status",
    )

    def __init__(self, started: float, entry_root: str, head: RequestHead | None) -> None:
        self.started = started
        self.entry_root = entry_root  # root_path where this middleware sits (for http.route)
        self.head = head
        self.status: int | None = None
        self.request_bytes = 0
        self.response_bytes = 0
        self.response_headers: Iterable[tuple[bytes, bytes]] = ()
        self.ended: float | None = None
        self.route: str | bool | None = False  # False: not looked up yet
        self.disconnected = False  # the client went away before the response was complete

    def route_of(self, scope: Scope) -> str | None:
        route = self.route
        if route is False:
            route = self.route = route_template(scope, self.entry_root)
        return route  # type: ignore[return-value]


# what a server or framework raises into the application when it sends to a client that
# has gone away: uvicorn's `ClientDisconnected` (an OSError), Starlette's `ClientDisconnect`
_DISCONNECTS = frozenset({"ClientDisconnected", "ClientDisconnect"})


def _cancelled(exchange: Exchange, failure: BaseException | None) -> bool:
    """The request was cancelled (the server is stopping, or the client went away), or the
    client went away before the response was complete: the application saw the
    `http.disconnect` (and returned, or failed sending), or a send raised the server's
    disconnect error."""
    if failure is not None and (
        not isinstance(failure, Exception) or type(failure).__name__ in _DISCONNECTS
    ):
        return True
    return exchange.disconnected and (failure is None or isinstance(failure, OSError))


def finish_request(
    plan: EventPlan,
    scope: Scope,
    exchange: Exchange,
    failure: BaseException | None,
    recording: Recorder | None,
) -> None:
    """The request is over: its held records are released (ahead of the event) or
    discarded, then its request event is logged, unless sampled out."""
    status = exchange.status
    exception: BaseException | None = None
    if _cancelled(exchange, failure):  # the client went away, or the server is stopping
        level = 30
        message = "request cancelled"
    elif failure is None:
        level = plan.level_for(status if status is not None else 500)
        message = "request completed"
    else:
        exception = failure
        level = max(40, plan.level_for(status if status is not None else 500))
        message = "request failed"
        if status is None:
            status = 500  # what Starlette's ServerErrorMiddleware sends
    ended = exchange.ended if exchange.ended is not None else time.perf_counter()
    duration_ms = round((ended - exchange.started) * 1000.0, 3)
    outcome = plan.outcome
    held = outcome.end(recording, level, exception is not None, duration_ms)
    if not plan.log or not _log.is_enabled_for(level):
        return
    released = recording is not None and recording.released
    if outcome.rate < 1.0 and not outcome.keeps_event(
        level, exception is not None, status, duration_ms, released
    ):
        return
    event: dict[str, Any] = {
        "http.request.method": scope.get("method", ""),
        "url.path": scope.get("path", ""),
    }
    route = exchange.route_of(scope)
    if route is not None:
        event["http.route"] = route
    if status is not None:
        event["http.response.status_code"] = status
    event["duration_ms"] = duration_ms
    head = exchange.head
    content_length = head.content_length if head is not None else None
    event["http.request.body.size"] = exchange.request_bytes or content_length or 0
    event["http.response.body.size"] = exchange.response_bytes
    version = scope.get("http_version")
    if version:
        event["network.protocol.version"] = version
    enrichment = plan.enrichment
    if head is not None:
        event.update(request_fields(scope, head, enrichment))
    event.update(response_fields(exchange.response_headers, enrichment))
    if plan.hook is not None:
        # values set during the request (request.state.user by an auth dependency)
        event.update(call_hook(plan.hook, scope))
    if held:
        event.update(held)
    if exception is not None:
        event["exc_info"] = exception
    token = event_kept() if released else None
    try:
        _log.log(level, message, **event)
    finally:
        if token is not None:
            RECORDER.reset(token)
    if exception is not None:
        fastapi_saw_exception(scope, exception)
        try:
            setattr(exception, LOGGED, True)
        except Exception:  # an exception type that refuses attributes (a frozen dataclass)
            pass


def call_hook(hook: Callable[[Mapping[str, Any]], Any], scope: Scope) -> dict[str, Any]:
    """The hook's fields, keys as strings (they become keyword arguments). Keys the request
    event has itself (``level``, ``event``, ``message``) are fields like any other: the
    JSON line shows them as ``attr.<key>``."""
    try:
        result = hook(scope)
        fields = dict(result) if result else {}
        if any(type(key) is not str for key in fields):
            fields = {safe_str(key): value for key, value in fields.items()}
        return fields
    except Exception as exc:
        _diag.report("request-context-hook", f"fapilog: request context_hook failed: {exc!r}")
        return {}


def route_template(scope: Scope, entry_root: str) -> str | None:
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

"""FastAPI integration: `configure_logging(app=app)` (see docs/fastapi.md).

    app = FastAPI()
    configure_logging(app=app)

gives the application:

- a server span per request (continuing an inbound W3C ``traceparent``) on an SDK
  TracerProvider with the same Resource as the logs, unless the app or the process is
  already instrumented: by default started by fapilog's request middleware itself
  (``FAPILOG_REQUEST__TRACING=native``), or by `opentelemetry-instrumentation-fastapi`
  (``=instrumentation``);
- `fapilog.middleware.RequestLoggingMiddleware` inside that span: one event per request,
  and ``request_id``, ``trace_id`` and ``span_id`` on every line logged while handling it.

Calling it again (or on an app someone else instrumented) adds nothing twice: an app gets
one server span per request, whoever creates it.
"""

from __future__ import annotations

from typing import Any

from fapilog._state import STATE
from fapilog.exceptions import ConfigurationError
from fapilog.integrations import isolation
from fapilog.integrations import tracing as _tracing
from fapilog.integrations.middleware import RequestLoggingMiddleware, current_request_id
from fapilog.settings import LoggingSettings

__all__ = ["RequestLoggingMiddleware", "current_request_id", "instrument_app"]


def instrument_app(app: Any, settings: LoggingSettings) -> None:
    """Instrument `app`: OTel server spans and fapilog's request logging (idempotent)."""
    middleware = getattr(app, "user_middleware", None)
    if not isinstance(middleware, list) or not hasattr(app, "build_middleware_stack"):
        raise ConfigurationError(
            f"configure_logging(app=...) takes a FastAPI or Starlette application, got "
            f"{type(app).__name__}; wrap another ASGI app by hand: "
            "app = OpenTelemetryMiddleware(RequestLoggingMiddleware(app))"
        )
    if STATE.recording is not None:
        return  # record-only mode (`fapilog config --app`): nothing is instrumented
    entry = _request_middleware(middleware)
    mode = settings.request.tracing
    traced = _tracing.is_instrumented(app) or (
        entry is not None and entry.kwargs.get("tracer_provider") is not None
    )
    needs_logging = entry is None
    needs_tracing = mode != "off" and not traced
    if (needs_logging or needs_tracing) and getattr(app, "middleware_stack", None) is not None:
        raise ConfigurationError(
            "configure_logging(app=app) must be called before the application starts "
            "serving requests (its middleware stack is already built)"
        )
    kwargs: dict[str, Any] = {}
    if needs_tracing:
        if mode == "instrumentation":
            _tracing.instrument(app, settings)
        else:  # native: the request middleware starts the server span itself
            kwargs["tracer_provider"] = _tracing.ensure_tracer_provider(settings)
            _tracing.quiet_fastapi_telemetry(app)
    if getattr(app, "middleware_stack", None) is None:
        # every request starts from a clean context, outside every middleware (after the
        # OpenTelemetry instrumentation's, which would otherwise take a stale span)
        isolation.isolate(app)
    if needs_logging:
        from starlette.middleware import Middleware

        # inside a hand-added OpenTelemetryMiddleware, so the server span is current
        index = _tracing.otel_middleware_index(app)
        middleware.insert(
            0 if index is None else index + 1, Middleware(RequestLoggingMiddleware, **kwargs)
        )
    elif kwargs and entry is not None:
        entry.kwargs.update(kwargs)  # a hand-added request middleware now starts the span


def _request_middleware(middleware: list[Any]) -> Any:
    """The `Middleware` entry of a `RequestLoggingMiddleware` already on the app, if any."""
    for entry in middleware:
        cls = getattr(entry, "cls", None)
        if isinstance(cls, type) and issubclass(cls, RequestLoggingMiddleware):
            return entry
    return None

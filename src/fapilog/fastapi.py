"""FastAPI integration: `configure_logging(app=app)` (see docs/fastapi.md).

    app = FastAPI()
    configure_logging(app=app)

gives the application:

- a server span per request from `opentelemetry-instrumentation-fastapi` (continuing an
  inbound W3C ``traceparent``), on an SDK TracerProvider with the same Resource as the
  logs, unless the app or the process is already instrumented;
- `fapilog.middleware.RequestLoggingMiddleware` inside that span: one event per request,
  and ``request_id``, ``trace_id`` and ``span_id`` on every line logged while handling it.

Calling it again (or on an app someone else instrumented) adds nothing twice.
"""

from __future__ import annotations

from typing import Any

from fapilog import _tracing
from fapilog.exceptions import ConfigurationError
from fapilog.middleware import RequestLoggingMiddleware, current_request_id
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
    needs_logging = not _has_request_middleware(middleware)
    needs_tracing = settings.request.tracing and not _tracing.is_instrumented(app)
    if (needs_logging or needs_tracing) and getattr(app, "middleware_stack", None) is not None:
        raise ConfigurationError(
            "configure_logging(app=app) must be called before the application starts "
            "serving requests (its middleware stack is already built)"
        )
    if needs_tracing:
        _tracing.instrument(app, settings)
    if needs_logging:
        from starlette.middleware import Middleware

        # inside a hand-added OpenTelemetryMiddleware, so the server span is current
        index = _tracing.otel_middleware_index(app)
        middleware.insert(0 if index is None else index + 1, Middleware(RequestLoggingMiddleware))


def _has_request_middleware(middleware: list[Any]) -> bool:
    for entry in middleware:
        cls = getattr(entry, "cls", None)
        if isinstance(cls, type) and issubclass(cls, RequestLoggingMiddleware):
            return True
    return False

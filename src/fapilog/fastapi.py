"""FastAPI integration: what `configure_logging(app=app)` sets up (see docs/fastapi.md;
implemented in `fapilog.integrations.fastapi`)."""

from fapilog.integrations.fastapi import instrument_app
from fapilog.integrations.middleware import RequestLoggingMiddleware, current_request_id

__all__ = ["RequestLoggingMiddleware", "current_request_id", "instrument_app"]

"""`RequestLoggingMiddleware`, the pure-ASGI request logging middleware, for adding by hand
(see docs/fastapi.md; implemented in `fapilog.integrations.middleware`)."""

from fapilog.integrations.middleware import (
    REQUEST_LOGGER,
    RequestLoggingMiddleware,
    current_request_id,
    valid_request_id,
)

__all__ = ["REQUEST_LOGGER", "RequestLoggingMiddleware", "current_request_id", "valid_request_id"]

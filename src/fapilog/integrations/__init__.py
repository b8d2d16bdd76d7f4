"""Integrations with the frameworks and servers around fapilog: FastAPI (request middleware,
request head, server span, tracing), gunicorn, and the `opentelemetry-instrument` distro."""

__all__: list[str] = []

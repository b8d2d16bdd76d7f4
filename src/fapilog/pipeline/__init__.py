"""The non-blocking pipeline between the LoggerProvider and the exporters: bounded queues
with overflow policies, one worker per exporter, the router, accounting (`fapilog.stats()`)
and self-monitoring (metrics and alerts)."""

__all__: list[str] = []

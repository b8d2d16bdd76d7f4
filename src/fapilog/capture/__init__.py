"""Capture, on the caller's thread: the logger and its level gate, the processor chain
(context, trace ids, enrichers, redaction), value coercion and stdlib routing. Cheap and
without I/O: what it captures is handed to the OpenTelemetry bridge (`fapilog.otel`)."""

__all__: list[str] = []

"""OTLP export of logs and traces to collectors (see docs/opentelemetry.md; implemented in
`fapilog.otel.otlp`)."""

from fapilog.otel.otlp import (
    DEFAULT_TIMEOUT,
    OTLP_EXPORTER_NAMES,
    BoundedBatchSpanProcessor,
    GuardedSpanExporter,
    bounded_span_processor,
    exit_budget,
    flush_span_processors,
    resolve_protocol,
    resolve_timeout,
    sdk_log_exporter,
    sdk_span_exporter,
    span_processors,
    trace_protocols,
)

__all__ = [
    "BoundedBatchSpanProcessor",
    "DEFAULT_TIMEOUT",
    "GuardedSpanExporter",
    "OTLP_EXPORTER_NAMES",
    "bounded_span_processor",
    "exit_budget",
    "flush_span_processors",
    "resolve_protocol",
    "resolve_timeout",
    "sdk_log_exporter",
    "sdk_span_exporter",
    "span_processors",
    "trace_protocols",
]

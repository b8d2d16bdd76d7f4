"""structlog processors fapilog puts in its chain, usable in your own chains too.

A processor is a plain callable ``(logger, method_name, event_dict) -> event_dict``; raise
``structlog.DropEvent`` to drop an event.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import context as otel_context

from fapilog.otel.trace import span_context_of

__all__ = ["add_trace_context"]

_get_current = otel_context.get_current


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``trace_id`` and ``span_id`` (lower-case hex) of the current OpenTelemetry span,
    read on the calling thread. No span, no keys."""
    span_context = span_context_of(_get_current())
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict

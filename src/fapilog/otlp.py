"""OTLP export of logs and traces to collectors (see docs/opentelemetry.md).

`span_processors(settings)` is called by fapilog's tracing set-up (`fapilog._tracing`)
when it creates a TracerProvider: the span processors that export traces over OTLP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

    from fapilog.settings import LoggingSettings

__all__ = ["span_processors"]


def span_processors(settings: LoggingSettings) -> list[SpanProcessor]:
    return []

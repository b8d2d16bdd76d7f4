"""`FAPILOG_OTLP__*`: OTLP export of logs and traces (see docs/opentelemetry.md). The
standard `OTEL_EXPORTER_OTLP_*` variables keep their meaning and are used when these are unset."""

from __future__ import annotations

from pydantic import Field

from fapilog._sections import Section

__all__ = ["OtlpSettings"]


class OtlpSettings(Section):
    endpoint: str | None = Field(
        default=None, description="collector endpoint; else OTEL_EXPORTER_OTLP_ENDPOINT"
    )

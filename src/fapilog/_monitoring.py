"""Self-monitoring: OTel metric instruments over the pipeline's counters, and alerts when
records are dropped or an exporter keeps failing (see docs/pipeline.md)."""

from __future__ import annotations

from typing import Any

from fapilog.settings import LoggingSettings

__all__ = ["install"]


def install(settings: LoggingSettings, stats: Any) -> None:
    """Called by configure_logging() after the pipeline is (re)built."""
    return None

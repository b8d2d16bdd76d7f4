"""FastAPI integration (tracing, request logging): see docs/fastapi.md."""

from __future__ import annotations

from typing import Any

from fapilog.settings import LoggingSettings

__all__ = ["instrument_app"]


def instrument_app(app: Any, settings: LoggingSettings) -> None:
    """Instrument `app`: OTel server spans and fapilog's request logging."""
    raise NotImplementedError("FastAPI integration lands with issue 3")

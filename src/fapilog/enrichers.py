"""Enrichers: processors that add context to every event (see docs/enrichment.md).

`build_processors(settings)` returns the enrichment processors placed in the chain, in
order, before redaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from structlog.typing import Processor

    from fapilog.settings import LoggingSettings

__all__ = ["build_processors"]


def build_processors(settings: LoggingSettings) -> list[Processor]:
    return []

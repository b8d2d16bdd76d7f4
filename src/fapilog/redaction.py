"""Redaction of sensitive keys and values before any exporter sees a record
(see docs/redaction.md).

`build_processors(settings)` returns the redaction processors placed last in the chain,
just before the OTel bridge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from structlog.typing import Processor

    from fapilog.settings import LoggingSettings

__all__ = ["build_processors"]


def build_processors(settings: LoggingSettings) -> list[Processor]:
    return []

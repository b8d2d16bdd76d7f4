"""Custom enrichers: register them, see how often they failed (see docs/enrichment.md;
implemented in `fapilog.capture.enrichers`)."""

from fapilog.capture.enrichers import (
    ENTRY_POINT_GROUP,
    EnricherChain,
    failure_counts,
    known_enrichers,
    register_enricher,
    unregister_enricher,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EnricherChain",
    "failure_counts",
    "known_enrichers",
    "register_enricher",
    "unregister_enricher",
]

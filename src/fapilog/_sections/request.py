"""`FAPILOG_REQUEST__*`: the FastAPI request logging middleware (see docs/fastapi.md) and
request enrichment (see docs/enrichment.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from fapilog._sections import Section
from fapilog._sections.enrichment import RequestEnrichmentFields

__all__ = ["RequestSettings"]


class RequestSettings(RequestEnrichmentFields, Section):
    """Request logging (issue 3 fields) plus request enrichment (`RequestEnrichmentFields`)."""

    enabled: bool = Field(default=True, description="log one event per request")
    exclude_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="paths without request events or spans, e.g. /health"
    )

    @field_validator("exclude_paths", mode="before")
    @classmethod
    def _paths(cls, value: object) -> object:
        from fapilog.settings import parse_list

        return parse_list(value)

"""Enrichment and redaction settings (see docs/enrichment.md, docs/redaction.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from fapilog._sections import Section

__all__ = ["RedactionSettings", "RequestEnrichmentFields", "SystemSettings"]


class RequestEnrichmentFields(BaseModel):
    """Fields of `FAPILOG_REQUEST__*` that belong to request enrichment."""

    headers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="request/response headers logged (allowlist)"
    )

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: object) -> object:
        from fapilog.settings import parse_list

        return parse_list(value)


class RedactionSettings(Section):
    enabled: bool = Field(default=True, description="redact sensitive keys and values")


class SystemSettings(Section):
    metrics: bool = Field(default=False, description="attach process RSS and CPU (psutil)")

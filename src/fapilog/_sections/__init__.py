"""Nested setting sections of `LoggingSettings`, one module per feature (each owned by the
feature's code). Environment variables: ``FAPILOG_<SECTION>__<FIELD>``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """Base of every nested settings section: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

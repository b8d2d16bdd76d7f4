"""`FAPILOG_SYSTEM__*`: process metrics and the application version (see docs/enrichment.md)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pydantic import Field, field_validator

from fapilog.settings._base import Section

__all__ = ["SystemSettings"]


class SystemSettings(Section):
    """`FAPILOG_SYSTEM__*`: process metrics and the application version."""

    metrics: bool = Field(
        default=False,
        description="attach process.memory.usage (RSS bytes) and process.cpu.utilization "
        "(psutil, sampled in the background) to every event",
    )
    metrics_interval: float = Field(
        default=5.0, ge=0.1, le=3600, description="seconds between two process samples"
    )
    package: str | None = Field(
        default=None,
        description="installed distribution whose version becomes service.version "
        "(when FAPILOG_SERVICE_VERSION is not set)",
    )

    @field_validator("package")
    @classmethod
    def _installed(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip()
        try:
            version(name)
        except PackageNotFoundError:
            raise ValueError(f"no installed distribution named {name!r}") from None
        return name

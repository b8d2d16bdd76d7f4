"""`FAPILOG_FILE__*`: the rotating file exporter (see docs/file.md)."""

from __future__ import annotations

from pydantic import Field

from fapilog._sections import Section

__all__ = ["FileSettings"]


class FileSettings(Section):
    path: str = Field(default="logs/app.log", description="log file path")
    max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=0, description="rotate at this size (0: never)"
    )
    backup_count: int = Field(default=5, ge=0, description="rotated files kept")

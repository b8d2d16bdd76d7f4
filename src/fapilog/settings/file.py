"""`FAPILOG_FILE__*`: the rotating file exporter (see docs/file.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fapilog.settings._base import Section

__all__ = ["FileSettings"]

RotateWhen = Literal["never", "hourly", "daily", "midnight"]
Multiprocess = Literal["lock", "per_process"]


class FileSettings(Section):
    path: str = Field(
        default="logs/app.log",
        min_length=1,
        description="log file path; its directory is created if missing",
    )
    max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=0,
        description="rotate before the file exceeds this size (0: never)",
    )
    backup_count: int = Field(
        default=5, ge=0, description="rotated files kept (oldest deleted first; 0: none kept)"
    )
    when: RotateWhen = Field(
        default="never",
        description="also rotate by time: at the top of the hour (hourly) or at midnight "
        "(daily, midnight)",
    )
    interval: int = Field(
        default=1, ge=1, description="rotate every `interval` hours/days (with `when`)"
    )
    utc: bool = Field(
        default=True, description="time rotation boundaries in UTC (false: local time)"
    )
    max_age_days: float = Field(
        default=0, ge=0, description="also delete rotated files older than this (0: no limit)"
    )
    gzip: bool = Field(default=False, description="gzip rotated files (app.log.<time>.gz)")
    mode: int = Field(
        default=0o640,
        ge=0,
        le=0o777,
        description="permissions of a newly created log file, octal (default 0640: not "
        "world-readable)",
    )
    multiprocess: Multiprocess = Field(
        default="lock",
        description="several processes on one path: `lock` (one shared file, writes and "
        "rotation under an advisory lock) or `per_process` (app.<pid>.log each)",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        """Environment values are octal: ``0640``, ``640`` and ``0o640`` all mean rw-r-----."""
        if isinstance(value, str):
            text = value.strip().lower().removeprefix("0o")
            try:
                return int(text, 8)
            except ValueError:
                raise ValueError(
                    f"file mode {value!r} is not an octal number such as 0640"
                ) from None
        return value

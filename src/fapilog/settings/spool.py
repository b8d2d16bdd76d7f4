"""`FAPILOG_SPOOL__*`: the disk spool behind the network exporters (Loki, OTLP; see
docs/delivery.md). Records a network exporter cannot deliver now go to disk instead of being
dropped, and are sent again once the sink accepts them, by this process or the next one."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from fapilog.settings._base import Section

__all__ = ["SpoolSettings", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string such as ``90``, ``30m``, ``12h`` or ``7d``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"duration {value!r} is not a number of seconds or a number with a unit "
                "(s, m, h, d), e.g. 7d"
            )
        return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    return value


class SpoolSettings(Section):
    enabled: bool = Field(
        default=True,
        description="spool records the Loki and OTLP exporters cannot deliver to disk, and "
        "send them once the sink is back (false: memory only)",
    )
    dir: str | None = Field(
        default=None,
        description="spool directory (one subdirectory per destination); unset: "
        "$XDG_STATE_HOME/fapilog/spool, else ~/.local/state/fapilog/spool",
    )
    max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=64 * 1024,
        description="most bytes on disk per destination; beyond it the oldest segments go "
        "(counted, reason spool_full)",
    )
    max_age: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="records older than this (seconds, or 30m, 12h, 7d) are dropped at "
        "replay (counted, reason too_old); Loki refuses entries older than its "
        "reject_old_samples_max_age, 7 days by default",
    )

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the spool directory is empty: give a path or leave it unset")
        return value

"""`FAPILOG_QUEUE__*`: the bounded queue in front of each exporter and the bridge's intake
queue (see docs/pipeline.md). The standard `OTEL_BLRP_*` variables fill what is not set."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fapilog.settings._base import Section

__all__ = ["Overflow", "QueueSettings"]

Overflow = Literal["drop_oldest", "drop_newest", "block", "sample"]


class QueueSettings(Section):
    """The batching queue in front of each exporter (and the intake queue of the bridge)."""

    max_size: int = Field(default=1000, ge=1, description="records per exporter queue")
    batch_size: int = Field(default=512, ge=1, description="records per export call")
    max_delay: float = Field(
        default=0.2, ge=0, description="seconds a partial batch may wait for more records"
    )
    export_timeout: float = Field(default=10.0, gt=0, description="seconds per export call")
    overflow: Overflow = Field(default="drop_oldest", description="what to do when a queue is full")
    block_timeout: float = Field(
        default=0.05, ge=0, description="policy block: longest the caller waits for room"
    )
    sample_ratio: float = Field(
        default=0.1, ge=0, le=1, description="policy sample: share of sub-WARNING records kept"
    )
    high_water: float = Field(
        default=0.8, gt=0, le=1, description="policy sample: queue fill level where sampling starts"
    )

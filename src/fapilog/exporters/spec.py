"""`ExporterSpec`: how the registry knows an exporter (its factory and the batching it
prefers). Each built-in exporter module defines its `SPEC`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fapilog.exporters.contract import LogRecordExporter
from fapilog.settings import LoggingSettings

__all__ = ["ExporterFactory", "ExporterSpec"]

ExporterFactory = Callable[[LoggingSettings], LogRecordExporter]


@dataclass(frozen=True)
class ExporterSpec:
    """A registered exporter: its factory and the batching it prefers.

    `max_delay` is the longest a partial batch waits for more records before export: a
    number of seconds, None for the queue settings' `max_delay`, or a callable computing it
    from the settings (e.g. Loki's ``FAPILOG_LOKI__BATCH_WAIT``).

    `spool`: records the exporter cannot deliver now go to a disk spool and are replayed
    (``FAPILOG_SPOOL__*``, docs/delivery.md): for exporters that send over a network.
    """

    name: str
    factory: ExporterFactory
    max_delay: float | Callable[[LoggingSettings], float | None] | None = None
    spool: bool = False

    def delay_for(self, settings: LoggingSettings) -> float | None:
        """The batching delay for `settings` (see `max_delay`)."""
        delay = self.max_delay
        return delay(settings) if callable(delay) else delay

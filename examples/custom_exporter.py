"""A custom fapilog exporter: records as JSON lines appended to a file of your choice,
keeping only those at or above a minimum level.

An exporter is an OpenTelemetry `LogRecordExporter`. fapilog runs it behind its own bounded
queue on a worker thread and hands it batches: `export()` never runs on the thread that
logged, and whatever it does (slow I/O, errors) never reaches the application. Return
FAILURE when a batch could not be delivered: fapilog counts those records as dropped
(`fapilog.stats()`).

Two ways to make it selectable by name (``exporters=["jsonl"]`` / ``FAPILOG_EXPORTERS=jsonl``):

* in code: ``fapilog.register_exporter("jsonl", factory)`` (what `main()` below does);
* from a package, with an entry point in its pyproject.toml::

      [project.entry-points."fapilog.exporters"]
      jsonl = "custom_exporter:factory"

Its options come from settings: ``exporter_options={"jsonl": {"path": ...}}`` in code, or
``FAPILOG_EXPORTER_OPTIONS__JSONL__PATH=/var/log/app.jsonl`` in the environment.

Run it: ``python examples/custom_exporter.py /tmp/app.jsonl``
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

import orjson

import fapilog
from fapilog import ConfigurationError, LoggingSettings
from fapilog.exporters import (
    LogRecordExporter,
    LogRecordExportResult,
    ReadableLogRecord,
    exporter_options,
    json_line,
)

LEVELS = {"debug": 5, "info": 9, "warning": 13, "error": 17, "critical": 21}


def severity(record: ReadableLogRecord) -> int:
    """The OTel severity number (DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21)."""
    number = record.log_record.severity_number
    return number.value if number is not None else 0


class JsonLinesExporter(LogRecordExporter):
    """Appends each record at or above `min_level` as one JSON line to `path`."""

    def __init__(self, path: str, min_level: str = "debug") -> None:
        self.path = path
        self.min_severity = LEVELS[min_level]
        self._lock = threading.Lock()  # export and shutdown may come from two threads
        self._closed = False

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        lines = [
            orjson.dumps(json_line(record)) + b"\n"  # fapilog's own JSON line schema
            for record in batch
            if severity(record) >= self.min_severity
        ]
        with self._lock:
            if self._closed:
                return LogRecordExportResult.FAILURE
            try:
                with open(self.path, "ab") as out:
                    out.write(b"".join(lines))
            except OSError:
                return LogRecordExportResult.FAILURE  # counted as dropped by fapilog
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is written before it returns

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True


def factory(settings: LoggingSettings) -> LogRecordExporter:
    """Called by configure_logging(): validate options here, so mistakes fail at startup."""
    options = exporter_options(settings, "jsonl")
    min_level = str(options.get("min_level", "debug")).lower()
    if min_level not in LEVELS:
        raise ConfigurationError(
            f"FAPILOG_EXPORTER_OPTIONS__JSONL__MIN_LEVEL: {min_level!r} is invalid; "
            f"allowed: {', '.join(LEVELS)}"
        )
    return JsonLinesExporter(str(options.get("path", "app.jsonl")), min_level)


def main(path: str) -> None:
    fapilog.register_exporter("jsonl", factory, replace=True)
    fapilog.configure_logging(
        exporters=["jsonl"],
        exporter_options={"jsonl": {"path": path, "min_level": "info"}},
    )
    log = fapilog.get_logger("shop")
    log.debug("cart loaded")  # below min_level: not written
    log.info("order placed", order_id=7, amount=12.5)
    log.warning("stock low", sku="A-1", left=2)
    fapilog.shutdown()  # drains the queue: both lines are in the file now


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.getcwd(), "app.jsonl"))

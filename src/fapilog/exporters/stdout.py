"""The stdout exporters: JSON lines (production) and the pretty console (development)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

from fapilog.exporters._stream import write_stream
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.render import ConsoleRenderer, JsonRenderer
from fapilog.exporters.spec import ExporterSpec
from fapilog.settings import LoggingSettings

__all__ = [
    "CONSOLE_SPEC",
    "ConsoleExporter",
    "SPEC",
    "StdoutJsonExporter",
]


class StdoutJsonExporter(LogRecordExporter):
    """One JSON object per line on stdout (the stream current at export time, so test
    capture and redirection work). A batch is written with one call."""

    def __init__(self, stream: IO[Any] | None = None) -> None:
        self._stream = stream
        self._renderer = JsonRenderer()
        self._closed = False

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._closed:
            return LogRecordExportResult.FAILURE
        data = self._renderer.render_batch(batch)
        ok = write_stream(self._stream, data, "stdout")
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class ConsoleExporter(LogRecordExporter):
    """Pretty console lines for development: coloured level (when the stream is a
    terminal), aligned message, key=value pairs, readable tracebacks."""

    def __init__(self, stream: IO[Any] | None = None, colors: bool | None = None) -> None:
        self._stream = stream
        if colors is None:
            target = stream if stream is not None else sys.stdout
            colors = bool(getattr(target, "isatty", lambda: False)())
        self._renderer = ConsoleRenderer(colors=colors)
        self._closed = False

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._closed:
            return LogRecordExportResult.FAILURE
        text = "".join(self._renderer.render(readable) + "\n" for readable in batch)
        ok = write_stream(self._stream, text.encode("utf-8", "replace"), "console")
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _stdout(settings: LoggingSettings) -> LogRecordExporter:
    """JSON lines, or the pretty console in development or on a terminal."""
    isatty = bool(getattr(sys.stdout, "isatty", lambda: False)())
    return StdoutJsonExporter() if settings.use_json(isatty) else ConsoleExporter()


def _console(settings: LoggingSettings) -> LogRecordExporter:
    return ConsoleExporter()


SPEC = ExporterSpec("stdout", _stdout)
CONSOLE_SPEC = ExporterSpec("console", _console)

"""The stdout exporters: JSON lines (production), and the development console
(`fapilog.exporters.console`) in development or on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

from fapilog.capture.redaction import Redactor
from fapilog.exporters._stream import write_stream
from fapilog.exporters.console import ConsoleExporter
from fapilog.exporters.console_format import is_terminal
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.render import JsonRenderer
from fapilog.exporters.spec import ExporterSpec
from fapilog.settings import LoggingSettings

__all__ = [
    "CONSOLE_SPEC",
    "ConsoleExporter",
    "SPEC",
    "StdoutJsonExporter",
    "console_selected",
]


# a batch is written in chunks of about this many bytes: a reader that stalls holds one
# chunk, and what was written before it counts as exported (`export_progress`)
_CHUNK = 64 * 1024


class _StreamExporter(LogRecordExporter):
    """Lines to a text stream (stdout by default: the stream current at export time, so
    test capture and redirection work), written in chunks. Once the reader has gone away
    (a broken pipe), every later record is counted as dropped, reason ``broken_pipe``, not
    as exported into the void."""

    name = "stdout"

    def __init__(self, stream: IO[Any] | None = None) -> None:
        self._stream = stream
        self._closed = False
        self._broken = False
        # the exporter contract's extras: a partial loss and its reason, and how many
        # records of the export in progress are written already
        self.last_export_dropped: int | None = None
        self.last_export_reason: str | None = None
        self.export_progress = 0

    def _lines(self, batch: Sequence[ReadableLogRecord]) -> list[bytes]:
        raise NotImplementedError

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.export_progress = 0
        self.last_export_dropped = None
        self.last_export_reason = None
        if self._closed:
            return LogRecordExportResult.FAILURE
        if self._broken:
            return self._lost(len(batch), "broken_pipe")
        chunk: list[bytes] = []
        size = 0
        done = 0
        for line in self._lines(batch):
            chunk.append(line)
            size += len(line)
            if size >= _CHUNK:
                failed = write_stream(self._stream, b"".join(chunk), self.name)
                if failed:
                    return self._lost(len(batch) - done, failed)
                done += len(chunk)
                self.export_progress = done
                chunk, size = [], 0
        if chunk:
            failed = write_stream(self._stream, b"".join(chunk), self.name)
            if failed:
                return self._lost(len(batch) - done, failed)
            self.export_progress = len(batch)
        return LogRecordExportResult.SUCCESS

    def _lost(self, count: int, reason: str) -> LogRecordExportResult:
        if reason == "broken_pipe":
            self._broken = True
        self.last_export_dropped = count
        self.last_export_reason = reason
        return LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class StdoutJsonExporter(_StreamExporter):
    """One JSON object per line on stdout."""

    def __init__(self, stream: IO[Any] | None = None) -> None:
        super().__init__(stream)
        self._renderer = JsonRenderer()

    def _lines(self, batch: Sequence[ReadableLogRecord]) -> list[bytes]:
        render = self._renderer.render_line
        return [render(readable) for readable in batch]


def console_selected(settings: LoggingSettings) -> bool:
    """Whether `settings` write the development console: the `console` exporter, or
    `stdout` when it is not JSON (as its factory decides, below)."""
    exporters = settings.exporters
    return "console" in exporters or (
        "stdout" in exporters and not settings.use_json(is_terminal(sys.stdout))
    )


def _stdout(settings: LoggingSettings) -> LogRecordExporter:
    """JSON lines, or the development console in development or on a terminal."""
    if settings.use_json(is_terminal(sys.stdout)):
        return StdoutJsonExporter()
    return _console(settings)


def _console(settings: LoggingSettings) -> LogRecordExporter:
    redaction = settings.redaction
    redactor = Redactor.from_settings(redaction) if redaction.enabled else None
    return ConsoleExporter(settings=settings.console, redactor=redactor)


SPEC = ExporterSpec("stdout", _stdout)
CONSOLE_SPEC = ExporterSpec("console", _console)

"""The `otlp` exporter: log records to an OpenTelemetry collector over OTLP (grpc or
http/protobuf), with the SDK's own OTLP log exporter configured by `fapilog.otel.otlp`.

It runs on fapilog's `ExportProcessor` worker like every exporter, so a slow or dead
collector never blocks the application; see `fapilog.otel.otlp` for the timeouts and the exit
behaviour, docs/opentelemetry.md for the settings.
"""

from __future__ import annotations

from collections.abc import Sequence

from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.spec import ExporterSpec
from fapilog.otel.otlp import ExportGuard, sdk_log_exporter
from fapilog.settings import LoggingSettings

__all__ = [
    "OtlpLogExporter",
    "SPEC",
]


class OtlpLogExporter(LogRecordExporter):
    """The SDK's OTLP log exporter behind fapilog's guard: its own HTTP/gRPC calls are not
    instrumented, and once the interpreter is exiting a failing collector is given up at
    once instead of retried."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self._guard = ExportGuard("logs", inner)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self._guard.call(
            lambda: self.inner.export(batch),
            LogRecordExportResult.SUCCESS,
            LogRecordExportResult.FAILURE,
        )

    def shutdown(self) -> None:
        self._guard.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def factory(settings: LoggingSettings) -> LogRecordExporter:
    return OtlpLogExporter(sdk_log_exporter(settings))


# OTLP encoding is the costliest export: let batches fill a little longer than stdout's
SPEC = ExporterSpec("otlp", factory, max_delay=0.5)

"""Exporters: where records go (stdout, console, file, Loki, OTLP, yours).

The public surface for writing and registering one: the exporter contract (an
OpenTelemetry `LogRecordExporter`, and the optional `PartialLoss` / `DetailedStats`
extras), `ExporterSpec`, the registry functions, and `json_line(record)` (fapilog's JSON
line as a dict). docs/exporters.md is the guide.
"""

from fapilog.exporters.contract import (
    UNKNOWN_OUTCOME,
    Abortable,
    Destination,
    DetailedStats,
    LogRecordExporter,
    LogRecordExportResult,
    PartialLoss,
    Progress,
    ReadableLogRecord,
    Retryable,
)
from fapilog.exporters.registry import (
    BUILTIN,
    ENTRY_POINT_GROUP,
    create_exporter,
    exporter_options,
    exporter_spec,
    json_line,
    known_exporters,
    register_exporter,
    unregister_exporter,
)
from fapilog.exporters.spec import ExporterFactory, ExporterSpec

__all__ = [
    "Abortable",
    "BUILTIN",
    "Destination",
    "DetailedStats",
    "ENTRY_POINT_GROUP",
    "ExporterFactory",
    "ExporterSpec",
    "LogRecordExportResult",
    "LogRecordExporter",
    "PartialLoss",
    "Progress",
    "ReadableLogRecord",
    "Retryable",
    "UNKNOWN_OUTCOME",
    "create_exporter",
    "exporter_options",
    "exporter_spec",
    "json_line",
    "known_exporters",
    "register_exporter",
    "unregister_exporter",
]

"""The `otlp` exporter: log records to an OpenTelemetry collector over OTLP (grpc or
http/protobuf), with the SDK's own OTLP log exporter configured by `fapilog.otel.otlp`.

It runs on fapilog's `ExportProcessor` worker like every exporter, so a slow or dead
collector never blocks the application; see `fapilog.otel.otlp` for the timeouts and the exit
behaviour, docs/opentelemetry.md for the settings.

What the collector did with each record is counted exactly (`fapilog.otel.otlp_logs`):
records it rejected in a partial success are dropped with reason ``rejected``; over gRPC,
a request over the collector's message limit is sent in parts, a record too large on its
own is dropped with reason ``too_large``, and when an export fails after some parts were
delivered only the rest counts as dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from fapilog import _diag
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.spec import ExporterSpec
from fapilog.otel.logs import LoggerProvider, otlp_log_endpoints
from fapilog.otel.otlp import (
    ExportGuard,
    created_log_exporter,
    header_secrets,
    http_log_endpoint,
    log_destination,
    resolve_protocol,
)
from fapilog.otel.otlp_logs import Delivery
from fapilog.settings import LoggingSettings
from fapilog.settings._errors import scrub

__all__ = [
    "OtlpLogExporter",
    "SPEC",
    "exported_by",
]


class OtlpLogExporter(LogRecordExporter):
    """The SDK's OTLP log exporter behind fapilog's guard: its own HTTP/gRPC calls are not
    instrumented, and once the interpreter is exiting a failing collector is given up at
    once instead of retried. With a `Delivery` the SDK exporter reports to, a partial loss
    is reported through ``last_export_dropped`` / ``last_export_reason`` (the exporter
    contract's `PartialLoss`)."""

    def __init__(
        self,
        inner: LogRecordExporter,
        delivery: Delivery | None = None,
        destination: str = "",
        secrets: Sequence[str] = (),
    ) -> None:
        self.inner = inner
        self._guard = ExportGuard("logs", inner, secrets)
        self._delivery = delivery if delivery is not None and delivery.attached else None
        self.last_export_dropped: int | None = None
        self.last_export_reason: str | None = None
        self.last_export_retry: list[ReadableLogRecord] | None = None
        # what fapilog's spool directory for this exporter is keyed by (no credential)
        self.spool_destination = destination

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        delivery = self._delivery
        self.last_export_dropped = None  # not known: the whole batch, if it failed
        self.last_export_reason = None
        self.last_export_retry = None
        if delivery is not None:
            delivery.begin()
        result = self._guard.call(
            lambda: self.inner.export(batch),
            LogRecordExportResult.SUCCESS,
            LogRecordExportResult.FAILURE,
        )
        if delivery is None:
            return result
        if result != LogRecordExportResult.SUCCESS:
            # a later attempt may deliver the batch, unless the collector refused it for
            # good, or delivered part of it (which part is not known: the rest is lost)
            retryable = not delivery.refused and not delivery.delivered
            self.last_export_retry = list(batch) if retryable else []
        return self._account(batch, result, delivery)

    def _account(
        self,
        batch: Sequence[ReadableLogRecord],
        result: LogRecordExportResult,
        delivery: Delivery,
    ) -> LogRecordExportResult:
        size = len(batch)
        ok = result == LogRecordExportResult.SUCCESS
        # never delivered: all of a failed export but the gRPC parts that got through
        undelivered = 0 if ok else size - min(size, delivery.delivered)
        shares = {
            "export_failed": undelivered,
            "too_large": delivery.too_large,
            "rejected": delivery.rejected,
        }
        lost = min(size, sum(shares.values()))
        said = f": {scrub(delivery.messages[-1], self._guard.secrets)}" if delivery.messages else ""
        if delivery.rejected:
            _diag.report(
                "otlp-rejected",
                f"fapilog OTLP log exporter: the collector rejected {delivery.rejected} of "
                f"{size} records{said}",
                level="error",
            )
        elif said:
            _diag.report(
                "otlp-warning",
                f"fapilog OTLP log exporter: the collector accepted the records with a "
                f"warning{said}",
            )
        if delivery.too_large:
            _diag.report(
                "otlp-too-large",
                f"fapilog OTLP log exporter dropped {delivery.too_large} records larger "
                f"than the collector's message limit ({delivery.limit} bytes) on their own",
                level="error",
            )
        if not lost:
            return result
        self.last_export_dropped = lost
        # an export losing records for several reasons counts them under its largest share
        self.last_export_reason = max(shares, key=lambda reason: shares[reason])
        return LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self._guard.close()

    def abort(self) -> None:
        """fapilog's shutdown deadline passed with an export still running: close the SDK
        exporter now (its retry wait ends, its channel closes and cancels the call)."""
        self._guard.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        """Records the collector rejected (partial success), records too large for its
        gRPC message limit, requests sent in parts, and the limit in force."""
        return self._delivery.stats() if self._delivery is not None else {}


def factory(settings: LoggingSettings) -> LogRecordExporter:
    delivery = Delivery()
    inner = created_log_exporter(settings, delivery)
    return OtlpLogExporter(
        inner, delivery, log_destination(settings), header_secrets(settings, "logs")
    )


def exported_by(provider: LoggerProvider, settings: LoggingSettings) -> str | None:
    """The `otlp` exporter's endpoint when an SDK OTLP log exporter on `provider`'s
    processors (the user's ``BatchLogRecordProcessor(OTLPLogExporter(...))``) already sends
    logs there, with the same protocol; None when none does. (fapilog's endpoint carries no
    credentials, the other's might: this one is the one named.) Endpoints are
    compared normalised: scheme, host (case aside), port (the scheme's default when left
    out) and, over HTTP, the path (``/v1/logs`` included); host names are not resolved."""
    protocol = resolve_protocol(settings, "logs")
    if protocol == "grpc":
        own = log_destination(settings).partition(" ")[2]
    else:
        own = http_log_endpoint(settings)
    key = _endpoint_key(protocol, own)
    for their_protocol, endpoint in otlp_log_endpoints(provider):
        if key is not None and _endpoint_key(their_protocol, endpoint) == key:
            return own
    return None


def _endpoint_key(protocol: str, endpoint: str) -> tuple[Any, ...] | None:
    text = endpoint.strip()
    try:
        if protocol == "grpc":
            # the SDK's gRPC exporter keeps host:port only (the scheme decides TLS)
            parsed = urlsplit(text if "://" in text else f"//{text}")
            return (protocol, (parsed.hostname or text).lower(), parsed.port)
        parsed = urlsplit(text)
        scheme = parsed.scheme.lower()
        port = parsed.port or {"http": 80, "https": 443}.get(scheme)
        return (protocol, scheme, (parsed.hostname or "").lower(), port, parsed.path.rstrip("/"))
    except ValueError:  # an invalid port: compared with nothing
        return None


# OTLP encoding is the costliest export: let batches fill a little longer than stdout's
SPEC = ExporterSpec("otlp", factory, max_delay=0.5, spool=True)

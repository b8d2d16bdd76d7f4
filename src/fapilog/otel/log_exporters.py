"""The one adapter around the OTLP exporter package's log exporters (its ``_log_exporter``
modules, as unstable as the logs SDK) and the private attributes fapilog reads of them: the
class for a protocol, the gRPC exporter's stub seam (to see the collector's answers), one
POST through the HTTP exporter and the gRPC exporter's channel (``fapilog check``). Each
seam is checked against the installed exporter before it is used; pyproject.toml pins the
tested series.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fapilog.otel.logs import LogRecordExporter

__all__ = [
    "SentOnce",
    "grpc_channel",
    "http_send_once",
    "otlp_log_exporter_class",
    "replace_grpc_logs_stub",
]


def otlp_log_exporter_class(protocol: str) -> type[LogRecordExporter]:
    """The OTLP exporter package's log exporter for ``grpc`` or ``http/protobuf``. Its logs
    exporters live in modules as unstable as the logs SDK (``_log_exporter``); imported
    only when the `otlp` exporter is configured (grpc is a heavy import)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        _check_grpc_stub_seam()
        grpc_class: type[LogRecordExporter] = OTLPLogExporter
        return grpc_class
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )

    http_class: type[LogRecordExporter] = HttpLogExporter
    return http_class


# The gRPC exporter's stub seam, checked once when the gRPC exporter module is imported
# (grpc is imported only when the `otlp` exporter uses it): None until then.
_GRPC_STUB_SEAM: bool | None = None
_GRPC_STUB_ATTRIBUTES = ("_stub", "_channel", "_client")


def _check_grpc_stub_seam() -> bool:
    """Whether the SDK's OTLP gRPC exporters still build their client as
    ``self._client = self._stub(self._channel)`` and export through ``self._client.Export``
    (read from the compiled code of `OTLPExporterMixin`), so that `replace_grpc_logs_stub`
    sees every request and its answer."""
    global _GRPC_STUB_SEAM
    if _GRPC_STUB_SEAM is None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin

            build = OTLPExporterMixin._initialize_channel_and_stub.__code__.co_names
            export = OTLPExporterMixin._export.__code__.co_names
            _GRPC_STUB_SEAM = set(_GRPC_STUB_ATTRIBUTES) <= set(build) and {
                "_client",
                "Export",
            } <= set(export)
        except Exception:  # pragma: no cover - an exporter change
            _GRPC_STUB_SEAM = False
    return _GRPC_STUB_SEAM


def replace_grpc_logs_stub(exporter: LogRecordExporter, stub: Callable[[Any], Any]) -> bool:
    """Make the SDK's OTLP gRPC log exporter send through ``stub(channel)`` instead of its
    generated ``LogsServiceStub``, now and whenever it reconnects (it rebuilds its client
    from ``_stub`` on a new channel): `stub`'s ``Export(request, metadata=, timeout=)`` then
    sees each request and returns the collector's ExportLogsServiceResponse, which the SDK
    discards. Returns False, changing nothing, when the installed exporter is not built
    as checked (`_check_grpc_stub_seam`): it then exports as it always does."""
    if not _check_grpc_stub_seam():
        return False
    if not all(hasattr(exporter, name) for name in _GRPC_STUB_ATTRIBUTES):
        return False
    sdk_exporter: Any = exporter
    sdk_exporter._stub = stub
    sdk_exporter._client = stub(sdk_exporter._channel)
    return True


@dataclasses.dataclass(frozen=True)
class SentOnce:
    """What one POST by the SDK's OTLP/HTTP log exporter got: the HTTP status and its text
    (None: no answer), the body, or the error that prevented an answer."""

    endpoint: str
    status: int | None
    reason: str | None
    body: bytes
    error: BaseException | None


def http_send_once(exporter: LogRecordExporter, request: bytes, timeout: float) -> SentOnce | None:
    """POST a serialized ExportLogsServiceRequest once through the SDK's OTLP/HTTP log
    exporter as it sends (its endpoint, headers, compression, TLS and requests Session),
    without its retries (``fapilog check``). None when the installed exporter is not built
    as this expects (``_client._compress``/``_submit``)."""
    client = getattr(exporter, "_client", None)
    compress, submit = getattr(client, "_compress", None), getattr(client, "_submit", None)
    if not (callable(compress) and callable(submit)):
        return None
    result = submit(compress(request), timeout)
    status = getattr(result, "status_code", None)
    body = b""
    if status is not None:
        try:
            body = bytes(result.content())
        except Exception:
            body = b""
    return SentOnce(
        str(getattr(client, "_endpoint", "")),
        status,
        getattr(result, "reason", None),
        body,
        getattr(result, "error", None),
    )


def grpc_channel(
    exporter: LogRecordExporter,
) -> tuple[Any, tuple[tuple[str, str], ...], str] | None:
    """The SDK's OTLP gRPC log exporter's channel (with its TLS credentials and
    compression), the metadata it sends (headers) and its target (``fapilog check`` sends
    one request on them); None when the exporter is not built as this expects."""
    channel = getattr(exporter, "_channel", None)
    headers = getattr(exporter, "_headers", None)
    if channel is None or not isinstance(headers, tuple):
        return None
    return channel, headers, str(getattr(exporter, "_endpoint", ""))

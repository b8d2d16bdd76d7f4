"""`fapilog check`'s probes of the network exporters: one marked record sent once, no
retry, and the answer read into a `Probe` (reachable, authenticated, accepted, the error and
its fix).

- Loki: one line pushed to the stream ``{service_name="fapilog-check"}`` by the exporter
  itself (its URL, tenant, credentials, encoding, proxy and TLS), `LokiExporter.push_once`.
- OTLP: one log record, body ``fapilog connectivity check`` and attribute
  ``fapilog.check=true``, under the service's Resource, to the endpoint the `otlp` exporter
  uses (fapilog's settings, else the ``OTEL_EXPORTER_OTLP_*`` variables), over gRPC or
  http/protobuf, with the same headers and certificates.

Every message is scrubbed of the credentials configured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import (
    LogRecord,
    ResourceLogs,
    ScopeLogs,
    SeverityNumber,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from fapilog._version import __version__
from fapilog.exporters.loki import LokiExporter
from fapilog.exporters.loki_config import validate
from fapilog.otel.log_exporters import grpc_channel, http_send_once
from fapilog.otel.otlp import (
    created_log_exporter,
    header_secrets,
    http_log_endpoint,
    log_destination,
    resolve_protocol,
)
from fapilog.otel.otlp_logs import LOGS_EXPORT_METHOD
from fapilog.otel.resource import build_resource
from fapilog.settings import LoggingSettings
from fapilog.settings._errors import mask_url, scrub
from fapilog.settings._otel_env import otlp_variable

__all__ = ["CHECK_BODY", "CHECK_SERVICE", "Probe", "probe_loki", "probe_otlp"]

CHECK_SERVICE = "fapilog-check"  # the Loki stream's service_name label
CHECK_BODY = "fapilog connectivity check"  # the OTLP record's body
CHECK_ATTRIBUTE = "fapilog.check"  # the OTLP record's attribute, true

# words in a connection error that say what failed
_DNS = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name",
    "no address associated",
    "getaddrinfo",
    "dns resolution failed",
    "name resolution",
    "errors resolving",
    "domain name not found",
)
_TLS = ("ssl", "certificate", "tls", "handshake", "wrong_version_number")
# a plaintext client talking to a TLS server (or the other way round)
_MISMATCH = ("socket closed", "connection reset", "remote end closed", "remoteprotocolerror",
             "eof occurred", "server disconnected")  # fmt: skip
_REFUSED = ("connection refused", "failed to connect", "connect call failed", "errno 111")
_TIMEOUT = ("timeout", "timed out", "deadline")


@dataclass
class Probe:
    """One exporter's answer. `reachable`: something answered at the address;
    `authenticated`: it did not refuse the credentials; `accepted`: it took the record."""

    target: str
    reachable: bool = False
    authenticated: bool = False
    accepted: bool = False
    error: str | None = None
    fix: str | None = None
    latency_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _connection_failure(probe: Probe, text: str, host: str, setting: str, seconds: float) -> None:
    """`probe` failed before any answer: say why (DNS, TLS, refused, timeout) and the fix."""
    lowered = text.lower()
    probe.error = text
    if any(word in lowered for word in _DNS):
        name = host.rpartition(":")[0] or host
        probe.fix = (
            f"the host name {name!r} does not resolve: check the host in {setting} (and "
            "this machine's DNS)"
        )
    elif any(word in lowered for word in _TLS):
        probe.fix = (
            "the TLS handshake failed: use http:// for a plaintext endpoint, or make this "
            "machine trust the server's certificate (its CA file: SSL_CERT_FILE for Loki, "
            "FAPILOG_OTLP__CERTIFICATE for OTLP)"
        )
    elif any(word in lowered for word in _MISMATCH):
        probe.fix = (
            f"{host} closed the connection: often plaintext against a TLS endpoint or the "
            f"other way round (check http:// or https:// in {setting}, and the insecure "
            "setting), or a proxy refusing the connection"
        )
    elif any(word in lowered for word in _REFUSED):
        probe.fix = (
            f"nothing listens at {host}: is the server running, is the port in {setting} right?"
        )
    elif any(word in lowered for word in _TIMEOUT):
        probe.fix = (
            f"no answer within {seconds:g} s: a firewall dropping the connection, a proxy, "
            f"or a wrong port in {setting}"
        )
    else:
        probe.fix = f"check the address in {setting}"


# -- Loki ---------------------------------------------------------------------------------


def probe_loki(settings: LoggingSettings, seconds: float) -> Probe:
    """Push one line to ``{service_name="fapilog-check"}`` with the configured exporter."""
    validate(settings.loki)  # (raises ConfigurationError as configure_logging() would)
    loki = settings.loki.model_copy(update={"timeout": seconds, "max_retries": 0})
    exporter = LokiExporter(loki)
    probe = Probe(mask_url(exporter.push_target))
    line = f'{{"message":"{CHECK_BODY}","fapilog.version":"{__version__}"}}'
    started = time.perf_counter()
    try:
        status, detail = exporter.push_once({"service_name": CHECK_SERVICE}, line)
    finally:
        exporter.shutdown()
    probe.latency_ms = (time.perf_counter() - started) * 1000
    if loki.tenant_id:  # (a server may echo the request's headers: the tenant is masked too)
        detail = scrub(detail, [loki.tenant_id])
    host = urlparse(exporter.push_target).netloc.rpartition("@")[2]
    if status is None:
        _connection_failure(probe, detail, host, "FAPILOG_LOKI__URL", seconds)
        return probe
    probe.reachable = True
    probe.details["status"] = status
    has_tenant = bool(loki.tenant_id)
    has_credentials = loki.bearer_token is not None or loki.password is not None
    if status in (401, 403):
        probe.error = f"HTTP {status}: {detail}"
        if status == 401 and "org" in detail.lower() and not has_tenant:
            probe.fix = (
                "this Loki is multi-tenant: set FAPILOG_LOKI__TENANT_ID (sent as X-Scope-OrgID)"
            )
        elif has_credentials:
            probe.fix = (
                "the credentials were rejected: check FAPILOG_LOKI__USERNAME and "
                "FAPILOG_LOKI__PASSWORD, or FAPILOG_LOKI__BEARER_TOKEN"
                + (
                    ""
                    if has_tenant
                    else ", and whether a tenant is needed (FAPILOG_LOKI__TENANT_ID)"
                )
            )
        elif has_tenant:
            probe.fix = (
                "Loki (or a proxy in front of it) wants credentials: set "
                "FAPILOG_LOKI__USERNAME and FAPILOG_LOKI__PASSWORD, or FAPILOG_LOKI__BEARER_TOKEN"
            )
        else:
            probe.fix = (
                "Loki wants a tenant or credentials: set FAPILOG_LOKI__TENANT_ID, or "
                "FAPILOG_LOKI__USERNAME and FAPILOG_LOKI__PASSWORD, or FAPILOG_LOKI__BEARER_TOKEN"
            )
        return probe
    probe.authenticated = True
    if 200 <= status < 300:
        probe.accepted = True
        return probe
    probe.error = f"HTTP {status}: {detail}"
    if status == 404:
        probe.fix = "no push API at this URL: FAPILOG_LOKI__URL should be Loki's base URL (http://loki:3100)"
    elif status == 429:
        probe.fix = "Loki is rate-limiting this tenant now: its ingestion limits (or try again)"
    elif status >= 500:
        probe.fix = "Loki answered with a server error: see Loki's own logs"
    else:
        probe.fix = "Loki refused the line: see its answer above"
    return probe


# -- OTLP ---------------------------------------------------------------------------------


def _request(settings: LoggingSettings) -> ExportLogsServiceRequest:
    """One INFO record, marked, under the service's Resource."""
    now = time.time_ns()
    resource = Resource(
        attributes=[
            _key_value(key, value) for key, value in build_resource(settings).attributes.items()
        ]
    )
    record = LogRecord(
        time_unix_nano=now,
        observed_time_unix_nano=now,
        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
        severity_text="INFO",
        body=AnyValue(string_value=CHECK_BODY),
        attributes=[_key_value(CHECK_ATTRIBUTE, True)],
    )
    scope = ScopeLogs(
        scope=InstrumentationScope(name="fapilog.check", version=__version__), log_records=[record]
    )
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[scope])]
    )


def _key_value(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _answered(probe: Probe, answer: bytes) -> None:
    """A 2xx / OK answer: accepted, unless a partial success rejected the record."""
    response = ExportLogsServiceResponse()
    try:
        response.ParseFromString(answer)
    except Exception:
        response = ExportLogsServiceResponse()
    rejected = response.partial_success.rejected_log_records
    if rejected:
        probe.error = f"the collector rejected the record: {response.partial_success.error_message}"
        probe.fix = "see the collector's own logs for why it rejects records"
        return
    probe.accepted = True


def _endpoint_setting(settings: LoggingSettings) -> str:
    """The setting or variable the OTLP endpoint came from (what a fix names)."""
    if settings.otlp.endpoint:
        return "FAPILOG_OTLP__ENDPOINT"
    found = otlp_variable("logs", "ENDPOINT")
    return found[0] if found else "FAPILOG_OTLP__ENDPOINT"


def probe_otlp(settings: LoggingSettings, seconds: float) -> Probe:
    """Send the marked record once, through the SDK's own OTLP exporter as fapilog's
    `otlp` exporter builds it (endpoint, TLS, certificates, headers, compression)."""
    protocol = resolve_protocol(settings, "logs")
    secrets = header_secrets(settings, "logs")
    # (a failure to create it raises the ConfigurationError configure_logging() would)
    exporter: Any = created_log_exporter(settings.with_overrides({"otlp": {"timeout": seconds}}))
    try:
        if protocol == "grpc":
            probe = _probe_grpc(exporter, settings, seconds)
        else:
            probe = _probe_http(exporter, settings, seconds)
    finally:
        exporter.shutdown()
    probe.details["protocol"] = protocol
    for name in ("error", "fix"):
        text = getattr(probe, name)
        if text:
            setattr(probe, name, scrub(text, secrets))
    return probe


def _probe_http(exporter: Any, settings: LoggingSettings, seconds: float) -> Probe:
    body = _request(settings).SerializeToString()
    started = time.perf_counter()
    sent = http_send_once(exporter, body, seconds)
    latency = (time.perf_counter() - started) * 1000
    if sent is None:
        return Probe(http_log_endpoint(settings), error=_UNSUPPORTED_SDK)
    probe = Probe(mask_url(sent.endpoint), latency_ms=latency)
    setting = _endpoint_setting(settings)
    if sent.status is None:
        error = sent.error
        text = f"{type(error).__name__}: {error}" if error is not None else "no answer"
        host = urlparse(sent.endpoint).netloc.rpartition("@")[2]
        _connection_failure(probe, text, host, setting, seconds)
        return probe
    probe.reachable = True
    status = sent.status
    probe.details["status"] = status
    text = ""
    if status >= 300:
        text = sent.body.decode("utf-8", "replace").strip()[:300] or (sent.reason or "")
    if status in (401, 403):
        probe.error = f"HTTP {status}: {text}".rstrip(": ")
        probe.fix = _CREDENTIALS_FIX
        return probe
    probe.authenticated = True
    if 200 <= status < 300:
        _answered(probe, sent.body)
        return probe
    probe.error = f"HTTP {status}: {text}".rstrip(": ")
    if status == 404:
        probe.fix = (
            f"no OTLP logs endpoint at {probe.target}: {setting} should be the collector's "
            "base URL (port 4318 for http/protobuf)"
        )
    elif status in (415, 400):
        probe.fix = _NOT_OTLP
    else:
        probe.fix = "the collector answered with an error: see its own logs"
    return probe


_UNSUPPORTED_SDK = (
    "the installed OpenTelemetry OTLP exporter is not built as fapilog expects: "
    "its connectivity cannot be checked (see docs/platforms.md for the versions tested)"
)
_NOT_OTLP = (
    "no OTLP logs service answers there: is this a collector, and is the protocol right "
    "(FAPILOG_OTLP__PROTOCOL: grpc on port 4317, http/protobuf on 4318)?"
)
_CREDENTIALS_FIX = (
    "the collector refused the credentials: check the headers in FAPILOG_OTLP__HEADERS "
    "(or OTEL_EXPORTER_OTLP_HEADERS), e.g. authorization=Bearer%20<token>"
)


def _probe_grpc(exporter: Any, settings: LoggingSettings, seconds: float) -> Probe:
    import grpc  # type: ignore[import-untyped]  # (the OTLP exporter's dependency)

    found = grpc_channel(exporter)
    if found is None:
        return Probe(log_destination(settings).partition(" ")[2], error=_UNSUPPORTED_SDK)
    channel, metadata, target = found
    probe = Probe(mask_url(target))
    export = channel.unary_unary(
        LOGS_EXPORT_METHOD,
        request_serializer=ExportLogsServiceRequest.SerializeToString,
        response_deserializer=lambda data: data,
    )
    started = time.perf_counter()
    try:
        answer = export(_request(settings), metadata=metadata, timeout=seconds)
    except grpc.RpcError as exc:
        probe.latency_ms = (time.perf_counter() - started) * 1000
        _grpc_failure(probe, exc, target, seconds, _endpoint_setting(settings))
        return probe
    probe.latency_ms = (time.perf_counter() - started) * 1000
    probe.reachable = probe.authenticated = True
    _answered(probe, answer)
    return probe


def _grpc_failure(probe: Probe, exc: Any, target: str, seconds: float, setting: str) -> None:
    import grpc

    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    probe.details["status"] = name
    text = f"gRPC {name}: {details}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        _connection_failure(probe, text, target, setting, seconds)
        return
    probe.reachable = True
    probe.error = text
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        probe.fix = _CREDENTIALS_FIX
        return
    probe.authenticated = True
    if code == grpc.StatusCode.UNIMPLEMENTED:
        probe.fix = _NOT_OTLP
    else:
        probe.fix = "the collector answered with an error: see its own logs"

"""A real OTLP receiver on 127.0.0.1 for tests, built on the official opentelemetry-proto
service definitions: gRPC (the collector's LogsService and TraceService, grpcio) and
HTTP/protobuf (POST /v1/logs and /v1/traces carrying ExportLogsServiceRequest /
ExportTraceServiceRequest, gzip or not).

    with OtlpReceiver() as receiver:
        ... OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint (or receiver.http_endpoint)
        logs = receiver.wait_for_logs(lambda logs: len(logs) >= 2)

Received data is flattened into plain dicts (`LogEntry`, `SpanEntry`) that tests compare.

Like a collector, it can answer a partial success (`rejected_logs`: that many records of
each logs request rejected, i.e. not stored; `partial_message`: its error message, alone a
warning), and its gRPC
server refuses messages over its receive limit (`grpc_max_receive_bytes`, gRPC's 4 MiB by
default) with RESOURCE_EXHAUSTED. `fail_logs(code, times=, after=)` makes coming gRPC logs
requests fail with a status (UNAVAILABLE: a collector restarting), storing nothing.
`log_requests` keeps the size and record count of each logs request stored.
"""

from __future__ import annotations

import gzip
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = [
    "LogEntry",
    "OtlpReceiver",
    "SpanEntry",
    "any_value",
    "closed_port",
    "self_signed_certificate",
]


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items if isinstance(kv, KeyValue)}


@dataclass
class LogEntry:
    resource: dict[str, Any]
    scope: str
    severity_number: int
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    trace_id: str  # lower-case hex, "" when absent
    span_id: str
    transport: str  # "grpc" or "http"
    headers: dict[str, str] = field(default_factory=dict)
    # the rest of the record's fields, as the logs data model names them
    timestamp: int = 0  # time_unix_nano
    observed_timestamp: int = 0  # observed_time_unix_nano
    flags: int = 0  # the W3C trace flags (bit 0: sampled)
    event_name: str = ""
    dropped_attributes_count: int = 0
    body_kind: str = ""  # the AnyValue's kind: "string_value", "kvlist_value", ...
    scope_version: str = ""


@dataclass
class SpanEntry:
    resource: dict[str, Any]
    scope: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind (2: SERVER)
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    transport: str
    headers: dict[str, str] = field(default_factory=dict)


class OtlpReceiver:
    """A gRPC and an HTTP OTLP endpoint on 127.0.0.1 (ports chosen by the OS, kept across
    `down()` and `up()`)."""

    def __init__(
        self,
        *,
        http_status: int = 200,
        tls: tuple[str, str] | None = None,
        require_client_cert: bool = False,
        rejected_logs: int = 0,
        partial_message: str | None = None,
        grpc_max_receive_bytes: int | None = None,
    ) -> None:
        """`tls`: (certificate file, key file) to serve TLS on both endpoints (the certificate
        also verifies client certificates when `require_client_cert`)."""
        self.tls = tls
        self.rejected_logs = rejected_logs
        self.partial_message = partial_message
        self.grpc_max_receive_bytes = grpc_max_receive_bytes
        self.log_requests: list[tuple[int, int]] = []  # (serialized bytes, records)
        self._failures: list[grpc.StatusCode | None] = []
        self.require_client_cert = require_client_cert
        self.logs: list[LogEntry] = []
        self.spans: list[SpanEntry] = []
        self.requests = 0
        self.http_status = http_status
        self._cond = threading.Condition()
        self._grpc_server: grpc.Server | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # -- endpoints ---------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    def endpoint(self, protocol: str) -> str:
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    def fail_logs(self, code: grpc.StatusCode, *, times: int = 1, after: int = 0) -> None:
        """Once `after` more gRPC logs requests were answered as usual, answer the next
        `times` with `code` (nothing stored)."""
        with self._cond:
            self._failures.extend([None] * after + [code] * times)

    def _take_failure(self) -> grpc.StatusCode | None:
        with self._cond:
            return self._failures.pop(0) if self._failures else None

    # -- recording ---------------------------------------------------------------------

    def _record_logs(
        self,
        request: logs_service_pb2.ExportLogsServiceRequest,
        transport: str,
        headers: dict[str, str],
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        """Store the request's records (but the rejected ones); the answer to send."""
        entries = []
        for resource_logs in request.resource_logs:
            resource = _attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    entries.append(
                        LogEntry(
                            resource=resource,
                            scope=scope_logs.scope.name,
                            severity_number=record.severity_number,
                            severity_text=record.severity_text,
                            body=any_value(record.body),
                            attributes=_attributes(record.attributes),
                            trace_id=record.trace_id.hex(),
                            span_id=record.span_id.hex(),
                            transport=transport,
                            headers=headers,
                            timestamp=record.time_unix_nano,
                            observed_timestamp=record.observed_time_unix_nano,
                            flags=record.flags,
                            event_name=record.event_name,
                            dropped_attributes_count=record.dropped_attributes_count,
                            body_kind=record.body.WhichOneof("value") or "",
                            scope_version=scope_logs.scope.version,
                        )
                    )
        rejected = min(self.rejected_logs, len(entries))
        with self._cond:
            self.requests += 1
            self.log_requests.append((request.ByteSize(), len(entries)))
            self.logs.extend(entries[: len(entries) - rejected])
            self._cond.notify_all()
        response = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
        if self.partial_message is not None:
            response.partial_success.error_message = self.partial_message
        return response

    def _record_spans(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        transport: str,
        headers: dict[str, str],
    ) -> None:
        entries = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    entries.append(
                        SpanEntry(
                            resource=resource,
                            scope=scope_spans.scope.name,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            transport=transport,
                            headers=headers,
                        )
                    )
        with self._cond:
            self.requests += 1
            self.spans.extend(entries)
            self._cond.notify_all()

    def _wait(self, items: Callable[[], list[Any]], predicate: Callable[[list[Any]], bool],
              timeout: float) -> list[Any]:  # fmt: skip
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(items())):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(items())

    def wait_for_logs(
        self, predicate: Callable[[list[LogEntry]], bool], timeout: float = 15.0
    ) -> list[LogEntry]:
        """The log records received once `predicate(records)` holds (or at the deadline)."""
        return self._wait(lambda: self.logs, predicate, timeout)

    def wait_for_spans(
        self, predicate: Callable[[list[SpanEntry]], bool], timeout: float = 15.0
    ) -> list[SpanEntry]:
        return self._wait(lambda: self.spans, predicate, timeout)

    # -- servers -----------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        receiver = self

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                failure = receiver._take_failure()
                if failure is not None:
                    context.abort(failure, "injected failure")
                return receiver._record_logs(request, "grpc", dict(context.invocation_metadata()))

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._record_spans(request, "grpc", dict(context.invocation_metadata()))
                return trace_service_pb2.ExportTraceServiceResponse()

        options = []
        if self.grpc_max_receive_bytes is not None:
            options.append(("grpc.max_receive_message_length", self.grpc_max_receive_bytes))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        if self.tls is None:
            self.grpc_port = server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        else:
            cert, key = (Path(p).read_bytes() for p in self.tls)
            credentials = grpc.ssl_server_credentials(
                [(key, cert)],
                root_certificates=cert if self.require_client_cert else None,
                require_client_auth=self.require_client_cert,
            )
            self.grpc_port = server.add_secure_port(f"127.0.0.1:{self.grpc_port}", credentials)
        server.start()
        self._grpc_server = server

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    data = gzip.decompress(data)
                elif encoding == "deflate":
                    data = zlib.decompress(data)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.http_status != 200:
                    self._reply(receiver.http_status, b"")
                    return
                if self.path == "/v1/logs":
                    logs_request = logs_service_pb2.ExportLogsServiceRequest()
                    logs_request.ParseFromString(data)
                    answer = receiver._record_logs(logs_request, "http", headers)
                    body = answer.SerializeToString()
                elif self.path == "/v1/traces":
                    trace_request = trace_service_pb2.ExportTraceServiceRequest()
                    trace_request.ParseFromString(data)
                    receiver._record_spans(trace_request, "http", headers)
                    body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                else:
                    self._reply(404, b"")
                    return
                self._reply(200, body)

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        http_server = ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
        http_server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            if self.require_client_cert:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(self.tls[0])
            http_server.socket = context.wrap_socket(http_server.socket, server_side=True)
        self.http_port = http_server.server_address[1]
        self._http_server = http_server
        self._http_thread = threading.Thread(
            target=http_server.serve_forever, name="otlp-receiver-http", daemon=True
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def down(self) -> None:
        """Stop both endpoints: clients get connection errors."""
        self.stop()

    def up(self) -> None:
        """Listen again, on the same ports."""
        if self._http_server is None:
            self.start()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def self_signed_certificate(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1/localhost that is its own CA (openssl CLI); returns
    (certificate file, key file)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)

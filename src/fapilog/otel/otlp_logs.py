"""What becomes of each OTLP log export beyond success or failure, for fapilog's `otlp`
exporter (`fapilog.exporters.otlp`): the records the collector rejected in a partial
success, and gRPC requests kept under the collector's message size limit.

- **Partial success.** A collector may accept a request yet reject some of its records: it
  answers ``ExportLogsServiceResponse.partial_success`` with ``rejected_log_records`` (and
  an ``error_message``). The SDK's exporters return SUCCESS and drop that answer; a
  `Delivery` reads it (over HTTP through a response hook on the exporter's requests
  Session, over gRPC through the stub it sends with), so the exporter can count the
  rejected records as dropped.
- **gRPC message limit.** A gRPC server refuses a message larger than its receive limit
  (4 MiB by default, the collector's too) with RESOURCE_EXHAUSTED, which the SDK takes for
  a transient error: it would resend the whole request until its timeout, then drop it. The
  stub serializes each request once; a request over the limit is sent in parts that fit,
  record by record. A server announcing a lower limit ("larger than max (N vs. M)") makes
  the stub adopt M and cut the rest of the request to it. A record larger than the limit on
  its own is tried alone; refused as too large, it is left out and counted (`too_large`).
  When the SDK retries a request after a transient error, the records already delivered
  are not sent again.

One export at a time: a `Delivery` belongs to one exporter, whose exports run on its one
worker thread (the only writer of its figures; `stats()` reads them from any thread).
"""

from __future__ import annotations

import re
import time
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs

__all__ = ["Delivery", "GRPC_MESSAGE_LIMIT", "LOGS_EXPORT_METHOD", "cut_request"]

GRPC_MESSAGE_LIMIT = 4 * 1024 * 1024  # gRPC's and the collector's default receive limit
LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
# answers that say "not now" rather than "never" (the SDK exporters retry these)
_TRANSIENT_HTTP = frozenset({408, 429})
_TRANSIENT_GRPC = frozenset(
    {
        "CANCELLED",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNAVAILABLE",
        "DATA_LOSS",
    }
)
# what one nested message costs beyond its own bytes: a field tag and a length (varint)
_FRAME = 6
_LARGER_THAN_MAX = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


class Delivery:
    """The outcome of the current export (`begin()` before each) and the gRPC message
    limit in force (`limit`, lowered when the collector announces a lower one)."""

    def __init__(self, limit: int = GRPC_MESSAGE_LIMIT) -> None:
        self.limit = limit
        self.limit_announced = False  # `limit` is the collector's own (learned from it)
        self.attached = False  # the exporter's transport reports through this Delivery
        self.rejected_total = 0
        self.too_large_total = 0
        self.split_requests = 0
        self.begin()

    def begin(self) -> None:
        """A new export starts: nothing answered, nothing delivered yet."""
        self.rejected = 0
        self.messages: list[str] = []
        self.position = 0  # gRPC: records of the request handled (delivered or left out)
        self.delivered = 0  # gRPC: records delivered
        self.too_large = 0  # gRPC: records larger than the limit on their own
        self.refused = False  # the collector refused a request for good (not transient)

    def leave_out_too_large(self) -> None:
        """gRPC: the next record is larger than the collector's limit on its own."""
        self.position += 1
        self.too_large += 1
        self.too_large_total += 1

    def read_answer(self, response: ExportLogsServiceResponse) -> None:
        partial = response.partial_success
        if partial.rejected_log_records > 0:
            self.rejected += partial.rejected_log_records
            self.rejected_total += partial.rejected_log_records
        if partial.error_message:
            self.messages.append(partial.error_message)

    # -- HTTP: a requests response hook ------------------------------------------------

    def response_hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """For ``session.hooks["response"]``: reads a 2xx answer's body (a serialized
        ExportLogsServiceResponse; an unreadable body is ignored)."""
        try:
            status = response.status_code
            if 400 <= status < 500 and status not in _TRANSIENT_HTTP:
                self.refused = True
            if 200 <= status < 300:
                answer = ExportLogsServiceResponse()
                answer.ParseFromString(response.content or b"")
                self.read_answer(answer)
        except Exception:  # not an OTLP answer: nothing to learn from it
            pass
        return response

    # -- gRPC: the stub the SDK's exporter sends with ----------------------------------

    def grpc_stub(self, channel: Any) -> LogsStub:
        """Used in place of the generated ``LogsServiceStub`` (see
        `fapilog.otel.log_exporters.replace_grpc_logs_stub`)."""
        return LogsStub(self, channel)

    def stats(self) -> dict[str, int]:
        return {
            "rejected_records": self.rejected_total,
            "too_large_records": self.too_large_total,
            "split_requests": self.split_requests,
            "grpc_message_limit": self.limit,
        }


class LogsStub:
    """``LogsService.Export`` on a gRPC channel, requests serialized once and cut to the
    `Delivery`'s limit (see the module docstring). Raises the RpcError of a failed part
    for the SDK to handle as always (retry or give up); delivered records stay delivered."""

    def __init__(self, delivery: Delivery, channel: Any) -> None:
        self._delivery = delivery
        self._call = channel.unary_unary(
            LOGS_EXPORT_METHOD,
            request_serializer=None,  # the request is sent as the bytes given
            response_deserializer=ExportLogsServiceResponse.FromString,
        )

    def Export(  # the gRPC method's name
        self,
        request: ExportLogsServiceRequest,
        metadata: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ExportLogsServiceResponse:
        import grpc  # type: ignore[import-untyped]

        delivery = self._delivery
        deadline = None if timeout is None else time.monotonic() + timeout
        total = count_records(request)
        parts = 0
        while delivery.position < total:
            data, count = cut_request(request, delivery.position, delivery.limit)
            if len(data) > delivery.limit and delivery.limit_announced:
                delivery.leave_out_too_large()  # one record, over the collector's limit
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                response = self._call(data, metadata=metadata, timeout=left, **kwargs)
            except grpc.RpcError as error:
                limit = _announced_limit(error)
                if limit is None:
                    code = getattr(error, "code", None)
                    name = getattr(code() if callable(code) else None, "name", "")
                    if name and name not in _TRANSIENT_GRPC:
                        delivery.refused = True
                    raise  # for the SDK: retried if transient, else the export fails
                # the collector's limit: cut what is left of the request to it (below
                # this part's size in any case, so that each refusal makes progress)
                delivery.limit = max(1, min(delivery.limit, limit, len(data) - 1))
                delivery.limit_announced = True
                continue
            parts += 1
            delivery.position += count
            delivery.delivered += count
            delivery.read_answer(response)
        if parts > 1:
            delivery.split_requests += 1
        answer = ExportLogsServiceResponse()
        if delivery.rejected:
            answer.partial_success.rejected_log_records = min(delivery.rejected, total)
        return answer


def _announced_limit(error: Any) -> int | None:
    """The receive limit a gRPC server announced in refusing a message as too large."""
    import grpc

    try:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            return None
        match = _LARGER_THAN_MAX.search(error.details() or "")
    except Exception:
        return None
    return int(match.group(2)) if match else None


def count_records(request: ExportLogsServiceRequest) -> int:
    return sum(
        len(scope_logs.log_records)
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
    )


def cut_request(request: ExportLogsServiceRequest, start: int, limit: int) -> tuple[bytes, int]:
    """The serialized request of the records from the `start`-th on (in request order),
    as many as fit in `limit` bytes, and how many that is. At least one record: when the
    first is larger than `limit` on its own, the result is larger than `limit`."""
    if start == 0:
        data: bytes = request.SerializeToString()
        if len(data) <= limit:
            return data, count_records(request)
    part = ExportLogsServiceRequest()
    size = count = index = 0
    for resource_logs in request.resource_logs:
        resource_target: Any = None
        for scope_logs in resource_logs.scope_logs:
            records = scope_logs.log_records
            if index + len(records) <= start:
                index += len(records)
                continue
            scope_target: Any = None
            for record in records[max(0, start - index) :]:
                cost = record.ByteSize() + _FRAME
                if resource_target is None:
                    cost += _header(ResourceLogs, resource_logs, "resource")
                if scope_target is None:
                    cost += _header(ScopeLogs, scope_logs, "scope")
                if count and size + cost > limit:
                    return part.SerializeToString(), count
                if resource_target is None:
                    resource_target = part.resource_logs.add(schema_url=resource_logs.schema_url)
                    resource_target.resource.CopyFrom(resource_logs.resource)
                if scope_target is None:
                    scope_target = resource_target.scope_logs.add(schema_url=scope_logs.schema_url)
                    scope_target.scope.CopyFrom(scope_logs.scope)
                scope_target.log_records.append(record)
                size += cost
                count += 1
            index += len(records)
    return part.SerializeToString(), count


def _header(kind: Any, source: Any, field: str) -> int:
    """The bytes a ResourceLogs / ScopeLogs costs without its children."""
    empty = kind(schema_url=source.schema_url)
    getattr(empty, field).CopyFrom(getattr(source, field))
    return int(empty.ByteSize()) + _FRAME

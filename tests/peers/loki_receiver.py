"""A strict, Loki-compatible push receiver for tests: a real HTTP server on 127.0.0.1.

It is strict where real Loki is strict (the rules read from Loki's source at v3.7.6):
``POST /loki/api/v1/push`` with ``Content-Type: application/json``,
``Content-Encoding`` none/gzip/deflate; timestamps as strings of decimal nanoseconds; lines as
strings; structured metadata as string-to-string objects; every string valid UTF-8 (a lone
surrogate escape such as ``"\\ud800"`` in a label, line or metadata string fails the whole
request, as Loki's JSON parser, jsonparser, refuses it); label names
``[a-zA-Z_][a-zA-Z0-9_]*`` (a bad name fails the whole request); empty label values dropped and
a stream left without labels rejected; at most 15 label names per stream; length limits for
label names/values and lines; timestamps not older than 7 days nor newer than now + 10 min;
out-of-order entries accepted unless more than 1 h behind the stream's newest (see below); exact
duplicates of an entry a stream holds silently dropped (Loki's head block: a resent entry is
stored once); the per-tenant ingestion rate limit (4 MiB/s, burst 6 MiB) answered with 429
for the whole request.

At its limits it answers as Loki 2.9's distributor and ingester do: validation is per entry,
the valid entries are stored, and one 400 lists the rejected ones grouped by message
(``"<n> errors like: <message>"`` joined by ``"; "``; a single failure without the count);
structured metadata while it is not allowed (``structured_metadata=False``, Loki 2.9's
default) rejects each entry carrying it, with Loki's "disallowed" message (Loki 2.8,
``structured_metadata="unsupported"``, refuses a JSON request carrying it as a whole and
ignores it in a protobuf one); the ingester stores stream by stream and
answers for the last stream only (each stream's outcome overwrites the previous one's): a
stream over the active stream limit (``max_streams``) is refused while the request's other
streams are stored (429 "Maximum active stream limit exceeded" when it came last), and
entries over 1 h behind their stream's newest are ignored (a 400 ending "total ignored: N
out of M for stream: {...}" when that stream came last); U+FFFD
in a label value fails its stream ("invalid UTF-8 rune"); on the JSON path, quotes,
backslashes and characters that are not printable in label values are stored escaped (Go's
``strconv.Quote``), on the protobuf path as they are. Also: 413 above 100 MiB; 422 for zero
streams (Loki 3.4+); 401 without ``X-Scope-OrgID`` when multi-tenant, and for the tenant ids
``.`` and ``..``.

Tests can make it fail (`fail`: any status for a time or a number of requests, with an
optional Retry-After), answer slowly (`slow`), go down and come back on the same port
(`down`/`up`), act as an authenticating proxy (`basic`/`bearer`), and query what was stored:
over HTTP like Loki (``GET /loki/api/v1/query_range``, ``/labels``, ``/label/<n>/values``) or
in Python (`entries`, `streams`, `pushes`, `wait_for_entries`).

Any other Content-Type is read as Loki reads it: a raw-block snappy body (not valid snappy:
400) holding a ``logproto.PushRequest``. The protobuf is decoded by the ``protobuf`` runtime
from a descriptor built here (`push_request_class`, from Loki's ``pkg/push/push.proto``), never
by fapilog's encoder, so it checks the exporter's wire format independently. Each stream's
``labels`` string is parsed as Loki's ``syntax.ParseLabels`` does: ``{name="value", ...}``
with Go-quoted (or backquoted) values, a trailing comma allowed; a stream whose labels do not
parse is rejected on its own (partial acceptance, as Loki's distributor does), then the same
rules as for JSON apply (a label required, duplicates refused, limits, timestamps, metadata).
Timestamps must have nanos in [0, 1e9) (else the whole request is a 400, as gogoproto's
``StdTimeUnmarshal``); a missing timestamp is Go's zero time, so "too old". Decoded pushes
are kept in `Push.body` in the JSON body's shape, so tests inspect both encodings alike.

Not implemented: LogQL beyond stream selectors, Loki 3.x's automatic ``service_name`` /
``detected_level``, Prometheus 3's quoted UTF-8 label names in the labels string.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Entry", "LokiReceiver", "Push", "grouped", "json_label_value", "json_names"]

PUSH_PATH = "/loki/api/v1/push"
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TENANT = re.compile(r"^[A-Za-z0-9!\-_.*'()]{1,150}$")
NS_DIGITS = re.compile(r"^[0-9]+$")
MAX_LABEL_NAMES = 15
MAX_LABEL_NAME_LENGTH = 1024
MAX_LABEL_VALUE_LENGTH = 2048
MAX_LINE_SIZE = 256 * 1024
MAX_METADATA_SIZE = 64 * 1024
MAX_METADATA_ENTRIES = 128
MAX_BODY = 100 * 1024 * 1024
REJECT_OLD = 7 * 24 * 3600 * 10**9
CREATION_GRACE = 10 * 60 * 10**9
OUT_OF_ORDER_WINDOW = 3600 * 10**9
RATE_BYTES = 4 * 1024 * 1024
BURST_BYTES = 6 * 1024 * 1024
MAX_STREAMS = 5000
SINGLE_TENANT = "fake"  # what Loki calls the tenant when auth is disabled
STREAM_LIMIT = (
    "Maximum active stream limit exceeded, reduce the number of active streams (reduce labels "
    "or reduce label values), or contact your Loki administrator to see if the limit can be "
    "increased, user: '{tenant}'"
)
DISALLOWED_METADATA = (
    "stream '{labels}' includes structured metadata, but this feature is disallowed. Please "
    "see `limits_config.structured_metadata` or contact your Loki administrator to enable it."
)


@cache
def push_request_class() -> Any:
    """``logproto.PushRequest`` as a protobuf message class, from a descriptor written here
    after Loki's ``pkg/push/push.proto`` (plus the well-known timestamp.proto), in a pool
    of its own."""
    from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
    from google.protobuf.message_factory import GetMessageClass

    field_type = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field_type.LABEL_OPTIONAL, field_type.LABEL_REPEATED
    string, message = field_type.TYPE_STRING, field_type.TYPE_MESSAGE
    proto = descriptor_pb2.FileDescriptorProto(
        name="pkg/push/push.proto",
        package="logproto",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    fields: dict[str, list[tuple[str, int, int, int, str]]] = {
        "PushRequest": [("streams", 1, message, repeated, ".logproto.StreamAdapter")],
        "StreamAdapter": [
            ("labels", 1, string, optional, ""),
            ("entries", 2, message, repeated, ".logproto.EntryAdapter"),
            ("hash", 3, field_type.TYPE_UINT64, optional, ""),
        ],
        "EntryAdapter": [
            ("timestamp", 1, message, optional, ".google.protobuf.Timestamp"),
            ("line", 2, string, optional, ""),
            ("structuredMetadata", 3, message, repeated, ".logproto.LabelPairAdapter"),
        ],
        "LabelPairAdapter": [("name", 1, string, optional, ""), ("value", 2, string, optional, "")],
    }
    for name, specs in fields.items():
        described = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in specs:
            added = described.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


class BadRequest(Exception):
    """The whole request is rejected with this status and message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Entry:
    timestamp: int
    line: str
    metadata: dict[str, str]

    def json(self) -> dict[str, Any]:
        return json.loads(self.line)


@dataclass
class Push:
    """One POST to the push endpoint, as the receiver saw it."""

    status: int
    headers: dict[str, str]
    tenant: str | None
    accepted: int = 0
    rejected: int = 0
    body: Any = None  # the decoded JSON, when it parsed
    message: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Failure:
    status: int
    until: float | None
    times: int | None
    retry_after: str | None
    body: str
    echo_headers: bool


class _Bucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, amount: float) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


class _Stream:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.entries: list[Entry] = []
        self.newest = 0
        # (timestamp, line) of what is stored: Loki's head block ignores an exact
        # duplicate (a resent entry), in or out of order
        self.seen: set[tuple[int, str]] = set()


class LokiReceiver:
    """See the module docstring. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        auth_enabled: bool = False,
        basic: tuple[str, str] | None = None,
        bearer: str | None = None,
        structured_metadata: bool | str = True,  # False: Loki 2.9's default; "unsupported": 2.8
        rate_bytes: float = RATE_BYTES,
        burst_bytes: float = BURST_BYTES,
        max_streams: int = MAX_STREAMS,
        zero_streams_status: int = 422,
    ) -> None:
        self.auth_enabled = auth_enabled
        self.basic = basic
        self.bearer = bearer
        self.structured_metadata = structured_metadata
        self.rate_bytes = rate_bytes
        self.burst_bytes = burst_bytes
        self.max_streams = max_streams
        self.zero_streams_status = zero_streams_status
        self.pushes: list[Push] = []
        self._tenants: dict[str, dict[tuple[tuple[str, str], ...], _Stream]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._cond = threading.Condition()
        self._failures: list[_Failure] = []
        self._delay = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LokiReceiver:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def down(self) -> None:
        """Stop listening and cut open connections: clients get connection errors."""
        self.stop()

    def up(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self.start()

    def __enter__(self) -> LokiReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def push_url(self) -> str:
        return self.url + PUSH_PATH

    # -- failure modes -------------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        seconds: float | None = None,
        times: int | None = None,
        retry_after: float | str | None = None,
        body: str | None = None,
        echo_headers: bool = False,
    ) -> None:
        """Answer pushes with `status` (nothing stored) for `seconds` or `times` requests
        (neither: until `clear_failures()`). `echo_headers` puts the request headers into
        the error body, as a misbehaving proxy might."""
        until = time.monotonic() + seconds if seconds is not None else None
        text = body if body is not None else f"injected failure {status}"
        with self._cond:
            self._failures.append(
                _Failure(
                    status,
                    until,
                    times,
                    None if retry_after is None else str(retry_after),
                    text,
                    echo_headers,
                )
            )

    def clear_failures(self) -> None:
        with self._cond:
            self._failures.clear()

    def slow(self, seconds: float) -> None:
        """Wait `seconds` before answering each push (0: normal)."""
        self._delay = seconds

    def _take_failure(self) -> _Failure | None:
        with self._cond:
            now = time.monotonic()
            for failure in list(self._failures):
                if failure.until is not None and now >= failure.until:
                    self._failures.remove(failure)
                    continue
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                return failure
        return None

    # -- inspection ----------------------------------------------------------------------

    def streams(self, tenant: str | None = None) -> dict[tuple[tuple[str, str], ...], list[Entry]]:
        with self._cond:
            stored = self._tenants.get(tenant or SINGLE_TENANT, {})
            return {key: list(stream.entries) for key, stream in stored.items()}

    def entries(self, tenant: str | None = None, **labels: str) -> list[Entry]:
        """Stored entries of the streams whose labels include `labels`, stream by stream
        in arrival order."""
        found: list[Entry] = []
        for key, entries in self.streams(tenant).items():
            if all(dict(key).get(name) == value for name, value in labels.items()):
                found.extend(entries)
        return found

    def count(self, tenant: str | None = None) -> int:
        with self._cond:
            stored = self._tenants.get(tenant or SINGLE_TENANT, {})
            return sum(len(stream.entries) for stream in stored.values())

    def wait_for_entries(self, count: int, timeout: float, tenant: str | None = None) -> bool:
        """Block until at least `count` entries are stored (False at `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count(tenant) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def wait_for_pushes(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.pushes) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- the push endpoint ---------------------------------------------------------------

    def handle_push(self, headers: dict[str, str], raw: bytes) -> tuple[int, str, dict[str, str]]:
        """Validate and store one push; returns (status, text body, extra headers)."""
        if self._delay:
            time.sleep(self._delay)
        tenant = headers.get("x-scope-orgid")
        push = Push(status=204, headers=dict(headers), tenant=tenant)
        try:
            failure = self._take_failure()
            if failure is not None:
                text = failure.body
                if failure.echo_headers:
                    text += " " + json.dumps(headers)
                extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                raise _Injected(failure.status, text, extra)
            self._authenticate(headers)
            tenant_id = self._tenant(tenant)
            body = self._decode(headers, raw)
            problems: list[str] = []
            if not isinstance(body, push_request_class()):
                push.body = body
                streams = self._parse(body)
            else:
                streams, problems = self._parse_protobuf(body)
                push.body = _json_shape(streams)
            if not streams and not problems:
                if self.zero_streams_status != 204:
                    raise BadRequest("no streams in the push request", self.zero_streams_status)
                return self._done(push, 204, "", {})
            accepted, rejected, limited = self._store(tenant_id, streams, problems)
            push.accepted, push.rejected = accepted, len(rejected)
            if limited is not None:  # Loki's distributor answers the ingester's error first
                return self._done(push, limited[0], limited[1] + "\n", {})
            if rejected:
                return self._done(push, 400, grouped(rejected) + "\n", {})
            return self._done(push, 204, "", {})
        except _Injected as exc:
            return self._done(push, exc.status, exc.text + "\n", exc.headers)
        except BadRequest as exc:
            return self._done(push, exc.status, f"{exc}\n", {})

    def _done(
        self, push: Push, status: int, text: str, extra: dict[str, str]
    ) -> tuple[int, str, dict[str, str]]:
        push.status = status
        push.message = text.strip()
        with self._cond:
            self.pushes.append(push)
            self._cond.notify_all()
        return status, text, extra

    def _authenticate(self, headers: dict[str, str]) -> None:
        given = headers.get("authorization", "")
        if self.basic is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if given != expected:
                raise BadRequest("unauthorized", 401)
        if self.bearer is not None and given != f"Bearer {self.bearer}":
            raise BadRequest("unauthorized", 401)

    def _tenant(self, tenant: str | None) -> str:
        if not self.auth_enabled:
            return SINGLE_TENANT
        if not tenant:
            raise BadRequest("no org id", 401)
        if tenant in (".", ".."):
            raise BadRequest("tenant ID is '.' or '..'", 401)
        if not TENANT.match(tenant):
            raise BadRequest(f"tenant ID {tenant!r} contains unsupported characters", 400)
        return tenant

    @staticmethod
    def _decode(headers: dict[str, str], raw: bytes) -> Any:
        if len(raw) > MAX_BODY:
            raise BadRequest("request body too large", 413)
        encoding = headers.get("content-encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            elif encoding:
                raise BadRequest(f'Content-Encoding "{encoding}" not supported')
        except (OSError, zlib.error, EOFError) as exc:
            raise BadRequest(f"cannot decompress body: {exc}") from None
        content_type = headers.get("content-type")
        if not content_type:
            raise BadRequest("missing Content-Type header")
        media = content_type.split(";")[0].strip().lower()
        if media != "application/json":  # Loki: anything else is protobuf + snappy
            import cramjam
            from google.protobuf.message import DecodeError

            try:
                data = bytes(cramjam.snappy.decompress_raw(raw))
            except Exception as exc:
                raise BadRequest(f"decompressing snappy: {exc}") from None
            try:
                return push_request_class().FromString(data)
            except DecodeError as exc:
                raise BadRequest(f"proto: logproto.PushRequest: {exc}") from None
        try:
            body = json.loads(raw, object_pairs_hook=_no_duplicates)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"loghttp.PushRequest: {exc}") from None
        try:  # Python's decoder keeps a lone surrogate escape; Loki's refuses the request
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                "loghttp.PushRequest: Encountered an invalid escape sequence in a string"
            ) from None
        return body

    def _parse(self, body: Any) -> list[tuple[dict[str, str], list[Entry]]]:
        """Structure, label names and entry types: any error fails the whole request,
        as Loki's JSON decoder does."""
        if not isinstance(body, dict) or not isinstance(body.get("streams"), list):
            raise BadRequest('loghttp.PushRequest: expected an object with "streams"')
        result: list[tuple[dict[str, str], list[Entry]]] = []
        for stream in body["streams"]:
            if not isinstance(stream, dict):
                raise BadRequest("loghttp.PushRequest: a stream must be an object")
            labels = stream.get("stream", {})
            if not isinstance(labels, dict):
                raise BadRequest('loghttp.PushRequest: "stream" must be an object')
            for name, value in labels.items():
                if not LABEL_NAME.match(name):
                    bad = next((c for c in name if not (c.isalnum() or c == "_")), name[:1])
                    raise BadRequest(
                        f"couldn't parse labels: 1:2: parse error: unexpected character "
                        f"inside braces: {bad!r}"
                    )
                if not isinstance(value, str):
                    raise BadRequest(f"loghttp.PushRequest: label {name} value is not a string")
            labels = {name: json_label_value(value) for name, value in labels.items()}
            values = stream.get("values")
            if not isinstance(values, list):
                raise BadRequest('loghttp.PushRequest: "values" must be an array')
            entries = [self._entry(value) for value in values]
            result.append((labels, entries))
        return result

    def _parse_protobuf(
        self, body: Any
    ) -> tuple[list[tuple[dict[str, str], list[Entry]]], list[str]]:
        """A decoded ``logproto.PushRequest``: labels strings parsed per stream (a stream
        whose labels do not parse is rejected alone, as Loki's distributor does); bad
        timestamps or disallowed metadata fail the whole request."""
        result: list[tuple[dict[str, str], list[Entry]]] = []
        problems: list[str] = []
        for stream in body.streams:
            try:
                labels = parse_labels_string(stream.labels)
            except BadRequest as exc:
                problems.append(f"couldn't parse labels {stream.labels!r}: {exc}")
                continue
            entries: list[Entry] = []
            for adapter in stream.entries:
                stamp = adapter.timestamp
                if not 0 <= stamp.nanos < 10**9:
                    raise BadRequest(
                        f"proto: timestamp: nanos not in range [0, 1e9): {stamp.nanos}"
                    )
                seconds = stamp.seconds if adapter.HasField("timestamp") else GO_ZERO_SECONDS
                metadata = {pair.name: pair.value for pair in adapter.structuredMetadata}
                if self.structured_metadata == "unsupported":  # Loki 2.8: an unknown field
                    metadata = {}
                entries.append(Entry(seconds * 10**9 + stamp.nanos, adapter.line, metadata))
            result.append((labels, entries))
        return result, problems

    def _entry(self, value: Any) -> Entry:
        if not isinstance(value, list) or len(value) not in (2, 3):
            raise BadRequest("loghttp.PushRequest: an entry is [timestamp, line(, metadata)]")
        timestamp, line = value[0], value[1]
        if not isinstance(timestamp, str) or not NS_DIGITS.match(timestamp):
            raise BadRequest(
                f"loghttp.PushRequest: timestamp {timestamp!r}: expected a string of "
                "nanoseconds since the epoch"
            )
        if not isinstance(line, str):
            raise BadRequest("loghttp.PushRequest: the log line must be a string")
        metadata: dict[str, str] = {}
        if len(value) == 3:
            if self.structured_metadata == "unsupported":  # Loki 2.8: the whole request
                raise BadRequest(
                    "loghttp.PushRequest.Streams: []*loghttp.Stream: Values: decode entry: "
                    "expected 2 values, got 3"
                )
            raw = value[2]
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise BadRequest(
                    "loghttp.PushRequest: structured metadata must map strings to strings"
                )
            metadata = raw
        return Entry(int(timestamp), line, metadata)

    def _store(
        self,
        tenant: str,
        streams: list[tuple[dict[str, str], list[Entry]]],
        problems: list[str] | None = None,
    ) -> tuple[int, list[str], tuple[int, str] | None]:
        """Per-stream and per-entry validation (partial acceptance), rate limits, storage;
        `problems`: streams already rejected (protobuf labels that did not parse). Returns
        the entries stored, the distributor's rejections, and the ingester's answer for the
        last stream of the request (None: it was stored; a stream over the active stream
        limit is refused while the others are stored, Loki's ingester creating streams one
        by one)."""
        rejected: list[str] = list(problems or ())
        valid: list[tuple[tuple[tuple[str, str], ...], dict[str, str], list[Entry]]] = []
        for labels, entries in streams:
            kept = {name: value for name, value in labels.items() if value != ""}
            problem = None
            if not kept:
                problem = "error at least one label pair is required per stream"
            elif len(kept) > MAX_LABEL_NAMES:
                problem = f"stream '{kept}' has {len(kept)} label names; limit {MAX_LABEL_NAMES}"
            elif any(len(name.encode()) > MAX_LABEL_NAME_LENGTH for name in kept):
                problem = "label name too long"
            elif any(len(value.encode()) > MAX_LABEL_VALUE_LENGTH for value in kept.values()):
                problem = "label value too long"
            elif any("\ufffd" in value for value in kept.values()):
                problem = f"error parsing labels '{kept}' with error: invalid UTF-8 rune"
            if problem:
                rejected.append(problem)
                continue
            valid.append((tuple(sorted(kept.items())), kept, entries))
        size = sum(
            len(entry.line.encode()) + _metadata_size(entry.metadata)
            for _, _, entries in valid
            for entry in entries
        )
        now = time.time_ns()
        accepted = 0
        with self._cond:
            stored = self._tenants.setdefault(tenant, {})
            bucket = self._buckets.setdefault(tenant, _Bucket(self.rate_bytes, self.burst_bytes))
            if not bucket.take(size):
                raise _Injected(
                    429,
                    f"Ingestion rate limit exceeded for user {tenant} (limit: "
                    f"{int(self.rate_bytes)} bytes/sec) while attempting to ingest "
                    f"'{sum(len(e) for _, _, e in valid)}' lines totaling '{size}' bytes, "
                    "reduce log volume or contact your Loki administrator to see if the "
                    "limit can be increased",
                    {},
                )
            limited: tuple[int, str] | None = None
            passed: list[tuple[tuple[tuple[str, str], ...], dict[str, str], list[Entry]]] = []
            for key, labels, entries in valid:
                good: list[Entry] = []
                for entry in entries:  # the distributor's validation, entry by entry
                    error = _entry_error(labels, entry, now, bool(self.structured_metadata))
                    if error is not None:
                        rejected.append(error)
                    else:
                        good.append(entry)
                if good:
                    passed.append((key, labels, good))
            # the ingester, stream by stream; each stream's outcome overwrites the last one's
            # (Loki's instance.Push), so the answer describes the last stream only
            for key, labels, entries in passed:
                stream = stored.get(key)
                if stream is None:
                    if len(stored) >= self.max_streams:
                        limited = (429, STREAM_LIMIT.format(tenant=tenant))
                        continue
                    stream = stored[key] = _Stream(labels)
                ignored: list[Entry] = []
                for entry in entries:
                    if entry.timestamp < stream.newest - OUT_OF_ORDER_WINDOW:
                        ignored.append(entry)
                        continue
                    identity = (entry.timestamp, entry.line)  # (Loki compares these two)
                    if identity in stream.seen:
                        continue  # an exact duplicate: silently dropped
                    stream.seen.add(identity)
                    stream.entries.append(entry)
                    stream.newest = max(stream.newest, entry.timestamp)
                    accepted += 1
                limited = _ignored(ignored, len(entries), labels, tenant) if ignored else None
        return accepted, rejected, limited

    # -- the query API -------------------------------------------------------------------

    def query_range(self, params: dict[str, str], tenant: str | None) -> dict[str, Any]:
        matchers = parse_selector(params.get("query", ""))
        now = time.time_ns()
        end = _parse_time(params.get("end"), now)
        start = _parse_time(params.get("start"), end - 3600 * 10**9)
        limit = int(params.get("limit", "100"))
        forward = params.get("direction", "backward").lower() == "forward"
        found: list[tuple[int, int, dict[str, str], Entry]] = []
        order = 0
        for key, entries in self.streams(None if not self.auth_enabled else tenant).items():
            labels = dict(key)
            if not all(matcher(labels) for matcher in matchers):
                continue
            for entry in entries:
                if start <= entry.timestamp < end:
                    found.append((entry.timestamp, order, labels, entry))
                    order += 1
        found.sort(key=lambda item: (item[0], item[1]), reverse=not forward)
        grouped: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for _, _, labels, entry in found[:limit]:
            merged = {**labels, **entry.metadata}
            grouped.setdefault(tuple(sorted(merged.items())), []).append(
                [str(entry.timestamp), entry.line]
            )
        result = [{"stream": dict(key), "values": values} for key, values in grouped.items()]
        return {"status": "success", "data": {"resultType": "streams", "result": result}}

    def label_names(self, tenant: str | None) -> list[str]:
        names = {name for key in self.streams(tenant) for name, _ in key}
        return sorted(names)

    def label_values(self, name: str, tenant: str | None) -> list[str]:
        return sorted({dict(key)[name] for key in self.streams(tenant) if name in dict(key)})


class _Injected(Exception):
    def __init__(self, status: int, text: str, headers: dict[str, str]) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"couldn't parse labels: duplicate label name {key!r}")
        result[key] = value
    return result


GO_ZERO_SECONDS = -62135596800  # time.Time{}: 0001-01-01T00:00:00Z
_GO_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"',
}  # fmt: skip
_LABEL_IDENTIFIER = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SPACE = re.compile(r"\s*")


def go_unquote(text: str, start: int) -> tuple[str, int]:
    """The Go string literal at `text[start]` (``"..."`` with Go's escapes, or a raw
    backquoted string) as (value, index after it); BadRequest when it is not one, as
    Go's ``strconv.Unquote``: unknown escapes, a raw newline, a surrogate ``\\u``, and
    bytes that are not UTF-8 are errors."""
    quote = text[start : start + 1]
    if quote == "`":
        end = text.find("`", start + 1)
        if end < 0:
            raise BadRequest("unterminated raw string")
        return text[start + 1 : end], end + 1
    if quote != '"':
        raise BadRequest(f"expected a quoted label value at {text[start : start + 10]!r}")
    out = bytearray()
    position = start + 1
    while True:
        if position >= len(text):
            raise BadRequest("unterminated quoted string")
        char = text[position]
        if char == '"':
            break
        if char == "\n":
            raise BadRequest("newline in string")
        if char != "\\":
            out += char.encode()
            position += 1
            continue
        kind = text[position + 1 : position + 2]
        if kind in _GO_SIMPLE_ESCAPES:
            out += _GO_SIMPLE_ESCAPES[kind].encode()
            position += 2
            continue
        digits = {"x": 2, "u": 4, "U": 8}.get(kind)
        if digits is not None:
            hex_digits = text[position + 2 : position + 2 + digits]
            if len(hex_digits) != digits or not re.fullmatch(r"[0-9a-fA-F]+", hex_digits):
                raise BadRequest(f"invalid escape \\{kind}{hex_digits!r}")
            value = int(hex_digits, 16)
            if kind == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise BadRequest(f"invalid rune escape \\{kind}{hex_digits}")
            else:
                out += chr(value).encode()
            position += 2 + digits
            continue
        octal = text[position + 1 : position + 4]
        if re.fullmatch(r"[0-7]{3}", octal) and int(octal, 8) <= 255:
            out.append(int(octal, 8))
            position += 4
            continue
        raise BadRequest(f"invalid escape {text[position : position + 2]!r} in quoted string")
    try:
        return out.decode("utf-8"), position + 1
    except UnicodeDecodeError:
        raise BadRequest("label value is not valid UTF-8") from None


def parse_labels_string(text: str) -> dict[str, str]:
    """A protobuf stream's labels, ``{name="value", ...}``, as Loki's ``syntax.ParseLabels``
    (Prometheus' ``ParseMetric``) reads them: identifiers for names, Go-quoted values,
    whitespace anywhere between tokens, an optional trailing comma; duplicate names are
    an error (Loki's validator: "duplicate label name"). Empty values are kept here and
    dropped by `_store`, as for JSON."""
    position = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    if text[position : position + 1] != "{":
        raise BadRequest("1:1: parse error: unexpected character, expected '{'")
    labels: dict[str, str] = {}
    position += 1
    while True:
        position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
        if text[position : position + 1] == "}":
            position += 1
            break
        name_match = _LABEL_IDENTIFIER.match(text, position)
        if name_match is None:
            bad = text[position : position + 1] or "end of input"
            raise BadRequest(f"parse error: unexpected character inside braces: {bad!r}")
        name = name_match.group()
        position = _SPACE.match(text, name_match.end()).end()  # type: ignore[union-attr]
        if text[position : position + 1] != "=":
            raise BadRequest(f"parse error: expected '=' after label name {name!r}")
        position = _SPACE.match(text, position + 1).end()  # type: ignore[union-attr]
        value, position = go_unquote(text, position)
        if name in labels:
            raise BadRequest(f"duplicate label name {name!r}")
        labels[name] = value
        position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
        separator = text[position : position + 1]
        if separator == ",":
            position += 1
        elif separator != "}":
            raise BadRequest(f"parse error: unexpected {separator or 'end of input'!r} in labels")
    if text[position:].strip():
        raise BadRequest(f"parse error: unexpected {text[position:]!r} after labels")
    return labels


def _json_shape(streams: list[tuple[dict[str, str], list[Entry]]]) -> dict[str, Any]:
    """A decoded protobuf push in the JSON body's shape (for tests to inspect alike)."""
    return {
        "streams": [
            {
                "stream": labels,
                "values": [
                    [str(e.timestamp), e.line, e.metadata]
                    if e.metadata
                    else [str(e.timestamp), e.line]
                    for e in entries
                ],
            }
            for labels, entries in streams
        ]
    }


def _ignored(
    ignored: list[Entry], total: int, labels: dict[str, str], tenant: str
) -> tuple[int, str]:
    """The ingester's answer for a stream some of whose entries were too far behind."""
    lines = [
        f"entry with timestamp {entry.timestamp} ignored, reason: 'entry too far behind, "
        f"oldest acceptable timestamp is: ...',\n"
        for entry in ignored
    ]
    stream = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    tail = f"user '{tenant}', total ignored: {len(ignored)} out of {total} for stream: {stream}"
    return 400, "".join(lines) + tail


def grouped(errors: list[str]) -> str:
    """A 400 body as Loki's distributor writes it: one failure as it is; else each distinct
    message once, ``"<n> errors like: <message>"``, joined by ``"; "``."""
    if len(errors) == 1:
        return errors[0]
    counts: dict[str, int] = {}
    for error in errors:
        counts[error] = counts.get(error, 0) + 1
    return "; ".join(f"{count} errors like: {message}" for message, count in counts.items())


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\v": "\\v",
}


def json_label_value(value: str) -> str:
    """A label value of a JSON push as Loki stores it: quotes, backslashes and characters
    that are not printable escaped as Go's ``strconv.Quote`` writes them (a protobuf push's
    labels string is unquoted instead, so its values are stored as they are)."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value
    out = []
    for char in value:
        escaped = _GO_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def json_names(line: str) -> set[str]:
    """The label names LogQL's ``| json`` extracts from a line: nested objects flattened
    with ``_``, names sanitised (every character but ``[a-zA-Z0-9_]`` becomes ``_``)."""
    names: set[str] = set()

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}_{key}" if prefix else str(key), item)
        else:
            names.add(re.sub(r"[^a-zA-Z0-9_]", "_", prefix))

    walk("", json.loads(line))
    return names


def _metadata_size(metadata: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def _entry_error(
    labels: dict[str, str], entry: Entry, now: int, metadata_allowed: bool
) -> str | None:
    """The distributor's checks of one entry, in Loki's order (validateEntry): too old, too
    new, line size, structured metadata disallowed, too large, too many."""
    if entry.timestamp < now - REJECT_OLD:
        return f"entry for stream '{labels}' has timestamp too old: {entry.timestamp}"
    if entry.timestamp > now + CREATION_GRACE:
        return f"entry for stream '{labels}' has timestamp too new: {entry.timestamp}"
    if len(entry.line.encode()) > MAX_LINE_SIZE:
        return (
            f"Max entry size '{MAX_LINE_SIZE}' bytes exceeded for stream '{labels}' while "
            f"adding an entry with length '{len(entry.line.encode())}' bytes"
        )
    if entry.metadata and not metadata_allowed:
        return DISALLOWED_METADATA.format(labels=labels)
    if _metadata_size(entry.metadata) > MAX_METADATA_SIZE:
        return (
            f"stream '{labels}' has structured metadata too large: "
            f"'{_metadata_size(entry.metadata)}' bytes, limit: '{MAX_METADATA_SIZE}' bytes"
        )
    if len(entry.metadata) > MAX_METADATA_ENTRIES:
        return (
            f"stream '{labels}' has too many structured metadata labels: "
            f"'{len(entry.metadata)}', limit: '{MAX_METADATA_ENTRIES}'"
        )
    return None


_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_selector(query: str) -> list[Any]:
    """A LogQL stream selector ``{a="b", c=~"d.*"}`` as a list of predicates."""
    text = query.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise BadRequest(
            f"parse error: this receiver supports stream selectors only, got {query!r}"
        )
    inner = text[1:-1].strip()
    matchers: list[Any] = []
    position = 0
    while position < len(inner):
        match = _MATCHER.match(inner, position)
        if match is None:
            raise BadRequest(f"parse error at {inner[position:]!r}")
        name, op, raw, _ = match.groups()
        value = json.loads(f'"{raw}"')
        matchers.append(_matcher(name, op, value))
        position = match.end()
    if not matchers:
        raise BadRequest("queries require at least one regexp or equality matcher")
    return matchers


def _matcher(name: str, op: str, value: str) -> Any:
    if op == "=":
        return lambda labels: labels.get(name, "") == value
    if op == "!=":
        return lambda labels: labels.get(name, "") != value
    pattern = re.compile(value)
    if op == "=~":
        return lambda labels: pattern.fullmatch(labels.get(name, "")) is not None
    return lambda labels: pattern.fullmatch(labels.get(name, "")) is None


def _parse_time(value: str | None, default: int) -> int:
    if not value:
        return default
    if NS_DIGITS.match(value):
        return int(value)
    try:
        return int(float(value) * 1e9)
    except ValueError:
        raise BadRequest(f"invalid time {value!r}") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    receiver: LokiReceiver

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and went away is normal here: no traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http sets it: else the headers and the body of an answer,
    # written apart, meet the client's delayed ACK (40 ms a request)
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._chunks())
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return
            yield self.rfile.read(size)
            self.rfile.readline()

    def _send(
        self,
        status: int,
        text: str = "",
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        data = text.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        raw = self._body()
        if path != PUSH_PATH:
            self._send(404, "404 page not found\n")
            return
        try:
            status, text, headers = self.server.receiver.handle_push(self._headers(), raw)
        except Exception as exc:  # a receiver bug must show up in tests, not hang them
            status, text, headers = 500, f"receiver error: {exc!r}\n", {}
        self._send(status, text, headers)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        receiver = self.server.receiver
        tenant = self._headers().get("x-scope-orgid")
        try:
            if parts.path == PUSH_PATH:
                self._send(405, "405 method not allowed\n")
            elif parts.path == "/ready":
                self._send(200, "ready\n")
            elif parts.path == "/loki/api/v1/query_range":
                self._json(receiver.query_range(params, tenant))
            elif parts.path == "/loki/api/v1/labels":
                self._json({"status": "success", "data": receiver.label_names(tenant)})
            elif parts.path.startswith("/loki/api/v1/label/") and parts.path.endswith("/values"):
                name = parts.path[len("/loki/api/v1/label/") : -len("/values")]
                self._json({"status": "success", "data": receiver.label_values(name, tenant)})
            else:
                self._send(404, "404 page not found\n")
        except BadRequest as exc:
            self._send(exc.status, f"{exc}\n")

    def _json(self, payload: Any) -> None:
        self._send(200, json.dumps(payload), content_type="application/json")

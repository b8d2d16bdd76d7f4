"""The Grafana Loki exporter: pushes JSON lines to ``/loki/api/v1/push`` (JSON body, gzip;
or Loki's native protobuf body, snappy-compressed, with ``encoding="protobuf"``).

It runs on its `ExportProcessor`'s worker thread, which batches by age (``batch_wait``,
1 s); each batch is grouped into streams by a small set of labels, entries sorted by time
per stream, and cut into requests of at most ``batch_bytes`` (1 MiB) of line and metadata
bytes. Delivery follows promtail: 429, 5xx and connection errors are retried with
exponential backoff and jitter (0.5 s -> 5 min, 10 retries, ``Retry-After`` honoured);
any other 4xx drops the request and counts it (Loki has stored the valid part of a
rejected batch, so resending it would duplicate). ``timeout`` bounds a whole push (connect,
send, the whole response; `fapilog.exporters._deadline`): a server dripping its answer is cut
off then and the push retried like any timeout. The backoff waits on an Event that
`shutdown()` sets, so a dead Loki never holds the process past fapilog's shutdown deadline.
While a push is retried, new records wait in the exporter's bounded queue, where the
overflow policy applies: the exporter itself holds only the batch being sent.

Credentials (basic auth password, bearer token) are kept as `SecretStr`, put in a header
per request and scrubbed from every diagnostic, as is the userinfo of any URL (the push URL,
a proxy's); `repr()` never shows them. Every label value, line and structured metadata value
sent is valid UTF-8 (`fapilog.exporters.loki_protobuf.utf8_text`): a lone surrogate in a
label value cannot cost the batch its push.

The protobuf body is built in `fapilog.exporters.loki_protobuf`; URL, labels and the
checks made at configuration time are in `fapilog.exporters.loki_config`.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import logging
import random
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from fapilog import _diag
from fapilog.exporters._deadline import DeadlineTransport, environment_proxy
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.loki_config import (
    LABEL_SOURCES,
    PUSH_PATH,
    label_value,
    parse_labels,
    push_url,
    sanitize_label_name,
    validate,
)
from fapilog.exporters.loki_protobuf import (
    Entry,
    StreamKey,
    encode_push_request,
    go_quote,
    labels_string,
    push_request_class,
    snappy_compressor,
    utf8_streams,
)
from fapilog.exporters.render import JsonRenderer, level_name
from fapilog.exporters.spec import ExporterSpec
from fapilog.settings import LoggingSettings, LokiSettings
from fapilog.settings._errors import mask_url, scrub

__all__ = [
    "LABEL_SOURCES",
    "LokiExporter",
    "PUSH_PATH",
    "SPEC",
    "encode_push_request",
    "go_quote",
    "labels_string",
    "push_url",
    "sanitize_label_name",
]

RETRY_AFTER_CAP = 300.0  # longest Retry-After honoured (promtail's max backoff)
_RESOURCE_FALLBACK = (("service_name", "unknown_service"),)
_LABELS_CACHE_SIZE = 1024
_RETRY = "retry"  # a push failed; a later attempt may deliver it
_REFUSED = "refused"  # Loki refused it for good

_local = threading.local()


class _OwnRequestFilter(logging.Filter):
    """Keeps httpx from logging each of our pushes ("HTTP Request: POST ..."): on a
    fapilog worker those lines would be noise on stderr, or feed the pipeline itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_local, "quiet", False)


_FILTER = _OwnRequestFilter()


def _install_filter() -> None:
    """On httpx's and httpcore's loggers (a logger's filters do not apply to its children,
    so every module logger: ``httpcore.connection``, ``httpcore.http11``, ...)."""
    names = {"httpx", "httpcore"} | {
        name
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(("httpx.", "httpcore."))
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class LokiExporter(LogRecordExporter):
    """Pushes batches to Loki (see the module docstring). `transport` is the httpx seam
    (tests, custom proxies; httpx's per-operation timeouts then apply instead of the
    whole-push deadline); `rng` makes the jitter reproducible."""

    def __init__(
        self,
        settings: LokiSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._url = push_url(settings.url)
        self._shown_url = mask_url(self._url)  # (the factory refuses credentials in it)
        self._labels = parse_labels(settings.labels, settings.static_labels)
        self._static = tuple(sorted((k, label_value(v)) for k, v in settings.static_labels.items()))
        self._renderer = JsonRenderer()
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.last_export_dropped: int | None = None  # see export()
        self.last_export_retry: list[ReadableLogRecord] | None = None
        self.spooled = False  # set by fapilog when a disk spool keeps what is given up
        self.spooled_entries = 0
        # what fapilog's spool directory for this exporter is keyed by (no credential)
        self.spool_destination = f"{self._url} tenant={settings.tenant_id or ''}"
        self._auth: SecretStr | None = None
        secrets: list[str] = []
        if settings.bearer_token is not None:
            token = settings.bearer_token.get_secret_value()
            self._auth = SecretStr(f"Bearer {token}")
            secrets = [token]
        elif settings.username is not None and settings.password is not None:
            password = settings.password.get_secret_value()
            pair = f"{settings.username}:{password}"
            encoded = base64.b64encode(pair.encode()).decode()
            self._auth = SecretStr(f"Basic {encoded}")
            secrets = [pair, encoded, password]
        # what diagnostics are scrubbed of (a proxy may echo the header in an error body)
        self._secrets = tuple(SecretStr(secret) for secret in secrets if secret)
        self._protobuf = settings.encoding == "protobuf"
        # protobuf: always snappy, never Content-Encoding (Loki would accept gzip on top,
        # but compressing snappy output again only costs CPU)
        self._snappy = snappy_compressor() if self._protobuf else None
        if self._protobuf:
            push_request_class()  # built once, here rather than on the first push
        self._gzip = settings.gzip and not self._protobuf
        self._label_strings: dict[StreamKey, str] = {}
        self._headers = {
            "Content-Type": "application/x-protobuf" if self._protobuf else "application/json",
            "User-Agent": "fapilog-loki/0.1",
        }
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        if settings.tenant_id:
            self._headers["X-Scope-OrgID"] = settings.tenant_id
        # `timeout` bounds a whole push (connect, send, the whole response), not each read:
        # a server dripping its answer is cut off then, and the push retried
        self._deadline: DeadlineTransport | None = None
        if transport is None:
            transport = self._deadline = DeadlineTransport(
                proxy=environment_proxy(httpx.URL(self._url))
            )
        self._client = httpx.Client(
            transport=transport, timeout=httpx.Timeout(settings.timeout), follow_redirects=False
        )
        self._resource_labels: tuple[int, dict[str, str]] | None = None
        self._stats_lock = threading.RLock()  # reentrant: see the file exporter's guard
        self.sent_entries = 0
        self.sent_bytes = 0
        self.sent_requests = 0
        self.encoded_bytes = 0
        self.retries = 0
        self.dropped_entries: dict[str, int] = {}
        self.dropped_bytes: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.request_seconds: dict[str, list[float]] = {}  # status -> [count, sum, max]
        _install_filter()

    @property
    def push_target(self) -> str:
        """The push URL (the factory refuses credentials in it)."""
        return self._url

    def push_once(self, labels: dict[str, str], line: str) -> tuple[int | None, str]:
        """Push `line` to the stream `labels` once, now, without retry (``fapilog check``):
        Loki's HTTP status (None: no answer) and the error's text (scrubbed of the
        credentials)."""
        entry = (time.time_ns(), line, None, len(line))
        body = self._encode({tuple(sorted(labels.items())): [entry]})
        headers = dict(self._headers)
        if self._auth is not None:
            headers["Authorization"] = self._auth.get_secret_value()
        status, _, detail = self._post(body, headers)
        return status, detail

    def __repr__(self) -> str:
        tenant = self._settings.tenant_id
        auth = "bearer" if self._settings.bearer_token else "basic" if self._auth else "none"
        return f"LokiExporter(url={self._shown_url!r}, tenant_id={tenant!r}, auth={auth!r})"

    # -- the exporter contract -----------------------------------------------------------

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        # how many records of this batch were not delivered (read by fapilog's
        # ExportProcessor, so that one rejected request of several, or one line too long,
        # does not count the whole batch as dropped); None: not known, all of them
        self.last_export_dropped = len(batch)
        # the records of failed pushes a later attempt may deliver (fapilog's spool keeps
        # them): not those Loki refused for good (a 4xx other than 429)
        self.last_export_retry = list(batch)
        if self._stop.is_set():
            return LogRecordExportResult.FAILURE
        retry: list[ReadableLogRecord] = []
        try:
            owners: dict[int, ReadableLogRecord] = {}
            streams, lost = self._streams(batch, owners)
            for chunk in self._chunks(streams):
                outcome = self._push(chunk)
                if outcome is not None:
                    lost += sum(len(entries) for entries in chunk.values())
                    if outcome == _RETRY:
                        retry.extend(
                            owners[id(entry)] for entries in chunk.values() for entry in entries
                        )
        except Exception as exc:  # never raise into the worker: report and count
            _diag.report("loki-export", f"fapilog loki exporter failed: {self._scrub(repr(exc))}")
            self.last_export_dropped = None
            self.last_export_retry = None
            return LogRecordExportResult.FAILURE
        self.last_export_dropped = lost
        self.last_export_retry = retry
        return LogRecordExportResult.SUCCESS if not lost else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is held between exports

    def abort(self) -> None:
        """fapilog's shutdown deadline passed with a push still running: stop retrying and
        cut the request now (from another thread; returns at once)."""
        self._stop.set()
        if self._deadline is not None:
            self._deadline.backend.abort()

    def shutdown(self) -> None:
        """Abort any retry wait, then release the connection pool."""
        self._stop.set()
        _local.quiet = True
        try:
            self._client.close()
        except Exception:
            pass
        finally:
            _local.quiet = False

    def stats(self) -> dict[str, Any]:
        """promtail-like figures: sent entries/bytes, dropped entries/bytes by reason,
        retries, requests and request duration (count, sum, max seconds) by status."""
        with self._stats_lock:
            return {
                "sent_entries": self.sent_entries,
                "sent_bytes": self.sent_bytes,
                "sent_requests": self.sent_requests,
                "encoded_bytes": self.encoded_bytes,
                "retries": self.retries,
                "spooled_entries": self.spooled_entries,
                "dropped_entries": dict(self.dropped_entries),
                "dropped_bytes": dict(self.dropped_bytes),
                "requests": dict(self.requests),
                "request_duration_seconds": {
                    status: {"count": int(v[0]), "sum": round(v[1], 6), "max": round(v[2], 6)}
                    for status, v in self.request_seconds.items()
                },
            }

    # -- building requests ---------------------------------------------------------------

    def _streams(
        self, batch: Sequence[ReadableLogRecord], owners: dict[int, ReadableLogRecord]
    ) -> tuple[dict[StreamKey, list[Entry]], int]:
        """The batch's entries by stream, and how many records were left out (too long);
        `owners` gets each entry's record, by the entry's id()."""
        render = self._renderer.render
        max_line = self._settings.max_line_bytes
        metadata_on = self._settings.structured_metadata
        streams: dict[StreamKey, list[Entry]] = {}
        skipped = 0
        for readable in batch:
            record = readable.log_record
            line = render(readable)  # never raises: one bad record never costs its batch
            if max_line and len(line) > max_line:
                skipped += 1
                self._drop("line_too_long", 1, len(line))
                continue
            metadata: dict[str, str] | None = None
            size = len(line)
            if metadata_on and record.trace_id:
                metadata = {
                    "trace_id": format(record.trace_id, "032x"),
                    "span_id": format(record.span_id or 0, "016x"),
                }
                size += 64
            timestamp = record.timestamp or record.observed_timestamp or time.time_ns()
            try:
                key = self._stream_key(readable)
            except Exception:  # labels that cannot be read: the line goes to another stream
                key = self._fallback_key()
            entry = (timestamp, line.decode("utf-8", "backslashreplace"), metadata, size)
            owners[id(entry)] = readable
            streams.setdefault(key, []).append(entry)
        if skipped:
            _diag.report(
                "loki-drop:line_too_long",
                f"fapilog loki exporter dropped {skipped} lines longer than "
                f"{max_line} bytes (FAPILOG_LOKI__MAX_LINE_BYTES)",
            )
        return streams, skipped

    def _fallback_key(self) -> StreamKey:
        """The stream of a record whose own labels cannot be read: the static labels."""
        return self._static or _RESOURCE_FALLBACK

    def _stream_key(self, readable: ReadableLogRecord) -> StreamKey:
        resource = readable.resource
        cached = self._resource_labels
        if cached is None or cached[0] != id(resource):
            attributes = resource.attributes if resource is not None else {}
            values = {
                label.name: label_value(attributes.get(label.source))
                for label in self._labels
                if label.source in attributes
            }
            cached = self._resource_labels = (id(resource), values)
        labels: dict[str, str] = dict(self._static)
        record = readable.log_record
        for label in self._labels:
            if label.name in cached[1]:
                value = cached[1][label.name]
            elif label.source == "level":
                value = label_value(level_name(record))
            elif label.source == "logger":
                scope = readable.instrumentation_scope
                value = label_value(scope.name) if scope is not None else ""
            else:
                attributes = record.attributes or {}
                try:
                    value = label_value(attributes.get(label.source))
                except Exception:  # a value with no text (a foreign record's): no label
                    value = ""
            if value:
                labels[label.name] = value
        if not labels:  # Loki rejects a stream without labels
            return _RESOURCE_FALLBACK
        return tuple(sorted(labels.items()))

    def _chunks(self, streams: dict[StreamKey, list[Entry]]) -> list[dict[StreamKey, list[Entry]]]:
        """Cut the streams into requests of at most batch_bytes (an entry larger than that
        goes alone); entries sorted by time within each stream."""
        limit = self._settings.batch_bytes
        chunks: list[dict[StreamKey, list[Entry]]] = []
        current: dict[StreamKey, list[Entry]] = {}
        used = 0
        for key, entries in streams.items():
            entries.sort(key=lambda entry: entry[0])
            for entry in entries:
                if used and used + entry[3] > limit:
                    chunks.append(current)
                    current, used = {}, 0
                current.setdefault(key, []).append(entry)
                used += entry[3]
        if current:
            chunks.append(current)
        return chunks

    def _encode(self, chunk: dict[StreamKey, list[Entry]]) -> bytes:
        """The request body, compressed: JSON (gzip if configured) or protobuf + snappy.
        Text that is not valid UTF-8 (labels are made so where they are read) is made so
        here rather than cost the request."""
        try:
            return self._encode_valid(chunk)
        except (UnicodeEncodeError, TypeError, ValueError):
            return self._encode_valid(utf8_streams(chunk))

    def _encode_valid(self, chunk: dict[StreamKey, list[Entry]]) -> bytes:
        if self._snappy is not None:
            streams = [(self._labels_string(key), entries) for key, entries in chunk.items()]
            return bytes(self._snappy(encode_push_request(streams)))
        body = self._encode_json(chunk)
        return gzip.compress(body, compresslevel=6) if self._gzip else body

    def _labels_string(self, key: StreamKey) -> str:
        cache = self._label_strings
        text = cache.get(key)
        if text is None:
            if len(cache) >= _LABELS_CACHE_SIZE:
                cache.clear()
            text = cache[key] = labels_string(key)
        return text

    @staticmethod
    def _encode_json(chunk: dict[StreamKey, list[Entry]]) -> bytes:
        streams = []
        for key, entries in chunk.items():
            values: list[list[Any]] = []
            for timestamp, line, metadata, _ in entries:
                if metadata is None:
                    values.append([str(timestamp), line])
                else:
                    values.append([str(timestamp), line, metadata])
            streams.append({"stream": dict(key), "values": values})
        return orjson.dumps({"streams": streams})

    # -- sending -------------------------------------------------------------------------

    def _push(self, chunk: dict[StreamKey, list[Entry]]) -> str | None:
        """Send one request, retrying transient failures. None: delivered; `_RETRY`: not
        delivered, a later attempt may (the retries ran out, or shutdown); `_REFUSED`: Loki
        refused it for good (a 4xx other than 429)."""
        entries = sum(len(values) for values in chunk.values())
        line_bytes = sum(entry[3] for values in chunk.values() for entry in values)
        body = self._encode(chunk)
        headers = dict(self._headers)
        if self._auth is not None:
            headers["Authorization"] = self._auth.get_secret_value()
        attempt = 0
        while True:
            if self._stop.is_set():
                self._give_up("shutdown", entries, line_bytes)
                return _RETRY
            status, retry_after, detail = self._post(body, headers)
            if status is not None and 200 <= status < 300:
                with self._stats_lock:
                    self.sent_entries += entries
                    self.sent_bytes += line_bytes
                    self.sent_requests += 1
                    self.encoded_bytes += len(body)
                return None
            retryable = status is None or status == 429 or status >= 500
            what = f"HTTP {status}: {detail}" if status is not None else detail
            if not retryable or attempt >= self._settings.max_retries:
                reason = self._reason(status, detail)
                tail = "" if not retryable else f" after {attempt} retries"
                if retryable and self._give_up(reason, entries, line_bytes):
                    _diag.report(
                        "loki-spooled",
                        f"fapilog loki exporter: {entries} entries not delivered{tail} "
                        f"({what}); kept in the disk spool, sent again later",
                        level="warning",
                        url=self._shown_url,
                        status=status,
                    )
                    return _RETRY
                if not retryable:  # (a retryable request was dropped by _give_up)
                    self._drop(reason, entries, line_bytes)
                _diag.report(
                    f"loki-drop:{reason}",
                    f"fapilog loki exporter dropped {entries} entries{tail} ({what}); "
                    "see the exporter's stats()",
                    level="error",
                    url=self._shown_url,
                    status=status,
                )
                return _RETRY if retryable else _REFUSED
            delay = self._backoff(attempt)
            if retry_after is not None:  # the server knows best, within reason
                delay = min(retry_after, RETRY_AFTER_CAP)
            attempt += 1
            with self._stats_lock:
                self.retries += 1
            _diag.report(
                "loki-retry",
                f"fapilog loki exporter: push failed ({what}); retrying in {delay:.2f} s",
                url=self._shown_url,
                status=status,
            )
            if self._stop.wait(delay):
                self._give_up("shutdown", entries, line_bytes)
                return _RETRY

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, float | None, str]:
        started = time.perf_counter()
        deadline = self._deadline
        bounded = deadline.deadline(self._settings.timeout) if deadline else nullcontext()
        _local.quiet = True
        try:
            with bounded:
                response = self._client.post(self._url, content=body, headers=headers)
        except Exception as exc:  # connection refused, timeout, closed at shutdown
            self._timed("error", started)
            return None, None, self._scrub(f"{type(exc).__name__}: {exc}")
        finally:
            _local.quiet = False
        status = response.status_code
        self._timed(str(status), started)
        detail = ""
        if status >= 300:
            try:
                detail = self._scrub(response.text.strip()[:300])
            except Exception:
                detail = ""
        return status, _retry_after(response.headers.get("Retry-After")), detail

    def _backoff(self, attempt: int) -> float:
        """promtail's: min_backoff doubled per retry, capped at max_backoff, jittered
        uniformly in [d, 2d) (still capped)."""
        settings = self._settings
        delay = min(settings.min_backoff * (2**attempt), settings.max_backoff)
        return min(self._rng.uniform(delay, 2 * delay), settings.max_backoff)

    @staticmethod
    def _reason(status: int | None, detail: str) -> str:
        if status == 429:
            return "stream_limited" if "stream" in detail.lower() else "rate_limited"
        return "ingester_error"

    def _timed(self, status: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        with self._stats_lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            figures = self.request_seconds.setdefault(status, [0.0, 0.0, 0.0])
            figures[0] += 1
            figures[1] += elapsed
            figures[2] = max(figures[2], elapsed)

    def _give_up(self, reason: str, entries: int, size: int) -> bool:
        """A request a later attempt may deliver is given up: with fapilog's disk spool
        behind this exporter its entries are spooled (counted as such, returns True), else
        dropped."""
        if not self.spooled:
            self._drop(reason, entries, size)
            return False
        with self._stats_lock:
            self.spooled_entries += entries
        return True

    def _drop(self, reason: str, entries: int, size: int) -> None:
        with self._stats_lock:
            self.dropped_entries[reason] = self.dropped_entries.get(reason, 0) + entries
            self.dropped_bytes[reason] = self.dropped_bytes.get(reason, 0) + size

    def _scrub(self, text: str) -> str:
        return scrub(text, [secret.get_secret_value() for secret in self._secrets])


def _factory(settings: LoggingSettings) -> LogRecordExporter:
    validate(settings.loki)
    return LokiExporter(settings.loki)


def _batch_wait(settings: LoggingSettings) -> float:
    return settings.loki.batch_wait


SPEC = ExporterSpec("loki", _factory, max_delay=_batch_wait, spool=True)

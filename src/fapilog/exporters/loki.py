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
import random
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import httpx
from pydantic import SecretStr

from fapilog import _diag
from fapilog.exporters._deadline import (
    DeadlineTransport,
    environment_proxy,
    install_quiet_filter,
    quiet_requests,
)
from fapilog.exporters.contract import (
    UNKNOWN_OUTCOME,
    LogRecordExporter,
    LogRecordExportResult,
    ReadableLogRecord,
    shares,
)
from fapilog.exporters.loki_config import (
    LABEL_SOURCES,
    PUSH_PATH,
    push_url,
    sanitize_label_name,
    validate,
)
from fapilog.exporters.loki_figures import LokiFigures
from fapilog.exporters.loki_protobuf import (
    Entry,
    StreamKey,
    encode_push_request,
    go_quote,
    labels_string,
)
from fapilog.exporters.loki_request import Chunk, RequestEncoder
from fapilog.exporters.loki_response import (
    DISALLOWED_METADATA,
    MAX_ERROR_BODY,
    Undelivered,
    ingester_ignored,
    is_stream_limit,
    is_unknown_tenant,
    rejections,
    retry_after,
)
from fapilog.exporters.loki_streams import LokiLines
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
SPLIT_FOR = 600.0  # seconds requests carry one stream each after a stream was refused
OUT_OF_ORDER_WINDOW = 3600 * 10**9  # Loki ignores an entry this far behind its stream's newest
_LABELS_CACHE_SIZE = 1024


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
        self._lines = LokiLines(settings)
        # structured metadata is sent while on: `auto` turns it off for good when Loki
        # refuses it (the fields then go in the line)
        self._metadata_on = settings.structured_metadata is not False
        self._owners: dict[int, ReadableLogRecord] = {}  # during export(): entry id -> record
        # Loki answers a request for its last stream only: after an answer showing that a
        # stream was refused (the stream limit, entries out of order), requests carry one
        # stream each until then (time.monotonic()), so that every outcome is exact
        self._split_until = 0.0
        self._metadata_seen = False  # a request with structured metadata was accepted
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.last_export_dropped: int | None = None  # see export()
        self.last_export_reasons: list[tuple[str, int]] | None = None
        self.last_export_retry: list[ReadableLogRecord] | None = None
        self.spooled = False  # set by fapilog when a disk spool keeps what is given up
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
        self._requests = RequestEncoder(settings)
        self._headers = {**self._requests.headers, "User-Agent": "fapilog-loki/0.1"}
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
        self.figures = LokiFigures()
        install_quiet_filter()

    @property
    def push_target(self) -> str:
        """The push URL (the factory refuses credentials in it)."""
        return self._url

    def push_once(self, labels: dict[str, str], line: str) -> tuple[int | None, str]:
        """Push `line` to the stream `labels` once, now, without retry (``fapilog check``):
        Loki's HTTP status (None: no answer) and the error's text (scrubbed of the
        credentials)."""
        entry = (time.time_ns(), line, None, len(line))
        body = self._requests.encode({tuple(sorted(labels.items())): [entry]})
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
        # how many records of this batch were not delivered, and why (read by fapilog's
        # ExportProcessor, so that one rejected request of several, or one line too long,
        # does not count the whole batch as dropped); None: not known, all of them
        self.last_export_dropped = len(batch)
        self.last_export_reasons = None
        # the records of failed pushes a later attempt may deliver (fapilog's spool keeps
        # them): not those Loki refused for good
        self.last_export_retry = list(batch)
        if self._stop.is_set():
            return LogRecordExportResult.FAILURE
        result = Undelivered()
        sent_before = self.figures.sent_entries
        try:
            self._owners = {}
            streams = self._streams(batch, result)
            one_stream = time.monotonic() < self._split_until
            for chunk in self._requests.chunks(streams, one_stream=one_stream):
                self._push(chunk, result)
            retry = [self._owners[id(entry)] for entry in result.retry]
        except Exception as exc:  # never raise into the worker: report and count
            _diag.report("loki-export", f"fapilog loki exporter failed: {self._scrub(repr(exc))}")
            sent = self.figures.sent_entries - sent_before
            # what was sent counts as exported, what was given up as it was, the rest as
            # failed, never spooled (a batch that fails so would fail on every replay)
            refused, retried = list(result.refused.items()), list(result.retried.items())
            left = len(batch) - sent - sum(result.refused.values()) - len(result.retry)
            self.last_export_dropped = len(batch) - sent
            self.last_export_reasons = [*refused, ("export_failed", max(left, 0)), *retried]
            self.last_export_retry = [self._owners[id(entry)] for entry in result.retry]
            return LogRecordExportResult.FAILURE
        finally:
            self._owners = {}
        reasons = result.reasons()
        lost = sum(count for _, count in reasons)
        self.last_export_dropped = lost
        self.last_export_reasons = reasons
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
        with quiet_requests():
            try:
                self._client.close()
            except Exception:
                pass

    def stats(self) -> dict[str, Any]:
        """promtail-like figures (`fapilog.exporters.loki_figures`), label values folded by
        label, and whether structured metadata is being sent."""
        return self.figures.snapshot(
            label_values_folded=dict(self._lines.guard.folded),
            structured_metadata=self._metadata_on,
        )

    # -- building requests ---------------------------------------------------------------

    def _streams(self, batch: Sequence[ReadableLogRecord], result: Undelivered) -> Chunk:
        """The batch's entries by stream; lines too long are counted in `result`."""
        max_line = self._settings.max_line_bytes
        streams: Chunk = {}
        skipped = 0
        now = time.monotonic()
        for readable in batch:
            try:
                key = self._lines.key(readable, now)
            except Exception:  # labels that cannot be read: the line goes to another stream
                key = self._lines.fallback_key()
            entry, line_bytes = self._entry(readable, key, self._metadata_on)
            if max_line and line_bytes > max_line:
                skipped += 1
                self._refuse("line_too_long", 1, line_bytes, result)
                continue
            streams.setdefault(key, []).append(entry)
        if skipped:
            _diag.report(
                "loki-drop:line_too_long",
                f"fapilog loki exporter dropped {skipped} lines longer than "
                f"{max_line} bytes (FAPILOG_LOKI__MAX_LINE_BYTES)",
            )
        return streams

    def _entry(
        self, readable: ReadableLogRecord, key: StreamKey, metadata_on: bool
    ) -> tuple[Entry, int]:
        """One record's entry and its line's bytes (its line and metadata never raise: one
        bad record never costs its batch); its record is kept in `_owners`, by the entry's
        id()."""
        record = readable.log_record
        line, metadata, size = self._lines.entry(readable, key, metadata_on)
        timestamp = record.timestamp or record.observed_timestamp or time.time_ns()
        entry = (timestamp, line.decode("utf-8", "backslashreplace"), metadata, size)
        self._owners[id(entry)] = readable
        return entry, len(line)

    def _without_metadata(self, chunk: Chunk, *, others: bool) -> Chunk:
        """The entries of `chunk` that carry metadata, rendered again with their metadata in
        the line (`others`: with the other entries as they are, in their order)."""
        again: Chunk = {}
        for key, values in chunk.items():
            for entry in values:
                if entry[2]:
                    readable = self._owners[id(entry)]
                    again.setdefault(key, []).append(self._entry(readable, key, False)[0])
                elif others:
                    again.setdefault(key, []).append(entry)
        return again

    def _metadata_off(self) -> None:
        self._metadata_on = False
        _diag.report(
            "loki-metadata-off",
            "fapilog loki exporter: this Loki does not allow structured metadata; its "
            "fields now go in the line (FAPILOG_LOKI__STRUCTURED_METADATA=auto)",
            level="warning",
            url=self._shown_url,
        )

    # -- sending -------------------------------------------------------------------------

    def _push(self, chunk: Chunk, result: Undelivered) -> None:
        """Send one request and account for each of its entries in `result` (see
        `fapilog.exporters.loki_response` for what Loki's answers say)."""
        if len(chunk) > 1 and time.monotonic() < self._split_until:
            for key, values in chunk.items():  # (built before one stream per request began)
                self._push({key: values}, result)
            return
        if not self._metadata_on and any(e[2] for values in chunk.values() for e in values):
            chunk = self._without_metadata(chunk, others=True)  # (built before it went off)
        entries = sum(len(values) for values in chunk.values())
        size = sum(entry[3] for values in chunk.values() for entry in values)
        status, detail, gave_up = self._deliver(chunk, entries, size)
        if status is not None and 200 <= status < 300:
            if not self._metadata_seen and self._metadata_on:
                self._metadata_seen = any(e[2] for values in chunk.values() for e in values)
            return
        shown = detail[:300]
        if gave_up is not None:  # a later attempt may deliver it
            self._retry_later(chunk, entries, size, status, f"{gave_up}: {shown}", result)
            return
        if is_stream_limit(status, detail) or (status == 400 and ingester_ignored(detail)):
            if len(chunk) > 1:  # one stream per request: each one's outcome is then exact
                self._split_until = time.monotonic() + SPLIT_FOR
                self._resend_per_stream(chunk, result, shown)
                return
            ignored = ingester_ignored(detail) if status == 400 else None
            if ignored is None:
                self._refuse("stream_limited", entries, size, result)
                self._report_drop("stream_limited", entries, f"HTTP 429: {shown}", status)
            elif ignored[0] <= ignored[1] == entries:
                self._split_until = time.monotonic() + SPLIT_FOR
                self._refuse("out_of_order", ignored[0], size * ignored[0] // entries, result)
                self._report_drop("out_of_order", ignored[0], f"HTTP 400: {shown}", status)
                self.figures.sent(entries - ignored[0], size * (entries - ignored[0]) // entries)
            else:
                self._unknown(entries, result, f"HTTP 400: {shown}")
            return
        if status == 400:
            rejected = rejections(detail)
            if rejected is not None and sum(rejected.values()) <= entries:
                self._partial(chunk, entries, size, rejected, result, shown)
            elif self._whole_metadata_refusal(chunk, rejected, detail):
                self._metadata_off()  # (Loki 2.8 refuses such a request as a whole)
                self._push(chunk, result)  # (sent again without: see above)
            else:
                self._unknown(entries, result, f"HTTP 400: {shown}")
            return
        reason = "ingester_error"
        if is_unknown_tenant(status, detail):
            shown += "; set FAPILOG_LOKI__TENANT_ID (sent as X-Scope-OrgID) for a multi-tenant Loki"
        self._refuse(reason, entries, size, result)
        self._report_drop(reason, entries, f"HTTP {status}: {shown}", status)

    def _resend_per_stream(self, chunk: Chunk, result: Undelivered, shown: str) -> None:
        """A request answered for its last stream only, sent again one stream per request.
        Loki ignores a resent entry it holds, unless it checks it as too far behind first:
        a stream spanning more than an hour is therefore not resent, its outcome unknown."""
        for key, values in chunk.items():
            if values[-1][0] - values[0][0] > OUT_OF_ORDER_WINDOW:
                self._unknown(len(values), result, f"HTTP 429/400 for several streams: {shown}")
            else:
                self._push({key: values}, result)

    def _whole_metadata_refusal(
        self, chunk: Chunk, rejected: dict[str, int] | None, detail: str
    ) -> bool:
        """Loki's decoder refused a request with structured metadata as a whole (a 400
        naming its ``PushRequest``, listing no entries) while `auto` has never seen this
        Loki accept metadata: as a Loki before 2.9 answers."""
        return (
            rejected is None
            and "pushrequest" in detail.lower()
            and not self._metadata_seen
            and self._settings.structured_metadata == "auto"
            and any(entry[2] for values in chunk.values() for entry in values)
        )

    def _partial(  # noqa: PLR0917 (one caller, all positional)
        self,
        chunk: Chunk,
        entries: int,
        size: int,
        rejected: dict[str, int],
        result: Undelivered,
        shown: str,
    ) -> None:
        """A 400 listing the entries it rejected: the others were stored. Loki rejects
        every entry with metadata while metadata is disallowed (for that reason, or one it
        checks first); with `auto` those are sent again with their metadata in the line,
        and only the other entries' rejections are counted here."""
        with_metadata = sum(1 for values in chunk.values() for entry in values if entry[2])
        disallowed = rejected.get(DISALLOWED_METADATA, 0)
        resend = bool(disallowed) and self._settings.structured_metadata == "auto"
        counted = list(rejected.items())
        if resend:
            del rejected[DISALLOWED_METADATA]
            # the metadata entries rejected for another reason are counted on the resend
            others = sum(rejected.values()) - (with_metadata - disallowed)
            if others < 0:
                self._unknown(entries, result, f"HTTP 400: {shown}")
                self._metadata_off()
                return
            counted = shares(list(rejected.items()), others)
        refused = sum(count for _, count in counted)
        for reason, count in counted:
            self._refuse(reason, count, size * count // entries, result)
            self._report_drop(reason, count, f"HTTP 400: {shown}", 400)
        stored = entries - refused - (with_metadata if resend else 0)
        self.figures.sent(stored, size * stored // entries)
        if resend:
            self._metadata_off()
            for part in self._requests.chunks(self._without_metadata(chunk, others=False)):
                self._push(part, result)

    def _retry_later(  # noqa: PLR0917
        self,
        chunk: Chunk,
        entries: int,
        size: int,
        status: int | None,
        what: str,
        result: Undelivered,
    ) -> None:
        """A request given up while a later attempt may deliver it: spooled or dropped."""
        reason = "shutdown" if what.startswith("shutdown") else self._reason(status)
        result.retry.extend(entry for values in chunk.values() for entry in values)
        result.count(reason, entries, retry=True)
        if self._give_up(reason, entries, size):
            _diag.report(
                "loki-spooled",
                f"fapilog loki exporter: {entries} entries not delivered ({what}); kept in "
                "the disk spool, sent again later",
                level="warning",
                url=self._shown_url,
                status=status,
            )
        else:
            self._report_drop(reason, entries, what, status)

    def _deliver(self, chunk: Chunk, entries: int, size: int) -> tuple[int | None, str, str | None]:
        """Send one request, retrying transient failures (connection errors, 5xx, 429s but
        the stream limit's): Loki's last status (None: no answer), its error text, and why
        it was given up while a later attempt may deliver it (None: it was not)."""
        body = self._requests.encode(chunk)
        headers = dict(self._headers)
        if self._auth is not None:
            headers["Authorization"] = self._auth.get_secret_value()
        attempt = 0
        while True:
            if self._stop.is_set():
                return None, "fapilog is shutting down", "shutdown"
            status, retry_after, detail = self._post(body, headers)
            if status is not None and 200 <= status < 300:
                self.figures.sent(entries, size, len(body))
                return status, "", None
            retryable = status is None or status == 429 or status >= 500
            if not retryable or is_stream_limit(status, detail):
                return status, detail, None
            if attempt >= self._settings.max_retries:
                return status, detail, f"after {attempt} retries"
            delay = self._backoff(attempt)
            if retry_after is not None:  # the server knows best, within reason
                delay = min(retry_after, RETRY_AFTER_CAP)
            attempt += 1
            self.figures.retried()
            what = f"HTTP {status}: {detail[:300]}" if status is not None else detail
            _diag.report(
                "loki-retry",
                f"fapilog loki exporter: push failed ({what}); retrying in {delay:.2f} s",
                url=self._shown_url,
                status=status,
            )
            if self._stop.wait(delay):
                return None, "fapilog is shutting down", "shutdown"

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, float | None, str]:
        started = time.perf_counter()
        deadline = self._deadline
        bounded = deadline.deadline(self._settings.timeout) if deadline else nullcontext()
        try:
            with quiet_requests(), bounded:
                response = self._client.post(self._url, content=body, headers=headers)
        except Exception as exc:  # connection refused, timeout, closed at shutdown
            self.figures.timed("error", started)
            return None, None, self._scrub(f"{type(exc).__name__}: {exc}")
        status = response.status_code
        self.figures.timed(str(status), started)
        detail = ""
        if status >= 300:
            try:
                detail = self._scrub(response.text.strip()[:MAX_ERROR_BODY])
            except Exception:
                detail = ""
        return status, retry_after(response.headers.get("Retry-After")), detail

    def _backoff(self, attempt: int) -> float:
        """promtail's: min_backoff doubled per retry, capped at max_backoff, jittered
        uniformly in [d, 2d) (still capped)."""
        settings = self._settings
        delay = min(settings.min_backoff * (2**attempt), settings.max_backoff)
        return min(self._rng.uniform(delay, 2 * delay), settings.max_backoff)

    @staticmethod
    def _reason(status: int | None) -> str:
        return "rate_limited" if status == 429 else "ingester_error"

    def _give_up(self, reason: str, entries: int, size: int) -> bool:
        """A request a later attempt may deliver is given up: with fapilog's disk spool
        behind this exporter its entries are spooled (counted as such, returns True), else
        dropped."""
        if not self.spooled:
            self.figures.dropped(reason, entries, size)
            return False
        self.figures.spooled(entries)
        return True

    def _refuse(self, reason: str, entries: int, size: int, result: Undelivered) -> None:
        """Entries Loki refused for good (never spooled: a replay meets the same refusal)."""
        self.figures.dropped(reason, entries, size)
        result.count(reason, entries)

    def _unknown(self, entries: int, result: Undelivered, what: str) -> None:
        """Entries of a request whose answer does not say which were stored."""
        self.figures.unknown(entries)
        result.count(UNKNOWN_OUTCOME, entries)
        _diag.report(
            "loki-unknown-outcome",
            f"fapilog loki exporter: the answer to a push of {entries} entries does not say "
            f"which were stored ({what}); counted as unknown_outcome",
            level="error",
            url=self._shown_url,
        )

    def _report_drop(self, reason: str, entries: int, what: str, status: int | None) -> None:
        _diag.report(
            f"loki-drop:{reason}",
            f"fapilog loki exporter dropped {entries} entries ({what}); see the exporter's stats()",
            level="error",
            url=self._shown_url,
            status=status,
        )

    def _scrub(self, text: str) -> str:
        return scrub(text, [secret.get_secret_value() for secret in self._secrets])


def _factory(settings: LoggingSettings) -> LogRecordExporter:
    validate(settings.loki)
    return LokiExporter(settings.loki)


def _batch_wait(settings: LoggingSettings) -> float:
    return settings.loki.batch_wait


SPEC = ExporterSpec("loki", _factory, max_delay=_batch_wait, spool=True)

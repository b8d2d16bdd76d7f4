"""The Loki exporter's contract, in-process: `LokiExporter` itself (no pipeline) against the
strict receiver on 127.0.0.1 (tests/peers/loki_receiver.py). What `push_once` (``fapilog
check``) sends and answers, how the exporter names itself, what an answer listing its
rejected entries costs when some carried structured metadata, answers that do not add up,
and the exact diagnostics. Backoffs are a few milliseconds: each test takes well under a
second."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from fapilog import _diag
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.contract import LogRecordExportResult
from fapilog.exporters.loki import LokiExporter
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import LokiSettings
from peers.drip_server import DripServer
from peers.loki_receiver import LokiReceiver

FAST: dict[str, Any] = {"min_backoff": 0.001, "max_backoff": 0.005, "max_retries": 3}
SUCCESS, FAILURE = LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE
TRACED = set_span_in_context(
    NonRecordingSpan(
        SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
    )
)
OLD = 8 * 86400 * 10**9  # older than Loki's 7 days


def record(seq: int, *, traced: bool = False, age: int = 0, **attributes: Any) -> ReadableLogRecord:
    """A record as another library's LoggerProvider could hand one over; `traced`: in a
    span, so its ids go to structured metadata."""
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=time.time_ns() - age + seq,
            context=TRACED if traced else None,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=f"e{seq}",
            attributes={"seq": seq, **attributes},
        ),
        resource=Resource({"service.name": "api"}),  # (nothing more: no metadata of its own)
        instrumentation_scope=InstrumentationScope("direct"),
    )


def seqs(receiver: LokiReceiver) -> list[int]:
    return sorted(json.loads(entry.line)["seq"] for entry in receiver.entries())


class Reports:
    """fapilog's diagnostics of the Loki exporter: (key, message, fields, level)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, key: str, message: str, fields: dict[str, Any]) -> None:
        if key.startswith("loki"):
            self.seen.append((key, message, fields))

    def keys(self) -> list[str]:
        return [key for key, _, _ in self.seen]

    def messages(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        return [(message, fields) for name, message, fields in self.seen if name == key]

    def only(self, key: str) -> tuple[str, dict[str, Any]]:
        found = [(message, fields) for name, message, fields in self.seen if name == key]
        assert len(found) == 1, self.seen
        return found[0]


@pytest.fixture
def reports() -> Iterator[Reports]:
    listener = Reports()
    _diag.reset()
    _diag.add_listener(listener)
    yield listener
    _diag.remove_listener(listener)
    _diag.reset()


@pytest.fixture
def levels(capfd: pytest.CaptureFixture[str]) -> Any:
    """The level each diagnostic was written at on stderr, by key."""

    def read() -> dict[str, str]:
        lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
        return {
            line["fapilog.diagnostic"]: line["level"]
            for line in lines
            if "fapilog.diagnostic" in line
        }

    return read


def exporter(receiver: LokiReceiver, **settings: Any) -> LokiExporter:
    return LokiExporter(LokiSettings(url=receiver.url, **{**FAST, **settings}))


# -- push_once (fapilog check) --------------------------------------------------------------------


def test_push_once_sends_one_line_to_the_stream_given_and_says_what_loki_answered(
    loki: LokiReceiver,
) -> None:
    sink = exporter(loki)
    try:
        assert sink.push_once({"service_name": "api", "check": "yes"}, "hello") == (204, "")
    finally:
        sink.shutdown()
    assert [(entry.line, entry.metadata) for entry in loki.entries()] == [("hello", {})]
    assert list(loki.streams()) == [(("check", "yes"), ("service_name", "api"))]
    assert abs(loki.entries()[0].timestamp - time.time_ns()) < 60 * 10**9
    assert len(loki.pushes) == 1  # once


def test_push_once_reports_a_refusal_without_retrying_it(loki: LokiReceiver) -> None:
    loki.fail(503, times=1, body="ingester down")
    sink = exporter(loki)
    try:
        assert sink.push_once({"service_name": "api"}, "x") == (503, "ingester down")
    finally:
        sink.shutdown()
    assert len(loki.pushes) == 1 and loki.count() == 0


def test_push_once_without_a_loki_says_why() -> None:
    with LokiReceiver() as gone:
        url = gone.url
    sink = LokiExporter(LokiSettings(url=url, **FAST))
    try:
        status, detail = sink.push_once({"service_name": "api"}, "x")
    finally:
        sink.shutdown()
    assert status is None and detail.startswith("ConnectError: ")


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_push_once_authenticates_as_an_export_does(auth: str) -> None:
    kind: dict[str, Any] = {"basic": ("user", "pa:ss")} if auth == "basic" else {"bearer": "tok"}
    with LokiReceiver(**kind) as proxy:
        given = (
            {"username": "user", "password": "pa:ss"}
            if auth == "basic"
            else {"bearer_token": "tok"}
        )
        sink = exporter(proxy, **given)
        wrong = exporter(
            proxy,
            **(
                {"username": "user", "password": "no"}
                if auth == "basic"
                else {"bearer_token": "no"}
            ),
        )
        try:
            assert sink.push_once({"service_name": "api"}, "x") == (204, "")
            assert wrong.push_once({"service_name": "api"}, "x") == (401, "unauthorized")
        finally:
            sink.shutdown()
            wrong.shutdown()
        assert proxy.count() == 1
        sent = proxy.pushes[0].headers["authorization"]
        token = base64.b64encode(b"user:pa:ss").decode()
        assert sent == (f"Basic {token}" if auth == "basic" else "Bearer tok")


# -- naming itself ---------------------------------------------------------------------------------


def test_the_exporter_names_its_url_tenant_and_kind_of_credentials() -> None:
    url = "http://127.0.0.1:3100"
    plain = LokiExporter(LokiSettings(url=url))
    basic = LokiExporter(LokiSettings(url=url, username="u", password="p", tenant_id="team"))
    bearer = LokiExporter(LokiSettings(url=url, bearer_token="t"))
    half = LokiExporter(LokiSettings(url=url, username="u"))  # no password: no header
    push = f"{url}/loki/api/v1/push"
    try:
        assert repr(plain) == f"LokiExporter(url={push!r}, tenant_id=None, auth='none')"
        assert repr(basic) == f"LokiExporter(url={push!r}, tenant_id='team', auth='basic')"
        assert repr(bearer) == f"LokiExporter(url={push!r}, tenant_id=None, auth='bearer')"
        assert repr(half) == f"LokiExporter(url={push!r}, tenant_id=None, auth='none')"
    finally:
        for sink in (plain, basic, bearer, half):
            sink.shutdown()


def test_an_export_that_fails_part_way_counts_each_record_once(
    loki: LokiReceiver, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an earlier export: four requests, the first refused (too old), the second
    delivered, the third given up after its retries, the fourth failing inside fapilog.
    The delivered one is not lost, the refused and given-up ones keep their reasons, and
    only the last counts as export_failed."""
    sink = exporter(loki, batch_bytes=1024)
    assert sink.export([record(9)]) == SUCCESS
    encode = sink._requests.encode
    calls: list[int] = []

    def encoding(chunk: Any) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) == 3:
            loki.fail(503, times=FAST["max_retries"] + 1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return encode(chunk)

    monkeypatch.setattr(sink._requests, "encode", encoding)
    batch = [record(0, age=OLD, pad="x" * 600)] + [
        record(seq, pad="x" * 600) for seq in range(1, 4)
    ]
    try:
        assert sink.export(batch) == FAILURE
    finally:
        sink.shutdown()
    assert seqs(loki) == [1, 9] and calls == [1, 2, 3, 4]
    assert sink.last_export_dropped == 3
    assert sink.last_export_reasons == [
        ("greater_than_max_sample_age", 1),
        ("export_failed", 1),
        ("ingester_error", 1),
    ]
    assert [retry.log_record.attributes["seq"] for retry in sink.last_export_retry] == [2]
    message, _ = reports.only("loki-export")
    assert message == "fapilog loki exporter failed: RuntimeError('boom')"


def test_a_new_exporter_has_exported_nothing() -> None:
    """The exporter contract's extras before any export."""
    sink = LokiExporter(LokiSettings(url="http://127.0.0.1:9/", **FAST))
    try:
        assert sink.last_export_dropped is None
        assert sink.last_export_reasons is None
        assert sink.last_export_retry is None
    finally:
        sink.shutdown()


def test_each_tenant_is_a_spool_destination_of_its_own() -> None:
    """What one tenant's exporter spooled is never replayed to another, nor to no tenant,
    whatever the tenant is called."""
    url = "http://127.0.0.1:9"
    destinations = set()
    for tenant in (None, "", "XXXX", "a"):
        sink = LokiExporter(LokiSettings(url=url, tenant_id=tenant, **FAST))
        destinations.add(sink.spool_destination)
        sink.shutdown()
    assert destinations == {
        f"{url}/loki/api/v1/push tenant=",
        f"{url}/loki/api/v1/push tenant=XXXX",
        f"{url}/loki/api/v1/push tenant=a",
    }


# -- abort -----------------------------------------------------------------------------------------


def export_aborted_during_its_first_request(
    batch: list[ReadableLogRecord], **settings: Any
) -> tuple[LokiExporter, list[LogRecordExportResult]]:
    """Export `batch` on another thread to a server that read the first request and answers
    it one byte every 10 s; abort once that request is in, check the export ended at once
    and that no other request was sent. Returns the exporter (shut down) and the result."""
    with DripServer(interval=10) as slow:
        sink = LokiExporter(
            LokiSettings(url=slow.url, **{**FAST, "timeout": 60, "max_retries": 100, **settings})
        )
        results: list[LogRecordExportResult] = []
        worker = threading.Thread(target=lambda: results.append(sink.export(batch)))
        worker.start()
        try:
            assert slow.wait_for_requests(1, 10)
            sink.abort()
            worker.join(5)
            assert not worker.is_alive()
        finally:
            sink.shutdown()
            worker.join(60)
        assert slow.requests == 1
    return sink, results


def test_abort_cuts_a_push_in_progress_and_stops_retrying(reports: Reports) -> None:
    """A server that read the request and answers one byte every 10 s: abort, from another
    thread, ends the export at once, with nothing retried."""
    sink, results = export_aborted_during_its_first_request([record(0)])
    assert results == [FAILURE]
    assert sink.last_export_reasons == [("shutdown", 1)]
    message, _ = reports.only("loki-drop:shutdown")
    assert "dropped 1 entries (shutdown: fapilog is shutting down); see" in message


def test_abort_drops_the_requests_of_the_export_not_sent_yet_at_shutdown(
    reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests, abort during the first: the second is never sent; each is reported
    dropped at shutdown (the rate limit lifted here, so that both reports show)."""
    monkeypatch.setattr(_diag, "INTERVAL", 0)
    batch = [record(seq, pad="x" * 600) for seq in range(2)]
    sink, results = export_aborted_during_its_first_request(batch, batch_bytes=1024)
    assert results == [FAILURE]
    assert sink.last_export_reasons == [("shutdown", 2)]
    drops = reports.messages("loki-drop:shutdown")
    assert len(drops) == 2
    assert all("dropped 1 entries (shutdown: fapilog is shutting down); see" in m for m, _ in drops)


def test_abort_without_a_deadline_transport_only_stops_retrying(loki: LokiReceiver) -> None:
    sink = LokiExporter(LokiSettings(url=loki.url, **FAST), transport=httpx.HTTPTransport())
    sink.abort()
    try:
        assert sink.export([record(0)]) == FAILURE
    finally:
        sink.shutdown()
    assert loki.pushes == []


# -- a 400 listing its rejected entries, some carrying metadata -----------------------------------


def test_metadata_refused_entry_by_entry_is_resent_in_the_line_and_the_rest_counted_once(
    reports: Reports, levels: Any
) -> None:
    """Loki 2.9 with structured metadata disallowed checks an entry's age first: of the two
    traced entries, the old one is refused as too old and the other as carrying metadata.
    `auto` sends the metadata entries again (only those) with their fields in the line: the
    old one is refused again and counted then, once."""
    with LokiReceiver(structured_metadata=False) as loki:
        sink = exporter(loki)
        batch = [
            record(0, traced=True),
            record(1, traced=True, age=OLD),
            record(2),
            record(3, age=OLD),
        ]
        try:
            assert sink.export(batch) == FAILURE
        finally:
            sink.shutdown()
        assert seqs(loki) == [0, 2]
        assert all(entry.metadata == {} for entry in loki.entries())
        resent = loki.pushes[1].body["streams"]
        assert sum(len(stream["values"]) for stream in resent) == 2  # the traced ones only
        assert [push.status for push in loki.pushes] == [400, 400]
    assert sink.last_export_dropped == 2
    assert sink.last_export_reasons == [("greater_than_max_sample_age", 2)]
    figures = sink.stats()
    assert (figures["sent_entries"], figures["structured_metadata"]) == (2, False)
    assert figures["dropped_entries"] == {"greater_than_max_sample_age": 2}
    sent, dropped = figures["sent_bytes"], figures["dropped_bytes"]["greater_than_max_sample_age"]
    assert type(sent) is int and type(dropped) is int  # whole bytes, shared out by entries
    assert dropped == pytest.approx(sent, rel=0.5)  # two entries of about the same size each
    url = f"{loki.url}/loki/api/v1/push"
    message, fields = reports.only("loki-metadata-off")
    assert message == (
        "fapilog loki exporter: this Loki does not allow structured metadata; its fields now "
        "go in the line (FAPILOG_LOKI__STRUCTURED_METADATA=auto)"
    )
    assert fields == {"url": url}
    drops = reports.messages("loki-drop:greater_than_max_sample_age")
    assert len(drops) == 1  # (the second is within the minute: not said again)
    message, fields = drops[0]
    assert message.startswith("fapilog loki exporter dropped 1 entries (HTTP 400: ")
    assert "timestamp too old" in message and message.endswith("); see the exporter's stats()")
    assert fields == {"url": url, "status": 400}
    assert levels() == {
        "loki-metadata-off": "warning",
        "loki-drop:greater_than_max_sample_age": "error",
    }


def test_metadata_true_counts_each_refusal_under_its_own_reason(reports: Reports) -> None:
    with LokiReceiver(structured_metadata=False) as loki:
        sink = exporter(loki, structured_metadata=True)
        batch = [record(0, traced=True), record(1, traced=True), record(2), record(3, age=OLD)]
        try:
            assert sink.export(batch) == FAILURE
        finally:
            sink.shutdown()
        assert seqs(loki) == [2] and len(loki.pushes) == 1
    assert sorted(sink.last_export_reasons or []) == [
        ("disallowed_structured_metadata", 2),
        ("greater_than_max_sample_age", 1),
    ]
    assert sink.stats()["structured_metadata"] is True
    assert "loki-metadata-off" not in reports.keys()  # noqa: SIM118 (a list)


def test_an_answer_listing_fewer_metadata_refusals_than_it_could_is_an_unknown_outcome(
    loki: LokiReceiver, reports: Reports, levels: Any
) -> None:
    """A 400 that says one entry carried disallowed metadata when three did, and nothing
    about the other two: which were stored is not known. They are counted as unknown (never
    resent: Loki may hold them), and metadata goes off."""
    loki.fail(
        400,
        times=1,
        body="stream '{service_name=\"api\"}' includes structured metadata, but this feature "
        "is disallowed.",
    )
    sink = exporter(loki)
    try:
        assert sink.export([record(seq, traced=True) for seq in range(3)]) == FAILURE
        assert sink.export([record(9)]) == SUCCESS
    finally:
        sink.shutdown()
    assert len(loki.pushes) == 2 and seqs(loki) == [9]
    figures = sink.stats()
    assert (figures["unknown_outcome"], figures["sent_entries"], figures["dropped_entries"]) == (
        3,
        1,
        {},
    )
    assert figures["structured_metadata"] is False
    message, fields = reports.only("loki-unknown-outcome")
    assert message == (
        "fapilog loki exporter: the answer to a push of 3 entries does not say which were "
        "stored (HTTP 400: stream '{service_name=\"api\"}' includes structured metadata, but "
        "this feature is disallowed.); counted as unknown_outcome"
    )
    assert fields == {"url": f"{loki.url}/loki/api/v1/push"}
    assert reports.keys().count("loki-metadata-off") == 1
    assert levels()["loki-unknown-outcome"] == "error"


# -- given up after the retries -------------------------------------------------------------------


def given_up(loki: LokiReceiver, sink: LokiExporter) -> list[ReadableLogRecord]:
    """An export of two requests: Loki refuses the first for good (403) and fails the second
    on every attempt (503). Returns the second request's records."""
    loki.fail(403, times=1, body="forbidden")
    loki.fail(503, body="ingester down")
    batch = [record(seq, pad="x" * 300) for seq in range(4)]  # two entries a request
    try:
        assert sink.export(batch) == FAILURE
    finally:
        sink.shutdown()
    assert [push.status for push in loki.pushes] == [403, 503, 503, 503, 503]
    return batch[2:]


def test_a_request_given_up_without_a_spool_is_dropped_apart_from_one_refused(
    loki: LokiReceiver, reports: Reports, levels: Any
) -> None:
    sink = exporter(loki, batch_bytes=1024)
    second = given_up(loki, sink)
    # the refused and the given-up are told apart, refused first (the spool keeps the latter)
    assert sink.last_export_reasons == [("ingester_error", 2), ("ingester_error", 2)]
    assert sink.last_export_retry == second
    figures = sink.stats()
    assert figures["dropped_entries"] == {"ingester_error": 4}
    assert figures["spooled_entries"] == 0 and figures["retries"] == 3
    dropped = figures["dropped_bytes"]["ingester_error"]
    assert type(dropped) is int and dropped > 4 * 300
    message, fields = reports.messages("loki-drop:ingester_error")[0]
    assert message == (
        "fapilog loki exporter dropped 2 entries (HTTP 403: forbidden); see the exporter's stats()"
    )
    assert "loki-spooled" not in reports.keys()  # noqa: SIM118 (a list)
    _diag.reset()
    loki.clear_failures()
    loki.fail(503, body="ingester down")
    again = exporter(loki, batch_bytes=1024)
    try:
        assert again.export([record(7)]) == FAILURE
    finally:
        again.shutdown()
    message, fields = [(m, f) for key, m, f in reports.seen if key == "loki-drop:ingester_error"][
        -1
    ]
    assert message == (
        "fapilog loki exporter dropped 1 entries (after 3 retries: ingester down); see the "
        "exporter's stats()"
    )
    assert fields == {"url": f"{loki.url}/loki/api/v1/push", "status": 503}
    assert levels()["loki-drop:ingester_error"] == "error"


def test_a_request_given_up_with_a_spool_behind_is_spooled_and_said_so(
    loki: LokiReceiver, reports: Reports, levels: Any
) -> None:
    sink = exporter(loki, batch_bytes=1024)
    sink.spooled = True
    second = given_up(loki, sink)
    assert sink.last_export_reasons == [("ingester_error", 2), ("ingester_error", 2)]
    assert sink.last_export_retry == second
    figures = sink.stats()
    assert figures["dropped_entries"] == {"ingester_error": 2}  # the refused request only
    assert figures["spooled_entries"] == 2
    message, fields = reports.only("loki-spooled")
    assert message == (
        "fapilog loki exporter: 2 entries not delivered (after 3 retries: ingester down); "
        "kept in the disk spool, sent again later"
    )
    assert fields == {"url": f"{loki.url}/loki/api/v1/push", "status": 503}
    assert levels()["loki-spooled"] == "warning"


def test_a_rate_limit_given_up_is_counted_as_rate_limited(loki: LokiReceiver) -> None:
    loki.fail(429, body="slow down")
    sink = exporter(loki)
    try:
        assert sink.export([record(0), record(1)]) == FAILURE
    finally:
        sink.shutdown()
    assert sink.last_export_reasons == [("rate_limited", 2)]
    assert sink.stats()["dropped_entries"] == {"rate_limited": 2}


# -- an export's accounting ------------------------------------------------------------------------


def test_a_delivered_export_leaves_nothing_lost_nor_to_retry(loki: LokiReceiver) -> None:
    sink = exporter(loki, tenant_id="team-a")
    try:
        assert sink.export([record(0), record(1)]) == SUCCESS
        assert sink.force_flush() is True
    finally:
        sink.shutdown()
    assert (sink.last_export_dropped, sink.last_export_reasons, sink.last_export_retry) == (
        0,
        [],
        [],
    )
    assert seqs(loki) == [0, 1]
    headers = loki.pushes[0].headers
    assert headers["user-agent"] == "fapilog-loki/0.1"
    assert headers["x-scope-orgid"] == "team-a"
    assert "authorization" not in headers
    assert sink.spool_destination == f"{loki.url}/loki/api/v1/push tenant=team-a"
    figures = sink.stats()
    assert figures["sent_entries"] == 2 and figures["sent_requests"] == 1
    assert figures["requests"] == {"204": 1}
    assert figures["request_duration_seconds"]["204"]["count"] == 1
    assert figures["label_values_folded"] == {} and figures["structured_metadata"] is True


def test_an_export_after_shutdown_sends_nothing_and_hands_everything_back(
    loki: LokiReceiver,
) -> None:
    sink = exporter(loki)
    sink.shutdown()
    sink.shutdown()  # twice: nothing raises
    batch = [record(0), record(1)]
    assert sink.export(batch) == FAILURE
    assert (sink.last_export_dropped, sink.last_export_reasons) == (2, None)
    assert sink.last_export_retry == batch
    assert loki.pushes == []


def test_lines_over_max_line_bytes_are_dropped_before_sending_and_said_once(
    loki: LokiReceiver, reports: Reports
) -> None:
    sink = exporter(loki, max_line_bytes=200)
    batch = [record(0), record(1, pad="x" * 300), record(2, pad="y" * 300), record(3)]
    try:
        assert sink.export(batch) == FAILURE
    finally:
        sink.shutdown()
    assert seqs(loki) == [0, 3]
    assert sink.last_export_reasons == [("line_too_long", 2)]
    assert sink.last_export_dropped == 2 and sink.last_export_retry == []
    figures = sink.stats()
    assert figures["dropped_entries"] == {"line_too_long": 2}
    assert figures["dropped_bytes"]["line_too_long"] > 600
    message, fields = reports.only("loki-drop:line_too_long")
    assert message == (
        "fapilog loki exporter dropped 2 lines longer than 200 bytes (FAPILOG_LOKI__MAX_LINE_BYTES)"
    )
    assert fields == {}


def test_a_line_of_exactly_max_line_bytes_is_sent(loki: LokiReceiver) -> None:
    probe = exporter(loki)
    try:
        assert probe.export([record(0, pad="x" * 100)]) == SUCCESS
    finally:
        probe.shutdown()
    length = len(loki.entries()[0].line.encode())
    for limit, sent in ((length, 1), (length - 1, 0)):
        sink = exporter(loki, max_line_bytes=limit)
        try:
            sink.export([record(1, pad="x" * 100)])
        finally:
            sink.shutdown()
        assert sink.stats()["sent_entries"] == sent


def test_a_record_without_a_time_takes_its_observed_time_else_the_time_it_is_sent(
    loki: LokiReceiver,
) -> None:
    observed, bare = record(0), record(1)
    observed.log_record.timestamp = None
    observed.log_record.observed_timestamp = time.time_ns() - 5 * 10**9 + 1
    bare.log_record.timestamp = None
    bare.log_record.observed_timestamp = None
    sink = exporter(loki)
    before = time.time_ns()
    try:
        assert sink.export([observed, bare]) == SUCCESS
    finally:
        sink.shutdown()
    stamps = {json.loads(e.line)["seq"]: e.timestamp for e in loki.entries()}
    assert stamps[0] == observed.log_record.observed_timestamp
    assert before <= stamps[1] <= time.time_ns()


def test_a_record_whose_labels_cannot_be_read_goes_to_the_fallback_stream(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = exporter(loki)

    def unreadable(readable: ReadableLogRecord, now: float) -> Any:
        raise ValueError("labels")

    monkeypatch.setattr(sink._lines, "key", unreadable)
    try:
        assert sink.export([record(0)]) == SUCCESS
    finally:
        sink.shutdown()
    assert list(loki.streams()) == [(("service_name", "unknown_service"),)]
    assert seqs(loki) == [0]


# -- retries ---------------------------------------------------------------------------------------


def test_transient_failures_are_retried_with_backoff_and_said(
    loki: LokiReceiver, reports: Reports, levels: Any
) -> None:
    loki.fail(500, times=2, body="boom")
    sink = exporter(loki, max_retries=5)
    try:
        assert sink.export([record(0)]) == SUCCESS
    finally:
        sink.shutdown()
    assert [push.status for push in loki.pushes] == [500, 500, 204]
    figures = sink.stats()
    assert figures["retries"] == 2 and figures["requests"] == {"500": 2, "204": 1}
    message, fields = reports.messages("loki-retry")[0]
    assert message.startswith(
        "fapilog loki exporter: push failed (HTTP 500: boom); retrying in 0.0"
    )
    assert message.endswith(" s")
    assert fields == {"url": f"{loki.url}/loki/api/v1/push", "status": 500}
    assert levels()["loki-retry"] == "warning"


def test_a_connection_refused_is_retried_and_said_without_a_status(reports: Reports) -> None:
    with LokiReceiver() as gone:
        url = gone.url
    sink = LokiExporter(LokiSettings(url=url, **{**FAST, "max_retries": 1}))
    try:
        assert sink.export([record(0)]) == FAILURE
    finally:
        sink.shutdown()
    message, fields = reports.messages("loki-retry")[0]
    assert message.startswith("fapilog loki exporter: push failed (ConnectError: ")
    assert fields["status"] is None
    assert sink.last_export_reasons == [("ingester_error", 1)]
    assert sink.stats()["requests"] == {"error": 2}


def test_retry_after_is_honoured_up_to_five_minutes(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = exporter(loki, max_retries=2)
    waits: list[float] = []
    real_wait = sink._stop.wait

    def wait(delay: float) -> bool:
        waits.append(delay)
        return real_wait(0)

    monkeypatch.setattr(sink._stop, "wait", wait)
    loki.fail(429, times=1, retry_after=7)
    loki.fail(503, times=1, retry_after=86400)
    try:
        assert sink.export([record(0)]) == SUCCESS
    finally:
        sink.shutdown()
    assert waits == [7.0, 300.0]


def test_the_backoff_doubles_from_min_to_max_with_jitter_below_double() -> None:
    settings = LokiSettings(url="http://127.0.0.1:9", min_backoff=0.5, max_backoff=5.0)
    sink = LokiExporter(settings, rng=random.Random(7))
    twin = random.Random(7)
    try:
        for attempt in range(6):
            delay = min(0.5 * 2**attempt, 5.0)
            assert sink._backoff(attempt) == min(twin.uniform(delay, 2 * delay), 5.0)
    finally:
        sink.shutdown()
    assert all(LokiExporter(settings)._backoff(9) == 5.0 for _ in range(3))


def test_shutdown_during_the_backoff_wait_gives_the_request_up_as_shutdown(
    loki: LokiReceiver,
) -> None:
    loki.fail(503, body="down")
    sink = exporter(loki, min_backoff=30, max_backoff=60, max_retries=10)
    results: list[LogRecordExportResult] = []
    worker = threading.Thread(target=lambda: results.append(sink.export([record(0)])))
    worker.start()
    assert loki.wait_for_pushes(1, 10)
    sink.shutdown()
    worker.join(10)
    assert not worker.is_alive() and results == [FAILURE]
    assert sink.last_export_reasons == [("shutdown", 1)]
    assert len(loki.pushes) == 1


# -- Loki's answers --------------------------------------------------------------------------------


def test_a_refusal_names_the_tenant_setting_when_loki_wants_one(reports: Reports) -> None:
    with LokiReceiver(auth_enabled=True) as loki:
        sink = exporter(loki)
        try:
            assert sink.export([record(0)]) == FAILURE
        finally:
            sink.shutdown()
    message, fields = reports.only("loki-drop:ingester_error")
    assert message == (
        "fapilog loki exporter dropped 1 entries (HTTP 401: no org id; set "
        "FAPILOG_LOKI__TENANT_ID (sent as X-Scope-OrgID) for a multi-tenant Loki); see the "
        "exporter's stats()"
    )
    assert fields["status"] == 401


def test_a_400_that_lists_nothing_is_an_unknown_outcome(
    loki: LokiReceiver, reports: Reports
) -> None:
    loki.fail(400, times=1, body="bad request")
    sink = exporter(loki)
    try:
        assert sink.export([record(0), record(1)]) == FAILURE
    finally:
        sink.shutdown()
    assert sink.last_export_reasons == [("unknown_outcome", 2)]
    assert sink.stats()["unknown_outcome"] == 2
    message, _ = reports.only("loki-unknown-outcome")
    assert "push of 2 entries" in message and "(HTTP 400: bad request)" in message


def test_an_error_body_is_scrubbed_of_the_credentials_and_cut_in_the_report(
    reports: Reports,
) -> None:
    """A proxy echoing the request's headers in its error: neither the password, the pair
    nor its base64 form appear in what fapilog says."""
    with LokiReceiver(basic=("user", "s3cret-pass")) as loki:
        loki.fail(403, times=1, echo_headers=True)
        sink = exporter(loki, username="user", password="s3cret-pass")
        try:
            assert sink.export([record(0)]) == FAILURE
        finally:
            sink.shutdown()
    message, _ = reports.only("loki-drop:ingester_error")
    encoded = base64.b64encode(b"user:s3cret-pass").decode()
    assert "s3cret-pass" not in message and encoded not in message
    assert "authorization" in message.lower()
    shown = message[message.index("(HTTP 403: ") + len("(HTTP 403: ") : message.index("); see the")]
    assert len(shown) <= 300


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (403, (FAILURE, "loki-drop:ingester_error", "; see the")),  # given up
        (503, (SUCCESS, "loki-retry", "; retrying in ")),  # retried, then delivered
    ],
)
def test_an_error_body_is_reported_up_to_its_first_300_characters(
    loki: LokiReceiver, reports: Reports, status: int, outcome: tuple[Any, str, str]
) -> None:
    result, key, after = outcome
    body = "".join(f"{n:03d}," for n in range(100))  # 400 characters, no two alike
    loki.fail(status, times=1, body=body)
    sink = exporter(loki)
    try:
        assert sink.export([record(0)]) == result
    finally:
        sink.shutdown()
    message, _ = reports.only(key)
    assert f"(HTTP {status}: {body[:300]}){after}" in message


def test_entries_loki_ignored_as_too_far_behind_are_counted_and_the_rest_sent(
    reports: Reports,
) -> None:
    hour = 3600 * 10**9
    with LokiReceiver() as loki:
        sink = exporter(loki)
        try:
            assert sink.export([record(0)]) == SUCCESS  # the stream's newest: now
            before = sink.stats()["sent_bytes"]
            late = [record(1, age=2 * hour), record(2, age=2 * hour), record(3)]
            assert sink.export(late) == FAILURE
        finally:
            sink.shutdown()
        assert seqs(loki) == [0, 3]
    assert sink.last_export_reasons == [("out_of_order", 2)]
    figures = sink.stats()
    assert figures["sent_entries"] == 2 and figures["dropped_entries"] == {"out_of_order": 2}
    sent, dropped = figures["sent_bytes"], figures["dropped_bytes"]["out_of_order"]
    assert type(sent) is int and type(dropped) is int  # whole bytes
    # the request's bytes shared out by entries: two of three entries dropped, one sent
    assert dropped - 2 * (sent - before) in (0, 1)
    message, fields = reports.only("loki-drop:out_of_order")
    assert message.startswith("fapilog loki exporter dropped 2 entries (HTTP 400: ")
    assert fields["status"] == 400
    assert sink._split_until > time.monotonic() + 500  # one stream per request a while


def test_after_an_out_of_order_answer_an_export_cuts_one_stream_per_request(
    loki: LokiReceiver,
) -> None:
    """For a while after it, requests are cut stream by stream: two streams of two entries
    go in two requests, where three entries fit in one."""
    hour = 3600 * 10**9
    sink = exporter(loki, batch_bytes=1024, labels=["service_name", "s=s"])
    try:
        assert sink.export([record(0, s="a")]) == SUCCESS
        assert sink.export([record(1, s="a", age=2 * hour), record(2, s="a")]) == FAILURE
        pushed = len(loki.pushes)
        batch = [record(seq, s=s, pad="x" * 150) for seq, s in enumerate("aabb", 3)]
        assert sink.export(batch) == SUCCESS
    finally:
        sink.shutdown()
    streams = [len(push.body["streams"]) for push in loki.pushes[pushed:]]
    assert streams == [1, 1]


def test_a_stream_over_the_limit_alone_in_its_request_is_dropped_as_stream_limited(
    reports: Reports,
) -> None:
    with LokiReceiver(max_streams=1) as loki:
        sink = exporter(loki, labels=["service_name", "s=s"])
        try:
            assert sink.export([record(0, s="a")]) == SUCCESS
            assert sink.export([record(1, s="b"), record(2, s="b")]) == FAILURE
        finally:
            sink.shutdown()
        assert seqs(loki) == [0] and len(loki.pushes) == 2  # never retried
    assert sink.last_export_reasons == [("stream_limited", 2)]
    message, fields = reports.only("loki-drop:stream_limited")
    assert message.startswith("fapilog loki exporter dropped 2 entries (HTTP 429: Maximum active")
    assert fields["status"] == 429


def test_a_loki_before_2_9_gets_the_whole_request_again_with_every_entry_in_order(
    reports: Reports,
) -> None:
    """Loki 2.8 refuses a request carrying structured metadata as a whole: it is sent again
    with the traced entries' fields in their lines and the other entries as they were."""
    with LokiReceiver(structured_metadata="unsupported") as old:
        sink = exporter(old)
        batch = [record(0, traced=True), record(1), record(2, traced=True), record(3)]
        try:
            assert sink.export(batch) == SUCCESS
        finally:
            sink.shutdown()
        assert [push.status for push in old.pushes] == [400, 204]
        (stream,) = old.streams().values()
        assert [json.loads(entry.line)["seq"] for entry in stream] == [0, 1, 2, 3]
        assert [("trace_id" in json.loads(entry.line)) for entry in stream] == [True, False] * 2
    assert sink.stats()["sent_entries"] == 4 and sink.stats()["structured_metadata"] is False
    assert reports.keys().count("loki-metadata-off") == 1


def test_requests_built_before_metadata_went_off_keep_every_entry_in_its_order() -> None:
    """Loki 2.8, one export of several requests whose streams each begin with an entry
    without metadata: once the first refusal turns metadata off, each later request is sent
    with the fields of its traced entries in their lines, the others as they were."""
    with LokiReceiver(structured_metadata="unsupported") as old:
        sink = exporter(old, batch_bytes=1024)
        batch = [record(seq, traced=seq % 2 == 1, pad="x" * 300) for seq in range(8)]
        try:
            assert sink.export(batch) == SUCCESS
        finally:
            sink.shutdown()
        assert [push.status for push in old.pushes].count(400) == 1
        assert len(old.pushes) > 3  # several requests after the refusal
        lines = [json.loads(entry.line) for entry in old.entries()]
        assert sorted(line["seq"] for line in lines) == list(range(8))
        assert all(entry.metadata == {} for entry in old.entries())
        traced = [line for line in lines if "trace_id" in line]
        assert sorted(line["seq"] for line in traced) == [1, 3, 5, 7]
    assert sink.stats()["sent_entries"] == 8


def test_a_400_naming_the_push_request_and_listing_too_many_refusals_is_an_unknown_outcome(
    loki: LokiReceiver,
) -> None:
    """(No Loki answers so.) Three metadata refusals listed for a request of two entries:
    the answer does not add up, whatever else it names; nothing is sent again."""
    loki.fail(
        400,
        times=1,
        body="3 errors like: stream '{service_name=\"api\"}' includes structured metadata, "
        "but this feature is disallowed (PushRequest)",
    )
    sink = exporter(loki)
    try:
        assert sink.export([record(0, traced=True), record(1, traced=True)]) == FAILURE
    finally:
        sink.shutdown()
    assert len(loki.pushes) == 1
    assert sink.last_export_reasons == [("unknown_outcome", 2)]


def test_a_400_naming_the_push_request_is_not_taken_for_a_metadata_refusal_without_metadata(
    loki: LokiReceiver, reports: Reports
) -> None:
    """(A proxy's or a newer Loki's decoding error.) No entry carried metadata: the answer
    says nothing about metadata, so the outcome is unknown and metadata stays on."""
    loki.fail(400, times=1, body="error decoding PushRequest: unexpected EOF")
    sink = exporter(loki)
    try:
        assert sink.export([record(0), record(1)]) == FAILURE
    finally:
        sink.shutdown()
    assert len(loki.pushes) == 1
    assert sink.last_export_reasons == [("unknown_outcome", 2)]
    assert sink.stats()["structured_metadata"] is True
    assert "loki-metadata-off" not in reports.keys()  # noqa: SIM118 (a list)


@pytest.mark.parametrize("span_hours", [1, 2])
def test_a_stream_is_resent_alone_unless_it_spans_more_than_an_hour(
    reports: Reports, span_hours: int
) -> None:
    """Loki refused the request's last stream (the stream limit) and stored the others:
    each stream is sent again alone, except one spanning more than an hour, which Loki
    could answer "too far behind" for entries it holds: its outcome is unknown."""
    hour = 3600 * 10**9
    now = time.time_ns()
    with LokiReceiver(max_streams=1) as loki:
        sink = exporter(loki, labels=["service_name", "s=s"])
        first, early, late, other = (record(seq, s=s) for seq, s in enumerate("aaab"))
        stamps = (now, now - span_hours * hour, now, now + 2)
        for readable, stamp in zip((first, early, late, other), stamps, strict=True):
            readable.log_record.timestamp = stamp
        try:
            assert sink.export([first]) == SUCCESS
            assert sink.export([early, late, other]) == FAILURE
        finally:
            sink.shutdown()
        statuses = [push.status for push in loki.pushes]
    figures = sink.stats()
    assert figures["dropped_entries"] == {"stream_limited": 1}
    if span_hours == 1:  # exactly the window: resent, and counted as sent
        assert statuses == [204, 429, 204, 429]
        assert (figures["unknown_outcome"], figures["sent_entries"]) == (0, 3)
        return
    assert statuses == [204, 429, 429]
    assert (figures["unknown_outcome"], figures["sent_entries"]) == (2, 1)
    message, _ = reports.only("loki-unknown-outcome")
    assert message.startswith(
        "fapilog loki exporter: the answer to a push of 2 entries does not say which were "
        "stored (HTTP 429/400 for several streams: Maximum active stream limit exceeded"
    )


@pytest.mark.parametrize(("status", "delivered"), [(200, True), (300, False)])
def test_any_2xx_answer_is_a_delivery_and_a_3xx_is_not(
    loki: LokiReceiver, reports: Reports, status: int, delivered: bool
) -> None:
    """(A proxy in front of Loki answering 200, or a redirect, which is not followed: its
    body is shown.)"""
    loki.fail(status, times=1, body="from a proxy")
    sink = exporter(loki)
    try:
        result = sink.export([record(0)])
    finally:
        sink.shutdown()
    assert result == (SUCCESS if delivered else FAILURE)
    assert sink.last_export_dropped == (0 if delivered else 1)
    assert sink.stats()["sent_entries"] == (1 if delivered else 0)
    assert len(loki.pushes) == 1
    if not delivered:
        message, _ = reports.only("loki-drop:ingester_error")
        assert f"(HTTP {status}: from a proxy)" in message


def test_a_redirect_is_not_followed(loki: LokiReceiver) -> None:
    """(A 307 keeps the method and body: followed, it would deliver to a place fapilog was
    not configured to send logs to.)"""
    target = f"{loki.url}/loki/api/v1/push".encode()
    redirect = (
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: " + target + b"\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with DripServer(interval=0.001, response=redirect) as proxy:
        sink = LokiExporter(LokiSettings(url=proxy.url, **{**FAST, "max_retries": 0}))
        try:
            assert sink.export([record(0)]) == FAILURE
        finally:
            sink.shutdown()
        assert proxy.requests == 1
    assert loki.pushes == []
    assert sink.last_export_reasons == [("ingester_error", 1)]


def test_a_transport_of_the_applications_own_delivers() -> None:
    """(No deadline around its requests: httpx's own timeouts bound them.)"""
    with LokiReceiver() as loki:
        transport = httpx.HTTPTransport()
        sink = LokiExporter(LokiSettings(url=loki.url, **FAST), transport=transport)
        try:
            assert sink.export([record(0)]) == SUCCESS
        finally:
            sink.shutdown()
        assert seqs(loki) == [0]


def test_a_transport_of_the_applications_own_still_has_the_timeout() -> None:
    """A server that never answers, behind a transport without fapilog's deadline: httpx's
    own timeouts, set to `timeout` (1 s, not httpx's default 5 s), end the push."""
    with DripServer(interval=30) as silent:
        transport = httpx.HTTPTransport()
        settings = {**FAST, "timeout": 1, "max_retries": 0}
        sink = LokiExporter(LokiSettings(url=silent.url, **settings), transport=transport)
        results: list[LogRecordExportResult] = []
        worker = threading.Thread(target=lambda: results.append(sink.export([record(0)])))
        worker.start()
        worker.join(4)
        alive = worker.is_alive()
        sink.shutdown()
    worker.join(10)
    assert not alive and results == [FAILURE]


def test_a_request_answered_a_byte_at_a_time_ends_at_its_timeout() -> None:
    """Each byte comes well within httpx's read timeout; the whole answer would take 14 s:
    the request is cut at `timeout` (1 s) all the same."""
    with DripServer(interval=0.2) as slow:
        sink = LokiExporter(LokiSettings(url=slow.url, **{**FAST, "timeout": 1, "max_retries": 0}))
        try:
            assert sink.export([record(0)]) == FAILURE
        finally:
            sink.shutdown()
        assert slow.requests == 1
    assert sink.last_export_reasons == [("ingester_error", 1)]


def test_an_export_failing_after_its_accounting_counts_nothing_as_export_failed(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The report of a refusal raising, say: the entry is already counted as refused.)"""
    sink = exporter(loki)

    def failing(*args: Any) -> None:
        raise RuntimeError("report")

    monkeypatch.setattr(sink, "_report_drop", failing)
    try:
        assert sink.export([record(0, age=OLD)]) == FAILURE
    finally:
        sink.shutdown()
    assert sink.last_export_dropped == 1
    assert sink.last_export_reasons == [
        ("greater_than_max_sample_age", 1),
        ("export_failed", 0),
    ]


def test_a_request_loki_2_8_refused_for_its_metadata_counts_what_its_resend_loses() -> None:
    """The request sent again without metadata has an entry refused in its turn (too old):
    that loss is counted in the export's result and the exporter's figures."""
    with LokiReceiver(structured_metadata="unsupported") as old:
        sink = exporter(old)
        try:
            assert sink.export([record(0, traced=True), record(1, age=OLD)]) == FAILURE
        finally:
            sink.shutdown()
        assert seqs(old) == [0]
        assert [push.status for push in old.pushes] == [400, 400]
    assert sink.last_export_reasons == [("greater_than_max_sample_age", 1)]
    figures = sink.stats()
    assert figures["sent_entries"] == 1
    assert figures["dropped_entries"] == {"greater_than_max_sample_age": 1}


def test_a_loki_that_took_only_entries_without_metadata_may_still_refuse_it() -> None:
    """Loki 2.8: entries without metadata are accepted, which says nothing of metadata; the
    first request with metadata is refused as a whole and sent again without."""
    with LokiReceiver(structured_metadata="unsupported") as old:
        sink = exporter(old)
        try:
            assert sink.export([record(0)]) == SUCCESS
            assert sink.export([record(1, traced=True)]) == SUCCESS
        finally:
            sink.shutdown()
        assert seqs(old) == [0, 1]
        assert [push.status for push in old.pushes] == [204, 400, 204]
    assert sink.stats()["structured_metadata"] is False


def test_a_loki_that_took_metadata_once_is_never_taken_for_one_refusing_it(
    loki: LokiReceiver, reports: Reports
) -> None:
    """Once a request with structured metadata was accepted, a later 400 naming the
    PushRequest is not read as an old Loki refusing metadata, whatever was sent between."""
    sink = exporter(loki)
    try:
        assert sink.export([record(0, traced=True)]) == SUCCESS
        assert sink.export([record(1)]) == SUCCESS  # no metadata in this one
        loki.fail(400, times=1, body="error decoding PushRequest: unexpected EOF")
        assert sink.export([record(2, traced=True)]) == FAILURE
    finally:
        sink.shutdown()
    assert sink.last_export_reasons == [("unknown_outcome", 1)]
    assert sink.stats()["structured_metadata"] is True
    assert "loki-metadata-off" not in reports.keys()  # noqa: SIM118 (a list)


@pytest.mark.parametrize(("ignored", "of"), [(3, 2), (1, 3)])
def test_an_ingester_answer_that_does_not_add_up_is_an_unknown_outcome(
    loki: LokiReceiver, reports: Reports, ignored: int, of: int
) -> None:
    """ "N out of M ignored" for a request of two entries, with N over M or M not two: which
    entries were stored is not known."""
    loki.fail(
        400,
        times=1,
        body="entry with timestamp 1 ignored, reason: 'entry too far behind', "
        f'total ignored: {ignored} out of {of} for stream: {{service_name="api"}}',
    )
    sink = exporter(loki)
    try:
        assert sink.export([record(0), record(1)]) == FAILURE
    finally:
        sink.shutdown()
    assert sink.last_export_reasons == [("unknown_outcome", 2)]
    figures = sink.stats()
    assert figures["unknown_outcome"] == 2 and figures["dropped_entries"] == {}
    message, _ = reports.only("loki-unknown-outcome")
    assert "(HTTP 400: entry with timestamp 1 ignored, reason: 'entry too far" in message

"""The Loki exporter's contract, in-process: `LokiExporter` itself (no pipeline) against the
strict receiver on 127.0.0.1 (tests/peers/loki_receiver.py). What `push_once` (``fapilog
check``) sends and answers, how the exporter names itself, what an answer listing its
rejected entries costs when some carried structured metadata, answers that do not add up,
and the exact diagnostics. Backoffs are a few milliseconds: each test takes well under a
second."""

from __future__ import annotations

import base64
import json
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


# -- abort -----------------------------------------------------------------------------------------


def test_abort_cuts_a_push_in_progress_and_stops_retrying() -> None:
    """A server that read the request and answers one byte every 10 s: abort, from another
    thread, ends the export at once, with nothing retried."""
    with DripServer(interval=10) as slow:
        sink = LokiExporter(
            LokiSettings(url=slow.url, **{**FAST, "timeout": 60, "max_retries": 100})
        )
        results: list[LogRecordExportResult] = []
        worker = threading.Thread(target=lambda: results.append(sink.export([record(0)])))
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
    assert results == [FAILURE]
    assert sink.last_export_reasons == [("shutdown", 1)]


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

"""Loki at its limits, against the strict receiver (which behaves as Loki's distributor and
ingester do, read from their source): partial acceptance counted entry by entry, the active
stream limit (split per stream, refused streams dropped as ``stream_limited``, never
retried), the cardinality guard, structured metadata that a Loki refuses, a lean line
without ``| json`` clashes, and tenant ids. In every test `stats()` matches what the
receiver stored, exactly."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import fapilog
from conftest import in_span
from conftest import loki_exporter as exporter
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.loki import LokiExporter
from fapilog.exporters.loki_config import sanitize_label_name
from fapilog.exporters.loki_response import ingester_ignored, rejections
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.pipeline.accounting import unbalanced
from fapilog.settings import LokiSettings
from peers.loki_receiver import LokiReceiver, grouped, json_names

FAST = {"min_backoff": 0.02, "max_backoff": 0.2, "max_retries": 20}
QUEUE = {"max_size": 50_000, "max_delay": 30}


def configure(receiver: LokiReceiver, **loki: Any) -> None:
    queue = loki.pop("queue", QUEUE)
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="api",
        loki={"url": receiver.url, **FAST, **loki},
        queue=queue,
        spool={"enabled": False},
    )


def exact(receiver: LokiReceiver) -> dict[str, Any]:
    """The pipeline's figures for Loki, checked against what the receiver stored."""
    figures = fapilog.stats()
    assert unbalanced(figures) == {}
    loki = figures["exporters"]["loki"]
    assert loki["exported"] == receiver.count() == exporter().stats()["sent_entries"]
    return loki


# -- partial acceptance -------------------------------------------------------------------


def test_196_good_lines_and_4_too_long_in_one_push(loki: LokiReceiver) -> None:
    """Loki stores the 196 and rejects the 4 (one 400 listing them): 196 exported, 4
    dropped as too long, nothing resent."""
    configure(loki, max_line_bytes=0, batch_bytes=8 << 20, queue={**QUEUE, "batch_size": 1000})
    log = fapilog.get_logger("partial")
    for seq in range(200):
        log.info("e", seq=seq, blob="x" * (300_000 if seq % 50 == 49 else 10))
    assert fapilog.force_flush(20)
    assert [push.status for push in loki.pushes] == [400]  # one push, never resent
    assert rejections(loki.pushes[0].message) == {"line_too_long": 4}  # (grouped by message)
    assert len(loki.entries()) == 196
    figures = exact(loki)
    assert (figures["exported"], figures["dropped"]) == (196, 4)
    assert figures["dropped_by_reason"] == {"line_too_long": 4}
    assert exporter().stats()["dropped_entries"] == {"line_too_long": 4}


def test_old_timestamps_rejected_in_part_are_counted_exactly(loki: LokiReceiver) -> None:
    """85 entries stored, 15 too old: the 400 says how many; the rest counts as sent."""
    now = time.time_ns()
    old = now - 8 * 86400 * 10**9
    batch = [record(old + seq if seq % 20 < 3 else now + seq, seq) for seq in range(100)]
    sink = LokiExporter(LokiSettings(url=loki.url, **FAST))
    try:
        assert sink.export(batch).name == "FAILURE"
    finally:
        sink.shutdown()
    assert [push.status for push in loki.pushes] == [400]
    assert loki.count() == 85
    assert sink.stats()["sent_entries"] == 85
    assert sink.stats()["dropped_entries"] == {"greater_than_max_sample_age": 15}
    assert sink.last_export_dropped == 15
    assert sink.last_export_reasons == [("greater_than_max_sample_age", 15)]


def record(
    timestamp: int,
    seq: int,
    *,
    context: Any = None,
    resource: Resource | None = None,
    **attributes: Any,
) -> ReadableLogRecord:
    """A record as another library's LoggerProvider could hand one over."""
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=timestamp,
            context=context,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=f"e{seq}",
            attributes={"seq": seq, **attributes},
        ),
        resource=resource or Resource.create({"service.name": "api"}),
        instrumentation_scope=InstrumentationScope("direct"),
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "max entry size '262144' bytes exceeded for stream '{a=\"1\"}' while adding an "
            "entry with length '300000' bytes",
            {"line_too_long": 1},
        ),
        (
            "3 errors like: entry for stream '{a=\"1\"}' has timestamp too old: x; "
            "2 errors like: stream '{a=\"1\"}' includes structured metadata, but this feature "
            "is disallowed. Please see `limits_config`; 1 errors like: entry for stream "
            "'{a=\"1\"}' has timestamp too new: y",
            {
                "greater_than_max_sample_age": 3,
                "disallowed_structured_metadata": 2,
                "too_far_in_future": 1,
            },
        ),
        # a label value quoting another message does not pass for it
        (
            "stream '{user=\"timestamp too old\"}' includes structured metadata, but this "
            "feature is disallowed.",
            {"disallowed_structured_metadata": 1},
        ),
        ("bad request", None),  # a proxy's: which entries, not said
        ("error at least one label pair is required per stream", None),  # a whole stream
        ("2 errors like: couldn't parse labels; 1 errors like: max entry size", None),
        ("", None),
    ],
)
def test_a_400_body_is_read_as_loki_writes_it(body: str, expected: Any) -> None:
    assert rejections(body) == expected


def test_the_ingesters_answer_says_how_many_of_one_streams_entries_it_ignored() -> None:
    body = (
        "entry with timestamp 2026-01-01 ignored, reason: 'entry too far behind, oldest "
        "acceptable timestamp is: 2026-01-02',\n"
        "user 'fake', total ignored: 3 out of 10 for stream: {a=\"1\"}"
    )
    assert ingester_ignored(body) == (3, 10)
    assert rejections(body) is None  # (not the distributor's)
    assert ingester_ignored("total ignored: 3 out of 10 for stream: {a}") is None  # no reason


def test_entries_too_far_behind_are_counted_from_the_ingesters_answer(loki: LokiReceiver) -> None:
    """The ingester ignores entries over 1 h behind their stream's newest, and says how many
    of the stream's, for the request's last stream: the request is sent again one stream
    per request, which makes each count exact."""
    now = time.time_ns()
    hours = 3600 * 10**9
    sink = LokiExporter(LokiSettings(url=loki.url, labels=["service_name", "s=s"], **FAST))
    try:
        assert sink.export([record(now, 0, s="a"), record(now, 1, s="b")]).name == "SUCCESS"
        fresh = [record(now + i, 10 + i, s="b") for i in range(1, 5)]
        late = [record(now - 2 * hours + i, 20 + i, s="a") for i in range(3)]
        assert sink.export([*fresh, *late]).name == "FAILURE"
    finally:
        sink.shutdown()
    figures = sink.stats()
    assert figures["dropped_entries"] == {"out_of_order": 3}
    assert figures["sent_entries"] == loki.count() == 2 + 4
    assert sink.last_export_dropped == 3
    assert sink.last_export_reasons == [("out_of_order", 3)]
    assert [len(push.body["streams"]) for push in loki.pushes[1:]] == [2, 1, 1]


def test_the_receiver_groups_failures_as_loki_does() -> None:
    assert grouped(["a"]) == "a"
    assert grouped(["a", "a", "b"]) == "2 errors like: a; 1 errors like: b"
    too_old = "entry for stream '{a=\"1\"}' has timestamp too old: 1"
    assert rejections(grouped([too_old] * 5)) == {"greater_than_max_sample_age": 5}


# -- the stream limit ---------------------------------------------------------------------

VALUES = 10_000
LIMIT = 100


def _many_values(receiver: LokiReceiver, **loki: Any) -> float:
    configure(receiver, labels=["service_name", "user=user"], **loki)
    log = fapilog.get_logger("cardinality")
    started = time.monotonic()
    for seq in range(VALUES):
        log.info("e", seq=seq, user=f"u{seq}")
    return started


def test_the_stream_limit_splits_per_stream_and_drops_the_refused_ones() -> None:
    """Guard off: the first push stores the streams within the limit and answers 429; the
    batch is then sent one stream per request, and so are the next ones, so each refused
    stream is known and dropped as stream_limited (never retried: waiting does not lift the
    limit). A stream Loki already has keeps arriving, even when it is the last of a request
    (Loki answers for the last stream only)."""
    with LokiReceiver(max_streams=LIMIT) as receiver:
        configure(receiver, labels=["service_name", "user=user"], label_values_max=0)
        log = fapilog.get_logger("cardinality")
        log.info("first", seq=-1)  # the stream without a user: Loki has it
        assert fapilog.force_flush(10)
        started = time.monotonic()
        for seq in range(VALUES):
            log.info("e", seq=seq, user=f"u{seq}")
            if seq % 500 == 499:
                log.info("steady", seq=seq)  # the existing stream, last of its batch
        batch_wait = 1.0
        # the records of the streams Loki took arrive at once, not after retries
        assert receiver.wait_for_entries(LIMIT, 2 * batch_wait + 1)
        assert time.monotonic() - started <= 2 * batch_wait + 1
        assert fapilog.force_flush(120)
        streams = receiver.streams()
        assert len(streams) == LIMIT  # the stream without a user, and 99 users
        assert len(streams[(("service_name", "api"),)]) == 1 + VALUES // 500
        figures = exact(receiver)
        assert figures["exported"] == 1 + VALUES // 500 + (LIMIT - 1)
        assert figures["dropped_by_reason"] == {"stream_limited": VALUES - (LIMIT - 1)}
        details = exporter().stats()
        assert details["retries"] == 0
        assert details["dropped_entries"] == {"stream_limited": VALUES - (LIMIT - 1)}
        assert {push.status for push in receiver.pushes} <= {204, 429}


def test_the_cardinality_guard_keeps_within_the_stream_limit() -> None:
    """Guard on (the default): at most 100 values, __other__ among them, reach Loki; the
    excess is counted as folded and nothing is refused."""
    with LokiReceiver(max_streams=LIMIT) as receiver:
        _many_values(receiver)
        assert fapilog.force_flush(60)
        users = {dict(key)["user"] for key in receiver.streams()}
        assert len(users) <= LIMIT and "__other__" in users
        assert {push.status for push in receiver.pushes} == {204}
        figures = exact(receiver)
        assert figures["exported"] == VALUES and figures["dropped"] == 0
        folded = exporter().stats()["label_values_folded"]
        assert folded == {"user": VALUES - (len(users) - 1)}
        others = receiver.entries(user="__other__")
        assert len(others) == folded["user"]
        # the value the label could not keep stays in the line (renamed: no | json clash)
        assert json.loads(others[0].line)["attr.user"].startswith("u")


def test_the_guard_forgets_values_not_seen_within_its_window() -> None:
    from fapilog.exporters.loki_streams import OTHER, LabelGuard

    guard = LabelGuard(3, 10.0)
    assert [guard.admit("u", v, 0.0) for v in ("a", "b", "c")] == ["a", "b", OTHER]
    assert guard.admit("u", "a", 5.0) == "a"  # seen: kept, and remembered as of now
    assert guard.admit("u", "d", 12.0) == "d"  # "b" (last seen at 0) has aged out
    assert guard.admit("u", "b", 12.0) == OTHER
    assert guard.folded == {"u": 2}
    assert LabelGuard(0, 1.0).admit("u", "anything", 0.0) == "anything"


# -- structured metadata ------------------------------------------------------------------


def test_metadata_a_loki_refuses_goes_in_the_line_with_one_warning(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with LokiReceiver(structured_metadata=False) as old:
        configure(old)  # auto, the default
        log = fapilog.get_logger("meta")
        for seq in range(50):
            in_span(lambda seq=seq: log.info("traced", seq=seq))
        assert fapilog.force_flush(20)
        for seq in range(50, 60):
            log.info("later", seq=seq)
        assert fapilog.force_flush(20)
        entries = old.entries()
        assert sorted(json.loads(e.line)["seq"] for e in entries) == list(range(60))
        assert all(entry.metadata == {} for entry in entries)
        traced = [json.loads(e.line) for e in entries if json.loads(e.line)["seq"] < 50]
        assert all(line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" for line in traced)
        figures = exact(old)
        assert (figures["exported"], figures["dropped"]) == (60, 0)
        assert exporter().stats()["structured_metadata"] is False
        assert [p.status for p in old.pushes][-1] == 204 and len(old.pushes) == 3
    err = capfd.readouterr().err
    assert err.count("does not allow structured metadata") == 1


def test_auto_resends_what_a_loki_before_2_9_refuses_whole(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Loki 2.8 refuses a JSON request carrying structured metadata as a whole (a 400 that
    lists no entries): `auto` sends it again without, and stops sending metadata."""
    with LokiReceiver(structured_metadata="unsupported") as old:
        configure(old)
        log = fapilog.get_logger("meta")
        for seq in range(20):
            in_span(lambda seq=seq: log.info("traced", seq=seq))
        assert fapilog.force_flush(20)
        log.info("later", seq=20)
        assert fapilog.force_flush(20)
        assert sorted(json.loads(e.line)["seq"] for e in old.entries()) == list(range(21))
        figures = exact(old)
        assert (figures["exported"], figures["dropped"], figures["unknown_outcome"]) == (21, 0, 0)
    assert capfd.readouterr().err.count("does not allow structured metadata") == 1


def test_metadata_true_counts_a_refusal_as_a_drop() -> None:
    with LokiReceiver(structured_metadata=False) as old:
        configure(old, structured_metadata=True)
        in_span(lambda: fapilog.get_logger("m").info("traced"))
        assert fapilog.force_flush(20)
        assert old.count() == 0
        figures = exact(old)
        assert figures["dropped_by_reason"] == {"disallowed_structured_metadata": 1}


# -- the line -----------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", ["auto", False])
def test_a_line_repeats_no_label_or_metadata_and_json_extracts_no_clash(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch, metadata: Any
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=pay")
    configure(loki, structured_metadata=metadata)
    log = fapilog.get_logger("lean")
    in_span(lambda: log.info("traced", order=1, level_hint="x"))
    log.warning("plain", environment="from-the-record")  # same name as a label
    assert fapilog.force_flush(10)
    resource_keys = {"service.name", "deployment.environment.name", "team", "host.name"}
    for key, entries in loki.streams().items():
        labels = dict(key)
        assert labels["environment"] == "production"  # (fapilog's default)
        for entry in entries:
            line = json.loads(entry.line)
            taken = set(labels) | set(entry.metadata)
            assert not json_names(entry.line) & taken  # no *_extracted from | json
            shown = {k for k in resource_keys if k in line}
            assert not {sanitize_label_name(k) for k in shown} & taken
            if metadata == "auto":
                assert not shown  # labels or structured metadata: not repeated
                assert entry.metadata.get("team") == "pay"
            if line["message"] == "plain":
                assert line["attr.environment"] == "from-the-record"  # kept, renamed
    exact(loki)


def test_resource_in_line_keeps_the_resource_attributes(loki: LokiReceiver) -> None:
    configure(loki, resource_in_line=True)
    fapilog.get_logger("full").info("e")
    assert fapilog.force_flush(10)
    (entry,) = loki.entries()
    assert json.loads(entry.line)["service.name"] == "api"


# -- tenants ------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", [".", ".."])
def test_dot_tenants_fail_at_configure(loki: LokiReceiver, tenant: str) -> None:
    with pytest.raises(ConfigurationError, match="FAPILOG_LOKI__TENANT_ID"):
        configure(loki, tenant_id=tenant)


def test_a_401_without_tenant_names_the_setting(capfd: pytest.CaptureFixture[str]) -> None:
    with LokiReceiver(auth_enabled=True) as receiver:
        configure(receiver)
        fapilog.get_logger("t").info("e")
        assert fapilog.force_flush(10)
        assert receiver.count() == 0
        exact(receiver)
    err = capfd.readouterr().err
    assert "HTTP 401: no org id" in err and "FAPILOG_LOKI__TENANT_ID" in err


def test_reasons_refused_and_retried_stay_apart_for_the_spool() -> None:
    """A reason may be both refused for good (a 403) and to retry (a 503 after the
    retries): the pairs keep them apart, refused first, so the spool counts as dropped
    exactly those refused (and the unknown ones under their own term)."""
    from fapilog.exporters.contract import shares
    from fapilog.exporters.loki_response import Undelivered

    result = Undelivered()
    result.count("ingester_error", 5)
    result.count("unknown_outcome", 3)
    result.count("ingester_error", 10, retry=True)
    pairs = result.reasons()
    assert pairs == [("ingester_error", 5), ("unknown_outcome", 3), ("ingester_error", 10)]
    assert shares(pairs, 8) == [("ingester_error", 5), ("unknown_outcome", 3)]  # (spooled: 10)
    assert shares(pairs, 18) == pairs
    assert shares(pairs, 20)[-1] == ("export_failed", 2)


class _NoText:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


def test_a_value_with_no_text_never_costs_its_batch(loki: LokiReceiver) -> None:
    """A record attribute whose str() raises, named like a structured metadata entry (the
    resource's `team`): compared for a clash, it is kept apart, and the batch is sent."""
    sink = LokiExporter(LokiSettings(url=loki.url, **FAST))
    resource = Resource.create({"service.name": "api", "team": "pay"})
    odd = record(time.time_ns(), 0, resource=resource, team=_NoText())
    try:
        assert sink.export([odd, record(time.time_ns(), 1)]).name == "SUCCESS"
    finally:
        sink.shutdown()
    assert loki.count() == 2


def test_an_export_that_fails_midway_counts_what_was_sent_and_spools_nothing(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(A fault injected into the encoder, the second request of three: a bug.) What was
    delivered counts as such; the rest is lost, never handed to the spool (a batch failing
    so would fail on every replay)."""
    sink = LokiExporter(LokiSettings(url=loki.url, batch_bytes=1024, **FAST))
    encode = sink._requests.encode
    calls = []

    def failing(chunk: Any) -> bytes:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected")
        return encode(chunk)

    monkeypatch.setattr(sink._requests, "encode", failing)
    batch = [record(time.time_ns() + seq, seq, pad="x" * 300) for seq in range(9)]
    try:
        assert sink.export(batch).name == "FAILURE"
    finally:
        sink.shutdown()
    sent = sink.stats()["sent_entries"]
    assert 0 < sent == loki.count() < 9
    assert sink.last_export_dropped == 9 - sent
    assert sink.last_export_retry == []
    assert sink.last_export_reasons == [("export_failed", 9 - sent)]


def test_one_stream_per_request_holds_for_the_rest_of_the_export() -> None:
    """Loki answers for a request's last stream only. Once a 429 showed the stream limit,
    every later request of the same export carries one stream too, so a refused stream is
    never hidden behind an accepted one."""
    now = time.time_ns()
    pad = "x" * 200  # two entries a request (batch_bytes=1024)
    with LokiReceiver(max_streams=2) as receiver:
        sink = LokiExporter(
            LokiSettings(url=receiver.url, labels=["service_name", "s=s"], batch_bytes=1024, **FAST)
        )
        try:
            assert sink.export([record(now, 0, s="a", pad=pad)]).name == "SUCCESS"
            batch = [record(now + i, i, s=s, pad=pad) for i, s in enumerate("pqra", start=1)]
            assert sink.export(batch).name == "FAILURE"
        finally:
            sink.shutdown()
        assert {dict(key)["s"] for key in receiver.streams()} == {"a", "p"}
        assert sink.stats()["sent_entries"] == receiver.count() == 3
        assert sink.stats()["dropped_entries"] == {"stream_limited": 2}
        assert len(receiver.pushes[1].body["streams"]) == 2  # (the first request: 2 streams)
        assert all(len(push.body["streams"]) == 1 for push in receiver.pushes[2:])


def test_a_stream_spanning_over_an_hour_is_not_resent_but_unknown() -> None:
    """Resent, an entry Loki holds would come back 'too far behind' (Loki checks that before
    it ignores a duplicate): such a stream's outcome is counted as unknown, never guessed."""
    now = time.time_ns()
    hour = 3600 * 10**9
    with LokiReceiver(max_streams=1) as receiver:
        sink = LokiExporter(LokiSettings(url=receiver.url, labels=["service_name", "s=s"], **FAST))
        try:
            assert sink.export([record(now, 0, s="a")]).name == "SUCCESS"
            batch = [
                record(now - 2 * hour, 1, s="a"),
                record(now + 1, 2, s="a"),
                record(now, 3, s="b"),
            ]
            assert sink.export(batch).name == "FAILURE"
        finally:
            sink.shutdown()
        figures = sink.stats()
        assert figures["unknown_outcome"] == 2 and figures["dropped_entries"] == {
            "stream_limited": 1
        }
        assert figures["sent_entries"] == 1 <= receiver.count() <= 1 + 2


def test_auto_turns_metadata_off_for_every_request_of_the_export() -> None:
    """Loki 2.8, several requests in one export: the first refusal turns metadata off, and
    every later request of the export goes without it."""
    with LokiReceiver(structured_metadata="unsupported") as old:
        sink = LokiExporter(LokiSettings(url=old.url, batch_bytes=1024, **FAST))
        traced = trace.set_span_in_context(
            NonRecordingSpan(
                SpanContext(
                    0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1)
                )
            )
        )
        now = time.time_ns()
        batch = [record(now + seq, seq, context=traced, pad="x" * 300) for seq in range(9)]
        try:
            assert sink.export(batch).name == "SUCCESS"
        finally:
            sink.shutdown()
        assert old.count() == 9 == sink.stats()["sent_entries"]
        assert [push.status for push in old.pushes].count(400) == 1

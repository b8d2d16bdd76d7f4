"""`FAPILOG_LOKI__ENCODING=protobuf`: Loki's native body (logproto.PushRequest, raw snappy)
against the strict receiver, which decodes it with the protobuf runtime from its own
descriptor: exact lines, nanosecond timestamps, Go-quoted labels, structured metadata;
batching and retries unchanged; the same batch received identically as JSON and protobuf;
the receiver's own strictness; the configure-time error without cramjam."""

from __future__ import annotations

import json
import time
from typing import Any

import cramjam
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import fapilog
import fapilog.testing
from conftest import loki_exporter as exporter
from conftest import run_python
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.loki import LokiExporter, encode_push_request, go_quote, labels_string
from fapilog.exporters.loki_config import label_value
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import LokiSettings
from peers.loki_receiver import LokiReceiver, go_unquote, parse_labels_string, push_request_class

FAST = {"min_backoff": 0.02, "max_backoff": 0.2, "max_retries": 50, "batch_wait": 0.05}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
# needs Go escaping: quote, backslash, newline, tab, NUL, DEL, NBSP, zero-width space,
# a language tag (both format characters); plus printable non-ASCII kept as is
AWKWARD = 'q"uo\\te\nnew\tline\x00\x7f\u00a0\u200b\U000e0001 é ☃ 😀 日本'


def configure(receiver: LokiReceiver, **loki: Any) -> None:
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="api",
        loki={"url": receiver.url, "encoding": "protobuf", **FAST, **loki},
        queue={"max_size": 20_000},
    )


def in_span(func: Any) -> None:
    context = SpanContext(
        trace_id=int(TRACE_ID, 16), span_id=int(SPAN_ID, 16), is_remote=False,
        trace_flags=TraceFlags(1),
    )  # fmt: skip
    with trace.use_span(NonRecordingSpan(context)):
        func()


def record(timestamp: int, body: str, *, traced: bool = False, **attributes: Any) -> Any:
    context = None
    if traced:
        span = NonRecordingSpan(
            SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), False, TraceFlags(1))
        )
        context = trace.set_span_in_context(span)
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=timestamp,
            context=context,
            severity_number=SeverityNumber.WARN
            if attributes.pop("warn", False)
            else SeverityNumber.INFO,
            severity_text="INFO",
            body=body,
            attributes=attributes,
        ),
        resource=Resource.create({"service.name": "api", "deployment.environment.name": "prod"}),
        instrumentation_scope=InstrumentationScope("direct"),
    )


def test_records_arrive_with_exact_lines_labels_and_metadata(loki: LokiReceiver) -> None:
    configure(loki, labels=["service_name", "level", "team=team"], static_labels={"odd": AWKWARD})
    log = fapilog.get_logger("orders")
    for seq in range(200):
        log.info("order", seq=seq, team=AWKWARD if seq % 2 else "pay")
    in_span(lambda: log.warning("traced", seq=200))
    assert fapilog.force_flush(20)
    assert {push.status for push in loki.pushes} == {204}
    for push in loki.pushes:
        assert push.headers["content-type"] == "application/x-protobuf"
        assert "content-encoding" not in push.headers  # gzip (on by default) does not apply
    shown = label_value(AWKWARD)  # (quotes, controls and the like become _)
    base = {"level": "info", "odd": shown, "service_name": "api"}
    assert set(loki.streams()) == {
        tuple(sorted({**base, "team": "pay"}.items())),
        tuple(sorted({**base, "team": shown}.items())),
        tuple(sorted({**base, "level": "warning"}.items())),  # no team attribute
    }
    lines = [json.loads(entry.line) for entry in loki.entries()]
    assert sorted(line["seq"] for line in lines) == list(range(201))
    # the label holds "pay" as it is: not repeated in the line; the cleaned value is kept
    assert not any("team" in line for line in lines)
    assert {line["attr.team"] for line in lines if "attr.team" in line} == {AWKWARD}
    (traced,) = loki.entries(level="warning")
    assert (traced.metadata["trace_id"], traced.metadata["span_id"]) == (TRACE_ID, SPAN_ID)
    assert "trace_id" not in json.loads(traced.line)  # (in the metadata)
    assert all("trace_id" not in entry.metadata for entry in loki.entries(level="info"))
    figures = exporter().stats()
    assert figures["sent_entries"] == 201
    assert figures["dropped_entries"] == {}
    assert 0 < figures["encoded_bytes"] < figures["sent_bytes"]  # snappy compressed


def test_nanosecond_timestamps_and_lines_are_exact(loki: LokiReceiver) -> None:
    now = time.time_ns()
    stamps = [now - 123_456_789, now - 1, now, now - 10**9 + 7, (now // 10**9) * 10**9]
    batch = [record(ts, f"line {i} {AWKWARD}") for i, ts in enumerate(stamps)]
    sink = LokiExporter(LokiSettings(url=loki.url, encoding="protobuf", **FAST))
    try:
        assert sink.export(batch).name == "SUCCESS"
    finally:
        sink.shutdown()
    received = {json.loads(entry.line)["message"]: entry.timestamp for entry in loki.entries()}
    assert received == {f"line {i} {AWKWARD}": ts for i, ts in enumerate(stamps)}
    assert [e.timestamp for e in loki.entries()] == sorted(stamps)  # sorted per stream


def test_structured_metadata_can_be_switched_off() -> None:
    with LokiReceiver(structured_metadata=False) as old:
        configure(old, structured_metadata=False)
        in_span(lambda: fapilog.get_logger("t").info("traced"))
        assert fapilog.force_flush(10)
        (entry,) = old.entries()
        assert entry.metadata == {}
        assert json.loads(entry.line)["trace_id"] == TRACE_ID
        assert [push.status for push in old.pushes] == [204]


@pytest.mark.parametrize("status", [500, 429])
def test_retries_on_500_and_429_lose_nothing(loki: LokiReceiver, status: int) -> None:
    configure(loki)
    loki.fail(status, times=3, body="Ingestion rate limit exceeded")
    log = fapilog.get_logger("retry")
    for seq in range(50):
        log.info("e", seq=seq)
    assert fapilog.force_flush(20)
    assert [push.status for push in loki.pushes[:4]] == [status] * 3 + [204]
    assert [json.loads(entry.line)["seq"] for entry in loki.entries()] == list(range(50))
    figures = exporter().stats()
    assert figures["retries"] == 3
    assert figures["dropped_entries"] == {}


def _batch() -> list[Any]:
    now = time.time_ns()
    batch = []
    for i in range(60):
        batch.append(
            record(
                now - (i * 7_919_000) % 10**9,  # out of order, sorted per stream by the exporter
                f"event {i} {AWKWARD if i % 5 == 0 else ''}",
                traced=i % 3 == 0,
                warn=i % 4 == 0,
                seq=i,
            )
        )
    batch.append(record(now - 5, "same ts"))
    batch.append(record(now - 5, "same ts, other line"))
    return batch


def test_the_same_batch_is_received_identically_as_json_and_protobuf() -> None:
    batch = _batch()
    settings = {"static_labels": {"odd": AWKWARD}, "batch_bytes": 2048, **FAST}
    received = []
    for encoding in ("json", "protobuf"):
        with LokiReceiver() as receiver:
            sink = LokiExporter(LokiSettings(url=receiver.url, encoding=encoding, **settings))
            try:
                assert sink.export(batch).name == "SUCCESS"
            finally:
                sink.shutdown()
            assert len(receiver.pushes) > 1  # several requests, cut alike
            received.append(
                (receiver.streams(), [push.body for push in receiver.pushes], receiver.count())
            )
    (json_streams, json_bodies, json_count), (pb_streams, pb_bodies, pb_count) = received
    assert json_count == pb_count == len(batch)
    assert pb_streams == json_streams  # same streams, entries (ts, line, metadata), order
    assert pb_bodies == json_bodies  # request by request
    traced = [e for entries in pb_streams.values() for e in entries if "trace_id" in e.metadata]
    assert len(traced) == 20
    assert all(
        (e.metadata["trace_id"], e.metadata["span_id"]) == (TRACE_ID, SPAN_ID) for e in traced
    )


def test_edge_values_decode_with_the_receivers_own_descriptor() -> None:
    """The exporter's descriptor against the receiver's (written separately, after
    Loki's push.proto): field numbers and types agree, values survive exactly."""
    now = time.time_ns()
    entries = [
        (now, "x" * 300, {"trace_id": TRACE_ID, "span_id": SPAN_ID}, 0),
        (now + 1, AWKWARD, None, 0),
        (10**9, "", {"k": ""}, 0),  # proto3 zero values
        (0, "epoch", None, 0),
        (-1, "before 1970", None, 0),
        (now, "y" * 20_000, None, 0),
    ]
    labels = labels_string((("a", AWKWARD), ("service_name", "api")))
    body = encode_push_request([(labels, entries), ('{b="2"}', entries[:1])])
    decoded = push_request_class().FromString(body)
    assert [stream.labels for stream in decoded.streams] == [labels, '{b="2"}']
    assert parse_labels_string(decoded.streams[0].labels) == {"a": AWKWARD, "service_name": "api"}
    got = [
        (
            e.timestamp.seconds * 10**9 + e.timestamp.nanos,
            e.line,
            {pair.name: pair.value for pair in e.structuredMetadata} or None,
            0,
        )
        for e in decoded.streams[0].entries
    ]
    assert got == [(ts, line, metadata or None, 0) for ts, line, metadata, _ in entries]


def test_labels_are_go_quoted() -> None:
    assert go_quote("api") == '"api"'
    assert go_quote(AWKWARD) == (
        r'"q\"uo\\te\nnew\tline\x00\x7f\u00a0\u200b\U000e0001 é ☃ 😀 日本"'
    )
    assert go_quote("\x07\x08\x0c\r\x0b\x1b\x85") == r'"\a\b\f\r\v\x1b\u0085"'
    key = (("env", "prod"), ("service_name", 'a"b'))
    assert labels_string(key) == '{env="prod", service_name="a\\"b"}'
    for value in (AWKWARD, "\x07\x08\x0c\r\x0b\x1b\x85", "", "plain"):
        quoted = go_quote(value)
        assert go_unquote(quoted, 0) == (value, len(quoted))


def test_receiver_parses_labels_as_loki_does() -> None:
    assert parse_labels_string('{b="2", a="1"}') == {"b": "2", "a": "1"}
    assert parse_labels_string(' { a = "x\\u00e9\\x41\\101" , b=`raw\\n`, } ') == {
        "a": "xéAA",
        "b": "raw\\n",
    }
    assert parse_labels_string("{}") == {}
    for bad in ("", "a=1", '{a="1"', "{a=1}", '{a.b="1"}', '{a="\\q"}', '{a="x\ny"}',
                '{a="1" b="2"}', '{a="1", a="2"}', '{a="\\ud800"}', '{a="\\xff"}'):  # fmt: skip
        with pytest.raises(Exception, match=r"."):
            parse_labels_string(bad)


def _post(receiver: LokiReceiver, body: bytes) -> httpx.Response:
    return httpx.post(
        receiver.push_url, content=body, headers={"Content-Type": "application/x-protobuf"}
    )


def test_receiver_rejects_corrupted_snappy_and_bad_protobuf(loki: LokiReceiver) -> None:
    response = _post(loki, b"\xff\xff\xff\xff\x0f this is not snappy")
    assert response.status_code == 400
    assert "snappy" in response.text
    garbage = bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff\x0f\x01"))  # truncated
    response = _post(loki, garbage)
    assert response.status_code == 400
    assert "PushRequest" in response.text
    valid = encode_push_request([('{a="1"}', [(time.time_ns(), "ok", None, 0)])])
    snappy = bytes(cramjam.snappy.compress_raw(valid))
    assert _post(loki, snappy[:-3]).status_code == 400  # cut short
    response = httpx.post(loki.push_url, content=snappy)  # no Content-Type at all
    assert response.status_code == 400
    assert loki.count() == 0
    assert _post(loki, snappy).status_code == 204
    assert loki.count() == 1


def test_receiver_rejects_streams_without_labels_and_keeps_the_valid_ones(
    loki: LokiReceiver,
) -> None:
    push_request = push_request_class()
    now = time.time_ns()
    message = push_request()
    for labels in ("{}", '{a=""}', '{a="1", a="2"}', "{a.b=1}", '{b="2", a="1"}'):
        stream = message.streams.add(labels=labels)
        entry = stream.entries.add(line=labels)
        entry.timestamp.seconds, entry.timestamp.nanos = divmod(now, 10**9)
    body = bytes(cramjam.snappy.compress_raw(message.SerializeToString()))
    response = _post(loki, body)
    assert response.status_code == 400  # partial acceptance: one 400 listing the rejects
    # grouped as Loki groups them: "<n> errors like: <message>", joined by "; "
    assert "2 errors like: error at least one label pair is required per stream" in response.text
    assert "duplicate label name" in response.text
    assert "couldn't parse labels" in response.text
    stored = loki.streams()
    assert list(stored) == [(("a", "1"), ("b", "2"))]  # unsorted labels are fine
    assert [entry.timestamp for entry in stored[(("a", "1"), ("b", "2"))]] == [now]
    (push,) = loki.pushes
    assert (push.accepted, push.rejected) == (1, 4)


def test_receiver_checks_timestamps(loki: LokiReceiver) -> None:
    push_request = push_request_class()
    message = push_request()
    entry = message.streams.add(labels='{a="1"}').entries.add(line="no timestamp")
    assert not entry.HasField("timestamp")
    response = _post(loki, bytes(cramjam.snappy.compress_raw(message.SerializeToString())))
    assert response.status_code == 400
    assert "timestamp too old" in response.text  # Go's zero time
    entry.timestamp.seconds, entry.timestamp.nanos = time.time_ns() // 10**9, 10**9
    response = _post(loki, bytes(cramjam.snappy.compress_raw(message.SerializeToString())))
    assert response.status_code == 400
    assert "nanos" in response.text
    assert loki.count() == 0


@pytest.mark.slow
def test_missing_cramjam_is_a_configuration_error(subprocess_env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "sys.modules['cramjam'] = None  # as if the extra were not installed\n"
        "import fapilog\n"
        "from fapilog.exceptions import ConfigurationError\n"
        "try:\n"
        "    fapilog.configure_logging(exporters=['loki'])\n"
        "except ConfigurationError as exc:\n"
        "    print('ERROR', exc)\n"
        "else:\n"
        "    print('configured')\n"
        "fapilog.configure_logging(exporters=['loki'], loki={'encoding': 'json'})\n"
        "print('json ok')\n"
    )
    env = {**subprocess_env, "FAPILOG_LOKI__ENCODING": "protobuf"}
    status, out, err = run_python(code, env)
    assert status == 0, err
    first, second = out.strip().splitlines()
    assert first.startswith("ERROR FAPILOG_LOKI__ENCODING")
    assert "pip install 'cramjam>=2.8,<3'" in first
    assert second == "json ok"

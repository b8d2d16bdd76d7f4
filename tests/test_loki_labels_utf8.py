"""Loki labels are always what Loki stores alike from both encodings: a lone surrogate (what
decoding with ``surrogateescape`` leaves of an undecodable byte: an environment variable, a
file name, a header), U+FFFD, a quote, a backslash or a control character in a stream label,
a static label, the service name or a logger name becomes ``_``, and every record of its
batch is stored by the strict receiver, with the same label value from a JSON and from a
protobuf push. The receiver itself refuses a JSON push with a lone surrogate escape as Loki
does (the whole request), U+FFFD in a label (the stream), and stores quotes, backslashes and
control characters of a JSON push's label values escaped, as Loki does."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import fapilog
from conftest import loki_exporter
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.loki import LokiExporter, go_quote, labels_string
from fapilog.exporters.loki_config import label_value
from fapilog.exporters.loki_protobuf import encode_push_request, utf8_streams, utf8_text
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import LokiSettings
from peers.loki_receiver import LokiReceiver, go_unquote, parse_labels_string

FAST = {"min_backoff": 0.02, "max_backoff": 0.2, "max_retries": 5, "batch_wait": 0.05}
BAD = "eu\udcff"  # b"eu\xff".decode("utf-8", "surrogateescape")
SHOWN = "eu\\udcff"  # a line's or metadata's text: the escape as text, six characters for one
LABEL = "eu_"  # a label's
RECORDS = 60


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_every_record_of_a_batch_with_a_lone_surrogate_label_is_stored(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    # a resource attribute read from the environment, as os.environ decodes a bad byte
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.namespace.name=shop\udcfe")
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="api",
        loki={
            "url": loki.url,
            "encoding": encoding,
            "labels": ["service_name", "level", "logger", "k8s.namespace.name", "region=region"],
            "static_labels": {"site": "x\udcfdy"},
            **FAST,
        },
        queue={"batch_size": 1000, "max_delay": 0.2},
    )
    plain, odd = fapilog.get_logger("orders"), fapilog.get_logger("orders\udcfc")
    for seq in range(RECORDS):
        region = BAD if seq % 4 == 0 else "eu"
        (odd if seq % 10 == 0 else plain).info("order", seq=seq, region=region)
    assert fapilog.force_flush(20)
    assert loki.wait_for_entries(RECORDS, 10)

    stored = [json.loads(entry.line)["seq"] for entry in loki.entries()]
    assert sorted(stored) == list(range(RECORDS))  # not one record lost
    assert {push.status for push in loki.pushes} == {204}
    labels = [dict(key) for key in loki.streams()]
    assert {stream["region"] for stream in labels} == {"eu", LABEL}
    assert {stream["logger"] for stream in labels} == {"orders", "orders_"}
    assert {stream["site"] for stream in labels} == {"x_y"}
    assert {stream["k8s_namespace_name"] for stream in labels} == {"shop_"}
    assert len(loki.entries(region=LABEL)) == RECORDS // 4
    figures = loki_exporter().stats()
    assert figures["sent_entries"] == RECORDS
    assert figures["dropped_entries"] == {}


def record(level: str, **attributes: Any) -> ReadableLogRecord:
    """A record as another library's LoggerProvider could hand one over."""
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=time.time_ns(),
            context=None,
            severity_number=SeverityNumber.INFO,
            severity_text=level,
            body="order",
            attributes=attributes,
        ),
        resource=Resource.create({"service.name": "api"}),
        instrumentation_scope=InstrumentationScope("direct"),
    )


def test_both_encodings_send_the_same_labels(loki: LokiReceiver) -> None:
    """The same records sent as JSON and as protobuf land in the same streams (a severity
    text with a lone surrogate, from a foreign record, included)."""
    for encoding in ("json", "protobuf"):
        sink = LokiExporter(
            LokiSettings(
                url=loki.url,
                encoding=encoding,
                labels=["level", "region=region"],
                static_labels={"site": "a\ud800b"},
                **FAST,
            )
        )
        batch = [
            record("INFO", region=BAD, encoding=encoding),
            record("INFO", region="eu", encoding=encoding),
            record("NOTICE\udcff", region="eu", encoding=encoding),
        ]
        try:
            assert sink.export(batch).name == "SUCCESS"
        finally:
            sink.shutdown()
    site = ("site", "a_b")
    assert set(loki.streams()) == {
        (("level", "info"), ("region", LABEL), site),
        (("level", "info"), ("region", "eu"), site),
        (("level", "notice_"), ("region", "eu"), site),
    }
    for entries in loki.streams().values():  # each stream got its entry from each encoding
        assert sorted(json.loads(entry.line)["encoding"] for entry in entries) == [
            "json",
            "protobuf",
        ]


def test_label_text_is_utf8_and_reads_alike_in_both_encodings() -> None:
    assert label_value(BAD) == LABEL and utf8_text(BAD) == SHOWN
    assert label_value("ok é") == "ok é" == utf8_text("ok é")
    assert label_value("é" * 2000).encode() == ("é" * 1024).encode()  # cut at 2048 bytes
    assert label_value("\udcff" * 400) == "_" * 400
    assert label_value('a"b\\c\nd\te\ufffdf\x7fg\u2028h') == "a_b_c_d_e_f_g_h"
    # the protobuf labels string carries the same text Go unquotes (a raw surrogate too)
    assert go_unquote(go_quote(BAD), 0)[0] == SHOWN
    assert go_unquote(go_quote(SHOWN), 0)[0] == SHOWN
    key = (("region", SHOWN), ("site", "é\\ud800"))
    assert parse_labels_string(labels_string(key)) == dict(key)


def test_text_that_slipped_through_is_made_utf8_when_encoded(loki: LokiReceiver) -> None:
    """Labels are made valid where they are read; a line or metadata that was not (from a
    renderer of its own, say) is made so at encoding time instead of costing the push."""
    now = time.time_ns()
    streams: dict[Any, Any] = {
        (("region", BAD),): [(now, "line \udcff", {"trace_id": "t\ud800"}, 10)],
        (("region", SHOWN),): [(now + 1, "line two", None, 8)],
    }
    clean = utf8_streams(streams)
    assert clean == {
        (("region", SHOWN),): [
            (now, "line \\udcff", {"trace_id": "t\\ud800"}, 10),
            (now + 1, "line two", None, 8),
        ]
    }
    encode_push_request([(labels_string(key), entries) for key, entries in clean.items()])
    for encoding in ("json", "protobuf"):
        sink = LokiExporter(LokiSettings(url=loki.url, encoding=encoding, **FAST))
        try:
            body = sink._requests.encode(streams)  # the exporter's own encoding step
        finally:
            sink.shutdown()
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        if encoding == "protobuf":
            headers = {"Content-Type": "application/x-protobuf"}
        else:
            assert b"\\udcff" in gzip.decompress(body)
        assert httpx.post(loki.push_url, content=body, headers=headers).status_code == 204
    assert {entry.line for entry in loki.entries()} == {"line \\udcff", "line two"}


def test_the_receiver_refuses_a_lone_surrogate_escape_as_loki_does(loki: LokiReceiver) -> None:
    """Loki's JSON parser refuses a lone surrogate escape in a label, a line or metadata:
    the whole request fails with 400. A surrogate pair is a character like any other."""
    stamp = str(time.time_ns())
    for stream in (
        {"stream": {"region": "eu\ud800"}, "values": [[stamp, "line"]]},
        {"stream": {"region": "eu"}, "values": [[stamp, "line \udcff"]]},
        {"stream": {"region": "eu"}, "values": [[stamp, "line", {"trace_id": "\udc00"}]]},
    ):
        body = json.dumps({"streams": [stream, {"stream": {"ok": "1"}, "values": [[stamp, "x"]]}]})
        answer = httpx.post(
            loki.push_url, content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400, body
        assert "invalid escape sequence" in answer.text
    assert loki.count() == 0
    paired = json.dumps({"streams": [{"stream": {"mood": "😀"}, "values": [[stamp, "😀"]]}]})
    assert "\\ud83d\\ude00" in paired
    answer = httpx.post(loki.push_url, content=paired, headers={"Content-Type": "application/json"})
    assert answer.status_code == 204
    assert loki.entries(mood="😀")[0].line == "😀"


@pytest.mark.parametrize(
    "value",
    ["eu\ufffd", "eu" + chr(0xDCFF), 'say "hi"', "two\nlines", "tab\there", "back\\slash"],
    ids=["replacement", "surrogate", "quote", "newline", "tab", "backslash"],
)
def test_a_label_value_loki_would_refuse_or_escape_is_stored_alike_from_both_encodings(
    loki: LokiReceiver, value: str
) -> None:
    """U+FFFD (Loki refuses the stream), a lone surrogate, a quote, a newline, a tab, a
    backslash (Loki's JSON path stores them escaped, its protobuf path as they are): both
    pushes are accepted, in one stream with one stored value."""
    sent = 0
    for encoding in ("json", "protobuf"):
        sink = LokiExporter(
            LokiSettings(url=loki.url, encoding=encoding, labels=["region=region"], **FAST)
        )
        try:
            assert sink.export([record("INFO", region=value, encoding=encoding)]).name == "SUCCESS"
        finally:
            sink.shutdown()
        sent += sink.stats()["sent_entries"]
    assert {push.status for push in loki.pushes} == {204}
    assert sent == loki.count() == 2  # the figures match what Loki stored
    ((key, entries),) = loki.streams().items()
    assert dict(key)["region"] == label_value(value)
    assert sorted(json.loads(entry.line)["encoding"] for entry in entries) == ["json", "protobuf"]


def test_the_receiver_stores_label_values_as_loki_does() -> None:
    """Loki's JSON path stores quotes, backslashes and control characters escaped, its
    protobuf path as they are; U+FFFD fails the stream (partial acceptance)."""
    stamp = str(time.time_ns())
    with LokiReceiver() as receiver:
        body = json.dumps(
            {
                "streams": [
                    {"stream": {"v": 'a"b\\c\nd'}, "values": [[stamp, "x"]]},
                    {"stream": {"v": "bad\ufffd"}, "values": [[stamp, "y"]]},
                ]
            }
        )
        answer = httpx.post(
            receiver.push_url, content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400 and "invalid UTF-8 rune" in answer.text
        assert [dict(key)["v"] for key in receiver.streams()] == ['a\\"b\\\\c\\nd']

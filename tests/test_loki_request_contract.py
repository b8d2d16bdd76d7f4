"""The Loki exporter's request bodies: how a batch's streams are cut into requests of at
most `batch_bytes`, and the exact body and headers of each encoding (JSON, gzip, protobuf
with snappy), decoded back here. In-process."""

from __future__ import annotations

import gzip
from typing import Any

import cramjam
import orjson
import pytest

from fapilog.exporters import loki_request
from fapilog.exporters.loki_request import RequestEncoder
from fapilog.settings import LokiSettings
from peers.loki_receiver import push_request_class

A = (("app", "api"), ("env", "prod"))
B = (("app", "worker"),)


def encoder(**settings: Any) -> RequestEncoder:
    return RequestEncoder(LokiSettings(url="http://127.0.0.1:1", **settings))


def entry(ns: int, size: int, metadata: dict[str, str] | None = None) -> Any:
    return (ns, f"line {ns}", metadata, size)


def test_entries_fill_a_request_up_to_batch_bytes_exactly() -> None:
    chunks = encoder(batch_bytes=1024).chunks({A: [entry(1, 512), entry(2, 512), entry(3, 1)]})
    assert chunks == [{A: [entry(1, 512), entry(2, 512)]}, {A: [entry(3, 1)]}]


def test_an_entry_larger_than_batch_bytes_goes_alone() -> None:
    chunks = encoder(batch_bytes=1024).chunks({A: [entry(1, 5000), entry(2, 10)]})
    assert chunks == [{A: [entry(1, 5000)]}, {A: [entry(2, 10)]}]
    # first in an empty request, it is not preceded by an empty one
    assert encoder(batch_bytes=1024).chunks({A: [entry(1, 5000)]}) == [{A: [entry(1, 5000)]}]


def test_streams_share_a_request_unless_one_stream_each_is_asked() -> None:
    streams = {A: [entry(1, 10)], B: [entry(2, 10)]}
    assert encoder().chunks(dict(streams)) == [{A: [entry(1, 10)], B: [entry(2, 10)]}]
    assert encoder().chunks(dict(streams), one_stream=True) == [
        {A: [entry(1, 10)]},
        {B: [entry(2, 10)]},
    ]


def test_entries_are_sorted_by_time_within_each_stream() -> None:
    (chunk,) = encoder().chunks({A: [entry(3, 1), entry(1, 1), entry(2, 1)]})
    assert [e[0] for e in chunk[A]] == [1, 2, 3]


def test_no_streams_no_requests() -> None:
    assert encoder().chunks({}) == []


def test_json_with_gzip_by_default_every_value_exact() -> None:
    requests = encoder()
    assert requests.headers == {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    body = requests.encode({A: [entry(5, 1), entry(6, 1, {"trace_id": "ab"})], B: [entry(7, 1)]})
    assert orjson.loads(gzip.decompress(body)) == {
        "streams": [
            {
                "stream": {"app": "api", "env": "prod"},
                "values": [["5", "line 5"], ["6", "line 6", {"trace_id": "ab"}]],
            },
            {"stream": {"app": "worker"}, "values": [["7", "line 7"]]},
        ]
    }


def test_json_without_gzip_is_the_plain_body() -> None:
    requests = encoder(gzip=False)
    assert requests.headers == {"Content-Type": "application/json"}
    body = requests.encode({B: [entry(7, 1)]})
    assert orjson.loads(body) == {
        "streams": [{"stream": {"app": "worker"}, "values": [["7", "line 7"]]}]
    }


def test_protobuf_is_snappy_compressed_never_gzip_with_go_quoted_labels() -> None:
    requests = encoder(encoding="protobuf", gzip=True)
    assert requests.headers == {"Content-Type": "application/x-protobuf"}
    body = requests.encode({A: [entry(5, 1, {"trace_id": "ab"})], (("q", 'a"b'),): [entry(6, 1)]})
    message = push_request_class().FromString(bytes(cramjam.snappy.decompress_raw(body)))
    assert [s.labels for s in message.streams] == ['{app="api", env="prod"}', '{q="a\\"b"}']
    first = message.streams[0].entries[0]
    assert (first.timestamp.seconds, first.timestamp.nanos, first.line) == (0, 5, "line 5")
    assert [(m.name, m.value) for m in first.structuredMetadata] == [("trace_id", "ab")]


def test_text_that_is_not_utf8_is_made_so_rather_than_cost_the_request() -> None:
    # a lone surrogate becomes its escape as visible text
    lone = "\ud800"
    for settings in ({"gzip": False}, {"encoding": "protobuf"}):
        requests = encoder(**settings)
        body = requests.encode({(("app", "a" + lone),): [(1, "x" + lone, {"k": lone}, 1)]})
        if "encoding" in settings:
            message = push_request_class().FromString(bytes(cramjam.snappy.decompress_raw(body)))
            assert message.streams[0].labels == '{app="a\\\\ud800"}'
            assert message.streams[0].entries[0].line == "x\\ud800"
        else:
            assert orjson.loads(body) == {
                "streams": [
                    {"stream": {"app": "a\\ud800"}, "values": [["1", "x\\ud800", {"k": "\\ud800"}]]}
                ]
            }


def test_the_label_strings_are_cached_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loki_request, "_LABELS_CACHE_SIZE", 2)
    made: list[Any] = []
    real = loki_request.labels_string

    def counting(key: Any) -> str:
        made.append(key)
        return real(key)

    monkeypatch.setattr(loki_request, "labels_string", counting)
    requests = encoder(encoding="protobuf")
    requests.encode({A: [entry(1, 1)]})
    requests.encode({A: [entry(2, 1)]})
    assert made == [A]
    requests.encode({B: [entry(3, 1)]})
    requests.encode({(("c", "1"),): [entry(4, 1)]})  # the cache held two: cleared first
    requests.encode({A: [entry(5, 1)]})
    assert made == [A, B, (("c", "1"),), A]


def test_entries_at_the_same_time_keep_their_order_and_only_time_sorts() -> None:
    first, second, third = (5, "zebra", None, 1), (5, "apple", None, 1), (4, "mango", None, 1)
    (chunk,) = encoder().chunks({A: [first, second, third]})
    assert chunk[A] == [third, first, second]


def test_the_next_stream_starts_an_empty_request_when_one_stream_each_is_asked() -> None:
    streams = {A: [entry(1, 10)], B: [entry(2, 512), entry(3, 512)]}
    assert encoder(batch_bytes=1024).chunks(streams, one_stream=True) == [
        {A: [entry(1, 10)]},
        {B: [entry(2, 512), entry(3, 512)]},
    ]


def test_after_a_full_request_the_next_one_starts_empty() -> None:
    chunks = encoder(batch_bytes=1024).chunks({A: [entry(1, 600), entry(2, 500), entry(3, 524)]})
    assert chunks == [{A: [entry(1, 600)]}, {A: [entry(2, 500), entry(3, 524)]}]


def test_json_bodies_are_gzipped_at_level_6() -> None:
    """Level 6, zlib's default: most of level 9's saving for far less CPU on the worker."""
    words = ["alpha", "beta", "request", "user", "GET", "/api/v1/items", "200", "12 ms"]
    entries = [
        (n, " ".join(words[(n * 7 + k * 3) % len(words)] for k in range(n % 13 + 3)), None, 1)
        for n in range(400)
    ]
    body = encoder().encode({A: entries})
    plain = encoder(gzip=False).encode({A: entries})
    assert gzip.decompress(body) == plain
    # the deflate stream after the 10-byte header (whose time field varies) is level 6's
    assert body[10:] == gzip.compress(plain, compresslevel=6)[10:]
    assert body[10:] != gzip.compress(plain, compresslevel=7)[10:]

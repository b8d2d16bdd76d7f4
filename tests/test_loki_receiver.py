"""The test receiver is strict where real Loki is strict (the rules read from Loki's source,
listed in tests/peers/loki_receiver.py): each rule an exporter could break is answered the
way real Loki answers it. Requests are raw httpx calls, so these
tests check the receiver itself, independently of fapilog's exporter."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from peers.loki_receiver import LokiReceiver

NOW = time.time_ns


@pytest.fixture
def loki() -> Iterator[LokiReceiver]:
    with LokiReceiver() as receiver:
        yield receiver


def push(
    receiver: LokiReceiver,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(receiver.push_url, content=content, headers=sent, timeout=10)


def stream(labels: dict[str, str], *values: list[Any]) -> dict[str, Any]:
    return {"stream": labels, "values": list(values)}


def test_valid_push_is_204_and_stored(loki: LokiReceiver) -> None:
    ts = str(NOW())
    response = push(loki, {"streams": [stream({"service_name": "api"}, [ts, "hello"])]})
    assert response.status_code == 204
    assert response.content == b""
    (entry,) = loki.entries(service_name="api")
    assert (str(entry.timestamp), entry.line) == (ts, "hello")


@pytest.mark.parametrize("timestamp", [1795692677577316741, "2026-11-26T12:00:00Z", "1.5e18"])
def test_timestamps_must_be_strings_of_nanoseconds(loki: LokiReceiver, timestamp: Any) -> None:
    response = push(loki, {"streams": [stream({"a": "b"}, [timestamp, "x"])]})
    assert response.status_code == 400
    assert loki.count() == 0


@pytest.mark.parametrize("name", ["service.name", "service-name", "1st", ""])
def test_an_invalid_label_name_fails_the_whole_request(loki: LokiReceiver, name: str) -> None:
    body = {
        "streams": [
            stream({"ok": "yes"}, [str(NOW()), "kept?"]),
            stream({name: "api"}, [str(NOW()), "x"]),
        ]
    }
    response = push(loki, body)
    assert response.status_code == 400
    assert "couldn't parse labels" in response.text
    assert loki.count() == 0  # nothing of the request was stored


def test_empty_label_values_are_dropped_and_an_empty_stream_rejected(loki: LokiReceiver) -> None:
    body = {
        "streams": [
            stream({"service_name": "api", "env": ""}, [str(NOW()), "stored"]),
            stream({"env": ""}, [str(NOW()), "rejected"]),
        ]
    }
    response = push(loki, body)
    assert response.status_code == 400
    assert "at least one label pair is required per stream" in response.text
    assert list(loki.streams()) == [(("service_name", "api"),)]  # partial acceptance


def test_duplicate_label_names_are_rejected(loki: LokiReceiver) -> None:
    raw = b'{"streams": [{"stream": {"a": "1", "a": "2"}, "values": [["1", "x"]]}]}'
    assert push(loki, None, raw=raw).status_code == 400


def test_too_many_labels_are_rejected(loki: LokiReceiver) -> None:
    labels = {f"l{i}": "v" for i in range(16)}
    response = push(loki, {"streams": [stream(labels, [str(NOW()), "x"])]})
    assert response.status_code == 400
    assert "limit 15" in response.text


def test_label_values_and_lines_have_size_limits(loki: LokiReceiver) -> None:
    assert (
        push(loki, {"streams": [stream({"a": "v" * 2049}, [str(NOW()), "x"])]}).status_code == 400
    )
    body = {
        "streams": [
            stream({"a": "b"}, [str(NOW()), "x" * (256 * 1024 + 1)], [str(NOW() + 1), "small"])
        ]
    }
    response = push(loki, body)
    assert response.status_code == 400
    assert "max entry size" in response.text.lower()
    assert [entry.line for entry in loki.entries()] == ["small"]


def test_structured_metadata_values_must_be_strings(loki: LokiReceiver) -> None:
    ok = push(loki, {"streams": [stream({"a": "b"}, [str(NOW()), "x", {"trace_id": "ab"}])]})
    assert ok.status_code == 204
    bad = push(loki, {"streams": [stream({"a": "b"}, [str(NOW()), "y", {"n": 1}])]})
    assert bad.status_code == 400
    assert loki.entries()[0].metadata == {"trace_id": "ab"}


def test_structured_metadata_rejected_by_an_old_loki() -> None:
    with LokiReceiver(structured_metadata=False) as old:
        body = {"streams": [stream({"a": "b"}, [str(NOW()), "x", {"trace_id": "ab"}])]}
        assert push(old, body).status_code == 400
        assert push(old, {"streams": [stream({"a": "b"}, [str(NOW()), "x"])]}).status_code == 204


def test_timestamps_too_old_or_too_new_are_rejected(loki: LokiReceiver) -> None:
    day = 86400 * 10**9
    old = push(loki, {"streams": [stream({"a": "b"}, [str(NOW() - 8 * day), "old"])]})
    new = push(loki, {"streams": [stream({"a": "b"}, [str(NOW() + day), "new"])]})
    assert (old.status_code, new.status_code) == (400, 400)
    assert "too old" in old.text
    assert "too new" in new.text


def test_out_of_order_window_and_exact_duplicates(loki: LokiReceiver) -> None:
    now = NOW()
    hour = 3600 * 10**9
    assert push(loki, {"streams": [stream({"a": "b"}, [str(now), "newest"])]}).status_code == 204
    behind = push(loki, {"streams": [stream({"a": "b"}, [str(now - hour // 2), "late"])]})
    assert behind.status_code == 204  # within the 1 h window: accepted
    too_far = push(loki, {"streams": [stream({"a": "b"}, [str(now - 2 * hour), "very late"])]})
    assert too_far.status_code == 400
    assert "entry too far behind" in too_far.text
    duplicate = push(loki, {"streams": [stream({"a": "b"}, [str(now - hour // 2), "late"])]})
    assert duplicate.status_code == 204  # silently dropped
    assert [entry.line for entry in loki.entries()] == ["newest", "late"]


def test_encodings(loki: LokiReceiver) -> None:
    body = json.dumps({"streams": [stream({"a": "b"}, [str(NOW()), "gz"])]}).encode()
    assert (
        push(loki, None, raw=gzip.compress(body), headers={"Content-Encoding": "gzip"}).status_code
        == 204
    )
    deflated = zlib.compress(body.replace(b'"gz"', b'"zz"'))
    assert (
        push(loki, None, raw=deflated, headers={"Content-Encoding": "deflate"}).status_code == 204
    )
    br = push(loki, None, raw=body, headers={"Content-Encoding": "br"})
    assert br.status_code == 400
    assert 'Content-Encoding "br" not supported' in br.text
    charset = push(
        loki, None, raw=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert charset.status_code == 204
    missing = httpx.post(loki.push_url, content=body, headers={"Content-Type": ""})
    assert missing.status_code == 400
    # any other type is protobuf + snappy (tests/test_loki_protobuf.py); this is not snappy
    proto = push(loki, None, raw=b"\xff", headers={"Content-Type": "application/x-protobuf"})
    assert proto.status_code == 400


def test_zero_streams_get_422_and_get_is_405(loki: LokiReceiver) -> None:
    assert push(loki, {"streams": []}).status_code == 422
    assert httpx.get(loki.push_url).status_code == 405


def test_rate_limit_answers_429_and_stores_nothing() -> None:
    with LokiReceiver(rate_bytes=1000, burst_bytes=1000) as limited:
        body = {"streams": [stream({"a": "b"}, [str(NOW()), "x" * 2000])]}
        response = push(limited, body)
        assert response.status_code == 429
        assert "Ingestion rate limit exceeded" in response.text
        assert limited.count() == 0


def test_active_stream_limit_answers_429() -> None:
    with LokiReceiver(max_streams=1) as limited:
        assert (
            push(limited, {"streams": [stream({"a": "1"}, [str(NOW()), "x"])]}).status_code == 204
        )
        assert (
            push(limited, {"streams": [stream({"a": "2"}, [str(NOW()), "x"])]}).status_code == 429
        )


def test_multi_tenant_needs_org_id_and_proxy_auth() -> None:
    with LokiReceiver(auth_enabled=True, bearer="t0ken") as secured:
        body = {"streams": [stream({"a": "b"}, [str(NOW()), "x"])]}
        auth = {"Authorization": "Bearer t0ken"}
        assert push(secured, body, headers=auth).status_code == 401  # no org id
        assert push(secured, body, headers={"X-Scope-OrgID": "acme"}).status_code == 401
        assert push(secured, body, headers={**auth, "X-Scope-OrgID": "a b"}).status_code == 400
        assert push(secured, body, headers={**auth, "X-Scope-OrgID": "acme"}).status_code == 204
        assert secured.count("acme") == 1
        assert secured.count() == 0


def test_failure_injection_time_count_retry_after_and_down(loki: LokiReceiver) -> None:
    body = {"streams": [stream({"a": "b"}, [str(NOW()), "x"])]}
    loki.fail(503, times=2, retry_after=7)
    first = push(loki, body)
    assert (first.status_code, first.headers["Retry-After"]) == (503, "7")
    assert push(loki, body).status_code == 503
    assert push(loki, body).status_code == 204
    loki.fail(500, seconds=0.2)
    assert push(loki, body).status_code == 500
    loki.down()
    with pytest.raises(httpx.ConnectError):
        push(loki, body)
    loki.up()
    loki.clear_failures()
    assert push(loki, {"streams": [stream({"a": "b"}, [str(NOW()), "y"])]}).status_code == 204


def test_slow_mode_delays_answers(loki: LokiReceiver) -> None:
    loki.slow(0.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            loki.push_url, content=b"{}", headers={"Content-Type": "application/json"}, timeout=0.1
        )
    loki.slow(0)


def test_query_range_like_loki(loki: LokiReceiver) -> None:
    now = NOW()
    push(
        loki,
        {
            "streams": [
                stream({"service_name": "api", "level": "info"}, [str(now), "a"],
                       [str(now + 2), "c", {"trace_id": "t1"}]),
                stream({"service_name": "api", "level": "error"}, [str(now + 1), "b"]),
                stream({"service_name": "db", "level": "info"}, [str(now + 3), "d"]),
            ]
        },
    )  # fmt: skip
    params = {"query": '{service_name="api"}', "direction": "forward", "limit": "10"}
    result = httpx.get(loki.url + "/loki/api/v1/query_range", params=params).json()
    assert result["status"] == "success"
    assert result["data"]["resultType"] == "streams"
    lines = [v[1] for s in result["data"]["result"] for v in s["values"]]
    assert sorted(lines) == ["a", "b", "c"]
    with_metadata = [s for s in result["data"]["result"] if "trace_id" in s["stream"]]
    assert with_metadata[0]["stream"] == {"service_name": "api", "level": "info", "trace_id": "t1"}
    regex = {"query": '{service_name=~"a.*", level!="info"}', "limit": "1"}
    only = httpx.get(loki.url + "/loki/api/v1/query_range", params=regex).json()
    assert [v[1] for s in only["data"]["result"] for v in s["values"]] == ["b"]
    limited = {"query": '{level="info"}', "limit": "1"}  # backward by default: the newest
    newest = httpx.get(loki.url + "/loki/api/v1/query_range", params=limited).json()
    assert [v[1] for s in newest["data"]["result"] for v in s["values"]] == ["d"]
    bad = httpx.get(loki.url + "/loki/api/v1/query_range", params={"query": "{}"})
    assert bad.status_code == 400
    labels = httpx.get(loki.url + "/loki/api/v1/labels").json()["data"]
    assert labels == ["level", "service_name"]
    values = httpx.get(loki.url + "/loki/api/v1/label/service_name/values").json()["data"]
    assert values == ["api", "db"]


def test_wait_helpers_block_until_data_arrives(loki: LokiReceiver) -> None:
    timer = threading.Timer(
        0.1, push, (loki, {"streams": [stream({"a": "b"}, [str(NOW()), "late"])]})
    )
    timer.start()
    assert loki.wait_for_entries(1, timeout=10)
    assert loki.wait_for_pushes(1, timeout=10)
    assert not loki.wait_for_entries(2, timeout=0.05)
    timer.join()

"""The Loki exporter against the strict receiver: valid labels, timestamps and lines; exactly
once and in order; retries on 429/5xx/connection errors (Retry-After honoured), drops on
other 4xx; batching; auth and tenants; promtail-like figures; configure-time errors."""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import fapilog
import fapilog.testing
from conftest import in_span
from conftest import loki_exporter as exporter
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import ReadableLogRecord, exporter_spec
from fapilog.exporters.loki import SPEC, LokiExporter, push_url, sanitize_label_name
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.pipeline.accounting import unbalanced
from fapilog.settings import LoggingSettings, LokiSettings
from peers.loki_receiver import LokiReceiver

FAST = {"min_backoff": 0.02, "max_backoff": 0.2, "max_retries": 200, "batch_wait": 0.05}


def configure(receiver: LokiReceiver, **loki: Any) -> None:
    overrides = dict(loki)
    queue = overrides.pop("queue", {"max_size": 20_000})
    spool = overrides.pop("spool", {})
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="api",
        loki={"url": receiver.url, **FAST, **overrides},
        queue=queue,
        spool=spool,
    )


def seqs_per_stream(receiver: LokiReceiver) -> dict[Any, list[int]]:
    return {
        key: [json.loads(entry.line)["seq"] for entry in entries]
        for key, entries in receiver.streams().items()
    }


def test_10000_events_arrive_exactly_once_in_order_with_valid_labels(loki: LokiReceiver) -> None:
    """Labels, timestamps and lines valid (the receiver is strict); 10,000 events exactly
    once and in order per stream."""
    configure(loki, labels=["service_name", "environment", "level"])
    log = fapilog.get_logger("orders")
    for seq in range(10_000):
        (log.warning if seq % 4 == 0 else log.info)("order", seq=seq)
    assert fapilog.force_flush(60)
    assert {push.status for push in loki.pushes} == {204}
    streams = seqs_per_stream(loki)
    assert set(streams) == {
        (("environment", "production"), ("level", "info"), ("service_name", "api")),
        (("environment", "production"), ("level", "warning"), ("service_name", "api")),
    }
    everything = [seq for seqs in streams.values() for seq in seqs]
    assert sorted(everything) == list(range(10_000))  # exactly once
    for seqs in streams.values():
        assert seqs == sorted(seqs)  # in order per stream
    first = loki.entries()[0]
    line = json.loads(first.line)
    assert line["message"] == "order"
    assert {"timestamp", "logger"} <= set(line)
    # what the labels hold is not repeated in the line (`| json` would rename it *_extracted)
    assert not {"service.name", "deployment.environment.name", "level"} & set(line)
    assert abs(first.timestamp - time.time_ns()) < 600 * 10**9  # nanoseconds, now-ish
    figures = exporter().stats()
    assert figures["sent_entries"] == 10_000
    assert figures["dropped_entries"] == {}
    assert figures["requests"] == {"204": figures["sent_requests"]}


def test_queried_back_through_the_loki_query_api(loki: LokiReceiver) -> None:
    configure(loki)
    fapilog.get_logger("q").error("payment failed", order_id=7)
    assert fapilog.force_flush(10)
    params = {"query": '{service_name="api"}', "limit": "10"}
    result = httpx.get(loki.url + "/loki/api/v1/query_range", params=params).json()
    ((_, line),) = result["data"]["result"][0]["values"]
    assert json.loads(line)["order_id"] == 7


def test_labels_are_configurable_and_sanitised(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.namespace.name=shop")
    monkeypatch.setenv("FAPILOG_LOKI__LABELS", "service_name,k8s.namespace.name,team=team,logger")
    monkeypatch.setenv("FAPILOG_LOKI__STATIC_LABELS", "cluster=eu-1")
    fapilog.configure_logging(
        exporters=["loki"], service_name="api", loki={"url": loki.url, **FAST}
    )
    fapilog.get_logger("billing").info("x", team="payments")
    fapilog.get_logger("billing").info("y")  # no team: that label is left out
    assert fapilog.force_flush(10)
    assert set(loki.streams()) == {
        (("cluster", "eu-1"), ("k8s_namespace_name", "shop"), ("logger", "billing"),
         ("service_name", "api"), ("team", "payments")),
        (("cluster", "eu-1"), ("k8s_namespace_name", "shop"), ("logger", "billing"),
         ("service_name", "api")),
    }  # fmt: skip


def test_sanitize_label_name_and_push_url() -> None:
    assert sanitize_label_name("service.name") == "service_name"
    assert sanitize_label_name("k8s-pod") == "k8s_pod"
    assert sanitize_label_name("1abc") == "_1abc"
    assert push_url("http://loki:3100") == "http://loki:3100/loki/api/v1/push"
    assert push_url("https://gw.example/loki/") == "https://gw.example/loki/loki/api/v1/push"
    full = "http://loki:3100/loki/api/v1/push"
    assert push_url(full) == full


def test_trace_and_span_ids_go_to_structured_metadata(loki: LokiReceiver) -> None:
    configure(loki)
    trace_id = in_span(lambda: fapilog.get_logger("t").info("traced"))
    fapilog.get_logger("t").info("untraced")
    assert fapilog.force_flush(10)
    traced, untraced = loki.entries()
    assert traced.metadata["trace_id"] == trace_id
    assert traced.metadata["span_id"] == "00f067aa0ba902b7"
    assert "trace_id" not in untraced.metadata
    assert "trace_id" not in json.loads(traced.line)  # (in the metadata, not repeated)
    assert all("trace_id" not in dict(key) for key in loki.streams())  # never a label


def test_structured_metadata_can_be_switched_off_for_old_loki() -> None:
    with LokiReceiver(structured_metadata=False) as old:
        configure(old, structured_metadata=False)
        in_span(lambda: fapilog.get_logger("t").info("traced"))
        assert fapilog.force_flush(10)
        (entry,) = old.entries()
        assert json.loads(entry.line)["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert [push.status for push in old.pushes] == [204]


def test_429_for_five_seconds_then_recovery_loses_nothing(loki: LokiReceiver) -> None:
    """A receiver answering 429 for 5 s, then recovering: nothing is lost."""
    configure(loki)
    loki.fail(429, seconds=5, body="Ingestion rate limit exceeded for user fake")
    log = fapilog.get_logger("burst")
    for seq in range(2000):
        log.info("e", seq=seq)
    assert fapilog.force_flush(40)
    assert any(push.status == 429 for push in loki.pushes)
    seqs = [seq for values in seqs_per_stream(loki).values() for seq in values]
    assert seqs == list(range(2000))
    figures = exporter().stats()
    assert figures["retries"] > 0
    assert figures["dropped_entries"] == {}
    assert figures["requests"]["429"] > 0
    assert fapilog.stats()["exporters"]["loki"]["dropped"] == 0


def test_figures_add_up_while_a_push_is_being_retried(loki: LokiReceiver) -> None:
    """During an outage the records being retried show as in flight: at every moment
    emitted == exported + dropped + queued + in flight."""
    configure(loki)
    loki.fail(503)
    log = fapilog.get_logger("retrying")
    for seq in range(50):
        log.info("e", seq=seq)
    assert not fapilog.force_flush(0.5)  # stuck retrying
    figures = fapilog.stats()["exporters"]["loki"]
    assert figures["in_flight"] > 0, figures
    assert figures["exported"] == 0 and figures["dropped"] == 0, figures
    assert figures["in_flight"] + figures["queued"] == 50, figures
    loki.clear_failures()
    assert fapilog.force_flush(20)
    assert fapilog.stats()["exporters"]["loki"]["exported"] == 50


def test_receiver_down_for_ten_seconds_loses_nothing(loki: LokiReceiver) -> None:
    """Loki unreachable for 10 s, the records fit the queue: all delivered."""
    configure(loki)
    loki.down()
    revive = threading.Timer(10, loki.up)
    revive.start()
    try:
        log = fapilog.get_logger("outage")
        started = time.monotonic()
        for seq in range(3000):
            log.info("e", seq=seq)
            if seq % 1000 == 999 and time.monotonic() - started < 5:
                fapilog.force_flush(0.5)  # spread the events over the outage
        assert fapilog.force_flush(60)
    finally:
        revive.join()
    seqs = [seq for values in seqs_per_stream(loki).values() for seq in values]
    assert seqs == list(range(3000))
    figures = exporter().stats()
    assert figures["requests"].get("error", 0) > 0
    assert figures["dropped_entries"] == {}
    assert fapilog.stats()["exporters"]["loki"]["dropped"] == 0


def test_a_400_batch_is_dropped_and_counted_not_retried(
    loki: LokiReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    """A 400 whose body does not say which entries it rejected (here a proxy's) is never
    resent; its entries are counted as of unknown outcome, not guessed."""
    configure(loki)
    loki.fail(400, times=1, body="bad request")
    log = fapilog.get_logger("bad")
    for seq in range(10):
        log.info("e", seq=seq)
    assert fapilog.force_flush(10)
    assert [push.status for push in loki.pushes] == [400]
    figures = exporter().stats()
    assert (figures["dropped_entries"], figures["unknown_outcome"]) == ({}, 10)
    assert figures["retries"] == 0
    pipeline = fapilog.stats()
    assert (pipeline["exporters"]["loki"]["dropped"], pipeline["unknown_outcome"]) == (0, 10)
    assert unbalanced(pipeline) == {}
    log.info("next", seq=10)
    assert fapilog.force_flush(10)
    assert [push.status for push in loki.pushes] == [400, 204]
    assert [json.loads(e.line)["seq"] for e in loki.entries()] == [10]
    err = capfd.readouterr().err
    assert "does not say which were stored (HTTP 400: bad request)" in err


def test_a_partially_accepted_batch_is_not_resent(loki: LokiReceiver) -> None:
    """Loki stores the valid entries of a rejected request: resending would duplicate."""
    scope = InstrumentationScope("partial")
    resource = Resource.create({"service.name": "api"})
    now = time.time_ns()
    batch = [
        ReadableLogRecord(
            log_record=make_record(
                timestamp=timestamp,
                context=None,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=body,
                attributes={},
            ),
            resource=resource,
            instrumentation_scope=scope,
        )
        for timestamp, body in ((now, "valid"), (now - 8 * 86400 * 10**9, "too old"))
    ]
    sink = LokiExporter(LokiSettings(url=loki.url, **FAST))
    try:
        assert sink.export(batch).name == "FAILURE"
    finally:
        sink.shutdown()
    assert [push.status for push in loki.pushes] == [400]
    assert [json.loads(entry.line)["message"] for entry in loki.entries()] == ["valid"]
    figures = sink.stats()
    assert figures["dropped_entries"] == {"greater_than_max_sample_age": 1}
    assert figures["sent_entries"] == 1
    assert sink.last_export_dropped == 1


def test_retry_after_is_honoured(loki: LokiReceiver) -> None:
    configure(loki)
    loki.fail(503, times=1, retry_after=1)
    fapilog.get_logger("r").info("e")
    assert fapilog.force_flush(20)
    first, second = loki.pushes
    assert (first.status, second.status) == (503, 204)
    assert second.at - first.at >= 0.9  # waited for Retry-After, not the 0.02 s backoff


def test_retry_after_as_an_http_date_is_honoured_on_a_rate_limit(loki: LokiReceiver) -> None:
    """The other form of Retry-After (RFC 9110): an HTTP date, here on a 429 (a proxy's or
    Loki's rate limit). The retry waits until about that moment, not the 0.02 s backoff."""
    configure(loki)
    # HTTP dates have whole seconds: this one is between 2 and 3 s from now
    loki.fail(429, times=1, retry_after=email.utils.formatdate(time.time() + 3, usegmt=True))
    fapilog.get_logger("r").info("e")
    assert fapilog.force_flush(20)
    first, second = loki.pushes
    assert (first.status, second.status) == (429, 204)
    assert second.at - first.at >= 1.0  # (less than 2 s: the time the first push took)
    figures = exporter().stats()
    assert figures["retries"] == 1
    assert figures["dropped_entries"] == {}


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, "internal error", "ingester_error"),
        (429, "Ingestion rate limit exceeded", "rate_limited"),
        (429, "Per stream rate limit exceeded", "rate_limited"),  # transient
    ],
)
def test_retries_give_up_after_max_retries(
    loki: LokiReceiver, status: int, body: str, reason: str
) -> None:
    configure(loki, max_retries=2, spool={"enabled": False})  # memory only: dropped
    loki.fail(status, body=body)
    fapilog.get_logger("r").info("e")
    assert fapilog.force_flush(10)
    assert [push.status for push in loki.pushes] == [status] * 3
    figures = exporter().stats()
    assert figures["dropped_entries"] == {reason: 1}
    assert figures["retries"] == 2


def test_a_slow_loki_times_out_and_is_retried(loki: LokiReceiver) -> None:
    configure(loki, timeout=0.2, max_retries=1, spool={"enabled": False})
    loki.slow(1.0)
    fapilog.get_logger("r").info("e")
    assert fapilog.force_flush(10)
    figures = exporter().stats()
    assert figures["requests"] == {"error": 2}
    assert figures["dropped_entries"] == {"ingester_error": 1}
    loki.slow(0)


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_batches_are_cut_at_batch_bytes(loki: LokiReceiver, encoding: str) -> None:
    # (protobuf bodies never have a Content-Encoding: snappy is part of the format)
    configure(loki, batch_bytes=4096, gzip=encoding == "protobuf", encoding=encoding)
    log = fapilog.get_logger("chunks")
    for seq in range(100):
        log.info("e", seq=seq, pad="x" * 100)
    assert fapilog.force_flush(10)
    assert len(loki.pushes) > 5
    for push in loki.pushes:
        sizes = [len(v[1].encode()) for s in push.body["streams"] for v in s["values"]]
        assert 0 < sum(sizes) <= 4096
        assert "content-encoding" not in push.headers
    assert [seq for values in seqs_per_stream(loki).values() for seq in values] == list(range(100))


def test_lines_over_max_line_bytes_are_dropped_and_counted(loki: LokiReceiver) -> None:
    configure(loki, max_line_bytes=2000)
    log = fapilog.get_logger("long")
    log.info("short")
    log.info("long", blob="x" * 5000)
    assert fapilog.force_flush(10)
    assert [json.loads(e.line)["message"] for e in loki.entries()] == ["short"]
    assert exporter().stats()["dropped_entries"] == {"line_too_long": 1}
    # the pipeline's figures count the one lost record, not the whole batch
    figures = fapilog.stats()["exporters"]["loki"]
    assert (figures["exported"], figures["dropped"]) == (1, 1)
    assert figures["dropped_by_reason"] == {"line_too_long": 1}


def test_one_rejected_request_of_a_batch_counts_only_its_entries(loki: LokiReceiver) -> None:
    """A batch cut into several requests, one of them rejected (a 400 that does not say
    which entries): fapilog.stats() counts that request's entries as of unknown outcome and
    the others as exported, exactly."""
    configure(loki, batch_bytes=4096, gzip=False, queue={"max_size": 20_000, "max_delay": 30})
    loki.fail(400, times=1, body="bad request")
    log = fapilog.get_logger("chunks")
    for seq in range(100):
        log.info("e", seq=seq, pad="x" * 100)
    assert fapilog.force_flush(10)
    statuses = [push.status for push in loki.pushes]
    assert statuses[0] == 400 and set(statuses[1:]) == {204} and len(statuses) > 5
    rejected = exporter().stats()["unknown_outcome"]  # the first request's
    stored = len(loki.entries())
    assert 0 < rejected < 20 and stored == 100 - rejected
    figures = fapilog.stats()["exporters"]["loki"]
    assert (figures["exported"], figures["dropped"]) == (stored, 0)
    assert figures["unknown_outcome"] == rejected


def _foreign_record_with_a_float_timestamp(body: str) -> None:
    """Another library logs through the OpenTelemetry logs API on the provider fapilog
    uses, with a float timestamp (``time.time() * 1e9``): the SDK passes it on as it is,
    and Loki's protobuf body cannot carry it, so encoding the request that holds it
    raises (the exporter's guard then counts what it lost)."""
    from opentelemetry._logs import LogRecord, get_logger_provider

    from fapilog._state import STATE

    assert STATE.pipeline is not None and get_logger_provider() is STATE.pipeline.provider
    get_logger_provider().get_logger("thirdparty").emit(
        LogRecord(timestamp=time.time() * 1e9, body=body, severity_number=SeverityNumber.INFO)
    )


def test_a_request_that_cannot_be_encoded_is_counted_as_lost_not_delivered(
    loki: LokiReceiver,
) -> None:
    """One batch of 6 records, one request, whose encoding raises: nothing reaches Loki,
    and `fapilog.stats()` counts all 6 as dropped (export_failed), none as exported."""
    configure(loki, encoding="protobuf", batch_wait=30, spool={"enabled": False})
    log = fapilog.get_logger("encode")
    for seq in range(5):
        log.info("e", seq=seq)
    _foreign_record_with_a_float_timestamp("float timestamp")
    assert fapilog.force_flush(10)  # one batch: the flush takes all six
    assert loki.pushes == []
    figures = fapilog.stats()
    mine = figures["exporters"]["loki"]
    assert mine["dropped_by_reason"] == {"export_failed": 6}
    assert (mine["emitted"], mine["exported"], mine["dropped"]) == (6, 0, 6)
    assert unbalanced(figures) == {}


def test_a_push_that_raises_mid_batch_counts_only_what_was_not_delivered(
    loki: LokiReceiver,
) -> None:
    """One batch cut into 4 requests of one entry each (batch_bytes): the first 3 are
    pushed and stored, the 4th raises as it is built. Exactly those 3 count as exported
    and the 4th as dropped (export_failed)."""
    configure(loki, encoding="protobuf", batch_wait=30, batch_bytes=4096, spool={"enabled": False})
    log = fapilog.get_logger("push")
    for seq in range(3):
        log.info("e", seq=seq, pad="x" * 3000)  # one entry per request
    _foreign_record_with_a_float_timestamp("y" * 3000)  # the last entry: its own request
    assert fapilog.force_flush(10)
    assert [push.status for push in loki.pushes] == [204, 204, 204]
    assert sorted(json.loads(entry.line)["seq"] for entry in loki.entries()) == [0, 1, 2]
    figures = fapilog.stats()
    mine = figures["exporters"]["loki"]
    assert mine["dropped_by_reason"] == {"export_failed": 1}
    assert (mine["emitted"], mine["exported"], mine["dropped"]) == (4, 3, 1)
    assert unbalanced(figures) == {}


def test_gzip_body_by_default(loki: LokiReceiver) -> None:
    configure(loki)
    fapilog.get_logger("g").info("e")
    assert fapilog.force_flush(10)
    (push,) = loki.pushes
    assert push.headers["content-encoding"] == "gzip"
    assert push.headers["content-type"] == "application/json"


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_tenant_and_auth_headers(auth: str) -> None:
    credentials: dict[str, Any] = (
        {"username": "svc", "password": "pa55"} if auth == "basic" else {"bearer_token": "tok"}
    )
    receiver = LokiReceiver(
        auth_enabled=True,
        basic=("svc", "pa55") if auth == "basic" else None,
        bearer="tok" if auth == "bearer" else None,
    )
    with receiver:
        configure(receiver, tenant_id="acme", **credentials)
        fapilog.get_logger("t").info("e")
        assert fapilog.force_flush(10)
        assert [push.status for push in receiver.pushes] == [204]
        assert receiver.pushes[0].headers["x-scope-orgid"] == "acme"
        assert receiver.count("acme") == 1


def test_missing_tenant_on_multi_tenant_loki_is_dropped_as_401() -> None:
    with LokiReceiver(auth_enabled=True) as receiver:
        configure(receiver)
        fapilog.get_logger("t").info("e")
        assert fapilog.force_flush(10)
        assert [push.status for push in receiver.pushes] == [401]
        assert exporter().stats()["dropped_entries"] == {"ingester_error": 1}


def test_bounded_memory_while_loki_is_down(loki: LokiReceiver) -> None:
    """The exporter holds one batch; everything else waits in the bounded queue, whose
    overflow policy sheds (and counts) the excess."""
    configure(loki, queue={"max_size": 200, "batch_size": 50}, spool={"enabled": False})
    loki.down()
    log = fapilog.get_logger("flood")
    for seq in range(2000):
        log.info("e", seq=seq)
    figures = fapilog.stats()
    # the intake (up to twice its size while its worker catches up) and loki queues, one
    # batch in flight each
    held = 2 * 200 + 200 + 50 * 2
    assert figures["queued"] <= 2 * 200 + 200
    assert figures["exporters"]["loki"]["dropped"] >= 2000 - held
    loki.up()
    assert fapilog.force_flush(30)
    assert loki.count() <= held


def test_shutdown_interrupts_the_backoff_wait(loki: LokiReceiver) -> None:
    loki.fail(500)
    settings = LokiSettings(url=loki.url, min_backoff=60, max_backoff=60)
    sink = LokiExporter(settings)
    record = ReadableLogRecord(
        log_record=make_record(
            timestamp=time.time_ns(),
            context=None,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body="x",
            attributes={},
        ),
        resource=Resource.create({}),
    )
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(sink.export([record])))
    worker.start()
    assert loki.wait_for_pushes(1, timeout=10)  # now waiting 60-120 s before the retry
    sink.shutdown()
    worker.join(10)
    assert not worker.is_alive()
    assert results[0].name == "FAILURE"
    assert sink.stats()["dropped_entries"] == {"shutdown": 1}
    assert sink.export([record]).name == "FAILURE"


def test_a_dead_loki_does_not_hold_process_exit(subprocess_env: dict[str, str]) -> None:
    """Default (promtail) backoff, nothing listening: the process still exits within
    fapilog's shutdown deadline, and says what it dropped."""
    import socket
    import subprocess
    import sys

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    code = (
        "import fapilog\n"
        f"fapilog.configure_logging(exporters=['loki'], loki={{'url': 'http://127.0.0.1:{port}'}},"
        " shutdown_timeout=1.5)\n"
        "for i in range(10): fapilog.log.info('e', i=i)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 15  # promtail's retries alone would take minutes
    assert "loki-retry" in done.stderr


def test_promtail_defaults_and_backoff_shape() -> None:
    settings = LokiSettings()
    assert (settings.min_backoff, settings.max_backoff, settings.max_retries) == (0.5, 300, 10)
    assert (settings.batch_bytes, settings.batch_wait, settings.timeout) == (1 << 20, 1.0, 10)
    assert settings.labels == ["service_name", "service_namespace", "environment"]
    assert settings.structured_metadata == "auto"
    assert (settings.label_values_max, settings.label_values_window) == (100, 600)
    assert SPEC.delay_for(LoggingSettings()) == 1.0
    assert exporter_spec("loki").delay_for(LoggingSettings(loki={"batch_wait": 0.3})) == 0.3
    sink = LokiExporter(settings, rng=random.Random(1))
    try:
        for attempt in range(12):
            base = min(0.5 * 2**attempt, 300)
            delay = sink._backoff(attempt)
            assert base <= delay <= min(2 * base, 300)
    finally:
        sink.shutdown()


def test_http_client_request_lines_do_not_reach_stderr(
    loki: LokiReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    fapilog.configure_logging(exporters=["loki"], level="DEBUG", loki={"url": loki.url, **FAST})
    fapilog.get_logger("quiet").info("e")
    assert fapilog.force_flush(10)
    assert loki.count() == 1
    fapilog.shutdown(5)  # closing the client logs too (httpcore, at DEBUG)
    err = capfd.readouterr().err
    assert "HTTP Request" not in err
    assert "httpcore" not in err


@pytest.mark.parametrize(
    ("loki", "env", "fragment"),
    [
        ({"url": "ftp://loki:3100"}, "FAPILOG_LOKI__URL", "expected http(s)"),
        ({"url": "http://u:hunter2@loki:3100"}, "FAPILOG_LOKI__URL", "carries credentials"),
        ({"tenant_id": "a b"}, "FAPILOG_LOKI__TENANT_ID", "A-Z a-z 0-9"),
        ({"username": "u"}, "FAPILOG_LOKI__PASSWORD", "both"),
        ({"password": "hunter2"}, "FAPILOG_LOKI__USERNAME", "both"),
        (
            {"username": "u", "password": "hunter2", "bearer_token": "hunter2"},
            "FAPILOG_LOKI__BEARER_TOKEN",
            "not both",
        ),
        ({"labels": ["trace_id"]}, "FAPILOG_LOKI__LABELS", "stream per event"),
        ({"labels": ["a.b=level"]}, "FAPILOG_LOKI__LABELS", "not valid for Loki"),
        ({"labels": ["level", "level"]}, "FAPILOG_LOKI__LABELS", "twice"),
        ({"labels": [f"l{i}" for i in range(16)]}, "FAPILOG_LOKI__LABELS", "at most 15"),
        ({"static_labels": {"a-b": "x"}}, "FAPILOG_LOKI__LABELS", "not valid for Loki"),
        ({"min_backoff": 10, "max_backoff": 1}, "FAPILOG_LOKI__MIN_BACKOFF", "larger"),
    ],
)
def test_invalid_loki_settings_fail_at_configure_time(
    loki: dict[str, Any], env: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        fapilog.configure_logging(exporters=["loki"], loki=loki)
    message = str(info.value)
    assert env in message
    assert fragment in message
    assert "hunter2" not in message
    assert "hunter2" not in repr(info.value.errors)


def test_repr_and_settings_never_show_credentials() -> None:
    settings = LokiSettings(username="svc", password="hunter2", tenant_id="acme")
    sink = LokiExporter(settings)
    try:
        assert "hunter2" not in repr(sink)
        assert "basic" in repr(sink)
        assert "hunter2" not in repr(settings)
        assert "hunter2" not in str(settings.model_dump())
        assert "hunter2" not in settings.model_dump_json()
    finally:
        sink.shutdown()

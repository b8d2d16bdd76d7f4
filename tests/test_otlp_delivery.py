"""What the collector does with each record is counted exactly, against a real OTLP receiver
on 127.0.0.1 through the real pipeline (`configure_logging(exporters=["otlp"])`):

- records rejected in a partial success (`ExportLogsPartialSuccess.rejected_log_records`)
  are dropped with reason ``rejected`` and raise one alert, over gRPC and over HTTP;
- a gRPC batch over the collector's message limit (4 MiB by default) is sent in parts, never
  resent whole; a lower limit announced by the collector is adopted; a record too large on
  its own is dropped with reason ``too_large``; after a transient failure only the parts not
  yet delivered are sent again;
- a burst to a healthy collector is never shed between the bridge and the exporter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import fapilog
from conftest import runs
from fapilog import configure_logging, get_logger
from fapilog.otel import log_exporters
from fapilog.otel.otlp_logs import GRPC_MESSAGE_LIMIT
from peers.otlp_receiver import OtlpReceiver

PROTOCOLS = ["grpc", "http/protobuf"]
PAD = "x" * 10_000  # a 10 KB record


class Alerts:
    """An `on_alert` callback keeping what it receives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    def __call__(self, alert: dict[str, Any]) -> None:
        with self.arrived:
            self.received.append(alert)
            self.arrived.notify_all()

    def of(self, kind: str, *, wait: bool = True) -> list[dict[str, Any]]:
        with self.arrived:
            if wait:
                self.arrived.wait_for(lambda: any(a["alert"] == kind for a in self.received), 10)
            return [a for a in self.received if a["alert"] == kind]


def configure(receiver: OtlpReceiver, protocol: str, **settings: Any) -> None:
    configure_logging(
        exporters=["otlp"],
        otlp={"endpoint": receiver.endpoint(protocol), "protocol": protocol},
        **settings,
    )


def otlp_stats() -> dict[str, Any]:
    figures: dict[str, Any] = fapilog.stats()["exporters"]["otlp"]
    return figures


@pytest.fixture
def default_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver
        fapilog.shutdown(5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_records_rejected_in_a_partial_success_are_counted_dropped_with_one_alert(
    protocol: str,
) -> None:
    alerts = Alerts()
    with OtlpReceiver(rejected_logs=10, partial_message="attribute too long") as receiver:
        configure(receiver, protocol, queue={"batch_size": 250}, on_alert=alerts)
        log = get_logger("shop")
        for seq in range(1000):
            log.info("order", seq=seq)
        assert fapilog.force_flush(30)
        figures = otlp_stats()
        requests = len(receiver.log_requests)
        stored = len(receiver.logs)
        fapilog.shutdown(5)
    assert requests >= 4  # batches of at most 250
    rejected = 10 * requests
    assert stored == 1000 - rejected  # what the collector kept
    assert figures["exported"] == stored  # not 1,000
    assert figures["dropped"] == rejected
    assert figures["dropped_by_reason"] == {"rejected": rejected}
    assert figures["exported"] + figures["dropped"] + figures["queued"] == figures["offered"]
    assert figures["details"]["rejected_records"] == rejected
    dropped = alerts.of("records_dropped")
    assert [(a["exporter"], a["reason"]) for a in dropped] == [("otlp", "rejected")]  # once
    assert fapilog.stats()["dropped"] == rejected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_partial_success_without_rejections_counts_everything_exported(
    protocol: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A partial success may carry a warning only (rejected_log_records = 0)."""
    with OtlpReceiver(partial_message="attribute value truncated") as receiver:
        configure(receiver, protocol)
        get_logger("shop").info("accepted")
        assert fapilog.force_flush(10)
        figures = otlp_stats()
        fapilog.shutdown(5)
    assert (figures["exported"], figures["dropped"]) == (1, 0)
    assert "accepted the records with a warning: attribute value truncated" in (
        capfd.readouterr().err
    )


def test_600_records_of_10_kb_over_grpc_all_arrive(default_receiver: OtlpReceiver) -> None:
    """600 x 10 KB in one batch of 512 is about 5 MB: over the receiver's default 4 MiB."""
    configure(default_receiver, "grpc", queue={"batch_size": 600})
    shop, db = get_logger("shop"), get_logger("shop.db")
    for seq in range(600):
        (shop if seq % 3 else db).info("big", seq=seq, pad=PAD)
    assert fapilog.force_flush(30)
    logs = default_receiver.wait_for_logs(lambda got: len(got) >= 600, timeout=5)
    figures = otlp_stats()
    assert sorted(entry.attributes["seq"] for entry in logs) == list(range(600))  # once each
    for entry in logs:  # each record kept its scope and resource across the parts
        assert entry.scope == ("shop" if entry.attributes["seq"] % 3 else "shop.db")
        assert entry.resource == logs[0].resource
    assert len(default_receiver.log_requests) >= 2
    assert all(size <= GRPC_MESSAGE_LIMIT for size, _ in default_receiver.log_requests)
    assert (figures["exported"], figures["dropped"]) == (600, 0)
    assert figures["details"]["split_requests"] >= 1


def test_a_lower_message_limit_announced_by_the_collector_is_adopted() -> None:
    limit = 1024 * 1024
    with OtlpReceiver(grpc_max_receive_bytes=limit) as receiver:
        configure(receiver, "grpc", queue={"batch_size": 600})
        log = get_logger("shop")
        for seq in range(600):
            log.info("big", seq=seq, pad=PAD)
        assert fapilog.force_flush(30)
        logs = receiver.wait_for_logs(lambda got: len(got) >= 600, timeout=5)
        figures = otlp_stats()
        sizes = [size for size, _ in receiver.log_requests]
        fapilog.shutdown(5)
    assert sorted(entry.attributes["seq"] for entry in logs) == list(range(600))
    assert max(sizes) <= limit and len(sizes) >= 6
    assert (figures["exported"], figures["dropped"]) == (600, 0)
    assert figures["details"]["grpc_message_limit"] <= limit


def test_a_record_too_large_for_the_collector_on_its_own_is_dropped_and_counted() -> None:
    alerts = Alerts()
    with OtlpReceiver(grpc_max_receive_bytes=64 * 1024) as receiver:
        configure(receiver, "grpc", on_alert=alerts)
        log = get_logger("shop")
        log.info("small", seq=0)
        log.info("huge", seq=1, pad="x" * 100_000)
        log.info("small", seq=2)
        assert fapilog.force_flush(30)
        figures = otlp_stats()
        seqs = [entry.attributes["seq"] for entry in receiver.logs]
        fapilog.shutdown(5)
    assert seqs == [0, 2]
    assert (figures["exported"], figures["dropped"]) == (2, 1)
    assert figures["dropped_by_reason"] == {"too_large": 1}
    assert figures["details"]["too_large_records"] == 1
    assert [a["reason"] for a in alerts.of("records_dropped")] == ["too_large"]


def test_after_a_transient_failure_only_the_undelivered_parts_are_resent(
    default_receiver: OtlpReceiver,
) -> None:
    configure(default_receiver, "grpc", queue={"batch_size": 600})
    log = get_logger("shop")
    for seq in range(600):
        log.info("big", seq=seq, pad=PAD)
    # the first part is stored, the second meets a collector restarting (UNAVAILABLE), which
    # the SDK retries: the retry must carry the second part only
    default_receiver.fail_logs(grpc.StatusCode.UNAVAILABLE, after=1)
    assert fapilog.force_flush(30)
    figures = otlp_stats()
    seqs = sorted(entry.attributes["seq"] for entry in default_receiver.logs)
    assert len(default_receiver.log_requests) == 2  # two parts stored, none twice
    assert seqs == list(range(600))  # every record exactly once
    assert (figures["exported"], figures["dropped"]) == (600, 0)


def test_without_the_checked_seam_grpc_export_works_as_before(
    default_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SDK whose gRPC exporter is not built as checked: no stub replaced, no figures,
    the records exported as the SDK exports them."""
    monkeypatch.setattr(log_exporters, "_GRPC_STUB_SEAM", False)
    configure(default_receiver, "grpc")
    get_logger("shop").info("plain")
    assert fapilog.force_flush(10)
    figures = otlp_stats()
    assert (figures["exported"], figures["dropped"]) == (1, 0)
    assert figures["details"] == {}
    assert [entry.body for entry in default_receiver.logs] == ["plain"]


BURST = """
import json, sys
import fapilog
from fapilog import configure_logging, get_logger
configure_logging(exporters=["otlp"], otlp={"endpoint": sys.argv[1], "protocol": "grpc"})
log = get_logger("burst")
for seq in range(2000):
    log.info("burst", seq=seq)
fapilog.force_flush(30)
print(json.dumps(fapilog.stats()["exporters"]["otlp"]))
"""


@pytest.mark.slow
@pytest.mark.soak
def test_a_burst_to_a_healthy_collector_is_never_shed(subprocess_env: dict[str, str]) -> None:
    """2,000 records logged in a tight loop right after start-up, while the first gRPC export
    (connecting the channel) is still running: the hand-off between the bridge and the
    exporter waits for the exporter rather than shedding. A fresh process each run."""
    count = runs(2, 20)
    bad: list[tuple[int, dict[str, Any]]] = []
    with OtlpReceiver() as receiver:
        for _ in range(count):
            result = subprocess.run(
                [sys.executable, "-c", BURST, receiver.endpoint("grpc")],
                check=False,
                env=subprocess_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            arrived = len(receiver.wait_for_logs(lambda got: len(got) >= 2000, timeout=10))
            if figures["exported"] != 2000 or figures["dropped"] or arrived != 2000:
                bad.append((arrived, figures))
            receiver.logs.clear()  # the child has exited: nothing else is arriving
    assert bad == [], f"{len(bad)} of {count} runs lost records (arrived, figures): {bad}"

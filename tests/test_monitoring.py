"""Self-monitoring: metric instruments read by a real SDK MeterProvider match
fapilog.stats(); alerts reach stderr and on_alert, rate-limited, without recursion."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import fapilog
from fapilog import configure_logging, log
from fapilog.exporters import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.pipeline import alerts as pipeline_alerts
from fapilog.pipeline import metrics


class FlakyExporter(LogRecordExporter):
    """Fails while `failing` is set; records what it accepted."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.records: list[ReadableLogRecord] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self.failing:
            raise ConnectionError("collector unreachable")
        self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            if scope.scope.name != "fapilog":
                continue
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


def _by(points: list[Any], *keys: str) -> dict[tuple[Any, ...], Any]:
    return {tuple(p.attributes.get(k) for k in keys): p.value for p in points}


def test_metrics_match_stats(exporter_named: Callable[[LogRecordExporter], str]) -> None:
    reader = InMemoryMetricReader()
    fapilog.register_metrics(MeterProvider(metric_readers=[reader]))
    good, bad = FlakyExporter(), FlakyExporter(failing=True)
    good_name, bad_name = exporter_named(good), exporter_named(bad)
    configure_logging(exporters=[good_name, bad_name], queue={"max_delay": 0})
    for i in range(300):
        log.info("measured", i=i)
    log.error("and an error")
    fapilog.force_flush(10)
    figures = fapilog.stats()
    points = _points(reader)
    # (the spool's metrics appear with an exporter that has a spool: tests/test_spool.py)
    assert set(points) == set(metrics.METRIC_NAMES) - set(metrics.SPOOL_METRIC_NAMES)
    assert points["fapilog.records.emitted"][0].value == figures["emitted"] == 301
    exported = _by(points["fapilog.records.exported"], "exporter")
    assert exported == {(n,): e["exported"] for n, e in figures["exporters"].items()}
    assert exported[(good_name,)] == len(good.records) == 301
    dropped = _by(points["fapilog.records.dropped"], "exporter", "reason")
    assert dropped == {(bad_name, "export_failed"): 301}
    assert sum(dropped.values()) == figures["dropped"]
    failures = _by(points["fapilog.export.failures"], "exporter")
    assert failures[(bad_name,)] == figures["exporters"][bad_name]["export_failures"] > 0
    assert failures[(good_name,)] == 0
    depth = _by(points["fapilog.queue.depth"], "queue")
    assert depth == {("intake",): 0, (good_name,): 0, (bad_name,): 0}
    capacity = _by(points["fapilog.queue.capacity"], "queue")
    assert capacity[("intake",)] == 1000
    durations = {
        (p.attributes["exporter"], p.attributes["outcome"]): p.count
        for p in points["fapilog.export.duration"]
    }
    assert durations[(bad_name, "failure")] == figures["exporters"][bad_name]["export_failures"]
    assert durations[(good_name, "success")] >= 1


def test_register_metrics_is_idempotent_per_provider() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    fapilog.register_metrics(provider)
    fapilog.register_metrics(provider)
    configure_logging()
    points = _points(reader)
    assert len(points["fapilog.records.emitted"]) == 1


class Alerts:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    def __call__(self, alert: dict[str, Any]) -> None:
        with self.arrived:
            self.received.append(alert)
            self.arrived.notify_all()

    def wait_for(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(
                lambda: sum(a["alert"] == kind for a in self.received) >= count, timeout=10
            )
            return [a for a in self.received if a["alert"] == kind]


def test_alerts_when_drops_start_and_when_an_exporter_keeps_failing(
    exporter_named: Callable[[LogRecordExporter], str], capfd: pytest.CaptureFixture[str]
) -> None:
    alerts = Alerts()
    flaky = FlakyExporter(failing=True)
    name = exporter_named(flaky)
    configure_logging(exporters=[name], queue={"max_delay": 0, "batch_size": 1}, on_alert=alerts)
    for i in range(10):
        log.info("into a failing exporter", i=i)
        fapilog.force_flush(5)  # one batch each: consecutive failures
    dropped = alerts.wait_for("records_dropped")
    failing = alerts.wait_for("exporter_failing")
    assert dropped[0]["exporter"] == name and dropped[0]["reason"] == "export_failed"
    assert len(dropped) == 1  # rate-limited: one alert for ten failed batches
    assert len(failing) == 1
    assert failing[0]["consecutive_failures"] == pipeline_alerts.FAILING_AFTER
    assert "collector unreachable" in failing[0]["error"]
    flaky.failing = False
    log.info("works again")
    fapilog.force_flush(5)
    recovered = alerts.wait_for("exporter_recovered")
    assert recovered[0]["exporter"] == name
    err = capfd.readouterr().err  # the warning went to stderr, outside the pipeline
    assert '"alert":"records_dropped"' in err and '"alert":"exporter_failing"' in err
    assert fapilog.stats()["dropped"] == 10


def test_alert_callback_may_log_through_fapilog_without_recursion(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    done = threading.Event()

    class Held(FlakyExporter):
        """Holds its worker until the alert fired: the tiny queues must overflow (the
        workers would otherwise keep up with the loop)."""

        def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
            done.wait(10)
            return super().export(batch)

    received = Held()
    seen: list[dict[str, Any]] = []

    def on_alert(alert: dict[str, Any]) -> None:
        seen.append(alert)
        log.error("fapilog alert", kind=alert["alert"], reason=alert.get("reason"))
        done.set()

    configure_logging(
        exporters=[exporter_named(received)],
        queue={"max_size": 3, "batch_size": 1, "max_delay": 0, "overflow": "drop_newest"},
        on_alert=on_alert,
    )
    for i in range(2_000):
        log.info("overflow", i=i)
    assert done.wait(10)
    fapilog.force_flush(10)
    messages = [r.log_record.body for r in received.records]
    assert messages.count("fapilog alert") == len(seen)  # errors displace lesser records
    assert len(seen) <= 2  # intake and exporter queue at most: no feedback loop


def test_a_raising_callback_is_reported_not_propagated(
    exporter_named: Callable[[LogRecordExporter], str], capfd: pytest.CaptureFixture[str]
) -> None:
    called = threading.Event()

    def broken(alert: dict[str, Any]) -> None:
        called.set()
        raise RuntimeError("pager down")

    configure_logging(exporters=[exporter_named(FlakyExporter(failing=True))], on_alert=broken)
    log.info("x")
    fapilog.force_flush(5)
    assert called.wait(10)
    deadline = threading.Event()
    for _ in range(100):
        if "pager down" in capfd.readouterr().err:
            break
        deadline.wait(0.05)
    else:
        pytest.fail("the callback's exception was not reported on stderr")

"""fapilog's metric instruments as a backend sees them: each one's name, kind, unit and
description, the export-duration buckets, the instrumentation scope, and the figures
behind the points that tests/test_monitoring.py does not reach (queues with records in
them, exporter queues' bounds, a disk spool, records of unknown outcome, the global
MeterProvider, a provider registered twice)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum

import fapilog
from conftest import run_python
from fapilog import configure_logging, log
from fapilog.exporters import (
    UNKNOWN_OUTCOME,
    LogRecordExporter,
    LogRecordExportResult,
    ReadableLogRecord,
    register_exporter,
    unregister_exporter,
)
from fapilog.pipeline import metrics

# name -> (kind, unit, description): what a metrics backend shows
INSTRUMENTS = {
    "fapilog.records.emitted": (
        "counter", "{record}", "Events logged through fapilog (stdlib records included)",
    ),
    "fapilog.records.exported": ("counter", "{record}", "Records an exporter delivered"),
    "fapilog.records.dropped": (
        "counter", "{record}",
        "Records an exporter did not receive or deliver, by reason "
        "(intake_* reasons: shed before reaching any exporter)",
    ),
    "fapilog.queue.depth": (
        "gauge", "{record}", "Records waiting in a queue (intake, or one per exporter)",
    ),
    "fapilog.queue.capacity": ("gauge", "{record}", "Bound of a queue"),
    "fapilog.spool.records": (
        "gauge", "{record}", "Records waiting on disk in an exporter's spool",
    ),
    "fapilog.spool.bytes": (
        "gauge", "By",
        "Bytes on disk in an exporter's spool (its cap: FAPILOG_SPOOL__MAX_BYTES)",
    ),
    "fapilog.export.failures": (
        "counter", "{batch}", "Export calls that failed (raised or returned FAILURE)",
    ),
    "fapilog.export.duration": ("histogram", "s", "Duration of one export call (one batch)"),
}  # fmt: skip
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def kind(data: Any) -> str:
    if isinstance(data, Sum):
        return "counter" if data.is_monotonic else "updowncounter"
    if isinstance(data, Histogram):
        return "histogram"
    return "gauge"


def collected(reader: InMemoryMetricReader) -> dict[str, Any]:
    """fapilog's metrics, by name (the SDK's Metric objects)."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == "fapilog"
        for metric in scope.metrics
    }


def scopes(reader: InMemoryMetricReader) -> list[tuple[str, str | None]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (scope.scope.name, scope.scope.version)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
    ]


def values(metric: Any, *keys: str) -> dict[tuple[Any, ...], Any]:
    return {
        tuple(point.attributes.get(key) for key in keys): point.value
        for point in metric.data.data_points
    }


class Sink(LogRecordExporter):
    """Fails while `failing` is set (its records then have the outcome `loss` names), or
    waits at `gate` before each export."""

    def __init__(self, failing: bool = False, loss: str | None = None) -> None:
        self.failing = failing
        self.loss = loss
        self.gate = threading.Event()
        self.gate.set()
        self.exported = 0
        self.last_export_dropped: int | None = None
        self.last_export_reason = loss or "export_failed"
        self.spool_destination = "https://sink.example/ingest"

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.gate.wait(10)
        if self.failing:
            self.last_export_dropped = len(batch) if self.loss else None
            return LogRecordExportResult.FAILURE
        self.exported += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@pytest.fixture
def reader() -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    fapilog.register_metrics(MeterProvider(metric_readers=[reader]))
    return reader


@pytest.fixture
def spooled_sink(tmp_path: Path) -> Iterator[tuple[str, Sink]]:
    sink = Sink(failing=True)
    name = "spooled_sink"
    register_exporter(name, lambda settings: sink, spool=True)
    yield name, sink
    unregister_exporter(name)


def wait_for(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(400):
        if condition():
            return
        done.wait(0.025)
    raise AssertionError("the pipeline did not reach the expected figures in 10 s")


def test_every_instrument_has_its_documented_kind_unit_and_description(
    reader: InMemoryMetricReader,
    spooled_sink: tuple[str, Sink],
    exporter_named: Callable[[LogRecordExporter], str],
    tmp_path: Path,
) -> None:
    spooled, _ = spooled_sink
    plain = exporter_named(Sink(failing=True))  # no spool: its record is dropped
    configure_logging(
        exporters=[spooled, plain], spool={"dir": str(tmp_path)}, queue={"max_delay": 0}
    )
    log.info("one")
    wait_for(lambda: fapilog.stats()["exporters"][spooled]["spooled"] == 1)
    found = collected(reader)
    assert set(found) == set(INSTRUMENTS) == set(metrics.METRIC_NAMES)
    described = {
        name: (kind(metric.data), metric.unit, metric.description) for name, metric in found.items()
    }
    assert described == INSTRUMENTS
    (duration, *_) = found["fapilog.export.duration"].data.data_points
    assert tuple(duration.explicit_bounds) == BUCKETS
    assert ("fapilog", fapilog.__version__) in scopes(reader)
    # the spool's gauges: only for the exporter with a spool
    figures = fapilog.stats()["exporters"][spooled]
    assert values(found["fapilog.spool.records"], "exporter") == {(spooled,): 1}
    assert values(found["fapilog.spool.bytes"], "exporter") == {
        (spooled,): figures["spool"]["bytes"]
    }
    assert figures["spool"]["bytes"] > 0
    assert set(metrics.SPOOL_METRIC_NAMES) == {"fapilog.spool.records", "fapilog.spool.bytes"}


def test_queue_gauges_show_records_waiting_and_each_queues_bound(
    reader: InMemoryMetricReader, exporter_named: Callable[[LogRecordExporter], str]
) -> None:
    held = Sink()
    held.gate.clear()
    name = exporter_named(held)
    configure_logging(exporters=[name], queue={"max_size": 64, "batch_size": 1, "max_delay": 0})
    for i in range(10):
        log.info("waiting", i=i)
    # one record is in the held export; the other nine wait in the exporter's queue (an
    # exporter's `queued` also counts its share of what still sits in the intake)
    wait_for(
        lambda: (
            (figures := fapilog.stats())["intake"]["queued"] == 0
            and figures["exporters"][name]["queued"] == 9
        )
    )
    found = collected(reader)
    figures = fapilog.stats()
    assert values(found["fapilog.queue.depth"], "queue") == {("intake",): 0, (name,): 9}
    assert values(found["fapilog.queue.capacity"], "queue") == {
        ("intake",): figures["intake"]["capacity"],
        (name,): 64,
    }
    assert figures["exporters"][name]["capacity"] == 64
    held.gate.set()
    assert fapilog.force_flush(10)
    assert values(collected(reader)["fapilog.queue.depth"], "queue")[(name,)] == 0


def test_records_of_unknown_outcome_are_a_reason_of_their_own(
    reader: InMemoryMetricReader, exporter_named: Callable[[LogRecordExporter], str]
) -> None:
    unsure = exporter_named(Sink(failing=True, loss=UNKNOWN_OUTCOME))
    lost = exporter_named(Sink(failing=True))
    configure_logging(exporters=[unsure, lost], queue={"max_delay": 0})
    for i in range(5):
        log.info("sent", i=i)
    assert fapilog.force_flush(10)
    dropped = values(collected(reader)["fapilog.records.dropped"], "exporter", "reason")
    assert dropped == {(unsure, "unknown_outcome"): 5, (lost, "export_failed"): 5}
    figures = fapilog.stats()["exporters"]
    assert (figures[unsure]["unknown_outcome"], figures[unsure]["dropped"]) == (5, 0)


def test_registering_a_provider_twice_records_each_export_once(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    fapilog.register_metrics(provider)
    fapilog.register_metrics(provider)
    other = InMemoryMetricReader()
    fapilog.register_metrics(MeterProvider(metric_readers=[other]))  # a second provider
    sink = Sink()
    configure_logging(exporters=[exporter_named(sink)], queue={"max_delay": 0})
    log.info("once")
    assert fapilog.force_flush(10)
    calls = fapilog.stats()["exporters"]
    (exports,) = [e["exported"] for e in calls.values()]
    assert exports == 1
    for each in (reader, other):
        (point,) = collected(each)["fapilog.export.duration"].data.data_points
        assert (point.count, point.attributes["outcome"]) == (1, "success")


def test_the_global_meter_provider_gets_the_metrics_by_default(
    subprocess_env: dict[str, str],
) -> None:
    code = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
import fapilog
fapilog.configure_logging(exporters=["stdout"])
fapilog.log.info("counted")
fapilog.force_flush(10)
names = sorted(
    metric.name
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    if scope.scope.name == "fapilog"
    for metric in scope.metrics
)
print("METRICS", ",".join(names))
"""
    code_, out, err = run_python(code, subprocess_env)
    assert code_ == 0, err
    (line,) = [line for line in out.splitlines() if line.startswith("METRICS ")]
    assert "fapilog.records.emitted" in line.split(" ", 1)[1].split(","), err
    assert "could not register" not in err

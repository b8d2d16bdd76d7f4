"""fapilog's own metrics: OpenTelemetry instruments over the pipeline's counters (see
docs/pipeline.md for the names).

They cost nothing per event: the instruments are observable (their callbacks read the same
counters `fapilog.stats()` reports, when a MeterProvider collects), except the export
duration histogram, recorded once per exported batch on the exporter's worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import Observation

from fapilog._version import __version__
from fapilog.pipeline.accounting import stats

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider

__all__ = ["METRIC_NAMES", "SPOOL_METRIC_NAMES", "record_export", "register_metrics"]

METRIC_NAMES = (
    "fapilog.records.emitted",
    "fapilog.records.exported",
    "fapilog.records.dropped",
    "fapilog.queue.depth",
    "fapilog.queue.capacity",
    "fapilog.export.failures",
    "fapilog.export.duration",
    "fapilog.spool.records",
    "fapilog.spool.bytes",
)
# reported only for exporters with a disk spool (docs/delivery.md)
SPOOL_METRIC_NAMES = ("fapilog.spool.records", "fapilog.spool.bytes")
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# the MeterProviders fapilog's instruments were created on, and their histograms
_histograms: list[Histogram] = []
_providers: list[Any] = []
_registration_lock = threading.Lock()


def record_export(exporter: str, ok: bool, seconds: float) -> None:
    """One export call finished (on the exporter's worker): its duration."""
    attributes = {"exporter": exporter, "outcome": "success" if ok else "failure"}
    for histogram in _histograms:
        try:
            histogram.record(seconds, attributes)
        except Exception:  # pragma: no cover - a broken metrics SDK must not stop exports
            pass


def register_metrics(meter_provider: MeterProvider | None = None) -> None:
    """Create fapilog's metric instruments on `meter_provider` (default: the global
    MeterProvider). Any provider works; each is registered once. The figures are those of
    `fapilog.stats()`; see docs/pipeline.md for the names."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _registration_lock:
        if any(known is provider for known in _providers):
            return
        _providers.append(provider)
    meter = provider.get_meter("fapilog", __version__)
    meter.create_observable_counter(
        "fapilog.records.emitted",
        callbacks=[_emitted],
        unit="{record}",
        description="Events logged through fapilog (stdlib records included)",
    )
    meter.create_observable_counter(
        "fapilog.records.exported",
        callbacks=[_exported],
        unit="{record}",
        description="Records an exporter delivered",
    )
    meter.create_observable_counter(
        "fapilog.records.dropped",
        callbacks=[_dropped],
        unit="{record}",
        description="Records an exporter did not receive or deliver, by reason "
        "(intake_* reasons: shed before reaching any exporter)",
    )
    meter.create_observable_gauge(
        "fapilog.queue.depth",
        callbacks=[_depth],
        unit="{record}",
        description="Records waiting in a queue (intake, or one per exporter)",
    )
    meter.create_observable_gauge(
        "fapilog.queue.capacity",
        callbacks=[_capacity],
        unit="{record}",
        description="Bound of a queue",
    )
    meter.create_observable_gauge(
        "fapilog.spool.records",
        callbacks=[_spool_records],
        unit="{record}",
        description="Records waiting on disk in an exporter's spool",
    )
    meter.create_observable_gauge(
        "fapilog.spool.bytes",
        callbacks=[_spool_bytes],
        unit="By",
        description="Bytes on disk in an exporter's spool (its cap: FAPILOG_SPOOL__MAX_BYTES)",
    )
    meter.create_observable_counter(
        "fapilog.export.failures",
        callbacks=[_failures],
        unit="{batch}",
        description="Export calls that failed (raised or returned FAILURE)",
    )
    histogram = meter.create_histogram(
        "fapilog.export.duration",
        unit="s",
        description="Duration of one export call (one batch)",
        explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
    )
    with _registration_lock:
        _histograms.append(histogram)


def _figures() -> dict[str, Any]:
    return stats()


def _observations(values: Iterable[tuple[float, dict[str, str]]]) -> list[Observation]:
    return [Observation(value, attributes) for value, attributes in values]


def _emitted(options: CallbackOptions) -> list[Observation]:
    return _observations([(_figures()["emitted"], {})])


def _exported(options: CallbackOptions) -> list[Observation]:
    exporters = _figures()["exporters"]
    return _observations((e["exported"], {"exporter": n}) for n, e in exporters.items())


def _dropped(options: CallbackOptions) -> list[Observation]:
    """Dropped records by exporter and reason; records of unknown outcome (maybe lost)
    under the reason ``unknown_outcome``."""
    exporters = _figures()["exporters"]
    return _observations(
        (count, {"exporter": name, "reason": reason})
        for name, figures in exporters.items()
        for reason, count in [
            *figures["dropped_by_reason"].items(),
            *(
                [("unknown_outcome", figures["unknown_outcome"])]
                if figures["unknown_outcome"]
                else []
            ),
        ]
    )


def _depth(options: CallbackOptions) -> list[Observation]:
    figures = _figures()
    values = [(figures["intake"]["queued"], {"queue": "intake"})]
    values += [(e["queued"], {"queue": n}) for n, e in figures["exporters"].items()]
    return _observations(values)


def _capacity(options: CallbackOptions) -> list[Observation]:
    figures = _figures()
    values = [(figures["intake"]["capacity"], {"queue": "intake"})]
    values += [(e["capacity"], {"queue": n}) for n, e in figures["exporters"].items()]
    return _observations(values)


def _failures(options: CallbackOptions) -> list[Observation]:
    exporters = _figures()["exporters"]
    return _observations((e["export_failures"], {"exporter": n}) for n, e in exporters.items())


def _spool_records(options: CallbackOptions) -> list[Observation]:
    exporters = _figures()["exporters"]
    return _observations(
        (e["spooled"], {"exporter": n}) for n, e in exporters.items() if "spool" in e
    )


def _spool_bytes(options: CallbackOptions) -> list[Observation]:
    exporters = _figures()["exporters"]
    return _observations(
        (e["spool"]["bytes"], {"exporter": n}) for n, e in exporters.items() if "spool" in e
    )

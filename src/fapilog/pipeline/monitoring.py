"""Self-monitoring: OTel metric instruments over the pipeline's counters, and alerts when
records are dropped or an exporter keeps failing (see docs/pipeline.md).

Metrics cost nothing per event: the instruments are observable (their callbacks read the
same counters `fapilog.stats()` reports, when a MeterProvider collects), except the export
duration histogram, recorded once per exported batch on the exporter's worker.

Alerts: the pipeline calls `note_drop` (with a queue's lock held, so it only counts, reads
the clock and, at most once per `ALERT_INTERVAL` per queue and reason, hands an alert to the
monitor thread) and `note_export` (on an exporter's worker, once per batch). The monitor
thread, started on the first alert and idle on a condition otherwise, writes the alert to
stderr through `fapilog._diag` (which never enters the pipeline, so an alert cannot recurse)
and calls the `on_alert` callback, so a slow callback never stalls the application or an
exporter.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import Observation

from fapilog import _diag
from fapilog._state import STATE
from fapilog._version import __version__
from fapilog.pipeline.accounting import stats

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider

__all__ = [
    "ALERT_INTERVAL",
    "FAILING_AFTER",
    "METRIC_NAMES",
    "install",
    "note_drop",
    "note_export",
    "register_metrics",
]

ALERT_INTERVAL = 60.0  # seconds between two alerts about the same queue and reason
FAILING_AFTER = 3  # consecutive failed exports before an exporter counts as failing
_MAX_PENDING = 100

METRIC_NAMES = (
    "fapilog.records.emitted",
    "fapilog.records.exported",
    "fapilog.records.dropped",
    "fapilog.queue.depth",
    "fapilog.queue.capacity",
    "fapilog.export.failures",
    "fapilog.export.duration",
)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Alert = dict[str, Any]


class _Monitor:
    """Alert state and the monitor thread (started afresh in a forked child)."""

    def __init__(self) -> None:
        self.start_afresh()

    def start_afresh(self) -> None:
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.pending: deque[Alert] = deque(maxlen=_MAX_PENDING)
        self.thread: threading.Thread | None = None
        self.last: dict[tuple[str, str], float] = {}
        self.suppressed: dict[tuple[str, str], int] = {}
        self.failing: set[str] = set()


_monitor = _Monitor()
# the MeterProviders fapilog's instruments were created on, and their histograms
_histograms: list[Histogram] = []
_providers: list[Any] = []
_registration_lock = threading.Lock()


def install() -> None:
    """Called by configure_logging() after the pipeline is (re)built: start alerting afresh
    (alerts go to the new settings' `on_alert`), and offer the metrics to the global
    MeterProvider (a no-op proxy until the application or `opentelemetry-instrument` sets
    one)."""
    monitor = _monitor
    with monitor.lock:
        monitor.last.clear()
        monitor.suppressed.clear()
        monitor.failing.clear()
    try:
        register_metrics()
    except Exception as exc:  # pragma: no cover - the metrics API never raises in practice
        _diag.report("metrics", f"fapilog could not register its metrics: {exc!r}")


# -- alerts --------------------------------------------------------------------------------


def note_drop(queue: str, reason: str, count: int, total: int) -> None:
    """`count` records were dropped from `queue` for `reason` (`total` so far). Called with
    the queue's lock held: cheap, never blocks, never calls user code."""
    monitor = _monitor
    key = (queue, reason)
    now = time.monotonic()
    last = monitor.last.get(key)
    if last is not None and now - last < ALERT_INTERVAL:
        monitor.suppressed[key] = monitor.suppressed.get(key, 0) + count
        return
    monitor.last[key] = now
    since = monitor.suppressed.pop(key, 0) + count
    where = "the intake queue" if queue == "intake" else f"exporter {queue!r}"
    _raise_alert(
        {
            "alert": "records_dropped",
            "message": f"fapilog is dropping records: {where}, reason {reason}",
            "queue": queue,
            "exporter": None if queue == "intake" else queue,
            "reason": reason,
            "dropped": since,
            "dropped_total": total,
        }
    )


def note_export(
    exporter: str, ok: bool, seconds: float, *, records: int, consecutive: int, error: str | None
) -> None:
    """One export call finished (on the exporter's worker)."""
    attributes = {"exporter": exporter, "outcome": "success" if ok else "failure"}
    for histogram in _histograms:
        try:
            histogram.record(seconds, attributes)
        except Exception:  # pragma: no cover - a broken metrics SDK must not stop exports
            pass
    monitor = _monitor
    if ok:
        if exporter in monitor.failing:
            monitor.failing.discard(exporter)
            _raise_alert(
                {
                    "alert": "exporter_recovered",
                    "message": f"fapilog exporter {exporter!r} exports again",
                    "exporter": exporter,
                }
            )
        return
    if consecutive < FAILING_AFTER:
        return
    key = (exporter, "failing")
    now = time.monotonic()
    last = monitor.last.get(key)
    if exporter in monitor.failing and last is not None and now - last < ALERT_INTERVAL:
        return
    monitor.last[key] = now
    monitor.failing.add(exporter)
    _raise_alert(
        {
            "alert": "exporter_failing",
            "message": f"fapilog exporter {exporter!r} keeps failing "
            f"({consecutive} exports in a row)",
            "exporter": exporter,
            "consecutive_failures": consecutive,
            "error": error,
            "records": records,
        }
    )


def _raise_alert(alert: Alert) -> None:
    alert["timestamp"] = time.time()
    monitor = _monitor
    with monitor.lock:
        monitor.pending.append(alert)
        if monitor.thread is None:
            thread = threading.Thread(target=_run, name="fapilog-monitor", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown: stderr only, right here
                monitor.pending.pop()
                _deliver(alert, None)
                return
            monitor.thread = thread
        monitor.ready.notify()


def _run() -> None:
    monitor = _monitor
    while True:
        with monitor.lock:
            while not monitor.pending:
                monitor.ready.wait()  # no timeout: idle costs nothing
            alert = monitor.pending.popleft()
        settings = STATE.settings
        _deliver(alert, settings.on_alert if settings is not None else None)


def _deliver(alert: Alert, callback: Callable[[Alert], Any] | None) -> None:
    fields = {k: v for k, v in alert.items() if k not in ("message", "timestamp")}
    key = f"alert:{alert['alert']}:{alert.get('queue') or alert.get('exporter')}"
    if alert.get("reason"):
        key += f":{alert['reason']}"
    level = "info" if alert["alert"] == "exporter_recovered" else "warning"
    _diag.report(key, alert["message"], level=level, **fields)
    if callback is not None:
        try:
            callback(dict(alert))
        except Exception as exc:
            _diag.report("on_alert", f"fapilog on_alert callback raised {exc!r}", level="error")


if hasattr(os, "register_at_fork"):
    # the parent's monitor thread does not exist in the child, and its lock may be held
    os.register_at_fork(after_in_child=_monitor.start_afresh)


# -- metrics -------------------------------------------------------------------------------


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
    exporters = _figures()["exporters"]
    return _observations(
        (count, {"exporter": name, "reason": reason})
        for name, figures in exporters.items()
        for reason, count in figures["dropped_by_reason"].items()
    )


def _depth(options: CallbackOptions) -> list[Observation]:
    figures = _figures()
    values = [(figures["intake"]["queued"], {"queue": "intake"})]
    values += [(e["queued"], {"queue": n}) for n, e in figures["exporters"].items()]
    return _observations(values)


def _capacity(options: CallbackOptions) -> list[Observation]:
    figures = _figures()
    values = [(figures["intake"].get("capacity", 0), {"queue": "intake"})]
    values += [(e.get("capacity", 0), {"queue": n}) for n, e in figures["exporters"].items()]
    return _observations(values)


def _failures(options: CallbackOptions) -> list[Observation]:
    exporters = _figures()["exporters"]
    return _observations((e["export_failures"], {"exporter": n}) for n, e in exporters.items())

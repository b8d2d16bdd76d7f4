"""Alerts when records are dropped or an exporter keeps failing (see docs/pipeline.md).

The pipeline calls `note_drop` (with a queue's lock held, or on the caller's lock-free path
when the intake sheds a record, so it only counts, reads the clock and, at most once per
`ALERT_INTERVAL` per queue and reason, hands an alert to the monitor thread) and
`note_export` (on an exporter's worker, once per batch). Handing an alert over takes no lock
(a `queue.SimpleQueue`, safe in signal handlers). The monitor thread, started by
`configure_logging()` and blocked on that queue otherwise, writes the alert to stderr through
`fapilog._diag` (which never enters the pipeline, so an alert cannot recurse) and calls the
`on_alert` callback, so a slow callback never stalls the application or an exporter.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from fapilog import _diag
from fapilog._state import STATE, start_worker

__all__ = [
    "ALERT_INTERVAL",
    "FAILING_AFTER",
    "install",
    "note_drop",
    "note_export",
    "note_spool",
]

ALERT_INTERVAL = 60.0  # seconds between two alerts about the same queue and reason
FAILING_AFTER = 3  # consecutive failed exports before an exporter counts as failing
_MAX_PENDING = 100

Alert = dict[str, Any]


class _Monitor:
    """Alert state and the monitor thread (started afresh in a forked child)."""

    def __init__(self) -> None:
        self.start_afresh()

    def start_afresh(self) -> None:
        self.lock = threading.Lock()  # starting the thread only
        self.pending: queue.SimpleQueue[Alert] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        # (dict and set operations are atomic: a race costs at most one alert too many)
        self.last: dict[tuple[str, str], float] = {}
        self.suppressed: dict[tuple[str, str], int] = {}
        self.failing: set[str] = set()

    def start(self) -> None:
        """Start the monitor thread (configure time; in a forked child, the first alert).
        Never waits: if another frame of this thread is starting it (a signal handler
        interrupted it), that one finishes the job."""
        if self.thread is not None or not self.lock.acquire(blocking=False):
            return
        try:
            thread = start_worker("monitor", _run)
            if thread is None:  # interpreter shutdown: alerts are delivered in place
                return
            self.thread = thread
        finally:
            self.lock.release()


_monitor = _Monitor()


def install() -> None:
    """Called by configure_logging() after the pipeline is (re)built: start alerting afresh
    (alerts go to the new settings' `on_alert`)."""
    monitor = _monitor
    monitor.last.clear()
    monitor.suppressed.clear()
    monitor.failing.clear()
    monitor.start()


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
    exporter: str, ok: bool, *, records: int, consecutive: int, error: str | None
) -> None:
    """One export call finished (on the exporter's worker)."""
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


def note_spool(exporter: str, used: int, cap: int, directory: str) -> None:
    """Exporter `exporter`'s disk spool holds `used` bytes, past 80 % of its cap (called
    with the queue's lock held: cheap, at most one alert per `ALERT_INTERVAL`)."""
    monitor = _monitor
    key = (exporter, "spool_filling")
    now = time.monotonic()
    last = monitor.last.get(key)
    if last is not None and now - last < ALERT_INTERVAL:
        return
    monitor.last[key] = now
    _raise_alert(
        {
            "alert": "spool_filling",
            "message": f"fapilog exporter {exporter!r}: its disk spool is "
            f"{100 * used // cap} % full ({used} of {cap} bytes, FAPILOG_SPOOL__MAX_BYTES); "
            "past the cap the oldest records are dropped",
            "exporter": exporter,
            "spool_bytes": used,
            "spool_max_bytes": cap,
            "directory": directory,
        }
    )


def _raise_alert(alert: Alert) -> None:
    alert["timestamp"] = time.time()
    monitor = _monitor
    if monitor.thread is None:
        monitor.start()
        if monitor.thread is None and not monitor.lock.locked():
            _deliver(alert, None)  # interpreter shutdown: stderr only, right here
            return
    if monitor.pending.qsize() < _MAX_PENDING:
        monitor.pending.put(alert)


def _run() -> None:
    monitor = _monitor
    while True:
        alert = monitor.pending.get()  # no timeout: an idle worker costs nothing
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

"""Alerts, exactly: what each alert says, when a repeat is held back and what it counts
then, when an exporter counts as failing and recovered, how the monitor thread bounds its
backlog, and where an alert is written (stderr, the level, the report key).

The pipeline's own calls into `fapilog.pipeline.alerts` are exercised end to end in
tests/test_monitoring.py; here the module's entry points are called directly, with the
monitor thread running and a clock the test moves."""

from __future__ import annotations

import os
import threading
from typing import Any

import orjson
import pytest

from fapilog import _diag, configure_logging
from fapilog.pipeline import alerts

ALERT_INTERVAL = alerts.ALERT_INTERVAL


class Clock:
    """Stands in for the `time` module inside `fapilog.pipeline.alerts`."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


class Received:
    """An `on_alert` callback that keeps what it gets, in order."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.exporters: list[str] = []
        self.markers = 0
        self.changed = threading.Condition()

    def __call__(self, alert: dict[str, Any]) -> None:
        with self.changed:
            self.alerts.append(alert)
            self.changed.notify_all()

    def settle(self) -> list[dict[str, Any]]:
        """Every alert raised so far, delivered: a marker alert goes through the monitor's
        queue after them, and is waited for (then removed)."""
        self.markers += 1
        marker = f"settle-marker-{self.markers}"  # (a queue of its own: never held back)
        alerts.note_drop(marker, "marker", 1, 1)
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(a.get("queue") == marker for a in self.alerts), timeout=10
            ), self.alerts
            found = [a for a in self.alerts if not str(a.get("queue")).startswith("settle-")]
            self.alerts[:] = []
        return found


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(alerts, "time", fake)
    return fake


@pytest.fixture
def received(clock: Clock, memory_exporter: Any) -> Received:
    callback = Received()
    callback.exporters = [memory_exporter.name]
    configure_logging(exporters=callback.exporters, on_alert=callback)
    return callback


def without_timestamp(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "timestamp"} for a in found]


def test_a_drop_alert_names_the_queue_the_reason_and_the_counts(
    received: Received, clock: Clock
) -> None:
    alerts.note_drop("intake", "queue_full", 3, 10)
    alerts.note_drop("loki", "export_failed", 7, 7)
    found = received.settle()
    assert without_timestamp(found) == [
        {
            "alert": "records_dropped",
            "message": "fapilog is dropping records: the intake queue, reason queue_full",
            "queue": "intake",
            "exporter": None,
            "reason": "queue_full",
            "dropped": 3,
            "dropped_total": 10,
        },
        {
            "alert": "records_dropped",
            "message": "fapilog is dropping records: exporter 'loki', reason export_failed",
            "queue": "loki",
            "exporter": "loki",
            "reason": "export_failed",
            "dropped": 7,
            "dropped_total": 7,
        },
    ]
    assert [a["timestamp"] for a in found] == [clock.time()] * 2


def test_a_repeated_drop_waits_out_the_interval_then_counts_what_it_held_back(
    received: Received, clock: Clock
) -> None:
    alerts.note_drop("intake", "queue_full", 3, 3)
    clock.now += ALERT_INTERVAL - 0.001
    alerts.note_drop("intake", "queue_full", 2, 5)
    alerts.note_drop("intake", "queue_full", 4, 9)
    alerts.note_drop("intake", "too_large", 1, 1)  # another reason: its own alert
    alerts.note_drop("other", "queue_full", 1, 1)  # another queue: its own alert
    assert [(a["queue"], a["reason"], a["dropped"]) for a in received.settle()] == [
        ("intake", "queue_full", 3),
        ("intake", "too_large", 1),
        ("other", "queue_full", 1),
    ]
    clock.now += 0.001  # the interval since the first alert has passed, exactly
    alerts.note_drop("intake", "queue_full", 1, 10)
    found = received.settle()
    assert [(a["dropped"], a["dropped_total"]) for a in found] == [(2 + 4 + 1, 10)]
    # the interval starts again from that alert, and the held-back count from zero
    clock.now += ALERT_INTERVAL - 0.001
    alerts.note_drop("intake", "queue_full", 5, 15)
    assert received.settle() == []
    clock.now += 0.001
    alerts.note_drop("intake", "queue_full", 6, 21)
    assert [a["dropped"] for a in received.settle()] == [11]


def test_reconfiguring_starts_alerting_afresh(received: Received, clock: Clock) -> None:
    alerts.note_drop("intake", "queue_full", 3, 3)
    alerts.note_export("exp", False, records=1, consecutive=3, error="down")
    assert len(received.settle()) == 2
    alerts.note_drop("intake", "queue_full", 2, 5)  # held back, counted
    configure_logging(exporters=received.exporters, on_alert=received, level="DEBUG")
    alerts.note_drop("intake", "queue_full", 1, 6)
    alerts.note_export("exp", True, records=1, consecutive=0, error=None)
    # a new configuration: no interval to wait out, nothing held back, no exporter failing
    assert [(a["alert"], a.get("dropped")) for a in received.settle()] == [("records_dropped", 1)]


def test_an_exporter_counts_as_failing_after_three_failed_exports_in_a_row(
    received: Received, clock: Clock
) -> None:
    for consecutive in (1, 2):
        alerts.note_export("loki", False, records=4, consecutive=consecutive, error="e")
    assert received.settle() == []
    alerts.note_export("loki", False, records=4, consecutive=3, error="ConnectError()")
    assert without_timestamp(received.settle()) == [
        {
            "alert": "exporter_failing",
            "message": "fapilog exporter 'loki' keeps failing (3 exports in a row)",
            "exporter": "loki",
            "consecutive_failures": 3,
            "error": "ConnectError()",
            "records": 4,
        }
    ]
    assert alerts.FAILING_AFTER == 3


def test_a_failing_exporter_is_reminded_once_per_interval_and_its_recovery_announced(
    received: Received, clock: Clock
) -> None:
    alerts.note_export("otlp", True, records=2, consecutive=0, error=None)
    assert received.settle() == []  # never failed: nothing to recover from
    alerts.note_export("otlp", False, records=2, consecutive=3, error="e")
    clock.now += ALERT_INTERVAL - 0.001
    alerts.note_export("otlp", False, records=2, consecutive=4, error="e")
    assert [a["consecutive_failures"] for a in received.settle()] == [3]
    clock.now += 0.001
    alerts.note_export("otlp", False, records=2, consecutive=5, error="e")
    assert [a["consecutive_failures"] for a in received.settle()] == [5]
    alerts.note_export("otlp", True, records=2, consecutive=0, error=None)
    alerts.note_export("otlp", True, records=2, consecutive=0, error=None)
    assert without_timestamp(received.settle()) == [
        {
            "alert": "exporter_recovered",
            "message": "fapilog exporter 'otlp' exports again",
            "exporter": "otlp",
        }
    ]
    # failing again soon after: announced at once (it had recovered), not held back
    alerts.note_export("otlp", False, records=2, consecutive=3, error="e")
    assert [a["alert"] for a in received.settle()] == ["exporter_failing"]


def test_a_filling_spool_says_how_full_and_is_rate_limited(
    received: Received, clock: Clock
) -> None:
    alerts.note_spool("loki", 859, 1000, "/var/spool/x")
    clock.now += ALERT_INTERVAL - 0.001
    alerts.note_spool("loki", 900, 1000, "/var/spool/x")
    alerts.note_spool("otlp", 3, 3, "/var/spool/y")
    found = without_timestamp(received.settle())
    assert found == [
        {
            "alert": "spool_filling",
            "message": "fapilog exporter 'loki': its disk spool is 85 % full (859 of 1000 "
            "bytes, FAPILOG_SPOOL__MAX_BYTES); past the cap the oldest records are dropped",
            "exporter": "loki",
            "spool_bytes": 859,
            "spool_max_bytes": 1000,
            "directory": "/var/spool/x",
        },
        {
            "alert": "spool_filling",
            "message": "fapilog exporter 'otlp': its disk spool is 100 % full (3 of 3 "
            "bytes, FAPILOG_SPOOL__MAX_BYTES); past the cap the oldest records are dropped",
            "exporter": "otlp",
            "spool_bytes": 3,
            "spool_max_bytes": 3,
            "directory": "/var/spool/y",
        },
    ]
    clock.now += 0.001
    alerts.note_spool("loki", 950, 1000, "/var/spool/x")
    assert [a["spool_bytes"] for a in received.settle()] == [950]


def stderr_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_each_alert_is_written_to_stderr_under_its_own_key_and_level(
    received: Received, capfd: pytest.CaptureFixture[str]
) -> None:
    keys: list[tuple[str, dict[str, Any]]] = []

    def listener(key: str, message: str, fields: dict[str, Any]) -> None:
        keys.append((key, fields))

    _diag.add_listener(listener)
    try:
        alerts.note_drop("intake", "queue_full", 1, 1)
        alerts.note_drop("loki", "export_failed", 2, 2)
        alerts.note_export("loki", False, records=2, consecutive=3, error="e")
        alerts.note_export("loki", True, records=2, consecutive=0, error=None)
        alerts.note_spool("loki", 9, 10, "/d")
        received.settle()
    finally:
        _diag.remove_listener(listener)
    written = [line for line in stderr_lines(capfd.readouterr().err) if "alert" in line]
    by_key = {line["fapilog.diagnostic"]: line for line in written}
    assert [key for key, _ in keys if "marker" not in key] == [
        "alert:records_dropped:intake:queue_full",
        "alert:records_dropped:loki:export_failed",
        "alert:exporter_failing:loki",
        "alert:exporter_recovered:loki",
        "alert:spool_filling:loki",
    ]
    assert {k: line["level"] for k, line in by_key.items() if "marker" not in k} == {
        "alert:records_dropped:intake:queue_full": "warning",
        "alert:records_dropped:loki:export_failed": "warning",
        "alert:exporter_failing:loki": "warning",
        "alert:exporter_recovered:loki": "info",
        "alert:spool_filling:loki": "warning",
    }
    line = by_key["alert:records_dropped:intake:queue_full"]
    assert line["message"] == "fapilog is dropping records: the intake queue, reason queue_full"
    assert (line["alert"], line["queue"], line["exporter"], line["dropped"]) == (
        "records_dropped", "intake", None, 1,
    )  # fmt: skip
    # the message is the line's own message; the alert's timestamp is not a field
    for _, fields in keys:
        assert "message" not in fields and "timestamp" not in fields


def test_a_raising_callback_is_reported_with_its_exception(
    clock: Clock, memory_exporter: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    calls = Received()

    def broken(alert: dict[str, Any]) -> None:
        calls(alert)
        raise RuntimeError("pager down")

    configure_logging(exporters=[memory_exporter.name], on_alert=broken)
    alerts.note_drop("intake", "queue_full", 1, 1)
    received_all = threading.Event()

    def done(key: str, message: str, fields: dict[str, Any]) -> None:
        if key == "on_alert":
            received_all.set()

    _diag.add_listener(done)
    try:
        alerts.note_drop("intake", "too_large", 1, 1)
        assert received_all.wait(10)
    finally:
        _diag.remove_listener(done)
    reports = [
        line for line in stderr_lines(capfd.readouterr().err)
        if line["fapilog.diagnostic"] == "on_alert"
    ]  # fmt: skip
    assert reports[0]["message"] == "fapilog on_alert callback raised RuntimeError('pager down')"
    assert reports[0]["level"] == "error"


def test_the_callback_gets_its_own_copy_of_the_alert(received: Received) -> None:
    seen: list[dict[str, Any]] = []

    def mutating(alert: dict[str, Any]) -> None:
        seen.append(alert)
        alert.clear()

    configure_logging(exporters=received.exporters, on_alert=mutating)
    events: list[dict[str, Any]] = []
    written = threading.Event()

    def listener(key: str, message: str, fields: dict[str, Any]) -> None:
        events.append(dict(fields))
        written.set()

    _diag.add_listener(listener)
    try:
        alerts.note_drop("intake", "queue_full", 1, 1)
        assert written.wait(10)
    finally:
        _diag.remove_listener(listener)
    assert events[0]["reason"] == "queue_full"


def test_a_slow_callback_holds_at_most_a_hundred_alerts_back(
    clock: Clock, memory_exporter: Any
) -> None:
    entered, release = threading.Event(), threading.Event()
    got: list[dict[str, Any]] = []
    all_in = threading.Condition()

    def slow(alert: dict[str, Any]) -> None:
        entered.set()
        release.wait(10)
        with all_in:
            got.append(alert)
            all_in.notify_all()

    configure_logging(exporters=[memory_exporter.name], on_alert=slow)
    alerts.note_drop("q0", "r", 1, 1)
    assert entered.wait(10)  # the monitor thread is in the callback: the rest waits
    for i in range(1, 150):
        alerts.note_drop(f"q{i}", "r", 1, 1)  # 149 alerts: 100 are kept, 49 dropped
    release.set()
    with all_in:
        assert all_in.wait_for(lambda: len(got) >= 101, timeout=10)
    # nothing more is coming: a marker after them arrives right after the 101st
    alerts.note_drop("marker", "r", 1, 1)
    with all_in:
        assert all_in.wait_for(lambda: got[-1]["queue"] == "marker", timeout=10)
    assert [a["queue"] for a in got] == [f"q{i}" for i in range(101)] + ["marker"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_starts_its_own_monitor_and_alerts(received: Received) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            got = threading.Event()
            alerts.install()  # (the parent's `received` callback is inherited)
            _diag.add_listener(lambda key, message, fields: got.set())
            alerts.note_drop("child", "queue_full", 1, 1)
            code = 0 if got.wait(10) and alerts._monitor.thread is not None else 2
            os.write(write, str(code).encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert (answer, os.waitstatus_to_exitcode(status)) == ("0", 0)


def test_the_monitor_thread_starts_with_the_first_alert_where_none_runs(
    received: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monitor without its thread (a forked child's, before any alert) starts one for
    the first alert, which reaches the callback like any other."""
    fresh = alerts._Monitor()
    monkeypatch.setattr(alerts, "_monitor", fresh)
    assert fresh.thread is None
    alerts.note_drop("intake", "queue_full", 1, 1)
    assert [a["queue"] for a in received.settle()] == ["intake"]
    assert fresh.thread is not None and fresh.thread.name == "fapilog-monitor"
    fresh.thread = None  # (the fixture's monitor, not this one, is reset after the test)


def test_starting_the_monitor_never_waits_for_a_start_already_in_progress() -> None:
    """A signal handler that raises an alert while its own thread is starting the monitor
    (the start's lock held by the frame it interrupted): it returns at once, and the frame
    it interrupted finishes the start. (Another thread stands for the handler, so that a
    start that waited would fail the test rather than hang it.)"""
    fresh = alerts._Monitor()
    assert fresh.lock.acquire()  # a start in progress
    try:
        caller = threading.Thread(target=fresh.start)
        caller.start()
        caller.join(10)
        assert not caller.is_alive()
        assert fresh.thread is None
    finally:
        fresh.lock.release()


def test_where_no_thread_can_start_an_alert_is_written_in_place(
    received: Received, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """At interpreter shutdown no thread can start: the alert goes to stderr right away
    (the callback, which may need what is being torn down, is not called)."""
    monkeypatch.setattr(alerts, "_monitor", alerts._Monitor())
    monkeypatch.setattr(alerts, "start_worker", lambda name, run: None)
    alerts.note_drop("intake", "queue_full", 2, 5)
    written = [line for line in stderr_lines(capfd.readouterr().err) if "alert" in line]
    assert [(line["alert"], line["queue"], line["dropped"]) for line in written] == [
        ("records_dropped", "intake", 2)
    ]
    assert alerts._monitor.pending.qsize() == 0 and received.alerts == []


def test_an_alert_while_fapilog_is_not_configured_goes_to_stderr_and_the_monitor_lives_on(
    received: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fapilog.testing

    # a monitor thread of this test's own (mutation testing maps the thread's code to the
    # test that started it)
    monkeypatch.setattr(alerts, "_monitor", alerts._Monitor())
    assert received.settle() == []  # the monitor thread runs
    fapilog.testing.reset()  # not configured now; the thread stays
    seen = threading.Event()

    def listener(key: str, message: str, fields: dict[str, Any]) -> None:
        seen.set()

    _diag.add_listener(listener)
    try:
        alerts.note_drop("intake", "unconfigured", 1, 1)
        assert seen.wait(10)
    finally:
        _diag.remove_listener(listener)
    assert received.alerts == []  # no settings: no callback
    configure_logging(exporters=received.exporters, on_alert=received)
    alerts.note_drop("intake", "queue_full", 1, 1)
    assert [a["reason"] for a in received.settle()] == ["queue_full"]


def test_each_failing_exporter_has_its_own_reminder_interval(
    received: Received, clock: Clock
) -> None:
    alerts.note_export("a", False, records=1, consecutive=3, error="e")
    clock.now += ALERT_INTERVAL - 1
    alerts.note_export("b", False, records=1, consecutive=3, error="e")
    clock.now += 1  # an interval since a's alert, one second since b's
    alerts.note_export("a", False, records=1, consecutive=4, error="e")
    alerts.note_export("b", False, records=1, consecutive=4, error="e")
    assert [(a["exporter"], a["consecutive_failures"]) for a in received.settle()] == [
        ("a", 3), ("b", 3), ("a", 4),
    ]  # fmt: skip

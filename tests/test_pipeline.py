"""The non-blocking pipeline: overflow policies, accounting, isolation, deadlines, idle CPU.

Queue-level tests drive a real `BatchQueue` (its real worker thread) whose consumer is held
on a gate, so the queue's contents are known exactly; end-to-end tests go through
`configure_logging()` with exporters registered by name.
"""

from __future__ import annotations

import asyncio
import json
import linecache
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

import fapilog
from conftest import function_name, untraced
from fapilog import configure_logging, get_logger, log
from fapilog._levels import ERROR_SEVERITY, WARN_SEVERITY
from fapilog.exporters import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.pipeline.accounting import unbalanced
from fapilog.pipeline.queue import BatchQueue
from fapilog.settings import LoggingSettings, QueueSettings

INFO, WARN, ERROR = 9, WARN_SEVERITY, ERROR_SEVERITY
Item = tuple[int, str]


class Gate:
    """A consumer that holds the worker on its first batch until `release()`."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.taken = threading.Event()
        self.delivered: list[Item] = []

    def __call__(self, batch: list[Item]) -> None:
        self.taken.set()
        self.opened.wait(30)
        self.delivered.extend(batch)

    def release(self) -> None:
        self.opened.set()


@pytest.fixture
def make_queue() -> Iterator[Callable[..., tuple[BatchQueue[Item], Gate]]]:
    made: list[tuple[BatchQueue[Item], Gate]] = []

    def make(**settings: Any) -> tuple[BatchQueue[Item], Gate]:
        gate = Gate()
        options = {"max_size": 5, "batch_size": 100, "max_delay": 0, **settings}
        queue: BatchQueue[Item] = BatchQueue(
            "test", gate, lambda item: item[0], QueueSettings(**options)
        )
        assert queue.put((INFO, "blocker"))  # the worker takes it and waits at the gate
        assert gate.taken.wait(10)
        made.append((queue, gate))
        return queue, gate

    yield make
    for queue, gate in made:
        gate.release()
        queue.shutdown(5)


def drain(queue: BatchQueue[Item], gate: Gate) -> list[str]:
    gate.release()
    assert queue.flush(10)
    return [name for _, name in gate.delivered[1:]]  # without the blocker


def accounted(queue: BatchQueue[Any]) -> None:
    """Every record offered is delivered or dropped (nothing queued or in flight)."""
    assert queue.offered == queue.delivered + queue.total_dropped()
    assert queue.accepted == queue.offered - _rejected(queue)


def _rejected(queue: BatchQueue[Any]) -> int:
    # records refused at the door = offered - accepted; evictions were accepted first
    return queue.offered - queue.accepted


# -- overflow policies, exact ------------------------------------------------------------


def test_drop_oldest_evicts_the_oldest_non_error(make_queue: Any) -> None:
    queue, gate = make_queue(overflow="drop_oldest")
    for name in ("e1", "i1", "w1", "i2", "i3"):
        queue.put((ERROR if name[0] == "e" else WARN if name[0] == "w" else INFO, name))
    assert queue.put((INFO, "i4"))  # evicts i1 (e1 is older but an error)
    assert queue.put((ERROR, "e2"))  # evicts w1
    assert queue.depth == 5
    assert drain(queue, gate) == ["e1", "i2", "i3", "i4", "e2"]
    assert queue.dropped == {"queue_full": 2}
    accounted(queue)


def test_drop_oldest_with_only_errors_queued(make_queue: Any) -> None:
    queue, gate = make_queue(overflow="drop_oldest")
    for n in range(5):
        queue.put((ERROR, f"e{n}"))
    assert not queue.put((INFO, "i"))  # an info never displaces an error
    assert queue.put((ERROR, "e5"))  # the oldest error goes for a newer one
    assert drain(queue, gate) == ["e1", "e2", "e3", "e4", "e5"]
    assert queue.dropped == {"queue_full": 2}
    accounted(queue)


def test_drop_newest_rejects_the_incoming_record_but_keeps_errors(make_queue: Any) -> None:
    queue, gate = make_queue(overflow="drop_newest")
    for name in ("i1", "w1", "i2", "i3", "i4"):
        queue.put((WARN if name[0] == "w" else INFO, name))
    assert not queue.put((WARN, "w2"))
    assert queue.put((ERROR, "e1"))  # the newest non-error (i4) makes room
    assert queue.put((ERROR, "e2"))  # then i3
    assert drain(queue, gate) == ["i1", "w1", "i2", "e1", "e2"]
    assert queue.dropped == {"queue_full": 3}
    accounted(queue)


def test_sample_keeps_every_warning_and_error(make_queue: Any) -> None:
    # high water 2 of 5: above it infos are kept at sample_ratio (0 here: none)
    queue, gate = make_queue(overflow="sample", high_water=0.4, sample_ratio=0.0)
    for name in ("i1", "i2", "i3", "w1", "i4", "e1", "w2", "w3", "e2", "w4"):
        level = {"i": INFO, "w": WARN, "e": ERROR}[name[0]]
        queue.put((level, name))
    # i3, i4 sampled out; when full, w3 and e2 evict the newest infos (i2, i1); w4 finds
    # only warnings and errors queued: with the queue bounded, it is the one shed
    assert drain(queue, gate) == ["w1", "e1", "w2", "w3", "e2"]
    assert queue.dropped == {"sampled": 2, "queue_full": 3}
    accounted(queue)


def test_sample_ratio_one_keeps_everything_that_fits(make_queue: Any) -> None:
    queue, gate = make_queue(overflow="sample", high_water=0.4, sample_ratio=1.0)
    for n in range(5):
        assert queue.put((INFO, f"i{n}"))
    assert drain(queue, gate) == [f"i{n}" for n in range(5)]
    assert queue.dropped == {}


def test_block_waits_for_room_then_enqueues(make_queue: Any) -> None:
    queue, gate = make_queue(overflow="block", block_timeout=30)
    for n in range(5):
        queue.put((INFO, f"i{n}"))
    result: list[bool] = []
    caller = threading.Thread(target=lambda: result.append(queue.put((INFO, "waited"))))
    caller.start()
    deadline = time.monotonic() + 10
    while not queue._progress._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.001)  # wait until the caller is blocked inside put()
    assert result == []
    gate.release()  # the worker takes the queued batch: room for the blocked caller
    caller.join(10)
    assert result == [True]
    assert queue.flush(10)
    assert queue.dropped == {}
    assert [name for _, name in gate.delivered][-1] == "waited"


def test_block_is_bounded_and_does_not_wait_again_while_stalled(make_queue: Any) -> None:
    queue, gate = make_queue(overflow="block", block_timeout=0.3)
    for n in range(5):
        queue.put((INFO, f"i{n}"))
    started = time.monotonic()
    assert not queue.put((INFO, "late"))
    first_wait = time.monotonic() - started
    assert 0.3 <= first_wait < 10  # waited its bound, and no more than that (generous)
    started = time.monotonic()
    assert not queue.put((INFO, "later"))  # stalled: shed at once, no second wait
    assert time.monotonic() - started < 0.3
    assert queue.put((ERROR, "e1"))  # errors still displace lesser records
    assert queue.dropped == {"block_timeout": 3}
    assert drain(queue, gate) == ["i0", "i1", "i2", "i3", "e1"]
    assert queue.put((INFO, "after"))  # the worker moved: normal again
    assert queue.flush(10)
    accounted(queue)


def test_block_from_an_event_loop_thread_is_bounded(make_queue: Any) -> None:
    queue, gate = make_queue(overflow="block", block_timeout=0.2)
    for n in range(5):
        queue.put((INFO, f"i{n}"))

    async def handler() -> tuple[bool, float]:
        started = time.monotonic()
        accepted = queue.put((INFO, "from the loop"))
        return accepted, time.monotonic() - started

    accepted, waited = asyncio.run(handler())
    assert accepted is False
    assert 0.2 <= waited < 10
    drain(queue, gate)
    accounted(queue)


# -- the hand-off between workers (put_many) ----------------------------------------------


def _waiting_in_put_many(queue: BatchQueue[Item], handed: threading.Thread) -> None:
    deadline = time.monotonic() + 10
    while not queue._progress._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.001)  # until the hand-off waits inside put_many()
    assert handed.is_alive()


def test_a_worker_handing_over_waits_for_a_slow_batch_instead_of_shedding(
    make_queue: Any,
) -> None:
    """put_many (the bridge's worker feeding an exporter queue) waits for the queue's worker
    under every policy, for as long as the batch it exports is within export_timeout: a
    burst arriving while a first export is slow (connecting, say) loses nothing, however
    short block_timeout is."""
    queue, gate = make_queue(overflow="drop_oldest", block_timeout=0.001, export_timeout=30)
    for n in range(5):
        queue.put((INFO, f"i{n}"))
    handed = threading.Thread(target=queue.put_many, args=([(INFO, f"h{n}") for n in range(7)],))
    handed.start()
    _waiting_in_put_many(queue, handed)
    handed.join(0.3)  # far beyond block_timeout: still waiting, nothing shed
    assert handed.is_alive() and queue.dropped == {}
    gate.release()
    handed.join(10)
    assert queue.flush(10)
    assert queue.dropped == {}
    assert [name for _, name in gate.delivered[1:]] == [
        *(f"i{n}" for n in range(5)),
        *(f"h{n}" for n in range(7)),
    ]
    accounted(queue)


def test_the_hand_off_wait_ends_when_the_batch_outlasts_export_timeout(make_queue: Any) -> None:
    """A stuck worker: the hand-off waits until the batch in progress is export_timeout
    old, then drop_oldest sheds (counted), without waiting again until the worker takes
    its next batch."""
    queue, gate = make_queue(overflow="drop_oldest", export_timeout=0.2)
    for n in range(5):
        queue.put((INFO, f"i{n}"))
    queue.put_many([(INFO, "h0"), (INFO, "h1")])
    assert queue._stalled  # the wait ended: shed from now on
    assert queue.dropped == {"queue_full": 2}
    queue.put_many([(INFO, "h2")])  # no second wait
    assert queue.dropped == {"queue_full": 3}
    assert drain(queue, gate) == ["i3", "i4", "h0", "h1", "h2"]
    assert not queue._stalled  # the worker moved
    accounted(queue)


def test_the_hand_off_sheds_at_once_when_the_producer_queue_is_full(make_queue: Any) -> None:
    """Waiting while the producer's own queue (the intake) is full would only move the
    shedding upstream, to every exporter: this queue sheds by its policy instead."""
    queue, gate = make_queue(overflow="drop_newest", export_timeout=30)
    for n in range(5):
        queue.put((INFO, f"i{n}"))
    handed = threading.Thread(
        target=queue.put_many,
        args=([(INFO, "h0"), (INFO, "h1")],),
        kwargs={"upstream_full": lambda: True},
    )
    handed.start()
    handed.join(10)
    assert not handed.is_alive()  # the 30 s bound was never used
    assert queue.dropped == {"queue_full": 2}
    assert drain(queue, gate) == [f"i{n}" for n in range(5)]
    accounted(queue)


def test_under_block_the_hand_off_waits_even_when_the_producer_queue_is_full(
    make_queue: Any,
) -> None:
    """Policy block is lossless backpressure: the hand-off keeps waiting for a live worker
    (the application's threads wait, bounded, at the intake in turn)."""
    queue, gate = make_queue(overflow="block", block_timeout=0.001, export_timeout=30)
    for n in range(5):
        queue.put((INFO, f"i{n}"))
    handed = threading.Thread(
        target=queue.put_many, args=([(INFO, "h0")],), kwargs={"upstream_full": lambda: True}
    )
    handed.start()
    _waiting_in_put_many(queue, handed)
    handed.join(0.3)  # far beyond block_timeout: still waiting, nothing shed
    assert handed.is_alive() and queue.dropped == {}
    gate.release()
    handed.join(10)
    assert drain(queue, gate) == [*(f"i{n}" for n in range(5)), "h0"]
    accounted(queue)


def test_the_application_thread_never_waits_for_room(make_queue: Any) -> None:
    """put (the application's path) sheds at once under drop_oldest, worker stuck."""
    queue, gate = make_queue(overflow="drop_oldest", block_timeout=30)
    for n in range(8):
        assert queue.put((INFO, f"i{n}"))
    assert queue.dropped == {"queue_full": 3}  # no wait: the 30 s bound was never used
    assert drain(queue, gate) == ["i3", "i4", "i5", "i6", "i7"]
    accounted(queue)


# -- end to end through configure_logging -------------------------------------------------


class RecordingExporter(LogRecordExporter):
    """Records what it exports; optionally sleeps per batch or waits on a gate."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.records: list[ReadableLogRecord] = []
        self.calls = 0
        self.entered = threading.Event()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(60)
        if self.delay:
            time.sleep(self.delay)  # the slow sink under test
        self.records.extend(batch)
        self.calls += 1
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_burst_never_waits_on_a_slow_exporter_and_every_record_is_accounted_for(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    """An exporter stuck in its first export for the whole burst, 100,000 log.info, policy
    drop_oldest: the burst ends while the exporter is still stuck, and afterwards every
    record is exported or counted as dropped."""
    gate = threading.Event()
    stuck = RecordingExporter(gate=gate)
    configure_logging(exporters=[exporter_named(stuck)], queue={"overflow": "drop_oldest"})
    logger = get_logger("burst")

    def burst() -> None:
        for i in range(100_000):
            logger.info("burst", i=i, kind="load", ok=True)

    caller = threading.Thread(target=burst)
    caller.start()
    caller.join(120)  # a caller that waited on the exporter would still be waiting
    returned_while_stuck = not caller.is_alive() and not gate.is_set()
    gate.set()
    caller.join()
    assert returned_while_stuck
    assert fapilog.force_flush(30)
    figures = fapilog.stats()
    assert figures["emitted"] == 100_000
    assert figures["exported"] + figures["dropped"] == figures["emitted"]
    assert figures["exported"] == len(stuck.records)
    assert figures["dropped"] > 0
    assert figures["queued"] == 0
    reasons = figures["exporters"][next(iter(figures["exporters"]))]["dropped_by_reason"]
    assert set(reasons) <= {"queue_full", "intake_queue_full"}
    assert sum(reasons.values()) == figures["dropped"]


def test_an_export_in_flight_too_long_loses_the_final_drains_extra_time(
    exporter_named: Callable[[LogRecordExporter], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that accepts and never answers has not failed yet, but its exporter is
    not working: the final drain's extra time past the deadline (`working_until`) goes only
    to exporters that are, so a hanging push cannot stretch the exit."""
    from fapilog._state import STATE
    from fapilog.pipeline import router

    gate = threading.Event()
    stuck, healthy = RecordingExporter(gate=gate), RecordingExporter()
    configure_logging(exporters=[exporter_named(stuck), exporter_named(healthy)])
    log.info("one")
    assert stuck.entered.wait(10)
    assert STATE.pipeline is not None
    first, second = STATE.pipeline.processors
    assert first.is_working() and second.is_working()  # in flight, not for long yet
    monkeypatch.setattr(router, "STUCK_AFTER", 0.0)
    assert not first.is_working() and second.is_working()
    try:
        ended = router.shutdown_processors(
            [first, second], 0.0, working_until=time.monotonic() + 60
        )
    finally:
        gate.set()
    assert ended is False  # it returned at the deadline, not 60 s later, with a drop
    figures = fapilog.stats()["exporters"]
    assert figures[first.name]["dropped_by_reason"] == {"shutdown_timeout": 1}
    assert figures[second.name]["exported"] == 1


def test_a_stuck_exporter_does_not_stall_the_others(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    gate = threading.Event()
    stuck, healthy = RecordingExporter(gate=gate), RecordingExporter()
    configure_logging(
        exporters=[exporter_named(stuck), exporter_named(healthy)],
        queue={"max_size": 20_000, "max_delay": 0.01},
    )
    for i in range(5_000):
        log.info("fan out", i=i)
    deadline = time.monotonic() + 30
    while len(healthy.records) < 5_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.log_record.attributes["i"] for r in healthy.records] == list(range(5_000))
    assert stuck.entered.is_set() and stuck.records == []
    gate.set()
    assert fapilog.force_flush(30)
    assert len(stuck.records) == 5_000


def test_a_stuck_exporter_with_a_full_queue_does_not_hold_its_siblings(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    """The stuck exporter's queue fills; under load the bridge stops waiting for it as soon
    as the intake is full, long before export_timeout (30 s): the healthy exporter gets
    every record the intake kept, at once, and the stuck one sheds by its policy."""
    gate = threading.Event()
    stuck, healthy = RecordingExporter(gate=gate), RecordingExporter()
    stuck_name, healthy_name = exporter_named(stuck), exporter_named(healthy)
    configure_logging(
        exporters=[stuck_name, healthy_name],
        queue={"max_size": 200, "max_delay": 0.01, "export_timeout": 30},
    )
    try:
        for i in range(5_000):
            log.info("fan out", i=i)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            figures = fapilog.stats()["exporters"][healthy_name]
            if figures["exported"] + figures["dropped"] == 5_000:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the healthy exporter is held up: {figures}")
        assert len(healthy.records) == figures["exported"] > 200
        assert stuck.records == []
        assert fapilog.stats()["exporters"][stuck_name]["dropped_by_reason"]["queue_full"] > 0
    finally:
        gate.set()
    assert fapilog.force_flush(30)


def test_sample_end_to_end_keeps_all_warnings_and_errors(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    """Policy sample under a stalled exporter keeps 100% of WARNING+."""
    gate = threading.Event()
    exporter = RecordingExporter(gate=gate)
    configure_logging(
        exporters=[exporter_named(exporter)],
        queue={"overflow": "sample", "sample_ratio": 0.1, "max_delay": 0},
    )
    levels: list[str] = []
    for i in range(5_000):
        level = "error" if i % 25 == 0 else "warning" if i % 10 == 0 else "info"
        levels.append(level)
        getattr(log, level)("mixed", i=i)
    gate.set()
    assert fapilog.force_flush(30)
    kept = {r.log_record.attributes["i"] for r in exporter.records}
    severe = {i for i, level in enumerate(levels) if level != "info"}
    assert severe <= kept  # every warning and error
    infos_kept = len(kept - severe)
    assert infos_kept < levels.count("info")  # infos were sampled
    figures = fapilog.stats()
    assert figures["exported"] + figures["dropped"] == figures["emitted"] == 5_000
    reasons = figures["exporters"][next(iter(figures["exporters"]))]["dropped_by_reason"]
    assert reasons.get("sampled", 0) + reasons.get("intake_sampled", 0) > 0


def test_block_end_to_end_loses_nothing_with_a_live_exporter(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    exporter = RecordingExporter(delay=0.002)
    configure_logging(
        exporters=[exporter_named(exporter)],
        queue={"overflow": "block", "max_size": 50, "batch_size": 10, "block_timeout": 10},
    )
    for i in range(2_000):
        log.info("backpressure", i=i)
    assert fapilog.force_flush(30)
    assert [r.log_record.attributes["i"] for r in exporter.records] == list(range(2_000))
    assert fapilog.stats()["dropped"] == 0


def _inside(thread: threading.Thread, function: str) -> bool:
    """Whether `thread` is running `function` now (anywhere on its stack)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if function_name(frame.f_code) == function:
            return True
        frame = frame.f_back
    return False


def _until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    """Poll `condition` until it holds, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _full_intake_behind_a_held_exporter(
    exporter_named: Callable[[LogRecordExporter], str], gate: threading.Event, block_timeout: float
) -> tuple[RecordingExporter, int]:
    """Policy block, queues of 5, an exporter held at `gate` in its first export: its queue
    fills, the bridge's worker waits to hand it the next record, and the intake fills up
    to its bound exactly. Returns the exporter and how many records were logged (`n` 0 on)."""
    from fapilog._state import STATE

    exporter = RecordingExporter(gate=gate)
    configure_logging(
        exporters=[exporter_named(exporter)],
        queue={
            "overflow": "block",
            "max_size": 5,
            "batch_size": 5,
            "max_delay": 0,
            "block_timeout": block_timeout,
            "export_timeout": 60,
        },
    )
    log.info("held", n=0)
    assert exporter.entered.wait(10)
    for n in range(1, 7):  # 5 fill the exporter's queue, the 6th waits with the bridge
        log.info("queued", n=n)
    assert STATE.bridge is not None
    intake = STATE.bridge.intake
    # this configuration's worker (an earlier test's abandoned bridge may share its name)
    bridge = intake._thread
    assert bridge is not None and bridge.name == "fapilog-intake"
    assert _until(lambda: _inside(bridge, "_wait_for_handoff"))
    logged = 7
    for n in range(logged, logged + intake.max_size - intake.depth):
        log.info("queued", n=n)  # room left: no wait
        logged += 1
    assert intake.is_full()
    return exporter, logged


def test_block_holds_the_caller_until_the_intake_has_room_then_loses_nothing(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    """Policy block at the application's door: with the intake full behind a held
    exporter, a log call waits (block_timeout 30 s) instead of shedding, and goes on as
    soon as the exporter moves; every record is delivered, in order."""
    gate = threading.Event()
    try:
        exporter, logged = _full_intake_behind_a_held_exporter(exporter_named, gate, 30)
        caller = threading.Thread(
            target=log.info, args=("waited",), kwargs={"n": logged}, daemon=True
        )
        caller.start()
        assert _until(lambda: _inside(caller, "_wait_for_room") or not caller.is_alive())
        assert caller.is_alive(), "the log call did not wait for room"
        assert fapilog.stats()["dropped"] == 0
    finally:
        gate.set()  # the exporter moves: room all the way up to the intake
    caller.join(10)
    assert not caller.is_alive()
    assert fapilog.force_flush(10)
    assert [r.log_record.attributes["n"] for r in exporter.records] == list(range(logged + 1))
    figures = fapilog.stats()
    assert figures["emitted"] == figures["exported"] == logged + 1
    assert figures["dropped"] == 0


def test_block_waits_once_per_stall_then_sheds_as_block_timeout(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    """Policy block with an exporter that does not move: the first log call that finds
    the intake full waits its block_timeout, the next does not wait again; what did not
    fit is dropped with reason block_timeout (newest first), counted exactly, and the
    rest is delivered once the exporter moves."""
    gate = threading.Event()
    try:
        exporter, logged = _full_intake_behind_a_held_exporter(exporter_named, gate, 0.5)
        started = time.monotonic()
        log.info("late", n=logged)
        waited = time.monotonic() - started
        assert 0.5 <= waited < 10  # its bound, and no more than that (generous)
        log.info("later", n=logged + 1)  # stalled: no second wait
        assert time.monotonic() - started - waited < 0.5
    finally:
        gate.set()
    assert fapilog.force_flush(10)
    assert [r.log_record.attributes["n"] for r in exporter.records] == list(range(logged))
    figures = fapilog.stats()
    assert figures["intake"]["dropped_by_reason"] == {"block_timeout": 2}
    (mine,) = figures["exporters"].values()
    assert mine["dropped_by_reason"] == {"intake_block_timeout": 2}
    assert (mine["emitted"], mine["exported"], mine["dropped"]) == (logged + 2, logged, 2)


def test_force_flush_and_shutdown_honour_their_timeouts(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    never = threading.Event()
    stuck = RecordingExporter(gate=never)
    configure_logging(exporters=[exporter_named(stuck)], queue={"max_delay": 0})
    for i in range(100):
        log.info("stuck", i=i)
    assert stuck.entered.wait(10)
    started = time.monotonic()
    assert fapilog.force_flush(0.3) is False
    assert time.monotonic() - started < 10
    started = time.monotonic()
    assert fapilog.shutdown(0.5) is False
    assert time.monotonic() - started < 10
    figures = fapilog.stats()
    # what was queued, and the batch stuck inside export(), are counted, not lost silently
    assert figures["exported"] == 0
    assert figures["dropped"] == figures["emitted"] == 100
    reasons = figures["exporters"][next(iter(figures["exporters"]))]["dropped_by_reason"]
    assert set(reasons) == {"shutdown_timeout"}
    never.set()  # the stuck export returns late: not counted twice
    deadline = time.monotonic() + 10
    while stuck.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fapilog.stats()["dropped"] == 100 and fapilog.stats()["exported"] == 0


def test_idle_workers_use_no_cpu(exporter_named: Callable[[LogRecordExporter], str]) -> None:
    """No polling: idle workers wait on a condition without a timeout."""
    configure_logging(exporters=[exporter_named(RecordingExporter())])
    log.info("wake the workers once")
    assert fapilog.force_flush(10)
    workers = [t for t in threading.enumerate() if t.name.startswith("fapilog-")]
    assert workers
    native = {t.native_id for t in workers}
    process = psutil.Process()

    def cpu() -> float:
        return sum(t.user_time + t.system_time for t in process.threads() if t.id in native)

    before = cpu()
    time.sleep(1.0)  # the interval being measured
    assert cpu() - before < 0.02
    for thread in workers:  # and each is parked in an untimed wait
        frame = __import__("sys")._current_frames()[thread.ident]
        if frame.f_code.co_name == "wait":  # a condition's (the exporter queues)
            assert frame.f_locals.get("timeout") is None
        else:  # a SimpleQueue's get() (the intake, the alert monitor), a pipe's read() (the
            # signal watcher): each with no timeout, and its line says so
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            assert line.strip().endswith(")  # no timeout: an idle worker costs nothing"), line


def test_otel_blrp_variables_configure_the_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "5000")
    monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "100")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BLRP_EXPORT_TIMEOUT", "3000")
    monkeypatch.setenv("FAPILOG_QUEUE__OVERFLOW", "block")
    queue = LoggingSettings().queue
    assert (queue.max_size, queue.batch_size, queue.max_delay, queue.export_timeout) == (
        5000,
        100,
        0.25,
        3.0,
    )
    assert queue.overflow == "block"  # FAPILOG_QUEUE__* still read alongside
    monkeypatch.setenv("FAPILOG_QUEUE__MAX_SIZE", "7")  # fapilog's own variable wins
    assert LoggingSettings().queue.max_size == 7


def test_stats_add_up_across_a_reconfiguration(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    exporter = RecordingExporter()
    name = exporter_named(exporter)
    configure_logging(exporters=[name])
    for i in range(10):
        log.info("before", i=i)
    configure_logging(exporters=[name], level="DEBUG")  # same name, new processor
    for i in range(10):
        log.debug("after", i=i)
    assert fapilog.force_flush(10)
    deadline = time.monotonic() + 10  # the replaced processor drains in the background
    while fapilog.stats()["exported"] < 21 and time.monotonic() < deadline:
        time.sleep(0.01)
    figures = fapilog.stats()
    assert list(figures["exporters"]) == [name]
    assert figures["emitted"] == figures["exported"] == len(exporter.records) == 21


STATS_TOTALS = (
    "emitted", "exported", "dropped", "queued", "in_flight", "spooled", "filtered",
    "unknown_outcome", "adopted", "unconfigured_dropped", "abandoned_processors",
)  # fmt: skip


def test_stats_before_any_configuration_has_every_figure_at_zero() -> None:
    figures = fapilog.stats()
    assert {key: figures[key] for key in STATS_TOTALS} == dict.fromkeys(STATS_TOTALS, 0)
    assert figures["intake"] == {
        "accepted": 0,
        "dropped_by_reason": {},
        "queued": 0,
        "in_flight": 0,
        "capacity": 0,
    }
    assert figures["exporters"] == {} and figures["enricher_failures"] == {}
    assert figures["recorder"]["captured"] == 0


def test_stats_of_a_quiet_pipeline_name_each_figure(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, queue={"max_size": 500})
    for i in range(3):
        log.info("n", i=i)
    assert fapilog.force_flush(10)
    figures = fapilog.stats()
    expected = dict.fromkeys(STATS_TOTALS, 0) | {"emitted": 3, "exported": 3}
    assert {key: figures[key] for key in STATS_TOTALS} == expected
    assert figures["intake"] == {
        "accepted": 3,
        "dropped_by_reason": {},
        "queued": 0,
        "in_flight": 0,
        "capacity": 500,
    }
    assert figures["exporters"]["file"]["emitted"] == 3
    assert figures["enricher_failures"] == {}


def test_unbalanced_names_the_figures_that_do_not_add_up() -> None:
    # the check every test's teardown relies on (tests/conftest.py) must see a gap
    figures = fapilog.stats()
    balanced = dict.fromkeys(("emitted", "exported", "dropped", "queued", "in_flight"), 0) | {
        "spooled": 0, "filtered": 0, "unknown_outcome": 0, "adopted": 0,
    }  # fmt: skip
    figures["exporters"] = {
        "file": balanced | {"emitted": 3, "exported": 3},
        "loki": balanced | {"emitted": 3, "exported": 1, "dropped": 1},
    }
    figures["recorder"] = figures["recorder"] | {"captured": 2, "released": 1}
    wrong = unbalanced(figures)
    assert list(wrong) == ["loki", "recorder"]
    assert wrong["loki"]["emitted"] == 3 and wrong["loki"]["exported"] == 1
    assert wrong["recorder"]["captured"] == 2


def test_a_replaced_exporters_figures_are_added_to_its_successors(tmp_path: Path) -> None:
    # the same exporter name with other settings: a new processor, the old one retired
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    configure_logging(exporters=["file"], file={"path": str(first)})
    for i in range(5):
        log.info("before", i=i)
    configure_logging(exporters=["file"], file={"path": str(second)})
    for i in range(3):
        log.info("after", i=i)
    assert fapilog.force_flush(10)
    deadline = time.monotonic() + 10  # the replaced processor drains in the background
    while fapilog.stats()["exported"] < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    figures = fapilog.stats()
    assert list(figures["exporters"]) == ["file"]
    file = figures["exporters"]["file"]
    written = first.read_text().splitlines() + second.read_text().splitlines()
    # (and the reconfiguration's own event)
    assert file["emitted"] == file["exported"] == len(written) == 9, file
    assert file["dropped"] == file["queued"] == file["in_flight"] == 0, file
    assert file["dropped_by_reason"] == {}, file
    assert file["capacity"] == figures["intake"]["capacity"]  # the current queue's, once
    assert [json.loads(line)["message"] for line in first.read_text().splitlines()] == [
        "before"
    ] * 5


def test_a_raising_consumer_is_counted_and_the_worker_survives() -> None:
    calls: list[int] = []

    def consume(batch: list[Item]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise ValueError("bad batch")

    queue: BatchQueue[Item] = BatchQueue(
        "raising", consume, lambda item: item[0], QueueSettings(max_delay=0, batch_size=1)
    )
    try:
        queue.put((INFO, "first"))
        assert queue.flush(10)
        queue.put((INFO, "second"))
        assert queue.flush(10)
        assert queue.dropped == {"consumer_error": 1}
        assert queue.delivered == 1
    finally:
        queue.shutdown(5)


class Unprintable(Exception):
    """An exception whose repr and str raise another of its kind (`depth` times, then a
    RuntimeError): each handler that prints what it caught raises anew. Reporting it must
    not take down the worker that caught it."""

    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.depth = depth

    def __repr__(self) -> str:
        if self.depth:
            raise Unprintable(self.depth - 1)
        raise RuntimeError("no repr")

    __str__ = __repr__


class RaisingUnprintable(RecordingExporter):
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if not self.calls:
            self.calls += 1
            raise Unprintable()
        return super().export(batch)


def test_an_exporter_raising_an_unprintable_exception_does_not_kill_its_worker(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    """The first batch fails with an exception that cannot even be printed: it counts as
    failed, is reported, and the next record still reaches the exporter."""
    exporter = RaisingUnprintable()
    name = exporter_named(exporter)
    configure_logging(exporters=[name], queue={"max_delay": 0})
    log.info("lost")
    assert fapilog.force_flush(10)  # settled: not exported, and counted as dropped
    log.info("delivered")
    assert fapilog.force_flush(10)
    assert [r.log_record.body for r in exporter.records] == ["delivered"]
    figures = fapilog.stats()["exporters"][name]
    assert (figures["emitted"], figures["exported"]) == (2, 1)
    assert figures["dropped_by_reason"] == {"export_failed": 1}  # the exporter's failure


DEAD_WORKER_APP = str(Path(__file__).parent / "peers" / "dead_worker_app.py")


def dead_worker_run(when: str, env: dict[str, str]) -> dict[str, Any]:
    """tests/peers/dead_worker_app.py: an exporter's worker thread killed `when` ("before" a
    flush starts, or "during" it), then what the flush returned and the figures. In a child
    process, so that a hang fails this test (`timeout`) instead of hanging the suite; and
    without coverage, whose trace function hangs Python 3.11 while an asynchronous exception
    is pending (see the app's docstring)."""
    proc = subprocess.run(
        [sys.executable, DEAD_WORKER_APP, when],
        env=untraced(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert not result["worker_alive"], result  # the scenario itself: the worker is dead
    return result


def assert_undelivered_is_not_exported(result: dict[str, Any]) -> None:
    assert result["bodies"] == ["before"]
    figures = result["figures"]
    assert (figures["emitted"], figures["exported"]) == (2, 1), figures
    assert figures["queued"] + figures["in_flight"] == 1, figures  # not lost silently


def test_force_flush_returns_false_at_once_when_an_exporter_worker_is_dead(
    subprocess_env: dict[str, str],
) -> None:
    """An exporter's worker thread that died (SystemExit raised into it by a thread-killing
    helper while it waited for records) delivers nothing more: a flush of the record it
    did not take says so, False, at once, rather than wait out its 60 s or report success;
    the record is counted as queued, not as exported."""
    result = dead_worker_run("before", subprocess_env)
    assert result["flushed"] == [False]  # []: still waiting on the dead worker
    assert_undelivered_is_not_exported(result)


def test_a_waiting_force_flush_returns_false_once_the_exporter_worker_dies(
    subprocess_env: dict[str, str],
) -> None:
    """A flush already waiting on a live worker, which then dies (killed as it wakes for the
    flush), returns False soon after, rather than wait out its 60 s: a dead worker notifies
    no one, so the flush has to look."""
    result = dead_worker_run("during", subprocess_env)
    assert result["flushed"] == [False]  # []: still waiting on the dead worker
    assert_undelivered_is_not_exported(result)


class Closing(RecordingExporter):
    """Records its batches and whether its `shutdown()` ran; that shutdown may raise."""

    def __init__(self, raises: bool = False) -> None:
        super().__init__()
        self.raises = raises
        self.closed = False

    def shutdown(self) -> None:
        self.closed = True
        if self.raises:
            raise OSError("disk full while closing")


@pytest.mark.parametrize("raising", [True, False])
def test_an_exporter_whose_shutdown_raises_makes_shutdown_report_failure(
    exporter_named: Callable[[LogRecordExporter], str],
    capfd: pytest.CaptureFixture[str],
    raising: bool,
) -> None:
    """Three exporters, the middle one's own `shutdown()` raising: `fapilog.shutdown()`
    returns False (True when none raises), and the other two are shut down all the same,
    every record delivered to each."""
    exporters = [Closing(), Closing(raises=raising), Closing()]
    configure_logging(exporters=[exporter_named(exporter) for exporter in exporters])
    for i in range(5):
        log.info("before shutdown", i=i)
    assert fapilog.shutdown(5) is not raising
    assert [exporter.closed for exporter in exporters] == [True, True, True]
    assert [len(exporter.records) for exporter in exporters] == [5, 5, 5]
    said = "shutdown raised OSError('disk full while closing')" in capfd.readouterr().err
    assert said is raising


@pytest.mark.parametrize("kind", ["intake", "exporter queue"])
def test_the_exit_drain_never_waits_for_a_lock_a_stuck_worker_holds(
    kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A worker stuck while it holds its queue's lock (on a lock of foreign code the signal
    interrupted: coverage.py's tracer on Python 3.10 did this): the drain stops waiting
    after the deadline and LOCK_WAIT_AT_EXIT, says so on stderr, and the process can end."""
    from fapilog._state import LOCK_WAIT_AT_EXIT
    from fapilog.pipeline.intake import IntakeQueue

    settings = QueueSettings(max_delay=0, batch_size=1)
    gate, entered = threading.Event(), threading.Event()
    queue: IntakeQueue[Item] | BatchQueue[Item]
    if kind == "intake":
        queue = IntakeQueue("stuck", lambda batch: None, lambda item: item[0], settings)
    else:
        queue = BatchQueue("stuck", lambda batch: None, lambda item: item[0], settings)

    def hold() -> None:
        with queue._lock:
            entered.set()
            gate.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    try:
        done = threading.Event()
        results: list[bool] = []

        def drain() -> None:
            results.append(queue.finish_shutdown(time.monotonic()))
            done.set()

        threading.Thread(target=drain, daemon=True).start()
        # LOCK_WAIT_AT_EXIT (0.5 s) past the deadline, with room for a loaded machine;
        # a drain that waited for the lock would wait the holder's 30 s
        assert done.wait(LOCK_WAIT_AT_EXIT + 10)
        assert results == [False]
        assert f"the {kind} worker is stuck at exit" in capfd.readouterr().err
    finally:
        gate.set()
        holder.join()
        assert queue.shutdown(5)


def test_block_sheds_nothing_when_a_caller_races_the_worker_past_the_bound() -> None:
    """Under `block` a caller sizes the intake without a lock: a record the worker is moving
    is counted by neither side, so a caller can put one record over `max_size`. That record
    is kept (it was shed as `block_timeout` on Python 3.10, with a 60 s timeout never
    reached)."""
    from fapilog.pipeline.intake import IntakeQueue

    gate, taken = threading.Event(), threading.Event()
    consumed: list[Item] = []

    def consume(batch: list[Item]) -> None:
        taken.set()
        gate.wait(30)
        consumed.extend(batch)

    settings = QueueSettings(
        max_size=5, batch_size=1, max_delay=0, overflow="block", block_timeout=30
    )
    intake: IntakeQueue[Item] = IntakeQueue("race", consume, lambda item: item[0], settings)
    try:
        intake.put((INFO, "first"))
        assert taken.wait(10)  # the worker is busy with it
        for n in range(5):
            assert intake.put((INFO, f"r{n}"))  # the queue is full now
        intake._incoming.put((INFO, "raced"))  # what the racing caller's put amounts to
        next(intake._offered)
    finally:
        gate.set()
    assert intake.shutdown(10)
    assert intake.dropped == {}
    assert len(consumed) == 7

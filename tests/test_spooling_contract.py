"""The exporter queue backed by a disk spool (`fapilog.pipeline.spooling.SpoolingQueue`),
driven directly with a sink the test controls: what goes to disk and when (a failed export, a
full queue, an export in flight too long), the replay once the sink is back, what is refused
for good, the cap, the back-off, the shutdown deadline, and the take-over of segments other
spools and dead processes left. The spool itself: tests/test_spool_contract.py."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fapilog import _diag
from fapilog.pipeline import alerts, spooling
from fapilog.pipeline.spool import Spool
from fapilog.pipeline.spooling import SpoolingQueue
from spool_support import (
    KIB,
    Sink,
    make,
    orphan_of,
    queue_for,
    rec,
    recs,
    seg_files,
    sized,
    with_a_backlog,
)

FROZEN = type("Clock", (), {"monotonic": staticmethod(lambda: 1000.0)})  # `time`, stopped


def test_an_outage_goes_to_disk_and_is_replayed_in_order_once_the_sink_is_back(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    # on disk, and the flush, with the sink still failing, returned False at once
    sink, spool, queue = with_a_backlog(spools, queues, tmp_path, 0, 1, 2)
    assert spool.written == 3 and spool.pending == 3 and queue.dropped == {}
    assert queue._engaged and sink.attempts >= 2
    queue.put_many(recs(3))  # engaged: straight to disk
    assert spool.written == 4 and queue.depth == 0
    assert (queue.offered, queue.accepted, queue.delivered) == (4, 4, 0)
    sink.up = True
    assert queue.flush(5)
    assert sink.got == ["r0", "r1", "r2", "r3"] and queue.delivered == 4
    assert spool.pending == 0 and seg_files(tmp_path) == [] and queue.dropped == {}
    deadline = time.monotonic() + 10
    while queue._engaged and time.monotonic() < deadline:
        time.sleep(0.01)  # (the worker disengages once idle: nothing notifies it)
    assert not queue._engaged  # everything this process wrote is delivered


def test_delivered_adds_up_every_batch_live_and_replayed(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink()
    queue = queue_for(queues, make(spools, tmp_path), sink)
    for n in (0, 1):
        queue.put_many(recs(n))
        assert queue.flush(5)
    assert queue.delivered == 2
    sink.up = False
    queue.put_many(recs(2, 3))
    assert not queue.flush(5)  # on disk
    sink.up = True
    assert queue.flush(5)
    assert sink.got == ["r0", "r1", "r2", "r3"] and queue.delivered == 4


def test_a_flush_waiting_for_the_disk_returns_false_at_once_when_the_worker_is_dead(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(up=False)
    queue = queue_for(queues, make(spools, tmp_path), sink)
    queue.put_many(recs(0, 1))
    assert not queue.flush(5)  # on disk
    sink.release.clear()  # the worker's next replay stays in the sink: no failure to see
    worker = queue._thread
    dead = threading.Thread(target=lambda: None, daemon=True)
    dead.start()
    dead.join()
    queue._thread = dead
    results: list[bool] = []
    flusher = threading.Thread(target=lambda: results.append(queue.flush(60)), daemon=True)
    try:
        flusher.start()
        flusher.join(10)
        assert not flusher.is_alive() and results == [False]
    finally:
        queue._thread = worker
        sink.release.set()
        flusher.join(60)


def test_a_flush_with_no_time_left_does_not_wait_for_the_disk(
    spools: list[Spool],
    queues: list[SpoolingQueue],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = Sink(up=False)
    queue = queue_for(queues, make(spools, tmp_path), sink)
    queue.put_many(recs(0, 1))
    assert not queue.flush(5)  # on disk
    sink.release.clear()  # the worker's next replay stays in the sink
    monkeypatch.setattr(spooling, "time", FROZEN)  # the time left never changes by itself
    results: list[bool] = []
    flusher = threading.Thread(target=lambda: results.append(queue.flush(0)), daemon=True)
    try:
        flusher.start()
        flusher.join(5)  # (the sink holds the replay 10 s)
        assert not flusher.is_alive() and results == [False]
    finally:
        sink.release.set()
        monkeypatch.undo()
        flusher.join(60)


def test_what_a_sink_refuses_for_good_is_dropped_never_spooled(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(up=False)
    retryable = sink.outcome
    sink.outcome = lambda batch: ("invalid", len(batch))
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(0, 1))
    assert queue.flush(5)
    assert queue.dropped == {"invalid": 2} and spool.written == 0 and not queue._engaged
    sink.outcome = lambda batch: ("invalid", 3, batch[1:]) if len(batch) == 3 else retryable(batch)
    queue.put_many(recs(2, 3, 4))
    assert not queue.flush(5)
    assert queue.dropped == {"invalid": 3} and spool.written == 2
    sink.outcome = lambda batch: ("invalid", 2, batch[1:])  # a replay: r3 refused, r4 not
    queue.flush(5)  # (the records it replayed are settled: r4 is written again)
    assert queue.dropped == {"invalid": 4} and spool.written == 3 and spool.pending == 1
    sink.up = True
    assert queue.flush(5) and sink.got == ["r4"] and queue.delivered == 1
    assert spool.replayed == 1  # (r3, refused at its replay, is no replayed record)
    assert queue.shutdown(5) is True  # everything settled


def test_a_full_queue_engages_the_spool_and_copies_the_batch_in_flight(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """Nothing is shed: the batch being exported is copied to disk, the queued records and
    the newcomer go there too; the copy goes once the batch is delivered (never twice)."""
    sink = Sink(answering=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink, max_size=2)
    queue.put_many(recs(0))
    assert sink.started.wait(10)  # r0 in flight, the sink not answering
    queue.put_many(recs(1, 2, 3))
    assert spool.written == 4 and queue.depth == 0 and queue._engaged
    assert queue.dropped == {} and queue.accepted == 4
    assert not queue.flush(0)  # (r0 still in flight)
    sink.release.set()
    assert queue.flush(5)
    assert sink.got == ["r0", "r1", "r2", "r3"] and queue.delivered == 4
    assert spool.settled_own == 4 and seg_files(tmp_path) == []


def test_a_batch_in_flight_too_large_to_copy_stays_in_flight_and_is_counted_once(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """Its second record exceeds the cap: the part copied (evicted by that attempt) goes,
    and its drop is not counted, as the batch's own outcome counts its records."""
    sink = Sink(answering=False)
    spool = make(spools, tmp_path, max_bytes=1024 * KIB)
    queue = queue_for(queues, spool, sink, max_size=2)
    queue.put_many([rec(0, size=300 * KIB), rec(1, size=2000 * KIB)])
    assert sink.started.wait(10)
    queue.put_many(recs(2, 3, 4))  # full: engaged
    assert queue.dropped == {} and spool.written == 4 and spool.pending == 3
    sink.release.set()
    assert queue.flush(5) and sink.got == ["r0", "r1", "r2", "r3", "r4"]
    assert queue.delivered == queue.accepted == 5 and queue.dropped == {}


def test_an_export_in_flight_too_long_engages_the_spool(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, monkeypatch: Any
) -> None:
    """Past ENGAGE_AFTER the watchdog copies the batch to disk, with nothing more logged; a
    batch that then fails is replayed from that copy."""
    monkeypatch.setattr(spooling, "ENGAGE_AFTER", 0.05)
    monkeypatch.setattr(spooling, "_WATCHDOG", spooling._Watchdog())  # (started in this test)
    sink = Sink(up=False, answering=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(0, 1))
    assert sink.started.wait(10)
    deadline = time.monotonic() + 10
    while spool.written < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the watchdog's own timing is what is tested
    assert spool.written == 2 and queue._engaged and sink.attempts == 0  # (still in flight)
    queue.put_many(recs(2))  # to disk, behind the copy
    sink.release.set()
    assert not queue.flush(5)
    assert spool.written == 3 and queue.dropped == {}  # the failed batch: its copy stays
    sink.up = True
    assert queue.flush(5) and sink.got == ["r0", "r1", "r2"]


class CountingClock:
    """The spooling module's `time`: the real clock, counting the watchdog's readings."""

    def __init__(self) -> None:
        self.watchdog_reads = 0

    def monotonic(self) -> float:
        if threading.current_thread().name == "fapilog-spool-watchdog":
            self.watchdog_reads += 1
        return time.monotonic()


def test_the_watchdog_sleeps_until_an_export_is_due_rather_than_spinning(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(spooling, "ENGAGE_AFTER", 0.3)
    monkeypatch.setattr(spooling, "_WATCHDOG", spooling._Watchdog())  # (started in this test)
    clock = CountingClock()
    monkeypatch.setattr(spooling, "time", clock)
    sink = Sink(answering=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(0))
    assert sink.started.wait(10)
    deadline = time.monotonic() + 10
    while not queue._engaged and time.monotonic() < deadline:
        time.sleep(0.01)  # the watchdog's own timing is what is tested
    assert queue._engaged
    # once at the start, once when due; the engaged queue's next exports may wake it a few
    # times more before this line reads the count (a CI run saw 6). A watchdog that spun,
    # or polled even every 10 ms, would read the clock 30 times or more within 0.3 s.
    assert 1 <= clock.watchdog_reads <= 20
    sink.release.set()
    assert queue.flush(5) and sink.got == ["r0"]


def test_a_batch_in_flight_past_engage_after_is_copied_when_records_come(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, monkeypatch: Any
) -> None:
    sink = Sink(answering=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    monkeypatch.setattr(spooling._Watchdog, "export_started", lambda self, queue: None)
    monkeypatch.setattr(spooling, "time", FROZEN)  # the queue's clock reads 1000.0
    with queue._lock:
        queue._batch_started = 0.0  # idle, its last export long ago: nothing to engage for
        queue._engage_if_slow()
        assert not queue._engaged
    queue.put_many(recs(0))
    assert sink.started.wait(10)
    with queue._lock:
        queue._batch_started = 999.6  # in flight 0.4 s
    queue.put_many(recs(1))
    assert spool.written == 0 and queue.depth == 1  # not yet past ENGAGE_AFTER
    with queue._lock:
        queue._batch_started = 999.5  # in flight 0.5 s
    queue.put_many(recs(2))
    assert spool.written == 3 and queue.depth == 0  # the copy of r0, then r1 and r2
    sink.release.set()
    assert queue.flush(5) and sink.got == ["r0", "r1", "r2"]


def test_a_replay_in_flight_long_sends_no_new_record_to_disk(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, monkeypatch: Any
) -> None:
    """The spool is not engaged by a replay (of segments taken over) that takes long."""
    orphan_of(spools, tmp_path / "x", recs(0)).rename(tmp_path / "00000000000000000001-1-1.seg")
    sink = Sink(answering=False)
    spool = make(spools, tmp_path)
    assert spool.adopt_orphans() == (1, 0)
    monkeypatch.setattr(spooling, "time", FROZEN)
    queue = queue_for(queues, spool, sink)
    assert sink.started.wait(10)  # the worker replays r0 at once, the sink not answering
    with queue._lock:
        queue._batch_started = 0.0  # in flight for ages
    queue.put_many(recs(1))
    assert spool.written == 0 and queue.depth == 1 and not queue._engaged
    sink.release.set()
    assert queue.flush(5) and sink.got == ["r0", "r1"]


def test_records_that_find_no_room_on_disk_wait_in_memory(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(alerts._monitor, "last", {})  # (no alert raised yet)
    sink = Sink(up=False)
    spool = make(spools, tmp_path, max_bytes=64 * KIB)
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(0))
    assert not queue.flush(5) and queue._engaged
    queue.put_many(recs(1, 2, size=52 * KIB))  # the second does not fit
    assert spool.written == 2 and queue.depth == 1
    assert (queue.offered, queue.accepted, queue.dropped) == (3, 3, {})
    assert (queue.name, "spool_filling") in alerts._monitor.last  # past 80 % of the cap


@pytest.mark.parametrize("used", [52432, 52433])
def test_the_spool_filling_alert_fires_past_80_percent_of_the_cap(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, monkeypatch: Any, used: int
) -> None:
    monkeypatch.setattr(alerts._monitor, "last", {})
    _diag.reset()
    raised: list[dict[str, Any]] = []
    heard = threading.Event()

    def alert(key: str, message: str, fields: dict[str, Any]) -> None:
        if "spool_filling" in key:
            raised.append(fields)
            heard.set()

    monkeypatch.setattr(_diag._LIMIT, "listeners", [alert])
    spool = make(spools, tmp_path, max_bytes=65540)  # 80 %: 52432 bytes
    spool.write([sized(0, used - 16)])
    sink = Sink(answering=False)  # (the worker replays the record: it stays on disk)
    queue = queue_for(queues, spool, sink)
    with queue._lock:
        queue._note_disk(0)
    assert ((queue.name, "spool_filling") in alerts._monitor.last) == (used > 52432)
    sink.release.set()
    if used > 52432:  # (delivered by the alert monitor's thread)
        assert heard.wait(10)
        assert {k: raised[0][k] for k in ("exporter", "spool_bytes", "spool_max_bytes")} == {
            "exporter": "loki", "spool_bytes": 52433, "spool_max_bytes": 65540,
        }  # fmt: skip
        assert raised[0]["directory"] == str(tmp_path)


def test_the_cap_drops_the_oldest_records_and_counts_them_once(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(answering=False)
    spool = make(spools, tmp_path, max_bytes=128 * KIB)
    queue = queue_for(queues, spool, sink, max_size=1)
    queue.put_many(recs(0, size=40 * KIB))
    assert sink.started.wait(10)
    queue.put_many(recs(1, 2, 3, size=40 * KIB))  # the copy of r0 and r1 evicted for r2
    assert queue.dropped == {"spool_full": 2} and spool.written == 4
    sink.release.set()  # r0 delivered: its copy was among the evicted, counted once
    assert queue.flush(5)
    assert queue.dropped == {"spool_full": 1} and sink.got == ["r0", "r2", "r3"]
    assert queue.delivered + sum(queue.dropped.values()) == queue.accepted == 4


def test_retried_records_that_do_not_fit_on_disk_are_dropped_and_counted(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """r1 exceeds the cap (r0's segment goes, to no avail): both counted once, spool_full."""
    spool = make(spools, tmp_path, max_bytes=512 * KIB)
    queue = queue_for(queues, spool, Sink(up=False))
    queue.put_many([rec(0, size=300 * KIB), rec(1, size=600 * KIB)])
    queue.flush(5)
    assert queue.dropped == {"spool_full": 2} and spool.pending == 0 and queue.delivered == 0


def test_a_batch_failing_as_its_own_exporter_shuts_the_queue_down_is_dropped_at_shutdown(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(up=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    sink.outcome = lambda batch: (queue.shutdown(0), ("export_failed", 2, batch))[1]
    queue.put_many(recs(0, 1))
    assert queue.join(time.monotonic() + 5)
    assert queue.dropped == {"shutdown": 2} and spool.written == 0


def test_a_failed_replay_waits_a_doubling_back_off(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    queue = queue_for(queues, make(spools, tmp_path), Sink())
    with queue._lock:
        for delay in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0):
            before = time.monotonic()
            queue._failed()
            assert before + delay <= queue._retry_at <= time.monotonic() + 1.5 * delay
            assert queue._retry_at <= time.monotonic() + 30.0
        queue._streak = 1000
        queue._failed()  # (no overflow)
        queue._succeeded()
        assert queue._streak == 0 and queue._retry_at == 0.0 and queue._failures == 9


def test_at_shutdown_with_the_sink_failing_what_is_on_disk_stays_for_later(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink, spool, queue = with_a_backlog(spools, queues, tmp_path, 0, 1)
    attempts = sink.attempts
    with queue._lock:
        queue._retry_at = 0.0  # the back-off is over
    assert queue.shutdown(5) is False  # not delivered, not tried again either
    assert sink.attempts == attempts and spool.closed and spool.pending == 2
    assert queue.dropped == {} and len(seg_files(tmp_path)) == 1


def test_at_the_shutdown_deadline_the_batch_in_flight_goes_to_disk(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(answering=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink, max_size=3, delivered_so_far=lambda: 1)
    queue.put_many(recs(0, 1))
    assert sink.started.wait(10)
    queue.put_many(recs(2))
    assert queue.shutdown(0.05) is False  # the sink says it has r0: r1 and r2 go to disk
    assert spool.written == 2 and queue.dropped == {} and queue.depth == 0
    assert queue.in_flight == 0 and queue._settled == 3 and queue.delivered == 1
    sink.release.set()
    assert queue.join(time.monotonic() + 5)
    assert queue.delivered == 1 and queue.dropped == {}  # counted once, at the deadline
    replayed = make(spools, tmp_path)
    assert replayed.adopt_orphans() == (2, 0)


def test_a_shutdown_deadline_with_a_failing_disk_drops_the_batch_in_flight(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(answering=False)
    spool = make(spools, tmp_path / "d")
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(0, 1))
    assert sink.started.wait(10)
    (tmp_path / "d").rmdir()  # the volume is gone
    assert queue.shutdown(0.05) is False
    assert spool.written == 0 and queue.dropped == {"shutdown_timeout": 2}
    assert spool.write_errors == 1 and queue._settled == 2
    sink.release.set()


def test_a_batch_copied_to_disk_is_not_written_again_at_the_deadline(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(answering=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink, max_size=1)
    queue.put_many(recs(0))
    assert sink.started.wait(10)
    queue.put_many(recs(1, 2))  # full: engaged, r0 copied
    assert spool.written == 3
    assert queue.shutdown(0.05) is False
    assert spool.written == 3 and queue.dropped == {} and spool.pending == 3
    sink.release.set()


def test_a_replay_in_flight_at_the_deadline_stays_on_disk(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink, spool, queue = with_a_backlog(spools, queues, tmp_path, 0, 1)
    sink.started.clear()
    sink.release.clear()
    sink.up = True
    queue.flush(0.01)  # a replay now, which hangs
    assert sink.started.wait(10)
    assert queue.shutdown(0.05) is False
    assert spool.written == 2 and queue.dropped == {} and queue._settled == 2
    sink.release.set()
    assert queue.join(time.monotonic() + 5)
    assert queue.delivered == 0 and queue.dropped == {}  # on disk, for the next process


def test_a_spool_that_cannot_be_read_is_reported_and_tried_again_later(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, capfd: Any
) -> None:
    _diag.reset()
    sink, spool, queue = with_a_backlog(spools, queues, tmp_path, 0)
    segment = spool._segments[0]
    real, segment.fd = segment.fd, os.open(tmp_path, os.O_RDONLY)  # reads fail: EISDIR
    failures = queue._failures
    sink.up = True
    assert not queue.flush(5)
    assert queue._failures == failures + 1 and sink.got == []
    os.close(segment.fd)
    segment.fd = real
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if "spool-read" in line
    ]
    assert len(lines) == 1 and lines[0]["level"] == "error"
    assert lines[0]["message"].startswith(
        f"fapilog could not read the spool {tmp_path}: IsADirectoryError(21"
    )
    assert queue.flush(5) and sink.got == ["r0"]


def test_a_forked_child_queue_starts_without_the_parents_export_or_back_off(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink(up=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink, max_size=1)
    queue.put_many(recs(0))
    assert not queue.flush(5)  # failing: a back-off
    sink.release.clear()
    sink.started.clear()
    queue.flush(0.01)  # a replay in flight, hanging
    assert sink.started.wait(10)
    with queue._lock:
        queue._rescan = True  # (as when the sink comes back)
        queue._retry_at = time.monotonic() + 60  # (the flush had cleared it)
        assert queue._streak and queue._retry_at and queue._replaying and queue._engaged
    pid = os.fork()
    if pid == 0:  # the child: its queue and the watchdog start afresh
        code = 1
        try:
            fresh = (queue._batch, queue._copy, queue._replaying, queue._retry_at) == (
                None, None, False, 0.0,
            ) and (queue._streak, queue._rescan, queue._engaged) == (0, False, False)  # fmt: skip
            watchdog = spooling._WATCHDOG._thread is None and spooling._WATCHDOG._started == {}
            code = 0 if fresh and watchdog else 1
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    sink.up = True
    sink.release.set()
    assert queue.flush(5) and sink.got == ["r0"]

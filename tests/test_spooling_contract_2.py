"""The exporter queue backed by a disk spool (`fapilog.pipeline.spooling.SpoolingQueue`):
its accounting when things go partly wrong, driven with a sink that answers each batch as the
test scripts it. A batch in flight copied to disk, then partly delivered; a replay partly
delivered after earlier deliveries; a batch stuck at the shutdown deadline after earlier
deliveries, part of it too large for the disk; a batch refused for good (nothing engages);
a replay whose records have all expired (the back-off starts afresh); a live batch after a
replay; the copy of each batch in flight; a batch too large to copy (tried once); policy
`block` with no room on disk (the bridge never waits); the watchdog with two queues
exporting at once (each engaged, the earlier when its own time comes, not the later's); how
long the idle worker waits (all the back-off left; no wait for segments just taken over).
The rest: tests/test_spooling_contract.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fapilog.pipeline import spooling
from fapilog.pipeline.spool import Spool
from fapilog.pipeline.spooling import SpoolingQueue
from fapilog.settings import QueueSettings
from spool_support import KIB, make, orphan_of, queue_for, rec, recs, settled, with_a_backlog

MIB = 1024 * KIB


class Script:
    """An exporter's consumer answering its n-th batch with `outcomes[n]` (None: delivered;
    a callable: called with the batch), None once they run out. The batch numbered `hold`
    waits for `release` before it is answered (`started` tells it has come)."""

    def __init__(self, *outcomes: Any, hold: int | None = None) -> None:
        self.outcomes = list(outcomes)
        self.hold = hold
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.changed = threading.Condition()

    def __call__(self, batch: list[Any]) -> Any:
        with self.changed:
            number = len(self.batches)
            self.batches.append([str(r.log_record.body)[:3].rstrip("x") for r in batch])
            self.changed.notify_all()
        if number == self.hold:
            self.started.set()
            self.release.wait(10)
        outcome = self.outcomes[number] if number < len(self.outcomes) else None
        return outcome(batch) if callable(outcome) else outcome

    def sent(self, first: int = 0) -> list[str]:
        """The records of batches `first` on, in order (a replay may come in several)."""
        return [name for batch in self.batches[first:] for name in batch]


def retry_all(batch: list[Any]) -> Any:
    return ("export_failed", len(batch), list(batch))


def refuse(lost: int, retry_last: bool = False) -> Callable[[list[Any]], Any]:
    """`lost` records of the batch not delivered ("invalid"): all refused for good, or but the
    batch's last record, which a later attempt may deliver; the others delivered."""
    return lambda batch: ("invalid", lost, batch[-1:] if retry_last else [])


@pytest.fixture
def no_slow_engage(monkeypatch: pytest.MonkeyPatch) -> None:
    """An export held by the test is never "in flight too long": only what the test does
    engages the spool."""
    monkeypatch.setattr(spooling, "ENGAGE_AFTER", 3600.0)


pytestmark = pytest.mark.usefixtures("no_slow_engage")


def test_a_copied_batch_partly_delivered_counts_its_delivered_and_refused_records_once(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """One record delivered, one refused for good, r2 to retry: r2 is written again (after
    what waits on disk), the copy of the batch goes, and the replay delivers the rest."""
    sink = Script(refuse(2, retry_last=True), hold=0)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink, max_size=3)
    queue.put_many(recs(0, 1, 2))
    assert sink.started.wait(10)  # r0 r1 r2 in flight
    queue.put_many(recs(3, 4, 5, 6))  # full: engaged, the batch copied
    assert spool.written == 7 and queue.depth == 0 and queue._engaged
    sink.release.set()
    assert queue.flush(5)
    assert sink.batches[0] == ["r0", "r1", "r2"] and sink.sent(1) == ["r3", "r4", "r5", "r6", "r2"]
    assert queue.delivered == 6 and queue.dropped == {"invalid": 1}
    assert spool.written == 8 and spool.settled_own == 8 and spool.pending == 0
    assert spool.replayed == 5 and queue.accepted == 7


def test_a_replay_partly_delivered_adds_to_what_was_delivered_before(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """r0 delivered live; r1 r2 r3 fail, go to disk; their replay delivers one, refuses one
    for good, leaves r3 to retry; r3's replay delivers it."""
    sink = Script(None, retry_all, refuse(2, retry_last=True))
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(0))
    assert queue.flush(5) and queue.delivered == 1
    queue.put_many(recs(1, 2, 3))
    assert queue.flush(5)  # (what was on disk is settled: r3 written again since)
    assert queue.delivered == 2 and queue.dropped == {"invalid": 1}
    assert spool.written == 4 and spool.pending == 1 and spool.replayed == 1
    assert queue.flush(5)
    assert sink.batches == [["r0"], ["r1", "r2", "r3"], ["r1", "r2", "r3"], ["r3"]]
    assert queue.delivered == 3 and queue.dropped == {"invalid": 1}
    assert spool.pending == 0 and spool.replayed == 2


def test_the_shutdown_deadline_adds_what_the_stuck_batch_delivered_and_drops_what_finds_no_room(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """r0 delivered before; of the stuck batch the sink says it has r1, r2 goes to disk,
    r3 (larger than the cap) is dropped: one record, reason shutdown_timeout."""
    sink = Script(hold=1)
    spool = make(spools, tmp_path, max_bytes=8 * MIB)  # (segments of 512 KiB)
    queue = queue_for(queues, spool, sink, delivered_so_far=lambda: 1)
    queue.put_many(recs(0))
    assert queue.flush(5) and queue.delivered == 1
    queue.put_many([rec(1), rec(2, size=300 * KIB), rec(3, size=9 * MIB)])
    assert sink.started.wait(10)
    assert queue.shutdown(0.05) is False
    assert queue.delivered == 2 and queue.dropped == {"shutdown_timeout": 1}
    assert spool.written == 1 and spool.pending == 1 and queue.in_flight == 0
    sink.release.set()
    assert queue.join(time.monotonic() + 5)
    assert queue.delivered == 2 and queue.dropped == {"shutdown_timeout": 1}  # counted once
    assert make(spools, tmp_path).adopt_orphans() == (1, 0)  # r2, for the next process


def test_a_batch_refused_for_good_leaves_what_is_queued_in_memory(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """Nothing a later attempt may deliver: the spool does not engage, r1 (queued behind
    the refused batch) is exported from memory, never written to disk."""
    sink = Script(refuse(1), hold=0)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(0))
    assert sink.started.wait(10)
    queue.put_many(recs(1))
    assert queue.depth == 1
    sink.release.set()
    assert queue.flush(5)
    assert sink.batches == [["r0"], ["r1"]]
    assert spool.written == 0 and queue.delivered == 1 and queue.dropped == {"invalid": 1}


def test_a_replay_whose_records_all_expired_ends_the_back_off(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """Nothing is sent (the sink is not asked): the records are dropped, too_old, and the
    next failure waits the first step of the back-off again, not a doubled one."""
    sink = Script(retry_all, retry_all)
    spool = make(spools, tmp_path, max_age=60)
    queue = queue_for(queues, spool, sink)
    queue.put_many([rec(0, timestamp=1, observed=1), rec(1, timestamp=1, observed=1)])
    assert queue.flush(5)  # the live export failed; the replay found both expired
    assert sink.batches == [["r0", "r1"]]
    assert queue.dropped == {"too_old": 2} and queue.delivered == 0 and spool.pending == 0
    assert queue._streak == 0
    queue.put_many(recs(2))
    assert settled(queue, lambda: spool.written == 3)  # r2 failed: on disk
    with queue._lock:
        assert queue._streak == 1
        wait = queue._retry_at - time.monotonic()
    assert wait <= spooling.RETRY_MIN * 1.5  # (a doubled back-off: at least 2 * RETRY_MIN)
    assert queue.flush(5) and sink.sent() == ["r0", "r1", "r2", "r2"] and queue.delivered == 1


def test_after_a_replay_a_live_batch_stuck_at_the_deadline_goes_to_disk(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """The worker replayed r0 (left by a process that is gone), then exports r1 live: r1,
    stuck at the deadline, is written to disk like any live batch."""
    orphan_of(spools, tmp_path / "x", recs(0)).rename(tmp_path / "00000000000000000001-1-1.seg")
    sink = Script(hold=1)
    spool = make(spools, tmp_path)
    assert spool.adopt_orphans() == (1, 0)
    queue = queue_for(queues, spool, sink)
    assert settled(queue, lambda: queue.delivered == 1 and not queue._busy)  # r0 replayed
    queue.put_many(recs(1))
    assert sink.started.wait(10)
    assert queue.shutdown(0.05) is False
    assert spool.written == 1 and spool.pending == 1 and queue.dropped == {}
    assert queue.delivered == 1 and queue.in_flight == 0
    sink.release.set()
    assert queue.join(time.monotonic() + 5)
    assert sink.batches == [["r0"], ["r1"]] and queue.delivered == 1
    assert make(spools, tmp_path).adopt_orphans() == (1, 0)


def test_each_batch_in_flight_is_copied_when_the_queue_engages_not_only_the_first(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """r0 delivered; r1, in flight when the queue fills, is copied to disk; it fails: its
    copy is replayed, before what was queued behind it."""
    sink = Script(None, retry_all, hold=1)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink, max_size=1)
    queue.put_many(recs(0))
    assert queue.flush(5) and queue.delivered == 1
    queue.put_many(recs(1))
    assert sink.started.wait(10)
    queue.put_many(recs(2, 3))  # full: engaged
    assert spool.written == 3 and queue.depth == 0
    sink.release.set()  # r1 fails: replayed from its copy, not written again
    assert queue.flush(5)
    assert sink.sent() == ["r0", "r1", "r1", "r2", "r3"] and spool.written == 3
    assert queue.delivered == 4 and queue.dropped == {} and spool.pending == 0


def test_a_batch_in_flight_too_large_to_copy_is_tried_once_not_for_every_record_after(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """The queue engages (full) while r0 r1 are in flight, r1 exceeding the cap: the copy
    fails once; r5 r6, offered next, go to disk without another copy of r0."""
    sink = Script(hold=0)
    spool = make(spools, tmp_path, max_bytes=1 * MIB)
    queue = queue_for(queues, spool, sink, max_size=2)
    queue.put_many([rec(0, size=300 * KIB), rec(1, size=2 * MIB)])
    assert sink.started.wait(10)
    queue.put_many(recs(2, 3, 4, 5, 6))  # r4 finds the queue full: engaged
    assert queue.dropped == {} and queue.depth == 0
    assert spool.written == 6 and spool.pending == 5  # r0 once (then removed), r2 to r6
    sink.release.set()
    assert queue.flush(5)
    assert sink.sent() == ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert queue.delivered == queue.accepted == 7 and queue.dropped == {}


def test_under_policy_block_a_record_with_no_room_on_disk_is_shed_at_once(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """The queue is full and the record cannot go to disk (larger than the cap): the bridge
    handing it over does not wait `block_timeout` for room, the record is shed."""
    sink = Script(hold=0)
    spool = make(spools, tmp_path, max_bytes=64 * KIB)
    settings = QueueSettings(max_size=1, batch_size=10, overflow="block", block_timeout=30)
    queue = SpoolingQueue("loki", sink, lambda record: 9, settings, spool=spool, max_delay=0)
    queues.append(queue)
    queue.put_many(recs(0, size=100 * KIB))
    assert sink.started.wait(10)
    handover = threading.Thread(
        target=lambda: queue.put_many(recs(1, 2, size=100 * KIB)), daemon=True
    )
    handover.start()
    handover.join(5)  # (the sink holds r0 10 s)
    finished = not handover.is_alive()
    sink.release.set()
    handover.join(60)
    assert finished  # (waiting for room, it would wait until the sink answers)
    assert queue.flush(5)
    assert sink.batches == [["r0"], ["r1"]]
    assert queue.dropped == {"block_timeout": 1} and queue.delivered == 2
    assert spool.written == 0


def on_engaged(
    monkeypatch: pytest.MonkeyPatch, queue: SpoolingQueue, note: Callable[[], None] = lambda: None
) -> threading.Event:
    """An event set when `queue` engages because its export is in flight too long (what the
    watchdog checks); `note()` is called at that moment, on the engaging thread."""
    engaged = threading.Event()
    engage_if_slow = queue._engage_if_slow

    def watched() -> None:
        was = queue._engaged
        engage_if_slow()
        if queue._engaged and not was:
            note()
            engaged.set()

    monkeypatch.setattr(queue, "_engage_if_slow", watched)
    return engaged


def test_the_watchdog_engages_each_of_two_queues_whose_exports_are_in_flight_too_long(
    spools: list[Spool],
    queues: list[SpoolingQueue],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two spooling queues export at once, neither sink answering: the watchdog keeps both
    in sight and engages each (its batch copied to disk), not only the last one started."""
    monkeypatch.setattr(spooling, "ENGAGE_AFTER", 0.2)
    monkeypatch.setattr(spooling, "_WATCHDOG", spooling._Watchdog())  # (started in this test)
    setups = []
    for name in ("a", "b"):
        sink, spool = Script(hold=0), make(spools, tmp_path / name)
        queue = queue_for(queues, spool, sink)
        setups.append((queue, spool, sink, on_engaged(monkeypatch, queue)))
    for queue, _, sink, _ in setups:
        queue.put_many(recs(0))
        assert sink.started.wait(10)
    for _, spool, _, engaged in setups:
        assert engaged.wait(10) and spool.written == 1  # its batch in flight copied
    for queue, spool, sink, _ in setups:
        sink.release.set()
        assert queue.flush(5) and sink.sent() == ["r0"]
        assert queue.delivered == 1 and spool.pending == 0 and queue.dropped == {}


def test_the_watchdog_engages_the_earlier_export_when_it_is_due_not_when_the_later_is(
    spools: list[Spool],
    queues: list[SpoolingQueue],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Queue a's export starts, then b's (1 s later): a is engaged once a's export has
    been in flight ENGAGE_AFTER, while b's has not yet (a does not wait for b's time); b
    is engaged when its own time comes."""
    monkeypatch.setattr(spooling, "ENGAGE_AFTER", 2.0)  # (1 s of slack either way)
    monkeypatch.setattr(spooling, "_WATCHDOG", spooling._Watchdog())  # (started in this test)
    sink_a, sink_b = Script(hold=0), Script(hold=0)
    disk_a, disk_b = make(spools, tmp_path / "a"), make(spools, tmp_path / "b")
    a = queue_for(queues, disk_a, sink_a)
    b = queue_for(queues, disk_b, sink_b)
    b_in_flight: list[float | None] = []  # (when a is engaged) since when b's export is

    def note() -> None:
        b_in_flight.append(time.monotonic() - b._batch_started if b._busy else None)

    a_engaged, b_engaged = on_engaged(monkeypatch, a, note), on_engaged(monkeypatch, b)
    a.put_many(recs(0))
    assert sink_a.started.wait(10)
    time.sleep(1.0)  # the watchdog's own timing is what is tested: b starts later
    b.put_many(recs(1))
    assert sink_b.started.wait(10)
    assert a_engaged.wait(10) and b_engaged.wait(10)
    (seconds,) = b_in_flight
    assert seconds is not None and seconds < spooling.ENGAGE_AFTER  # b not due yet
    assert disk_a.written == 1 and disk_b.written == 1
    for queue, sink, name in ((a, sink_a, "r0"), (b, sink_b, "r1")):
        sink.release.set()
        assert queue.flush(5) and sink.sent() == [name] and queue.delivered == 1


def test_in_back_off_the_worker_waits_all_the_time_left_before_replaying(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """A failing sink, records on disk, 0.5 s of back-off left: the idle worker waits
    that long (not less: a shorter wait would replay early), then replays."""
    sink, spool, queue = with_a_backlog(spools, queues, tmp_path, 0, 1)
    with queue._lock:
        queue._retry_at = time.monotonic() + 0.5
        wait = queue._idle_wait()
        left = queue._retry_at - time.monotonic()
        assert wait is not None and wait >= left > 0
        assert spool.has_unread()
        queue._retry_at = time.monotonic() - 1  # the back-off is over
        assert queue._idle_wait() == 0  # replay now
    sink.up = True
    assert queue.flush(5) and sink.got == ["r0", "r1"] and spool.pending == 0


def test_once_its_own_backlog_is_delivered_the_worker_replays_adopted_segments_at_once(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """Engaged, everything this process wrote delivered: the queue disengages and looks
    for segments of processes that are gone. None: the idle worker waits for records (no
    timeout). One: it is taken over and replayed now (a wait of 0), not after a delay. A
    queue never engaged does not look each time its worker is idle."""
    sink = Script()
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    with queue._lock:
        queue._engaged = True  # (its own backlog just delivered)
        assert queue._idle_wait() is None and not queue._engaged
        orphan_of(spools, tmp_path / "x", recs(0)).rename(tmp_path / "00000000000000000001-1-1.seg")
        assert queue._idle_wait() is None and spool.adopted == 0  # not engaged: not looked for
        queue._engaged = True
        assert queue._idle_wait() == 0 and not queue._engaged
        assert spool.pending == 1 and spool.adopted == 1
        queue._wakeup.notify()  # (the worker, doing this itself, would replay at once)
    assert settled(queue, lambda: queue.delivered == 1 and not queue._busy)
    assert sink.sent() == ["r0"] and spool.pending == 0

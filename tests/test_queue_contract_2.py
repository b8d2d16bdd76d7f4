"""`BatchQueue`'s flow control, driven directly: policy `block` (the bounded wait, the stall,
the worker never waiting on itself), the hand-off from another worker (`put_many` waiting
while the exporter makes progress, and when it stops waiting), flushes (bounded, a dead
worker), shutdown (drain, `on_stop`, the deadline's accounting, from the worker itself, a
lock held at exit): tests/test_queue_contract_3.py.

Where a test needs to act at the moment a thread is inside a wait, a stand-in for the queue
module's `time` runs a hook at that thread's n-th queue_clock reading. Helpers: test_queue_contract.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fapilog.pipeline import queue as queue_module
from fapilog.pipeline.queue import BatchQueue
from queue_support import (
    ERROR,
    INFO,
    Clock,
    Consumer,
    Item,
    finished,
    held,
    in_thread,
)

# -- policy block ---------------------------------------------------------------------------


def test_block_waits_and_is_let_in_as_soon_as_the_worker_takes_a_batch(
    new_queue: Any, queue_clock: Clock
) -> None:
    queue, consumer = held(new_queue, overflow="block", max_size=2, block_timeout=60)
    queue.put((INFO, "i1"))
    queue.put((INFO, "i2"))
    putter, results = in_thread(lambda: queue.put((INFO, "i3")))
    queue_clock.at(
        putter, 1, consumer.release
    )  # the blocker goes; the worker takes i1, i2 and holds
    putter.start()
    assert finished(putter)  # let in while the worker still holds i1 and i2
    assert results == [True]
    assert consumer.batches[1] == [(INFO, "i1"), (INFO, "i2")]
    assert queue.dropped == {}
    consumer.open()
    assert queue.flush(10)
    assert consumer.names() == ["blocker", "i1", "i2", "i3"]


def test_block_waits_for_a_worker_that_has_not_taken_its_first_batch_yet(
    new_queue: Any, queue_clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker slow to start (a busy interpreter): the queue fills before it takes
    anything, and a caller under `block` waits for it as for any other batch."""
    started = threading.Event()
    real_start = queue_module.start_worker

    def slow_start(name: str, run: Any) -> Any:
        def late() -> None:
            started.wait(30)
            run()

        return real_start(name, late)

    monkeypatch.setattr(queue_module, "start_worker", slow_start)
    queue, consumer = new_queue(overflow="block", max_size=2, block_timeout=60)
    queue.put((INFO, "i1"))
    queue.put((INFO, "i2"))
    putter, results = in_thread(lambda: queue.put((INFO, "i3")))
    queue_clock.at(putter, 1, started.set)  # the worker starts once the caller waits
    putter.start()
    try:
        assert finished(putter)
    finally:
        started.set()
    assert results == [True]
    assert queue.flush(10)
    assert consumer.names() == ["i1", "i2", "i3"]
    assert queue.dropped == {}


def test_block_gives_up_after_block_timeout_then_sheds_at_once_until_the_worker_moves(
    new_queue: Any, queue_clock: Clock
) -> None:
    queue, consumer = held(new_queue, overflow="block", max_size=2, block_timeout=0.01)
    queue.put((INFO, "i1"))
    queue.put((INFO, "i2"))
    assert not queue.put((INFO, "i3"))  # waited block_timeout
    assert queue.dropped == {"block_timeout": 1}
    queue.block_timeout = 60  # a caller that waited now would wait for a minute
    putter, results = in_thread(lambda: queue.put((INFO, "i4")))
    putter.start()
    assert finished(putter) and results == [False]  # stalled: shed without waiting
    assert queue.put((ERROR, "e1"))  # an error still makes room (i2 goes)
    assert queue.dropped == {"block_timeout": 3}
    consumer.release()
    consumer.wait_batches(2)  # the worker moved: the next full queue is waited on again
    queue.put((INFO, "i5"))
    queue.put((INFO, "i6"))
    putter, results = in_thread(lambda: queue.put((INFO, "i7")))
    queue_clock.at(putter, 1, consumer.open)
    putter.start()
    assert finished(putter) and results == [True]
    assert queue.flush(10)
    assert consumer.names() == ["blocker", "i1", "e1", "i5", "i6", "i7"]
    assert queue.dropped == {"block_timeout": 3}


def blocked_callers(
    queue: BatchQueue[Item], queue_clock: Clock, count: int
) -> list[tuple[threading.Thread, list[object]]]:
    """`count` callers each blocked in `put` on the full queue (waiting, the lock free)."""
    putters = []
    for n in range(count):
        waiting = threading.Event()
        putter, results = in_thread(lambda n=n: queue.put((INFO, f"p{n}")))  # type: ignore[misc]
        queue_clock.at(putter, 1, waiting.set)  # its deadline: it waits next (holding the lock)
        putter.start()
        assert waiting.wait(10)
        putters.append((putter, results))
    return putters


def test_every_blocked_caller_is_let_in_as_soon_as_the_worker_makes_room(
    new_queue: Any, queue_clock: Clock
) -> None:
    queue, consumer = held(new_queue, overflow="block", max_size=2, block_timeout=60)
    queue.put((INFO, "i1"))
    queue.put((INFO, "i2"))
    putters = blocked_callers(queue, queue_clock, 2)
    consumer.release()  # the blocker goes; the worker takes i1, i2 and holds them
    for putter, results in putters:
        assert finished(putter) and results == [True]
    assert consumer.batches[1] == [(INFO, "i1"), (INFO, "i2")]
    consumer.open()
    assert queue.flush(10)
    assert sorted(consumer.names()[3:]) == ["p0", "p1"]
    assert queue.dropped == {}


def test_a_caller_blocked_when_the_queue_stops_is_shed_as_shutdown(
    new_queue: Any, queue_clock: Clock
) -> None:
    """The stop empties the queue, which lets the waiting caller go: its record is not
    accepted into the stopped queue (where only a stuck consumer that recovers would take
    it), it is dropped as any record put after the stop."""
    queue, consumer = held(new_queue, overflow="block", max_size=2, block_timeout=60)
    queue.put((INFO, "i1"))
    queue.put((INFO, "i2"))
    putters = blocked_callers(queue, queue_clock, 2)
    assert queue.shutdown(0) is False  # the consumer is stuck on the blocker
    for putter, results in putters:  # every one of them goes
        assert finished(putter) and results == [False]
    assert queue.dropped == {"shutdown_timeout": 3, "shutdown": 2}
    assert (queue.offered, queue.accepted, queue.depth) == (5, 3, 0)
    consumer.open()
    assert queue.join(time.monotonic() + 10)
    assert (queue.delivered, queue.depth) == (0, 0)
    assert consumer.names() == ["blocker"]


@pytest.mark.parametrize("overflow", ["block", "drop_newest"])
def test_the_worker_putting_into_its_own_full_queue_never_waits_on_itself(
    new_queue: Any, overflow: str
) -> None:
    queue, consumer = new_queue(overflow=overflow, max_size=2, block_timeout=60, export_timeout=60)
    outcomes: list[object] = []

    def put_own(batch: list[Item]) -> None:
        if batch[0][1] == "first":
            outcomes.extend([queue.put((INFO, "own 1")), queue.put((INFO, "own 2"))])
            if overflow == "block":
                outcomes.append(queue.put((INFO, "own 3")))  # no room: no wait on itself
            else:
                queue.put_many([(INFO, "own 3")])  # nor as a hand-off
            outcomes.append(queue.join(time.monotonic()))  # nor a join of itself

    consumer.during = put_own
    queue.put((INFO, "first"))
    assert queue.flush(10) and queue.flush(10)
    reason = "block_timeout" if overflow == "block" else "queue_full"
    assert queue.dropped == {reason: 1}
    assert outcomes == ([True, True, False, True] if overflow == "block" else [True, True, True])
    assert consumer.names() == ["first", "own 1", "own 2"]


# -- the hand-off from another worker (put_many) ---------------------------------------------


def test_a_hand_off_waits_for_the_exporter_to_make_room_instead_of_shedding(
    new_queue: Any, queue_clock: Clock
) -> None:
    queue, consumer = held(new_queue, overflow="drop_newest", max_size=2, export_timeout=60)
    queue.put_many([(INFO, "i1"), (INFO, "i2")])
    producer, _ = in_thread(lambda: queue.put_many([(INFO, "i3"), (INFO, "i4")]))
    queue_clock.at(producer, 1, consumer.open)  # its first queue_clock reading is in the wait
    producer.start()
    assert finished(producer)
    assert queue.flush(10)
    assert consumer.names() == ["blocker", "i1", "i2", "i3", "i4"]
    assert queue.dropped == {}


def test_a_hand_off_asks_whether_the_producer_is_full_or_gone_while_it_waits(
    new_queue: Any,
) -> None:
    queue, consumer = held(new_queue, overflow="drop_newest", max_size=2, export_timeout=60)
    queue.put_many([(INFO, "i1"), (INFO, "i2")])
    asked: list[str] = []

    def full() -> bool:
        asked.append("full")
        consumer.open()
        return False

    def gone() -> bool:
        asked.append("gone")
        return False

    queue.put_many([(INFO, "i3")], upstream_full=full, upstream_gone=gone)
    assert asked[:2] == ["full", "gone"]
    assert queue.flush(10)
    assert consumer.names()[-1] == "i3" and queue.dropped == {}


@pytest.mark.parametrize("which", ["full", "gone"])
def test_a_hand_off_sheds_at_once_when_the_producer_is_full_or_past_its_deadline(
    new_queue: Any, which: str
) -> None:
    queue, consumer = held(new_queue, overflow="drop_newest", max_size=2, export_timeout=60)
    asked: list[str] = []

    def answer(name: str) -> Callable[[], bool]:
        def asker() -> bool:
            asked.append(name)
            return name == which

        return asker

    queue.put_many(
        [(INFO, f"i{n}") for n in range(4)],
        upstream_full=answer("full"),
        upstream_gone=answer("gone"),
    )
    # asked once: once shed, the queue stays stalled until its worker takes a batch
    assert asked == (["full"] if which == "full" else ["full", "gone"])
    assert queue.dropped == {"queue_full": 2}
    consumer.open()
    assert queue.flush(10)
    assert consumer.names() == ["blocker", "i0", "i1"]


def test_under_block_a_hand_off_waits_even_when_the_producer_is_full(new_queue: Any) -> None:
    queue, consumer = held(new_queue, overflow="block", max_size=2, export_timeout=60)
    queue.put_many([(INFO, "i1"), (INFO, "i2")])
    asked: list[str] = []

    def full() -> bool:
        asked.append("full")
        return True

    def gone() -> bool:
        asked.append("gone")
        consumer.open()
        return False

    queue.put_many([(INFO, "i3")], upstream_full=full, upstream_gone=gone)
    assert "full" not in asked and "gone" in asked
    assert queue.flush(10)
    assert queue.dropped == {} and consumer.names()[-1] == "i3"


def test_a_hand_off_stops_waiting_once_the_batch_in_progress_outlasts_export_timeout(
    new_queue: Any, queue_clock: Clock
) -> None:
    queue, _ = held(new_queue, overflow="drop_newest", max_size=2, export_timeout=5)
    queue.put_many([(INFO, "i1"), (INFO, "i2")])
    asked: list[str] = []

    def full() -> bool:
        asked.append("full")
        queue_clock.ahead += 5  # the batch in progress has now taken export_timeout
        return False

    producer, _ = in_thread(lambda: queue.put_many([(INFO, "i3"), (INFO, "i4")], full))
    producer.start()
    assert finished(producer)
    assert asked == ["full"]
    assert queue.dropped == {"queue_full": 2}


# -- flush -----------------------------------------------------------------------------------


def test_a_flush_is_bounded_by_its_timeout(new_queue: Any, queue_clock: Clock) -> None:
    queue, consumer = held(new_queue)
    queue.put((INFO, "i1"))
    assert not queue.flush(0.01)
    main = threading.current_thread()
    queue_clock.at(main, 2, consumer.open)  # inside the flush's wait: the worker can finish now
    assert not queue.flush(0)  # a timeout of 0 (or less) does not wait at all
    assert queue.flush(10)
    assert consumer.names() == ["blocker", "i1"]


def test_while_any_flush_waits_the_worker_takes_partial_batches_at_once(new_queue: Any) -> None:
    """(Two flushes at once; the first one done, the second still cuts max_delay short.)"""
    queue, consumer = new_queue(Consumer(held=True), max_delay=60)
    assert queue.put((INFO, "blocker"))
    first, first_result = in_thread(lambda: queue.flush(10))  # waits for the blocker
    first.start()
    consumer.wait_batches(1)  # taken at once for the flush, then held at the consumer
    assert queue.put((INFO, "late"))
    second, second_result = in_thread(lambda: queue.flush(10))  # waits for "late" too
    second.start()
    while queue._flushers < 2:
        second.join(0.005)
    consumer.open()
    assert finished(first) and first_result == [True]
    assert finished(second) and second_result == [True]
    assert consumer.names() == ["blocker", "late"]


def test_a_flush_with_less_than_a_second_left_still_waits(
    new_queue: Any, queue_clock: Clock
) -> None:
    queue, consumer = held(new_queue)
    queue.put((INFO, "i1"))
    main = threading.current_thread()
    queue_clock.at(main, 2, consumer.open)  # inside the flush's wait: the worker can finish now
    assert queue.flush(0.9)
    assert consumer.names() == ["blocker", "i1"]


def test_evicted_records_settle_one_each_for_a_flush(new_queue: Any) -> None:
    queue, consumer = held(new_queue, overflow="drop_oldest", max_size=2)
    for n in range(12):
        queue.put((ERROR, f"e{n}"))
    assert queue.dropped == {"queue_full": 10}
    assert not queue.flush(0)  # two records queued and one in flight are not settled
    consumer.open()
    assert queue.flush(10)
    assert consumer.names() == ["blocker", "e10", "e11"]


def test_a_partial_batch_still_gathers_in_the_last_second_of_max_delay(
    new_queue: Any, queue_clock: Clock
) -> None:
    queue, consumer = new_queue(max_delay=60, batch_size=2)
    in_delay = threading.Event()

    def late() -> None:
        queue_clock.ahead = 59.1  # 0.9 s of max_delay left when the worker looks
        in_delay.set()

    queue_clock.at(queue._thread, 1, late)  # type: ignore[arg-type]
    queue.put((INFO, "a"))
    assert in_delay.wait(10)
    queue.put((INFO, "b"))  # taken with "a": the worker is still within max_delay
    consumer.wait_batches(1)
    assert consumer.batches == [[(INFO, "a"), (INFO, "b")]]


def dead_worker(name: str, run: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=lambda: None, name=f"fapilog-{name}", daemon=True)
    thread.start()
    thread.join()
    return thread


def test_a_flush_returns_false_at_once_when_the_worker_is_dead(
    new_queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_module, "start_worker", dead_worker)
    queue, consumer = new_queue()
    assert queue.put((INFO, "never taken"))
    flusher, results = in_thread(lambda: queue.flush(60))
    flusher.start()
    assert finished(flusher) and results == [False]
    assert consumer.batches == [] and queue.depth == 1
    assert queue.shutdown(1) is False  # what the dead worker left is counted
    assert queue.dropped == {"shutdown_timeout": 1}


def test_a_waiting_flush_notices_the_worker_dying(
    new_queue: Any, monkeypatch: pytest.MonkeyPatch, queue_clock: Clock
) -> None:
    die = threading.Event()

    def doomed_worker(name: str, run: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=lambda: die.wait(30), daemon=True)
        thread.start()
        return thread

    monkeypatch.setattr(queue_module, "start_worker", doomed_worker)
    queue, _ = new_queue()
    queue.put((INFO, "never taken"))
    flusher, results = in_thread(lambda: queue.flush(60))
    queue_clock.at(flusher, 2, die.set)  # the worker dies as the flush starts waiting
    flusher.start()
    assert finished(flusher) and results == [False]


def test_a_worker_shedding_into_its_own_queue_makes_other_producers_shed_until_it_moves(
    new_queue: Any,
) -> None:
    """The worker's own hand-off into its full queue sheds, and the queue stays stalled until
    the worker takes its next batch: another producer's hand-off meanwhile sheds at once
    rather than wait on a worker that is busy putting."""
    queue, consumer = new_queue(overflow="drop_newest", max_size=2, export_timeout=60)
    others: list[int] = []

    def put_own(batch: list[Item]) -> None:
        if batch[0][1] == "first":
            queue.put_many([(INFO, "own 1"), (INFO, "own 2"), (INFO, "own 3")])
            other, _ = in_thread(lambda: queue.put_many([(INFO, "other")]))
            other.start()
            other.join(10)
            others.append(queue.total_dropped())

    consumer.during = put_own
    queue.put((INFO, "first"))
    assert queue.flush(10) and queue.flush(10)
    assert others == [2]  # "own 3" and "other", shed without a wait
    assert consumer.names() == ["first", "own 1", "own 2"]

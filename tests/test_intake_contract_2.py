"""The intake's worker side, exactly (`fapilog.pipeline.intake.IntakeQueue`): the batches it
hands on, what it trims over the bound under each policy (errors last), a consumer that
raises, `flush()` (how it waits, a dead worker), `shutdown()` (a clean drain, a worker stuck
past the deadline, a shutdown from the worker itself, a deadline already passed), and the
figures (`depth` never counts wake-ups, `in_flight`).

Each test drives a real `IntakeQueue` and its real worker thread, held on its first batch
(tests/intake_support.py) so that the queue's contents are known exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fapilog import configure_logging
from fapilog.pipeline import alerts
from fapilog.pipeline import intake as intake_module
from fapilog.pipeline.intake import IntakeQueue
from fapilog.settings import QueueSettings
from intake_support import (
    E1,
    E2,
    E3,
    E4,
    E5,
    I1,
    I2,
    I3,
    INFO,
    W1,
    W2,
    W3,
    AlertClock,
    Alerts,
    Clock,
    Consumer,
    Make,
    Progress,
    Releasing,
    flush_in_background,
    put_all,
    queues,
)
from queue_support import Listened


@pytest.fixture
def make() -> Iterator[Make]:
    yield from queues()


def test_the_worker_hands_on_batches_of_batch_size_in_order(make: Make) -> None:
    queue, consumer = make(hold=True, max_size=10, batch_size=2)
    assert put_all(queue, *[(INFO, name) for name in "abcde"]) == [True] * 5
    assert (queue.depth, queue.in_flight) == (5, 1)
    consumer.gate.set()
    assert queue.flush(10)
    assert [[name for _, name in batch] for batch in consumer.batches] == [
        ["first"],
        ["a", "b"],
        ["c", "d"],
        ["e"],
    ]
    assert consumer.threads == {queue._thread}
    assert (queue.offered, queue.accepted, queue.delivered) == (6, 6, 6)
    assert (queue.depth, queue.in_flight, queue.dropped) == (0, 0, {})


def test_a_new_intakes_figures_are_all_zero(make: Make) -> None:
    queue, _ = make()
    assert (queue.offered, queue.accepted, queue.delivered, queue.total_dropped()) == (0, 0, 0, 0)
    assert (queue.depth, queue.in_flight, queue.dropped) == (0, 0, {})
    assert (queue.is_full(), queue.gave_up()) == (False, False)


@pytest.mark.parametrize(
    ("overflow", "max_size", "queued", "kept"),
    [
        ("drop_oldest", 3, [I1, E1, I2, W1, I3], ["e1", "w1", "i3"]),
        ("drop_newest", 3, [I1, E1, I2, W1, I3], ["i1", "e1", "i2"]),
        ("drop_oldest", 3, [E1, E2, E3, E4, E5], ["e3", "e4", "e5"]),
        ("drop_newest", 3, [E1, E2, E3, E4, E5], ["e1", "e2", "e3"]),
        ("drop_oldest", 2, [E1, I1, E2, I2], ["e1", "e2"]),
        ("drop_newest", 2, [E1, I1, W1, E2], ["e1", "e2"]),
        ("sample", 3, [I1, W1, W2, E1, I2], ["w1", "w2", "e1"]),
        ("sample", 3, [W1, I1, W2, W3, E1], ["w1", "w2", "e1"]),
        ("sample", 2, [E1, W1, E2, E3], ["e1", "e2"]),
    ],
)
def test_the_worker_trims_to_the_bound_by_the_policy_errors_last(
    make: Make,
    overflow: str,
    max_size: int,
    queued: list[tuple[int, str]],
    kept: list[str],
) -> None:
    """`drop_oldest` evicts the oldest, the others the newest; below errors first (under
    `sample`, below warnings first, then below errors), errors only when nothing else is
    left."""
    queue, consumer = make(
        hold=True, overflow=overflow, max_size=max_size, high_water=1.0, sample_ratio=1.0
    )
    assert put_all(queue, *queued) == [True] * len(queued)
    assert queue.dropped == {}
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == ["first", *kept]
    assert queue.dropped == {"queue_full": len(queued) - max_size}
    assert queue.delivered == 1 + max_size


def test_each_trim_is_alerted_with_the_workers_running_total(
    make: Make, monkeypatch: pytest.MonkeyPatch, memory_exporter: Any
) -> None:
    monkeypatch.setattr(alerts, "time", AlertClock())
    received = Alerts()
    configure_logging(exporters=[memory_exporter.name], on_alert=received)
    queue, consumer = make(hold=True, max_size=2)
    assert put_all(queue, I1, I2, I3) == [True] * 3
    consumer.gate.set()
    assert queue.flush(10)
    consumer.gate.clear()
    consumer.taken.clear()
    assert queue.put((INFO, "second first"))
    assert consumer.taken.wait(10)
    assert put_all(queue, E1, E2, E3, E4) == [True] * 4
    consumer.gate.set()
    assert queue.flush(10)
    assert queue.dropped == {"queue_full": 3}
    assert received.settle(queue.name) == [("queue_full", 1, 1), ("queue_full", 2, 3)]


def test_a_drop_alerts_total_adds_the_callers_and_the_workers_drops(
    make: Make, monkeypatch: pytest.MonkeyPatch, memory_exporter: Any
) -> None:
    """Both sides shed `queue_full`: each alert's `dropped_total` is the queue's total for
    the reason, as `dropped` (and `fapilog.stats()`) count it."""
    monkeypatch.setattr(alerts, "time", AlertClock())
    received = Alerts()
    configure_logging(exporters=[memory_exporter.name], on_alert=received)
    queue, consumer = make(hold=True, overflow="drop_newest", max_size=1)
    assert put_all(queue, I1, I2, I3) == [True, True, False]  # the caller sheds i3
    consumer.gate.set()
    assert queue.flush(10)  # the worker trims i2
    consumer.gate.clear()
    consumer.taken.clear()
    assert queue.put((INFO, "second first"))
    assert consumer.taken.wait(10)
    assert put_all(queue, I1, I2, I3) == [True, True, False]
    consumer.gate.set()
    assert queue.flush(10)
    assert queue.dropped == {"queue_full": 4}
    assert received.settle(queue.name) == [("queue_full", 1, n) for n in (1, 2, 3, 4)]


def test_a_batch_whose_consumer_raises_is_dropped_reported_and_the_worker_goes_on(
    make: Make, listened: Listened
) -> None:
    queue, consumer = make(hold=True, max_size=10)

    def fail_on_bad(batch: list[tuple[int, str]]) -> None:
        if batch[0][1] == "bad":
            raise RuntimeError("boom")

    consumer.hook = fail_on_bad
    consumer.gate.set()
    assert queue.flush(10)
    consumer.gate.clear()
    consumer.taken.clear()
    assert queue.put((INFO, "bad"))
    assert consumer.taken.wait(10)
    assert put_all(queue, (INFO, "good"), (INFO, "good too")) == [True, True]
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == ["first", "good", "good too"]
    assert queue.dropped == {"consumer_error": 1}
    assert (queue.offered, queue.accepted, queue.delivered, queue.in_flight) == (4, 4, 3, 0)
    # (the report as `_diag` hands it to its listeners, once it has written it to stderr)
    key = f"consume:{queue.name}"
    assert [message for name, message, _ in listened.reports if name == key] == [
        f"fapilog queue {queue.name!r} failed to process a batch: RuntimeError('boom')"
    ]


def test_a_consumer_raising_a_base_exception_does_not_end_the_worker(make: Make) -> None:
    queue, consumer = make(max_size=10)

    def interrupt(batch: list[tuple[int, str]]) -> None:
        if batch[0][1] == "interrupted":
            raise KeyboardInterrupt

    consumer.hook = interrupt
    assert queue.put((INFO, "interrupted"))
    assert queue.flush(10)
    assert queue.put((INFO, "after"))
    assert queue.flush(10)
    assert queue._thread is not None and queue._thread.is_alive()
    assert consumer.delivered == ["after"]
    assert queue.dropped == {"consumer_error": 1}


def test_flush_waits_for_what_was_offered_and_counts_what_callers_shed(make: Make) -> None:
    queue, consumer = make()
    assert queue.flush(0)  # nothing offered
    queue, consumer = make(hold=True, overflow="drop_newest", max_size=1)
    assert put_all(queue, I1, I2, I3) == [True, True, False]
    assert queue.flush(0) is False  # held: nothing settles
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == ["first", "i1"]
    assert queue.dropped == {"queue_full": 2}
    assert queue.delivered + queue.total_dropped() == queue.offered == 4


def test_flush_gives_up_at_its_deadline_and_a_negative_timeout_is_none(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock stands still: a flush that waited past a deadline it has reached would
    never return."""
    clock = Clock()
    monkeypatch.setattr(intake_module, "time", clock)
    queue, consumer = make(hold=True)
    results: list[bool] = []
    done = threading.Event()

    def flush() -> None:
        results.extend([queue.flush(0), queue.flush(-1)])
        done.set()

    threading.Thread(target=flush, daemon=True).start()
    try:
        assert done.wait(5)
        assert results == [False, False]
    finally:
        clock.now += 3600  # lets a flush that kept waiting end
    consumer.gate.set()
    assert queue.flush(10)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_flush_says_false_at_once_when_the_worker_is_dead() -> None:
    """A severity function that raises while the worker trims ends the worker: nothing
    settles any more, and flush says so at once rather than at its deadline."""

    def severity(item: tuple[int, str]) -> int:
        if item[1] == "poison":
            raise ValueError("no severity")
        return item[0]

    consumer = Consumer(hold=True)
    settings = QueueSettings(max_size=1, overflow="drop_newest")
    queue: IntakeQueue[tuple[int, str]] = IntakeQueue("intake-dead", consumer, severity, settings)
    assert queue.put((INFO, "first"))
    assert consumer.taken.wait(10)
    assert put_all(queue, I1, (INFO, "poison")) == [True, True]
    consumer.gate.set()
    assert queue._thread is not None
    queue._thread.join(10)
    assert not queue._thread.is_alive()
    assert queue.flush(30) is False
    assert queue.shutdown(0) is False  # what the worker left is written off
    assert queue.dropped == {"shutdown_timeout": 2}
    assert queue.delivered == 1


def test_depth_counts_records_only_never_wake_ups(make: Make) -> None:
    queue, consumer = make()
    queue._wake()  # taken by an idle worker
    queue._wake()
    assert queue.put((INFO, "a"))
    assert queue.flush(10)
    assert queue.depth == 0
    consumer.gate.clear()
    consumer.taken.clear()
    assert queue.put((INFO, "held"))
    assert consumer.taken.wait(10)
    assert put_all(queue, I1, I2) == [True, True]
    assert queue.flush(0) is False  # each flush that waits puts a wake-up
    assert queue.flush(0) is False
    assert queue.depth == 2
    consumer.gate.set()
    assert queue.flush(10)  # the worker takes both wake-ups with the records
    consumer.gate.clear()
    consumer.taken.clear()
    assert queue.put((INFO, "held again"))
    assert consumer.taken.wait(10)
    assert queue.put(I3)
    assert queue.depth == 1
    consumer.gate.set()


def test_a_clean_shutdown_delivers_everything_queued_then_sheds_every_put(make: Make) -> None:
    queue, consumer = make(hold=True)
    assert put_all(queue, I1, I2, I3) == [True] * 3
    queue.begin_shutdown()
    consumer.gate.set()
    assert queue.finish_shutdown(time.monotonic() + 10) is True
    assert queue._thread is not None and not queue._thread.is_alive()
    assert consumer.delivered == ["first", "i1", "i2", "i3"]
    assert queue.gave_up() is False
    assert put_all(queue, E1, E2) == [False, False]
    assert queue.dropped == {"shutdown": 2}
    assert (queue.offered, queue.accepted, queue.delivered, queue.depth) == (6, 4, 4, 0)
    assert queue.shutdown(10) is True  # a second shutdown finds nothing left
    assert queue.flush(0) is True


def test_a_worker_stuck_past_the_deadline_has_its_queue_and_batch_written_off(
    make: Make, monkeypatch: pytest.MonkeyPatch, memory_exporter: Any
) -> None:
    monkeypatch.setattr(alerts, "time", AlertClock())
    received = Alerts()
    configure_logging(exporters=[memory_exporter.name], on_alert=received)
    queue, consumer = make(hold=True, max_size=10)
    assert put_all(queue, I1, I2, I3) == [True] * 3
    consumer.taken.clear()
    consumer.hook = lambda batch: consumer.gate.clear()  # hold the next batch
    consumer.gate.set()
    assert consumer.taken.wait(10)
    assert (queue.depth, queue.in_flight) == (0, 3)
    assert put_all(queue, E1, E2) == [True, True]
    assert queue.gave_up() is False

    assert queue.shutdown(0) is False
    assert queue.gave_up() is True
    assert queue.dropped == {"shutdown_timeout": 5}
    assert (queue.depth, queue.in_flight, queue.delivered) == (0, 0, 1)
    assert received.settle(queue.name) == [("shutdown_timeout", 2, 2), ("shutdown_timeout", 3, 5)]
    assert queue.shutdown(0) is False  # again: nothing more to write off
    assert queue.dropped == {"shutdown_timeout": 5}
    assert (queue.depth, queue.in_flight) == (0, 0)

    consumer.hook = None
    consumer.gate.set()  # the worker hands its batch on at last: counted once, as dropped
    assert queue._thread is not None
    queue._thread.join(10)
    assert not queue._thread.is_alive()
    assert consumer.delivered == ["first", "i1", "i2", "i3"]
    assert queue.dropped == {"shutdown_timeout": 5}
    assert (queue.offered, queue.delivered, queue.in_flight) == (6, 1, 0)


def test_a_shutdown_from_the_worker_itself_writes_off_only_what_is_queued(make: Make) -> None:
    queue, consumer = make(hold=True)
    results: list[bool] = []

    def shut_down_from_the_worker(batch: list[tuple[int, str]]) -> None:
        if batch[0][1] == "first":
            results.append(queue.shutdown(0))

    consumer.hook = shut_down_from_the_worker
    assert queue.put(I1)
    consumer.gate.set()
    assert queue._thread is not None
    queue._thread.join(10)
    assert results == [False]
    assert consumer.delivered == ["first"]
    assert queue.dropped == {"shutdown_timeout": 1}
    assert (queue.offered, queue.delivered, queue.in_flight) == (2, 1, 0)


def test_a_delivery_wakes_a_waiting_flush_at_once(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The clock stands still: half a second is left until the flush's deadline.)"""
    monkeypatch.setattr(intake_module, "time", Clock())
    queue, consumer = make(hold=True)
    queue._progress = progress = Progress(queue._lock, untimed=True)
    done, results = flush_in_background(queue, 0.5)
    try:
        with progress:
            assert progress.wait_for(lambda: progress.timeouts, timeout=10)
        consumer.gate.set()
        assert done.wait(10)
        assert results == [True]
    finally:
        with progress:
            progress.notify_all()


def test_a_shutdown_that_writes_records_off_wakes_a_waiting_flush(make: Make) -> None:
    queue, _ = make(hold=True)
    assert queue.put(I1)
    queue._progress = progress = Progress(queue._lock, untimed=True)
    done, results = flush_in_background(queue, 30)
    try:
        with progress:
            assert progress.wait_for(lambda: progress.timeouts, timeout=10)
        assert queue.shutdown(0) is False
        assert done.wait(10)
        assert results == [True]  # everything offered has left the queue: dropped
        assert queue.dropped == {"shutdown_timeout": 2}
    finally:
        with progress:
            progress.notify_all()


def test_a_waiting_flush_looks_again_every_50_ms_at_most(make: Make) -> None:
    """(A record a caller sheds settles without notifying anyone.)"""
    queue, consumer = make(hold=True)
    queue._progress = progress = Progress(queue._lock, untimed=False)
    done, results = flush_in_background(queue, 30)
    with progress:
        assert progress.wait_for(lambda: len(progress.timeouts) >= 2, timeout=10)
    consumer.gate.set()
    assert done.wait(10)
    assert results == [True]
    assert all(timeout is not None and timeout <= 0.05 for timeout in progress.timeouts)
    assert max(t for t in progress.timeouts if t is not None) == 0.05


def test_shutdown_waits_for_a_busy_worker_until_its_deadline(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, consumer = make(hold=True)
    assert put_all(queue, I1, I2) == [True, True]
    monkeypatch.setattr(intake_module, "time", Releasing(consumer.gate))
    assert queue.shutdown(30) is True
    assert queue.gave_up() is False
    assert consumer.delivered == ["first", "i1", "i2"]
    assert (queue.delivered, queue.dropped) == (3, {})


@pytest.mark.parametrize("drain", ["shutdown", "finish_shutdown"])
def test_a_drain_past_its_deadline_gives_up_at_once(
    make: Make, monkeypatch: pytest.MonkeyPatch, drain: str
) -> None:
    """A deadline already reached: the drain does not wait for the worker first, it tells it
    to hand its batch on without waiting (`gave_up()`). The worker here hands its batch on
    once told so, or after half a second (a drain that still waited would see it done)."""
    queue, consumer = make(hold=True)

    def hand_on_once_given_up(batch: list[tuple[int, str]]) -> None:
        until = time.monotonic() + 0.5
        while not queue.gave_up() and time.monotonic() < until:
            time.sleep(0.001)

    consumer.hook = hand_on_once_given_up
    clock = Releasing(consumer.gate)
    monkeypatch.setattr(intake_module, "time", clock)
    if drain == "shutdown":
        queue.shutdown(0)
    else:
        queue.begin_shutdown()
        clock.looks = 1  # (no look of shutdown()'s own)
        queue.finish_shutdown(clock.now - 5)
    assert queue.gave_up() is True
    assert queue._thread is not None
    queue._thread.join(10)
    assert queue.delivered + queue.total_dropped() == queue.offered == 1

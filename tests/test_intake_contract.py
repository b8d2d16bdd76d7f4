"""The intake's caller side, exactly (`fapilog.pipeline.intake.IntakeQueue.put`): the bounds
derived from the settings, what a caller sheds under each overflow policy and when (the
`sample` policy's high-water mark and draw, twice and three times the bound, errors last),
how long a caller waits under `block` and that it waits once, when a crowded queue hands
the interpreter to its worker, and the drop alerts and figures a shed record leaves; also
`inherit()`, no worker at all (delivery on the caller's thread), and a forked child's fresh
intake.

Each test drives a real `IntakeQueue` and its real worker thread, held on its first batch
(tests/intake_support.py) so that the queue's contents are known exactly."""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from fapilog import configure_logging
from fapilog.pipeline import alerts
from fapilog.pipeline import intake as intake_module
from fapilog.pipeline.intake import count_of, counter
from intake_support import (
    E1,
    ERROR,
    I1,
    I2,
    I3,
    INFO,
    WARN,
    AlertClock,
    Alerts,
    Clock,
    Draw,
    GilSpy,
    Make,
    Polling,
    put_all,
    queues,
)


@pytest.fixture
def make() -> Iterator[Make]:
    yield from queues()


def infos(*names: str) -> list[tuple[int, str]]:
    return [(INFO, name) for name in names]


def test_count_of_reads_how_far_a_counter_was_advanced() -> None:
    assert count_of(counter()) == 0
    started = counter(41)
    next(started)
    assert count_of(started) == 42
    assert count_of(counter(1_234_567)) == 1_234_567


@pytest.mark.parametrize(
    ("settings", "bounds"),
    [
        ({"max_size": 10, "batch_size": 100, "high_water": 0.5}, (10, 5, 20, 30, 7)),
        ({"max_size": 1, "batch_size": 100, "high_water": 0.5}, (1, 1, 2, 3, 1)),
        ({"max_size": 8, "batch_size": 3, "high_water": 0.8}, (3, 6, 16, 24, 6)),
    ],
)
def test_the_bounds_derive_from_the_settings(
    make: Make, settings: dict[str, Any], bounds: tuple[int, ...]
) -> None:
    """batch size (never above the bound), high-water mark (at least one record), the
    caller's hard cap (twice the bound), the errors' cap (three times), the yield mark (three
    quarters, at least one)."""
    queue, _ = make(**settings)
    assert (
        queue.batch_size,
        queue.high_water,
        queue._hard_cap,
        queue._error_cap,
        queue._yield_mark,
    ) == bounds


def test_the_settings_reach_the_queue_as_given(make: Make) -> None:
    queue, _ = make(max_size=7, overflow="block", block_timeout=0.25, sample_ratio=0.5)
    assert (queue.max_size, queue.overflow, queue.block_timeout, queue.sample_ratio) == (
        7,
        "block",
        0.25,
        0.5,
    )
    assert queue.name.startswith("intake-contract-")
    assert queue._thread is not None and queue._thread.name == f"fapilog-{queue.name}"


def test_sample_sheds_sub_warning_records_from_the_high_water_mark_on(make: Make) -> None:
    queue, consumer = make(
        hold=True, overflow="sample", max_size=10, high_water=0.5, sample_ratio=0.0
    )
    assert put_all(queue, *infos("i0", "i1", "i2", "i3", "i4")) == [True] * 5
    assert queue.put((INFO, "sampled at the mark")) is False
    assert queue.put((WARN - 1, "sampled just below warning")) is False
    assert queue.put((WARN, "a warning is never sampled")) is True
    assert queue.dropped == {"sampled": 2}
    assert (queue.offered, queue.accepted, queue.depth, queue.in_flight) == (9, 7, 6, 1)
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == [
        "first",
        "i0",
        "i1",
        "i2",
        "i3",
        "i4",
        "a warning is never sampled",
    ]
    assert queue.dropped == {"sampled": 2}
    assert (queue.delivered, queue.total_dropped()) == (7, 2)


@pytest.mark.parametrize(("ratio", "kept"), [(0.5, False), (0.75, True)])
def test_sample_keeps_a_record_whose_draw_is_below_the_ratio(
    make: Make, ratio: float, kept: bool
) -> None:
    queue, _ = make(hold=True, overflow="sample", max_size=2, high_water=0.5, sample_ratio=ratio)
    queue._random = Draw()
    assert queue.put((INFO, "below the mark")) is True  # the queue was empty
    assert queue.put((INFO, "at the mark")) is kept
    assert queue.dropped == ({} if kept else {"sampled": 1})


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_a_caller_sheds_beyond_twice_the_bound_and_an_error_beyond_three_times(
    make: Make, monkeypatch: pytest.MonkeyPatch, overflow: str
) -> None:
    """(And never waits: only `block` does.)"""
    clock = Clock()
    monkeypatch.setattr(intake_module, "time", clock)
    queue, consumer = make(hold=True, overflow=overflow, max_size=2)
    assert queue.put((INFO, "i0"))
    assert not queue.is_full()
    assert queue.put((INFO, "i1"))
    assert queue.is_full()
    assert put_all(queue, *infos("i2", "i3")) == [True, True]  # the worker trims them
    assert put_all(
        queue,
        (INFO, "shed"),
        (WARN, "a warning is shed too"),
        (ERROR, "e0"),
        (ERROR, "e1"),
        (ERROR, "beyond three times the bound"),
    ) == [False, False, True, True, False]
    assert queue.dropped == {"queue_full": 3}
    assert (queue.offered, queue.accepted, queue.depth, queue.in_flight) == (10, 7, 6, 1)
    assert clock.sleeps == []
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == ["first", "e0", "e1"]  # trimmed back, errors last
    assert queue.dropped == {"queue_full": 7}
    assert (queue.delivered, queue.depth, queue.in_flight) == (3, 0, 0)


def test_under_sample_warnings_too_enter_past_twice_the_bound(make: Make) -> None:
    queue, consumer = make(hold=True, overflow="sample", max_size=2, sample_ratio=1.0)
    assert put_all(queue, *infos("i0", "i1", "i2", "i3")) == [True] * 4
    assert put_all(
        queue,
        (INFO, "shed"),
        (WARN, "w"),
        (ERROR, "e"),
        (WARN, "beyond three times the bound"),
        (ERROR, "an error too"),
    ) == [False, True, True, False, False]
    assert queue.dropped == {"queue_full": 3}
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == ["first", "w", "e"]
    assert queue.dropped == {"queue_full": 7}


def test_block_holds_the_caller_until_the_worker_makes_room(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Polling()
    monkeypatch.setattr(intake_module, "time", clock)
    queue, consumer = make(hold=True, overflow="block", max_size=2, block_timeout=30)
    assert put_all(queue, *infos("a", "b")) == [True, True]
    assert clock.sleeps == []
    results: list[bool] = []
    done = threading.Event()

    def caller() -> None:
        results.append(queue.put((INFO, "c")))
        done.set()

    thread = threading.Thread(target=caller)
    thread.start()
    assert clock.polling.wait(10)
    assert not done.is_set()  # looking at the full queue, 0.5 ms apart
    consumer.gate.set()
    assert done.wait(10)
    thread.join()
    assert results == [True]
    assert queue.flush(10)
    assert consumer.delivered == ["first", "a", "b", "c"]
    assert queue.dropped == {}
    assert set(clock.sleeps) == {0.0005}


def test_block_holds_the_caller_before_the_workers_first_batch_too(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker slow to start (a busy interpreter): the queue fills before it takes
    anything, and a caller under `block` waits for it as for any other batch."""
    started = threading.Event()
    real_start = intake_module.start_worker

    def slow_start(name: str, run: Any) -> Any:
        def late() -> None:
            started.wait(30)
            run()

        return real_start(name, late)

    monkeypatch.setattr(intake_module, "start_worker", slow_start)
    clock = Polling()
    monkeypatch.setattr(intake_module, "time", clock)
    queue, consumer = make(overflow="block", max_size=2, block_timeout=30)
    assert put_all(queue, *infos("a", "b")) == [True, True]
    done = threading.Event()
    results: list[bool] = []

    def caller() -> None:
        results.append(queue.put((INFO, "c")))
        done.set()

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        assert clock.polling.wait(10)
        assert not done.is_set()
    finally:
        started.set()
    assert done.wait(10)
    thread.join()
    assert results == [True]
    assert queue.flush(10)
    assert consumer.delivered == ["a", "b", "c"]
    assert queue.dropped == {}


def test_block_waits_its_timeout_once_then_sheds_past_twice_the_bound(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first caller to find the queue full waits `block_timeout` and is taken; until the
    worker takes its next batch, no caller waits again; past twice the bound a caller sheds
    (`block_timeout`), an error past three times; the worker trims the rest, errors last."""
    clock = Clock(step=0.25)
    monkeypatch.setattr(intake_module, "time", clock)
    queue, consumer = make(hold=True, overflow="block", max_size=2, block_timeout=0.5)
    assert put_all(queue, *infos("a", "b")) == [True, True]
    assert clock.sleeps == []
    assert queue.put((INFO, "c")) is True  # two looks 0.25 s apart, then taken
    assert clock.sleeps == [0.0005, 0.0005]
    assert put_all(
        queue,
        (INFO, "d"),
        (INFO, "shed"),
        (ERROR, "e0"),
        (ERROR, "e1"),
        (ERROR, "beyond three times the bound"),
    ) == [True, False, True, True, False]
    assert clock.sleeps == [0.0005, 0.0005]  # no second wait
    assert queue.dropped == {"block_timeout": 2}
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == ["first", "e0", "e1"]
    assert queue.dropped == {"block_timeout": 6}

    # the worker moved on: the next caller to find the queue full waits again
    consumer.gate.clear()
    consumer.taken.clear()
    assert queue.put((INFO, "second first"))
    assert consumer.taken.wait(10)
    assert put_all(queue, *infos("f", "g", "h")) == [True, True, True]
    assert clock.sleeps == [0.0005] * 4
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered[3:] == ["second first", "f", "g"]
    assert queue.dropped == {"block_timeout": 7}


def test_a_full_block_queue_with_no_time_to_wait_takes_the_record_at_once(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(step=0.25)
    monkeypatch.setattr(intake_module, "time", clock)
    queue, _ = make(hold=True, overflow="block", max_size=1, block_timeout=0)
    assert put_all(queue, *infos("a", "b")) == [True, True]
    assert clock.sleeps == []
    assert queue.put((INFO, "beyond twice the bound")) is False
    assert queue.dropped == {"block_timeout": 1}


def test_under_block_the_worker_never_waits_for_room_in_its_own_queue(make: Make) -> None:
    queue, consumer = make(hold=True, overflow="block", max_size=2, block_timeout=30)
    accepted: list[bool] = []

    def log_from_the_worker(batch: list[tuple[int, str]]) -> None:
        if batch[0][1] == "first":
            accepted.append(queue.put((INFO, "from the worker")))

    consumer.hook = log_from_the_worker
    assert put_all(queue, *infos("a", "b")) == [True, True]
    assert queue.is_full()
    consumer.gate.set()
    assert queue.shutdown(10)
    assert accepted == [True]
    assert consumer.delivered == ["first", "a", "b", "from the worker"]
    assert queue.dropped == {}


def test_a_crowded_queue_hands_the_interpreter_to_its_worker_three_times_at_most(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = GilSpy(intake_module.hand_over_gil)
    monkeypatch.setattr(intake_module, "hand_over_gil", spy)
    queue, consumer = make(hold=True, max_size=4)  # three quarters: 3 records
    me = threading.current_thread()
    assert put_all(queue, *infos("a", "b")) == [True, True]
    assert spy.calls == []
    assert queue.put((INFO, "c"))  # the third: the held worker leaves it crowded
    assert spy.calls == [(me, 0), (me, 1), (me, 2)]

    # once the worker has made room, the caller stops yielding
    spy.calls.clear()
    spy.on_call = lambda attempt: (consumer.gate.set(), queue.flush(10))
    assert queue.put((INFO, "d"))
    assert spy.calls == [(me, 0)]
    assert consumer.delivered == ["first", "a", "b", "c", "d"]


def test_the_worker_never_yields_to_itself(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = GilSpy(intake_module.hand_over_gil)
    monkeypatch.setattr(intake_module, "hand_over_gil", spy)
    queue, consumer = make(hold=True, max_size=1)  # every put is crowded

    def log_from_the_worker(batch: list[tuple[int, str]]) -> None:
        if batch[0][1] == "first":
            assert queue.put((INFO, "from the worker"))

    consumer.hook = log_from_the_worker
    spy.calls.clear()
    consumer.gate.set()
    assert queue.shutdown(10)
    assert consumer.delivered == ["first", "from the worker"]
    assert [call for call in spy.calls if call[0] in consumer.threads] == []


def test_each_record_a_caller_sheds_is_alerted_with_its_running_total(
    make: Make, monkeypatch: pytest.MonkeyPatch, memory_exporter: Any
) -> None:
    monkeypatch.setattr(alerts, "time", AlertClock())
    received = Alerts()
    configure_logging(exporters=[memory_exporter.name], on_alert=received)
    queue, consumer = make(hold=True, overflow="sample", max_size=2, sample_ratio=0.0)
    assert put_all(queue, *infos("a", "b", "c")) == [True, False, False]
    assert received.settle(queue.name) == [("sampled", 1, 1), ("sampled", 1, 2)]
    consumer.gate.set()
    assert queue.shutdown(10)
    assert queue.put((ERROR, "after shutdown")) is False
    assert queue.dropped == {"sampled": 2, "shutdown": 1}
    assert (queue.offered, queue.accepted) == (5, 2)
    assert received.settle(queue.name)[2:] == [("shutdown", 1, 1)]


@pytest.mark.parametrize(
    ("overflow", "reason"), [("drop_newest", "queue_full"), ("block", "block_timeout")]
)
def test_what_the_worker_took_beyond_its_batch_counts_toward_the_bound(
    make: Make, monkeypatch: pytest.MonkeyPatch, overflow: str, reason: str
) -> None:
    """Batches of one: the worker holds "a" in flight and "b" in its buffer; the callers see
    "b" as queued (a full queue, the hard cap, the yield mark), and a shutdown past the
    deadline writes it off with the rest."""
    monkeypatch.setattr(intake_module, "time", Clock())
    spy = GilSpy(intake_module.hand_over_gil)
    monkeypatch.setattr(intake_module, "hand_over_gil", spy)
    queue, consumer = make(hold=True, overflow=overflow, max_size=2, batch_size=1, block_timeout=0)
    assert put_all(queue, *infos("a", "b")) == [True, True]
    consumer.taken.clear()
    consumer.hook = lambda batch: consumer.gate.clear()  # hold the next batch
    consumer.gate.set()
    assert consumer.taken.wait(10)
    assert (queue.depth, queue.in_flight) == (1, 1)
    assert not queue.is_full()
    spy.calls.clear()
    assert queue.put((INFO, "c"))
    assert queue.is_full()
    assert [attempt for _, attempt in spy.calls] == [0, 1, 2]  # 2 queued: still crowded
    assert put_all(queue, *infos("d", "e", "shed")) == [True, True, False]
    assert queue.dropped == {reason: 1}
    assert queue.shutdown(0) is False
    assert queue.dropped == {reason: 1, "shutdown_timeout": 5}
    assert (queue.depth, queue.in_flight, queue.delivered) == (0, 0, 1)


def test_a_caller_waiting_under_block_when_the_intake_shuts_down_is_shed(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its record would otherwise enter a queue no worker empties any more (after a clean
    shutdown), queued for ever: it is shed, reason `shutdown`, like any put after it."""
    clock = Polling()
    monkeypatch.setattr(intake_module, "time", clock)
    queue, consumer = make(hold=True, overflow="block", max_size=1, block_timeout=30)
    assert queue.put((INFO, "a"))
    results: list[bool] = []
    done = threading.Event()

    def caller() -> None:
        results.append(queue.put((INFO, "late")))
        done.set()

    thread = threading.Thread(target=caller)
    thread.start()
    assert clock.polling.wait(10)
    assert queue.shutdown(0) is False  # the worker is held: "first" and "a" written off
    assert done.wait(10)
    thread.join()
    assert results == [False]
    assert queue.dropped == {"shutdown_timeout": 2, "shutdown": 1}
    assert (queue.offered, queue.depth) == (3, 0)
    consumer.gate.set()
    assert queue._thread is not None
    queue._thread.join(10)
    assert consumer.delivered == ["first"]
    assert (queue.delivered, queue.depth) == (0, 0)


def test_inherit_carries_every_figure_of_the_earlier_intake(make: Make) -> None:
    earlier, consumer = make(hold=True, overflow="drop_newest", max_size=1)
    assert put_all(earlier, I1, I2, I3) == [True, True, False]
    consumer.gate.set()
    assert earlier.shutdown(10)
    assert earlier.put(E1) is False
    assert earlier.dropped == {"queue_full": 2, "shutdown": 1}
    assert (earlier.offered, earlier.accepted, earlier.delivered) == (5, 3, 2)

    later, consumer = make(overflow="drop_newest", max_size=1)
    later.inherit(earlier)  # before any record is offered to it
    assert later.dropped == {"queue_full": 2, "shutdown": 1}
    assert (later.offered, later.accepted, later.delivered) == (5, 3, 2)
    consumer.gate.clear()
    assert later.put((INFO, "first"))
    assert consumer.taken.wait(10)
    assert put_all(later, I1, I2, I3) == [True, True, False]
    consumer.gate.set()
    assert later.shutdown(10)
    assert later.put(E1) is False
    assert later.dropped == {"queue_full": 4, "shutdown": 2}
    assert (later.offered, later.accepted, later.delivered) == (10, 6, 4)


def test_with_no_worker_a_record_is_delivered_on_the_callers_thread(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread could be started (interpreter shutdown, thread limit)."""
    monkeypatch.setattr(intake_module, "start_worker", lambda *args: None)
    queue, consumer = make()
    assert queue._thread is None
    assert queue.put((INFO, "a"))
    assert consumer.threads == {threading.current_thread()}
    consumer.hook = lambda batch: 1 / 0
    assert queue.put((INFO, "raises"))
    assert consumer.delivered == ["a"]
    assert queue.dropped == {"consumer_error": 1}
    assert (queue.offered, queue.accepted, queue.delivered, queue.in_flight) == (2, 2, 1, 0)
    assert queue.flush(0) is True
    assert queue.shutdown(0) is True
    assert queue.put((INFO, "after shutdown")) is False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_an_empty_intake_with_its_own_worker(make: Make) -> None:
    """The parent keeps (and delivers) what it had queued; the child's intake starts empty,
    its figures at zero, and delivers on a worker of its own."""
    queue, consumer = make(hold=True)
    assert put_all(queue, I1, I2) == [True, True]
    parent_worker = queue._thread
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (fork with threads, 3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            before = [queue.offered, queue.depth, queue.in_flight, queue.delivered]
            before += [queue.dropped, queue._thread is not parent_worker]
            consumer.gate.set()
            assert queue.put((INFO, "child"))
            flushed = queue.flush(10)
            os.write(write, json.dumps([before, flushed, consumer.batches[-1]]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with os.fdopen(read) as pipe:
        said = json.loads(pipe.read())
    assert said == [[0, 0, 0, 0, {}, True], True, [[INFO, "child"]]]
    consumer.gate.set()
    assert queue.flush(10)
    assert consumer.delivered == ["first", "i1", "i2"]

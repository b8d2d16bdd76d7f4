"""`BatchQueue`'s end of life and its other modes, driven directly: shutdown (the drain,
`on_stop`, what the deadline counts as dropped, a stop from the worker itself, a lock held at
exit), the synchronous mode without a worker, a forked child's fresh queue, and the hooks a
spooling queue overrides. Helpers: test_queue_contract and test_queue_contract_2.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fapilog._state import LOCK_WAIT_AT_EXIT
from fapilog.pipeline import queue as queue_module
from fapilog.pipeline.queue import BatchQueue
from fapilog.settings import QueueSettings
from queue_support import INFO, Consumer, Item, Listened, Unfinished, in_thread, severity, unique

# -- shutdown --------------------------------------------------------------------------------


def test_shutdown_drains_without_waiting_out_max_delay_then_runs_on_stop_once(
    new_queue: Any,
) -> None:
    stops: list[tuple[threading.Thread, int]] = []
    queue, consumer = new_queue(
        max_delay=60,
        batch_size=10,
        on_stop=lambda: stops.append((threading.current_thread(), len(consumer.names()))),
    )
    queue.put((INFO, "i1"))
    queue.put((INFO, "i2"))
    assert not queue.join(time.monotonic())  # running: not stopped
    assert queue.shutdown(10)
    assert consumer.names() == ["i1", "i2"]
    assert stops == [(queue._thread, 2)]  # on the worker, after the last batch
    assert queue.join(time.monotonic())
    assert queue.shutdown(10)  # again: nothing more to do
    assert not queue.put((INFO, "late"))
    queue.put_many([(INFO, "later"), (INFO, "latest")])
    assert queue.dropped == {"shutdown": 3}
    assert (queue.offered, queue.accepted, queue.delivered) == (5, 2, 2)
    assert len(stops) == 1


def test_an_on_stop_that_raises_makes_shutdown_report_failure(
    new_queue: Any, listened: Listened
) -> None:
    def on_stop() -> None:
        raise OSError("disk full while closing")

    queue, consumer = new_queue(on_stop=on_stop)
    queue.put((INFO, "i1"))
    assert queue.shutdown(10) is False
    assert consumer.names() == ["i1"]
    message, _ = listened.wait_for(f"stop:{queue.name}")
    expected = "shutdown raised OSError('disk full while closing')"
    assert message == f"fapilog {queue.name!r}: {expected}"


def unreliable() -> int:
    raise RuntimeError("cannot tell")


@pytest.mark.parametrize(
    ("delivered_so_far", "done"),
    [(None, 0), (lambda: 2, 2), (lambda: 7, 3), (lambda: -2, 0), (unreliable, 0), (lambda: "2", 2)],
)
def test_the_shutdown_deadline_counts_what_a_stuck_consumer_holds_as_dropped(
    new_queue: Any, delivered_so_far: Any, done: int
) -> None:
    queue, consumer = new_queue(Consumer(held=True), delivered_so_far=delivered_so_far)
    assert queue.put((INFO, "early"))
    consumer.wait_batches(1)
    consumer.release()
    assert queue.flush(5) and queue.delivered == 1
    queue.put_many([(INFO, "b1"), (INFO, "b2"), (INFO, "b3")])
    consumer.wait_batches(2)  # in flight, held
    queue.put_many([(INFO, "q1"), (INFO, "q2")])
    assert (queue.in_flight, queue.depth) == (3, 2)
    assert queue.shutdown(0) is False
    assert (queue.in_flight, queue.depth) == (0, 0)
    assert queue.delivered == 1 + done
    assert queue.dropped == {"shutdown_timeout": 5 - done}
    consumer.open()  # the stuck consumer finishes: its batch is not counted twice
    assert queue.join(time.monotonic() + 10)
    assert queue.flush(0)  # all settled
    assert queue.delivered == 1 + done
    assert queue.dropped == {"shutdown_timeout": 5 - done}
    assert queue.offered == queue.delivered + queue.total_dropped()


def test_a_deadline_already_past_waits_for_no_worker(new_queue: Any) -> None:
    queue, _ = new_queue()
    assert queue.put((INFO, "a")) and queue.flush(5)  # its worker runs
    stuck = Unfinished()
    queue._thread = stuck  # type: ignore[assignment]  # (a worker that never finishes)
    assert queue.join(time.monotonic() - 5) is False
    assert queue.shutdown(-5) is False
    assert stuck.waits == [0.0, 0.0]


def test_a_queue_shut_down_from_its_own_consumer_delivers_that_batch(new_queue: Any) -> None:
    queue, consumer = new_queue()
    results: list[bool] = []
    consumer.during = lambda batch: results.append(queue.shutdown(10))
    queue.put((INFO, "i1"))
    assert queue.join(time.monotonic() + 10)
    assert results == [True]
    assert (queue.delivered, queue.dropped) == (1, {})


def test_the_exit_drain_never_waits_for_a_lock_a_stuck_worker_holds(
    new_queue: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    queue, _ = new_queue()
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with queue._lock:
            entered.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert entered.wait(10)
    try:
        drain, results = in_thread(lambda: queue.finish_shutdown(time.monotonic()))
        drain.start()
        drain.join(LOCK_WAIT_AT_EXIT + 10)
        assert results == [False]
        assert "the exporter queue worker is stuck at exit" in capfd.readouterr().err
    finally:
        release.set()
        holder.join()


# -- no worker: the caller's thread delivers ------------------------------------------------


def test_without_a_worker_the_caller_delivers_each_record_itself(
    new_queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    def no_thread(name: str, run: Callable[[], object]) -> None:
        started.append(name)

    monkeypatch.setattr(queue_module, "start_worker", no_thread)
    flushed: list[bool] = []
    queue, consumer = new_queue(Consumer(outcomes=(None, "refused")))
    consumer.during = lambda batch: flushed.append(queue.flush(0))
    assert queue.put((INFO, "i1"))
    queue.put_many([(INFO, "i2"), (INFO, "i3")])
    assert consumer.batches == [[(INFO, "i1")], [(INFO, "i2")], [(INFO, "i3")]]
    assert set(consumer.threads) == {threading.current_thread()}
    assert flushed == [False, False, False]  # the record being delivered is not settled
    assert (queue.offered, queue.accepted, queue.delivered) == (3, 3, 2)
    assert queue.dropped == {"refused": 1}
    assert started == [queue.name]  # tried once, not on every record
    assert queue.flush(0) and queue.join(time.monotonic())
    assert queue.shutdown(1)


# -- a forked child's queue ------------------------------------------------------------------


def test_after_a_fork_the_queue_starts_empty_with_a_worker_of_its_own(new_queue: Any) -> None:
    queue, consumer = new_queue()
    for put in (lambda: queue.put_many([(INFO, "a")]), lambda: queue.put((INFO, "b"))):
        queue.put((INFO, "before"))
        assert queue.shutdown(10)
        old = queue._thread
        queue._after_fork_in_child()  # what a fork's child runs
        assert (queue.offered, queue.accepted, queue.delivered, queue.dropped) == (0, 0, 0, {})
        assert (queue.depth, queue.in_flight, queue._thread) == (0, 0, None)
        put()  # starts the worker
        assert queue.flush(10)
        assert queue._thread is not old and queue._thread is not None
        assert consumer.threads[-1] is queue._thread
        assert (queue.offered, queue.delivered) == (1, 1)
    assert consumer.names() == ["before", "a", "before", "b"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_delivers_its_own_records_and_the_parent_keeps_its_own(
    new_queue: Any,
) -> None:
    gate = threading.Event()
    child_got: list[Item] = []

    def consume(batch: list[Item]) -> None:
        if batch[0][1] == "parent held":
            gate.wait(30)
        child_got.extend(batch)

    queue, _ = new_queue(consume)
    queue.put((INFO, "parent held"))
    queue.put((INFO, "parent queued"))
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            fresh = queue.depth == 0 and queue.offered == 0
            child_got.clear()
            queue.put((INFO, "child"))
            if fresh and queue.flush(10) and child_got == [(INFO, "child")]:
                code = 0
        finally:
            os._exit(code)
    gate.set()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.flush(10)
    assert [name for _, name in child_got] == ["parent held", "parent queued"]


# -- what a spooling queue overrides ----------------------------------------------------------


class Hooked(BatchQueue[Item]):
    """Overrides the hooks as `SpoolingQueue` does: `_idle_wait` answers from `waits`,
    `_replay` and `_taken` are recorded, `_divert` takes records when the queue is full."""

    waits: list[float | None]

    def _idle_wait(self) -> float | None:
        waits = getattr(self, "waits", [])
        return waits.pop(0) if waits else None

    def _replay(self) -> None:
        self.replays.append(threading.current_thread())
        self.replayed.set()

    def _taken(self, batch: list[Item]) -> None:
        self.taken.append(list(batch))

    def _divert(self, item: Item) -> bool:
        self.diverted.append(item)
        return True


def hooked(waits: list[float | None], **options: Any) -> Hooked:
    consumer = Consumer()
    settings = QueueSettings(**{"max_size": 2, "batch_size": 10, "max_delay": 0, **options})
    queue = Hooked.__new__(Hooked)
    queue.waits, queue.replays, queue.taken, queue.diverted = waits, [], [], []
    queue.replayed = threading.Event()
    queue.consumer = consumer
    Hooked.__init__(queue, unique("hooked"), consumer, severity, settings)
    return queue


@pytest.fixture
def hooked_queues() -> Iterator[list[Hooked]]:
    made: list[Hooked] = []
    yield made
    for queue in made:
        queue.shutdown(5)


def test_an_idle_worker_replays_when_told_to_and_waits_as_long_as_told(
    hooked_queues: list[Hooked],
) -> None:
    queue = hooked([0.01, 0])  # wait 10 ms, then replay now
    hooked_queues.append(queue)
    assert queue.replayed.wait(10)
    assert queue.replays == [queue._thread]
    queue.put((INFO, "i1"))
    assert queue.flush(10)
    assert queue.taken == [[(INFO, "i1")]] == queue.consumer.batches
    queue.waits.append(0)  # a replay due at shutdown is done before the worker stops
    queue.replayed.clear()
    assert queue.shutdown(10)
    assert len(queue.replays) == 2


def test_a_full_queue_diverts_what_it_cannot_hold(hooked_queues: list[Hooked]) -> None:
    queue = hooked([])
    hooked_queues.append(queue)
    queue.consumer.passes = 0
    queue.put((INFO, "blocker"))
    queue.consumer.wait_batches(1)
    for name in ("i1", "i2", "i3"):
        assert queue.put((INFO, name))
    assert queue.diverted == [(INFO, "i3")]  # only once the queue is full
    assert (queue.offered, queue.accepted) == (4, 3)  # diverted: counted by the diverter
    queue.consumer.open()
    assert queue.flush(10)


def test_a_worker_is_started_once_and_never_for_a_stopped_queue(
    new_queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[str] = []
    start_worker = queue_module.start_worker

    def counted(name: str, run: Callable[[], object]) -> threading.Thread | None:
        starts.append(name)
        return start_worker(name, run)

    monkeypatch.setattr(queue_module, "start_worker", counted)
    queue, _ = new_queue()
    queue._start()  # running already
    assert len(starts) == 1
    assert queue.shutdown(10)
    queue._after_fork_in_child()
    queue._start()
    queue._start()
    assert len(starts) == 2
    assert queue.shutdown(10)
    queue._after_fork_in_child()
    assert queue.shutdown(10)  # stopped before its first record: no worker at all
    assert not queue.put((INFO, "late"))
    assert len(starts) == 2
    assert queue.dropped == {"shutdown": 1}


class Spilling(BatchQueue[Item]):
    """Accounts for the batch in flight itself at the deadline, as `SpoolingQueue` does (it
    writes it to disk): the base class must not count it a second time."""

    def _stop_for_good(self, thread: threading.Thread | None, drained: bool) -> bool:
        if not self._stopped and self._busy:
            self._written_off = True
            self._settled += self._inflight
            self._count_drop("spilled", self._inflight)
        return super()._stop_for_good(thread, drained)


def test_a_batch_in_flight_a_subclass_accounted_for_is_not_counted_again() -> None:
    consumer = Consumer(held=True)
    settings = QueueSettings(max_size=5, batch_size=3, max_delay=0)
    queue = Spilling(unique("spilling"), consumer, severity, settings)
    try:
        queue.put_many([(INFO, f"b{n}") for n in range(5)])
        consumer.wait_batches(1)  # three in flight, two queued
        assert queue.shutdown(0) is False
        assert queue.dropped == {"spilled": 3, "shutdown_timeout": 2}
    finally:
        consumer.open()
        queue.join(time.monotonic() + 10)
    assert queue.flush(0) and queue.delivered == 0

"""`BatchQueue` driven directly, exactly: the settings it reads, the overflow policies record
by record (which record is shed, by which reason, at the severity boundaries), the sampling
threshold, the batching (`batch_size`, `max_delay`, flushes), what a consumer's outcome counts,
`split_outcome`, the diagnostics and drop alerts, and the GIL hand-over of a crowded queue.

The consumer is a real callable on the queue's real worker thread, held at will, so the
queue's contents are known exactly. Flow control (block, hand-off, flush, shutdown, the
synchronous mode, fork): tests/test_queue_contract_2.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from fapilog.pipeline import queue as queue_module
from fapilog.pipeline.queue import split_outcome
from queue_support import (
    ERROR,
    INFO,
    WARN,
    Consumer,
    Item,
    Listened,
    balanced,
    delivered_after,
    fill,
    held,
)

# -- settings --------------------------------------------------------------------------------


def test_a_new_queue_reads_its_settings_exactly_and_starts_at_zero(new_queue: Any) -> None:
    queue, _ = new_queue(
        max_size=10,
        batch_size=50,
        max_delay=0.3,
        overflow="sample",
        block_timeout=0.7,
        export_timeout=3.5,
        sample_ratio=0.25,
        high_water=0.55,
    )
    assert (queue.max_size, queue.batch_size, queue.max_delay) == (10, 10, 0.3)  # batch <= max
    assert (queue.overflow, queue.block_timeout, queue.export_timeout) == ("sample", 0.7, 3.5)
    assert (queue.sample_ratio, queue.high_water, queue._yield_mark) == (0.25, 5, 7)
    assert (queue.offered, queue.accepted, queue.delivered, queue.dropped) == (0, 0, 0, {})
    assert (queue.depth, queue.in_flight, queue.total_dropped()) == (0, 0, 0)
    assert queue in queue_module._QUEUES  # reinitialised in a forked child
    assert queue.flush(0)  # nothing accepted: nothing to wait for


def test_a_one_record_queue_has_a_high_water_mark_and_yield_mark_of_one(new_queue: Any) -> None:
    queue, _ = new_queue(max_size=1, batch_size=7, high_water=0.5, max_delay_arg=0.0)
    assert (queue.batch_size, queue.high_water, queue._yield_mark) == (1, 1, 1)
    assert queue.max_delay == 0.0


def test_an_explicit_max_delay_overrides_the_settings(new_queue: Any) -> None:
    queue, _ = new_queue(max_delay=0.3, max_delay_arg=2.5)
    assert queue.max_delay == 2.5
    queue, _ = new_queue(max_delay=0.3, max_delay_arg=0.0)
    assert queue.max_delay == 0.0


# -- batching --------------------------------------------------------------------------------


def test_a_single_record_is_delivered_without_a_flush(new_queue: Any) -> None:
    queue, consumer = new_queue()
    assert queue.put((INFO, "only"))
    consumer.wait_batches(1)
    assert consumer.batches == [[(INFO, "only")]]
    assert consumer.threads[0] is queue._thread


def test_a_partial_batch_is_taken_once_max_delay_has_passed(new_queue: Any) -> None:
    queue, consumer = new_queue(max_delay=0.02, batch_size=10)
    queue.put((INFO, "alone"))
    consumer.wait_batches(1)  # no flush: the worker's own timed wait ends
    assert consumer.batches == [[(INFO, "alone")]]


def test_a_batch_that_fills_up_is_taken_at_once_without_waiting_out_max_delay(
    new_queue: Any,
) -> None:
    queue, consumer = new_queue(batch_size=3, max_delay=60)
    for name in ("i1", "i2", "i3"):
        assert queue.put((INFO, name))
    consumer.wait_batches(1)
    assert consumer.batches == [[(INFO, "i1"), (INFO, "i2"), (INFO, "i3")]]


def test_max_delay_gathers_a_batch_and_a_flush_cuts_the_wait_short(new_queue: Any) -> None:
    queue, consumer = new_queue(max_delay=60, batch_size=2)
    queue.put((INFO, "a"))
    queue.put((INFO, "b"))  # completes the batch: the waiting worker is woken
    consumer.wait_batches(1)
    assert consumer.names() == ["a", "b"]
    queue.put((INFO, "c"))
    assert queue.flush(10)  # does not wait out max_delay
    queue.put((INFO, "d"))  # the flush is over: batches gather again
    queue.put((INFO, "e"))
    consumer.wait_batches(3)
    assert consumer.batches == [
        [(INFO, "a"), (INFO, "b")],
        [(INFO, "c")],
        [(INFO, "d"), (INFO, "e")],
    ]
    assert queue.flush(10)
    assert (queue.offered, queue.accepted, queue.delivered) == (5, 5, 5)
    balanced(queue)


def test_put_many_hands_the_worker_whole_batches(new_queue: Any) -> None:
    queue, consumer = new_queue(max_delay=60, batch_size=2, max_size=10)
    queue.put_many([(INFO, "a"), (INFO, "b"), (INFO, "c")])
    assert queue.flush(10)
    assert [len(batch) for batch in consumer.batches] == [2, 1]
    assert (queue.offered, queue.accepted, queue.delivered) == (3, 3, 3)


# -- overflow policies, record by record ---------------------------------------------------


def test_drop_oldest_evicts_the_oldest_non_error_and_warnings_are_not_errors(
    new_queue: Any,
) -> None:
    queue, consumer = held(new_queue, overflow="drop_oldest")
    fill(queue, "e1", "w1", "i1", "e2", "i2")
    assert queue.put((INFO, "i3"))  # w1 goes: the oldest below ERROR
    assert queue.put((ERROR, "e3"))  # i1
    assert queue.dropped == {"queue_full": 2}
    assert delivered_after(queue, consumer) == ["e1", "e2", "i2", "i3", "e3"]
    balanced(queue)


def test_drop_oldest_with_only_errors_queued_sheds_the_oldest_error_for_an_error(
    new_queue: Any,
) -> None:
    queue, consumer = held(new_queue, overflow="drop_oldest")
    fill(queue, "e1", "e2", "e3", "e4", "e5")
    assert not queue.put((ERROR - 1, "just below error"))  # never displaces an error
    assert queue.put((ERROR, "e6"))  # exactly ERROR: the oldest error goes
    assert queue.dropped == {"queue_full": 2}
    assert (queue.offered, queue.accepted) == (8, 7)  # with the blocker
    assert delivered_after(queue, consumer) == ["e2", "e3", "e4", "e5", "e6"]
    balanced(queue)


def test_drop_newest_makes_room_for_an_error_with_the_newest_lesser_record(new_queue: Any) -> None:
    queue, consumer = held(new_queue, overflow="drop_newest")
    fill(queue, "i1", "e1", "e2", "e3", "i2")
    assert queue.put((ERROR, "e4"))  # exactly ERROR: i2, the newest lesser record, goes
    assert queue.put((ERROR, "e5"))  # then i1, the oldest (the last one left)
    assert not queue.put((WARN, "w1"))  # below ERROR: the incoming record is shed
    assert not queue.put((ERROR, "e6"))  # only errors queued: the incoming error is shed
    assert queue.dropped == {"queue_full": 4}
    assert delivered_after(queue, consumer) == ["e1", "e2", "e3", "e4", "e5"]
    balanced(queue)


def test_sample_when_full_sheds_infos_before_warnings_and_warnings_before_errors(
    new_queue: Any,
) -> None:
    queue, consumer = held(new_queue, overflow="sample", sample_ratio=1.0, high_water=1.0)
    fill(queue, "i1", "w1", "i2", "w2", "w3")
    assert queue.put((WARN, "w4"))  # exactly WARN: the newest info (i2) goes
    assert queue.put((ERROR, "e1"))  # an info first (i1), though warnings are newer
    assert not queue.put((WARN, "w5"))  # no info left: a warning does not displace a warning
    assert queue.put((ERROR, "e2"))  # the newest warning (w4) makes room for an error
    assert not queue.put((INFO, "i3"))
    assert queue.dropped == {"queue_full": 5}
    assert delivered_after(queue, consumer) == ["w1", "w2", "w3", "e1", "e2"]
    balanced(queue)


class Draws:
    """Stands in for the queue's `random.Random`: the draws the sampling makes, in order."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_sampling_starts_at_the_high_water_mark_and_spares_warnings(new_queue: Any) -> None:
    queue, consumer = held(
        new_queue, overflow="sample", max_size=10, high_water=0.3, sample_ratio=0.5
    )
    queue._random = Draws(0.5, 0.49, 0.5)  # type: ignore[assignment]
    fill(queue, "i1", "i2", "i3")  # below the mark (3): no draw at all
    assert not queue.put((INFO, "at the mark, drawn 0.5"))  # a draw >= the ratio is shed
    assert queue.put((WARN - 1, "drawn 0.49"))  # below the ratio: kept
    assert queue.put((WARN, "a warning"))  # never drawn for
    assert not queue.put((WARN - 1, "drawn 0.5 again"))
    assert queue._random.values == []  # type: ignore[attr-defined]
    assert queue.dropped == {"sampled": 2}
    assert delivered_after(queue, consumer) == ["i1", "i2", "i3", "drawn 0.49", "a warning"]
    balanced(queue)


def test_the_sampling_draws_from_a_real_random_source(new_queue: Any) -> None:
    queue, consumer = held(
        new_queue, overflow="sample", max_size=50, high_water=0.02, sample_ratio=0.5
    )
    for n in range(40):
        queue.put((INFO, f"i{n}"))
    kept = len(delivered_after(queue, consumer))
    assert 1 < kept < 40  # some kept and some sampled out (odds of failing: 2**-38)
    assert queue.dropped == {"sampled": 40 - kept}


# -- what a consumer's outcome counts -------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "delivered", "dropped"),
    [
        (None, 5, {}),
        ("refused", 0, {"refused": 5}),
        ("", 0, {"export_failed": 5}),
        (("partial", 2), 3, {"partial": 2}),
        (("partial", 0), 5, {}),
        (("too many", 9), 0, {"too many": 5}),
        (("negative", -3), 5, {}),
        (("spooled", 2, [(INFO, "a"), (INFO, "b")]), 3, {"spooled": 2}),
        (([("rejected", 1), ("retried", 5)], 4), 1, {"rejected": 1, "retried": 3}),
        (([("rejected", 1)], 3), 2, {"rejected": 1, "export_failed": 2}),
    ],
)
def test_a_batchs_outcome_is_counted_record_by_record(
    new_queue: Any, outcome: Any, delivered: int, dropped: dict[str, int]
) -> None:
    queue, _ = new_queue(Consumer(outcomes=(outcome,)), batch_size=5)
    queue.put_many([(INFO, f"r{n}") for n in range(5)])  # one batch of 5
    assert queue.flush(10)
    assert (queue.offered, queue.accepted, queue.delivered) == (5, 5, delivered)
    assert queue.dropped == dropped
    balanced(queue)


def test_split_outcome_bounds_the_lost_and_the_retried_records() -> None:
    assert split_outcome("why", 4) == ("why", 4, [])
    assert split_outcome("", 4) == ("export_failed", 4, [])
    assert split_outcome(("r", 2), 5) == ("r", 2, [])
    assert split_outcome(("r", -1), 5) == ("r", 0, [])
    assert split_outcome(("r", 9, (1, 2)), 5) == ("r", 5, [1, 2])
    assert split_outcome(("r", 3, [1, 2, 3, 4]), 5) == ("r", 3, [1, 2, 3])
    reasons = [("a", 1)]
    assert split_outcome((reasons, 1), 1) == (reasons, 1, [])


class Broken(Exception):
    """Not an `Exception` the worker expects: a `BaseException` would do as well."""


@pytest.mark.parametrize("error", [ValueError("bad batch"), KeyboardInterrupt()])
def test_a_raising_consumer_loses_its_batch_says_so_and_the_worker_goes_on(
    new_queue: Any, listened: Listened, error: BaseException
) -> None:
    raised: list[bool] = []

    def consume(batch: list[Item]) -> None:
        if not raised:
            raised.append(True)
            raise error
        survivors.extend(batch)

    survivors: list[Item] = []
    queue, _ = new_queue(consume, batch_size=2)  # type: ignore[arg-type]
    queue.put_many([(INFO, "lost 1"), (INFO, "lost 2")])
    assert queue.flush(10)
    queue.put((INFO, "delivered"))
    assert queue.flush(10)
    assert survivors == [(INFO, "delivered")]
    assert queue.dropped == {"consumer_error": 2}
    assert queue.delivered == 1
    message, _ = listened.wait_for(f"consume:{queue.name}")
    assert message == f"fapilog queue {queue.name!r} failed to process a batch: {error!r}"


def test_a_drop_raises_an_alert_naming_the_queue_the_reason_and_the_counts(
    new_queue: Any, listened: Listened
) -> None:
    queue, _ = new_queue(Consumer(outcomes=(("refused", 3),)), batch_size=5)
    queue.put_many([(INFO, f"r{n}") for n in range(5)])
    assert queue.flush(10)
    message, fields = listened.wait_for(f"alert:records_dropped:{queue.name}:refused")
    assert message == f"fapilog is dropping records: exporter {queue.name!r}, reason refused"
    assert (fields["queue"], fields["reason"]) == (queue.name, "refused")
    assert (fields["dropped"], fields["dropped_total"]) == (3, 3)


# -- a crowded queue hands the GIL to its worker -------------------------------------------


class HandOvers:
    """Records each `hand_over_gil(attempt)` of the queue module, by thread, then hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, threading.Thread]] = []
        self.on_call: Callable[[], None] | None = None

    def __call__(self, attempt: int) -> None:
        self.calls.append((attempt, threading.current_thread()))
        if self.on_call is not None:
            self.on_call()

    def attempts(self) -> list[int]:
        return [attempt for attempt, _ in self.calls]


@pytest.fixture
def hand_overs(monkeypatch: pytest.MonkeyPatch) -> HandOvers:
    recorder = HandOvers()
    monkeypatch.setattr(queue_module, "hand_over_gil", recorder)
    return recorder


def test_a_queue_three_quarters_full_hands_the_gil_over_three_times_at_most(
    new_queue: Any, hand_overs: HandOvers
) -> None:
    queue, consumer = held(new_queue, max_size=8)  # yield mark: 6
    fill(queue, "i1", "i2", "i3", "i4", "i5")
    assert hand_overs.calls == []
    fill(queue, "i6")  # at the mark, the worker held: the queue stays crowded
    assert hand_overs.attempts() == [0, 1, 2]
    assert {thread for _, thread in hand_overs.calls} == {threading.current_thread()}

    def worker_catches_up() -> None:
        consumer.release()
        consumer.wait_batches(2)  # the worker took everything queued (and holds it)

    hand_overs.calls.clear()
    hand_overs.on_call = worker_catches_up
    fill(queue, "i7")
    assert hand_overs.attempts() == [0]  # no longer crowded: no second attempt
    hand_overs.on_call = None
    fill(queue, "i21", "i22", "i23", "i24", "i25")
    assert hand_overs.attempts() == [0]
    queue.put_many([(INFO, "i26")])  # put_many at the mark, as put
    assert hand_overs.attempts() == [0, 0, 1, 2]
    assert delivered_after(queue, consumer)[-1] == "i26"


def test_a_worker_putting_into_its_own_queue_never_hands_over_to_itself(
    new_queue: Any, hand_overs: HandOvers
) -> None:
    queue, consumer = new_queue(max_size=4)  # yield mark: 3

    def put_own(batch: list[Item]) -> None:
        if batch[0][1] == "first":
            for n in range(3):
                queue.put((INFO, f"own {n}"))
            queue.put_many([(INFO, "own many")])

    consumer.during = put_own
    queue.put((INFO, "first"))
    assert queue.flush(10) and queue.flush(10)  # the first batch, then what it put
    assert hand_overs.calls == []
    assert consumer.names() == ["first", "own 0", "own 1", "own 2", "own many"]

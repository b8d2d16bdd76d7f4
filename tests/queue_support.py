"""Helpers of tests/test_queue_contract*.py (a pytest plugin: tests/conftest.py loads it, so
its fixtures `new_queue`, `listened` and `queue_clock` serve each of those files):
real `BatchQueue`s whose consumer, on the queue's real worker thread, holds each batch until
the test lets it go (so the queue's contents are known exactly), fapilog's diagnostics as
they are reported, and a stand-in for the queue module's `time` that can act at the moment a
thread is inside a wait."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fapilog import _diag
from fapilog._levels import ERROR_SEVERITY, WARN_SEVERITY
from fapilog.pipeline import queue as queue_module
from fapilog.pipeline.queue import BatchQueue
from fapilog.settings import QueueSettings

INFO, WARN, ERROR = 9, WARN_SEVERITY, ERROR_SEVERITY
Item = tuple[int, str]
_names = itertools.count()


def unique(prefix: str = "qc") -> str:
    """A queue name of its own: alerts and diagnostics are rate-limited per name."""
    return f"{prefix}-{next(_names)}-{id(object())}"


class Consumer:
    """Records each batch as it is taken, then holds it until a pass is given (`release`);
    returns the next of `outcomes` (None once they run out)."""

    def __init__(self, held: bool = False, outcomes: tuple[Any, ...] = ()) -> None:
        self.cond = threading.Condition()
        self.passes: float = 0 if held else math.inf
        self.batches: list[list[Item]] = []
        self.threads: list[threading.Thread] = []
        self.outcomes = list(outcomes)
        self.during: Callable[[list[Item]], None] | None = None

    def __call__(self, batch: list[Item]) -> Any:
        with self.cond:
            self.batches.append(list(batch))
            self.threads.append(threading.current_thread())
            self.cond.notify_all()
            assert self.cond.wait_for(lambda: self.passes > 0, 30)
            self.passes -= 1
        if self.during is not None:
            self.during(batch)
        return self.outcomes.pop(0) if self.outcomes else None

    def release(self, passes: float = 1) -> None:
        with self.cond:
            self.passes += passes
            self.cond.notify_all()

    def open(self) -> None:
        self.release(math.inf)

    def wait_batches(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.batches) >= count, 10), self.batches

    def names(self) -> list[str]:
        return [name for batch in self.batches for _, name in batch]


def severity(item: Item) -> int:
    return item[0]


def level_of(name: str) -> int:
    return {"i": INFO, "w": WARN, "e": ERROR}[name[0]]


@pytest.fixture
def new_queue() -> Iterator[Callable[..., tuple[BatchQueue[Item], Any]]]:
    """Builds queues (settings as keywords; `max_delay_arg`, `on_stop`, `delivered_so_far`:
    the constructor's own) and shuts them down after the test."""
    made: list[tuple[BatchQueue[Item], Any]] = []

    def build(consumer: Any = None, **options: Any) -> tuple[BatchQueue[Item], Any]:
        consumer = consumer or Consumer()
        extra = {k: options.pop(k, None) for k in ("max_delay_arg", "on_stop", "delivered_so_far")}
        settings = QueueSettings(**{"max_size": 5, "batch_size": 100, "max_delay": 0, **options})
        queue: BatchQueue[Item] = BatchQueue(
            unique(),
            consumer,
            severity,
            settings,
            max_delay=extra["max_delay_arg"],
            on_stop=extra["on_stop"],
            delivered_so_far=extra["delivered_so_far"],
        )
        made.append((queue, consumer))
        return queue, consumer

    yield build
    for queue, consumer in made:
        if isinstance(consumer, Consumer):
            consumer.open()
        queue.shutdown(5)


def held(new_queue: Callable[..., Any], **options: Any) -> tuple[BatchQueue[Item], Consumer]:
    """A queue whose worker holds a first record ("blocker") at the consumer: what is put
    next stays queued until `consumer.release()`."""
    queue, consumer = new_queue(Consumer(held=True), **options)
    assert queue.put((INFO, "blocker"))
    consumer.wait_batches(1)
    return queue, consumer


def fill(queue: BatchQueue[Item], *names: str) -> None:
    for name in names:
        queue.put((level_of(name), name))


def delivered_after(queue: BatchQueue[Item], consumer: Consumer) -> list[str]:
    consumer.open()
    assert queue.flush(10)
    return consumer.names()[1:]  # without the blocker


def balanced(queue: BatchQueue[Any]) -> None:
    assert queue.depth == 0 and queue.in_flight == 0
    assert queue.offered == queue.delivered + queue.total_dropped()


class Listened:
    """fapilog's diagnostics (and the alerts the monitor thread writes through them)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.reports: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, key: str, message: str, fields: dict[str, Any]) -> None:
        with self.cond:
            self.reports.append((key, message, fields))
            self.cond.notify_all()

    def wait_for(self, key: str) -> tuple[str, dict[str, Any]]:
        def found() -> list[tuple[str, str, dict[str, Any]]]:
            return [report for report in self.reports if report[0] == key]

        with self.cond:
            assert self.cond.wait_for(found, 10), self.reports
            _, message, fields = found()[0]
            return message, fields


@pytest.fixture
def listened() -> Iterator[Listened]:
    listener = Listened()
    _diag.add_listener(listener)
    yield listener
    _diag.remove_listener(listener)


class Clock:
    """Stands in for the `time` module inside fapilog.pipeline.queue: the real monotonic
    clock plus `ahead` seconds; `at(thread, n, hook)` runs `hook` at that thread's n-th
    reading from now (1: the next one)."""

    def __init__(self) -> None:
        self.ahead = 0.0
        self.hooks: dict[threading.Thread, list[Any]] = {}

    def at(self, thread: threading.Thread, n: int, hook: Callable[[], object]) -> None:
        self.hooks[thread] = [n, hook]

    def monotonic(self) -> float:
        entry = self.hooks.get(threading.current_thread())
        if entry is not None:
            entry[0] -= 1
            if entry[0] == 0:
                del self.hooks[threading.current_thread()]
                entry[1]()
        return time.monotonic() + self.ahead


@pytest.fixture
def queue_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(queue_module, "time", fake)
    return fake


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """`work()` on a thread of its own (not started): the thread and where its result goes."""
    results: list[object] = []
    return threading.Thread(target=lambda: results.append(work()), daemon=True), results


def finished(thread: threading.Thread) -> bool:
    thread.join(10)
    return not thread.is_alive()


class Unfinished:
    """Stands in for a worker thread that never finishes: records how long it is waited for."""

    def __init__(self) -> None:
        self.waits: list[float | None] = []

    def join(self, timeout: float | None = None) -> None:
        self.waits.append(timeout)

    def is_alive(self) -> bool:
        return True

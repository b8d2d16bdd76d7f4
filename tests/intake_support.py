"""Helpers of tests/test_intake_contract*.py: a real `IntakeQueue` whose consumer can hold
the worker on its first batch (so the queue's contents are known exactly), a stand-in for the
intake module's `time` (and its `hand_over_gil`, and the queue's `_progress` condition) that
record what the intake does, and an `on_alert` callback that waits for the monitor thread."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fapilog._levels import ERROR_SEVERITY, WARN_SEVERITY
from fapilog.pipeline import alerts
from fapilog.pipeline.intake import IntakeQueue
from fapilog.settings import QueueSettings

INFO, WARN, ERROR = 9, WARN_SEVERITY, ERROR_SEVERITY
Item = tuple[int, str]
_names = itertools.count()
I1, I2, I3 = (INFO, "i1"), (INFO, "i2"), (INFO, "i3")
W1, W2, W3 = (WARN, "w1"), (WARN, "w2"), (WARN, "w3")
E1, E2, E3, E4, E5 = ((ERROR, f"e{n}") for n in range(1, 6))


class Consumer:
    """The worker's `consume`: holds on `gate` (open unless `hold`), then keeps the batch."""

    def __init__(self, hold: bool = False) -> None:
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.taken = threading.Event()
        self.batches: list[list[Item]] = []
        self.threads: set[threading.Thread] = set()
        self.hook: Callable[[list[Item]], None] | None = None

    def __call__(self, batch: list[Item]) -> None:
        self.threads.add(threading.current_thread())
        self.taken.set()
        self.gate.wait(30)
        if self.hook is not None:
            self.hook(batch)
        self.batches.append(list(batch))

    @property
    def delivered(self) -> list[str]:
        return [text for batch in self.batches for _, text in batch]


def severity(item: Item) -> int:
    return item[0]


Make = Callable[..., tuple[IntakeQueue[Item], Consumer]]


def queues() -> Iterator[Make]:
    """The `make` fixture's body: `make(hold=False, **queue_settings)` returns a started
    intake and its consumer; with `hold`, the record "first" is already in flight and the
    worker held on it. Every intake made is shut down at the end."""
    made: list[tuple[IntakeQueue[Item], Consumer]] = []

    def build(hold: bool = False, **options: Any) -> tuple[IntakeQueue[Item], Consumer]:
        consumer = Consumer(hold)
        settings = QueueSettings(**{"max_size": 4, "batch_size": 100, **options})
        queue: IntakeQueue[Item] = IntakeQueue(
            f"intake-contract-{next(_names)}", consumer, severity, settings
        )
        made.append((queue, consumer))
        if hold:
            assert queue.put((INFO, "first"))
            assert consumer.taken.wait(10)
        return queue, consumer

    yield build
    for queue, consumer in made:
        consumer.gate.set()
        queue.shutdown(10)


def put_all(queue: IntakeQueue[Item], *items: Item) -> list[bool]:
    return [queue.put(item) for item in items]


class Clock:
    """Stands in for the `time` module inside `fapilog.pipeline.intake`: `monotonic()` stands
    still, each `sleep()` is recorded and moves it by `step` seconds."""

    def __init__(self, step: float = 0.25) -> None:
        self.now = 1_000.0
        self.step = step
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += self.step


class Alerts:
    """An `on_alert` callback: `settle()` returns the drop alerts raised so far about
    `queue` (a marker alert is sent after them through the monitor, and waited for)."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.markers = itertools.count()

    def __call__(self, alert: dict[str, Any]) -> None:
        with self.changed:
            self.alerts.append(alert)
            self.changed.notify_all()

    def settle(self, queue: str) -> list[tuple[str, int, int]]:
        marker = f"intake-marker-{next(self.markers)}"
        alerts.note_drop(marker, "marker", 1, 1)
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(a.get("queue") == marker for a in self.alerts), timeout=10
            )
            found = [
                (a["reason"], a["dropped"], a["dropped_total"])
                for a in self.alerts
                if a.get("queue") == queue and a["alert"] == "records_dropped"
            ]
        return found


class AlertClock:
    """Stands in for `time` inside `fapilog.pipeline.alerts`: each look at the clock is an
    alert interval later, so that no drop alert is held back."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        self.now += alerts.ALERT_INTERVAL
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0


class Draw(random.Random):
    """Every draw is 0.5."""

    def random(self) -> float:
        return 0.5


class Polling:
    """Stands in for `time` inside the intake module: the real clock; `sleep()` is recorded
    and says that a caller is waiting."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.polling = threading.Event()

    monotonic = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.polling.set()
        time.sleep(seconds)


class GilSpy:
    """Wraps the intake's `hand_over_gil`, recording who called it with which attempt."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[threading.Thread, int]] = []
        self.on_call: Any = None

    def __call__(self, attempt: int) -> None:
        self.calls.append((threading.current_thread(), attempt))
        self.real(attempt)
        if self.on_call is not None:
            self.on_call(attempt)


class Progress(threading.Condition):
    """The intake's `_progress` condition, instrumented: records each wait's timeout and,
    `untimed`, waits for a notification only (a missed one would hang the flush)."""

    def __init__(self, lock: Any, untimed: bool) -> None:
        super().__init__(lock)
        self.untimed = untimed
        self.timeouts: list[float | None] = []
        self.test = threading.current_thread()  # its own waits are left alone

    def wait(self, timeout: float | None = None) -> bool:
        if threading.current_thread() is self.test:
            return super().wait(timeout)
        self.timeouts.append(timeout)
        self.notify_all()  # (tells the test)
        return super().wait(None if self.untimed else timeout)


def flush_in_background(queue: Any, timeout: float) -> tuple[threading.Event, list[bool]]:
    results: list[bool] = []
    done = threading.Event()

    def flush() -> None:
        results.append(queue.flush(timeout))
        done.set()

    threading.Thread(target=flush, daemon=True).start()
    return done, results


class Releasing(Clock):
    """The intake's clock: its second look (the drain's, right before it waits for the
    worker) opens the consumer's gate."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.looks = 0

    def monotonic(self) -> float:
        self.looks += 1
        if self.looks == 2:
            self.gate.set()
        return self.now

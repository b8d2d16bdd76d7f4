"""Helpers of the spool tests (tests/test_spool_contract.py, test_spool_dirs_contract.py,
test_spooling_contract.py; a pytest plugin: tests/conftest.py loads it, so its fixtures
`spools` and `queues` serve each of those files): spools on real files, closed after the
test; records of a known size on disk; segments left by a process that is gone; a sink the
test controls for the queue in front of a spool (`SpoolingQueue`), shut down after the test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from fapilog.otel.codec import Tables, encode
from fapilog.otel.logs import LogRecord, ReadableLogRecord
from fapilog.pipeline.segments import frame
from fapilog.pipeline.spool import Spool
from fapilog.pipeline.spooling import SpoolingQueue
from fapilog.settings import QueueSettings, SpoolSettings

NOW = 1_800_000_000_000_000_000
RESOURCE = Resource({"service.name": "api"})
SCOPE = InstrumentationScope("orders", "0.1")
KIB = 1024


@pytest.fixture
def spools() -> Iterator[list[Spool]]:
    made: list[Spool] = []
    yield made
    for spool in made:
        spool.close()


def make(spools: list[Spool], directory: Path, **settings: Any) -> Spool:
    directory.mkdir(parents=True, exist_ok=True)
    spool = Spool(str(directory), SpoolSettings(**settings), "loki")
    spools.append(spool)
    return spool


def rec(n: int, *, size: int = 0, timestamp: int | None = NOW, observed: int | None = NOW) -> Any:
    record = LogRecord(timestamp=timestamp, observed_timestamp=observed, body=f"r{n}" + "x" * size)
    return ReadableLogRecord(log_record=record, resource=RESOURCE, instrumentation_scope=SCOPE)


def bodies(replay: Any) -> list[str]:
    return [str(r.log_record.body)[:4].rstrip("x") for r in replay.records]


def seg_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".seg"))


def sized(n: int, frames: int, *, first: bool = True) -> Any:
    """A record whose frames take exactly `frames` bytes on disk (with its resource and
    scope frames: the first record of a segment)."""
    out: list[bytes] = []
    encode(rec(n), Tables(), out)
    base = sum(len(frame(part)) for part in (out if first else out[-1:]))
    return rec(n, size=frames - base)


def orphan_of(spools: list[Spool], directory: Path, records: list[Any]) -> Path:
    """A segment left by a process that is gone: written by a spool then closed."""
    writer = make(spools, directory)
    writer.write(records)
    writer.close()
    (name,) = seg_files(directory)
    return directory / name


class Sink:
    """An exporter's consumer: delivers while `up`, else fails with `outcome(batch)` (by
    default, the whole batch retryable); waits for `release` before answering a batch (one
    holding the record `hold`, if set)."""

    def __init__(self, *, up: bool = True, answering: bool = True) -> None:
        self.up = up
        self.outcome: Any = lambda batch: ("export_failed", len(batch), list(batch))
        self.got: list[str] = []
        self.attempts = 0
        self.started = threading.Event()
        self.release = threading.Event()
        if answering:
            self.release.set()
        self.changed = threading.Condition()
        self.hold: str | None = None

    def __call__(self, batch: list[Any]) -> Any:
        names = [str(r.log_record.body)[:3].rstrip("x") for r in batch]
        if self.hold is None or self.hold in names:
            self.started.set()
            self.release.wait(10)
        with self.changed:
            self.attempts += 1
            if self.up:
                self.got += names
            self.changed.notify_all()
        return None if self.up else self.outcome(batch)

    def wait_for(self, test: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(test, timeout=10)


@pytest.fixture
def queues(spools: list[Spool]) -> Iterator[list[SpoolingQueue]]:
    made: list[SpoolingQueue] = []
    yield made
    for queue in made:
        queue.shutdown(5)


def queue_for(
    queues: list[SpoolingQueue], spool: Spool, sink: Sink, max_size: int = 100, **options: Any
) -> SpoolingQueue:
    settings = QueueSettings(max_size=max_size, batch_size=10)
    queue = SpoolingQueue(
        "loki", sink, lambda record: 9, settings, spool=spool, max_delay=0, **options
    )
    queues.append(queue)
    return queue


def settled(queue: SpoolingQueue, test: Callable[[], bool]) -> bool:
    """Wait until `test()` holds when the queue's worker is done with a batch."""
    with queue._lock:
        return queue._progress.wait_for(test, timeout=10)


def recs(*numbers: int, size: int = 0) -> list[Any]:
    return [rec(n, size=size) for n in numbers]


def with_a_backlog(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path, *numbers: int
) -> tuple[Sink, Spool, SpoolingQueue]:
    """A queue whose sink fails: the records `numbers` go to disk (the flush says so)."""
    sink = Sink(up=False)
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    queue.put_many(recs(*numbers))
    assert not queue.flush(5)
    return sink, spool, queue

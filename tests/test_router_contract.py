"""The router's contract with exporters and with `fapilog.stats()`, driven on real
`ExportProcessor`s (real queues, real worker threads):

- what one export call reports back to its queue (delivered, lost whole or in part, why)
  and the figures and diagnostics it leaves behind (`export_seconds`, slow exports, the
  failing exporter's alert);
- an exporter's optional extras (partial loss, progress, abort, details);
- flush, shutdown, abort: the one-deadline shutdown of several exporters, the final
  drain's extra time for a healthy exporter.

The rest (spool, bounded calls, the Router, the routes) is in test_router_contract_2.py,
which shares this file's helpers.
"""

from __future__ import annotations

import threading
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from fapilog import _diag
from fapilog.otel.logs import (
    LogRecordExporter,
    LogRecordExportResult,
    ReadableLogRecord,
    ReadWriteLogRecord,
    readable,
)
from fapilog.pipeline import router as router_module
from fapilog.pipeline.router import (
    ExportProcessor,
    _record_severity,
    shutdown_processors,
)
from fapilog.pipeline.spool import Spool
from fapilog.settings import QueueSettings

SUCCESS, FAILURE = LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE


class Exporter(LogRecordExporter):
    """Records what it is given; `result` is what export returns, `raises` what it raises;
    with `gate`, each export first waits for it (and says so on `entered`)."""

    def __init__(self, result: Any = SUCCESS, raises: Exception | None = None) -> None:
        self.result = result
        self.raises = raises
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.batches: list[list[ReadableLogRecord]] = []
        self.flushes: list[int] = []
        self.shutdowns = 0
        self.seen_began: list[float | None] = []
        self.processor: ExportProcessor | None = None

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self.processor is not None:
            self.seen_began.append(self.processor.export_began)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(batch))
        if self.raises is not None:
            raise self.raises
        return self.result

    def shutdown(self) -> None:
        self.shutdowns += 1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushes.append(timeout_millis)
        return True

    def bodies(self) -> list[Any]:
        return [record.log_record.body for batch in self.batches for record in batch]


def writable(body: Any = "m", severity: SeverityNumber | None = SeverityNumber.INFO) -> Any:
    log_record = LogRecord(body=body, severity_number=severity, attributes={})
    return ReadWriteLogRecord(log_record, instrumentation_scope=InstrumentationScope("app"))


def record(body: Any = "m", severity: SeverityNumber | None = SeverityNumber.INFO) -> Any:
    return readable(writable(body, severity))


def made_processors() -> Iterator[Callable[..., ExportProcessor]]:
    """(the `make` fixture's body)"""
    made: list[tuple[ExportProcessor, Exporter]] = []

    def build(exporter: Exporter, spool: Spool | None = None, **settings: Any) -> ExportProcessor:
        options = {"max_delay": 0, **settings}
        name = f"exp_{uuid.uuid4().hex[:8]}"
        processor = ExportProcessor(name, exporter, QueueSettings(**options), spool=spool)
        exporter.processor = processor
        made.append((processor, exporter))
        return processor

    yield build
    for processor, exporter in made:
        if exporter.gate is not None:
            exporter.gate.set()
        processor.shutdown(5)
        if processor.spool is not None:
            processor.spool.close()


def diagnostics() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """(the `reports` fixture's body)"""
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def listen(key: str, message: str, fields: dict[str, Any]) -> None:
        seen.append((key, message, dict(fields)))

    _diag.reset()
    _diag.add_listener(listen)
    yield seen
    _diag.remove_listener(listen)


@pytest.fixture
def make() -> Iterator[Callable[..., ExportProcessor]]:
    """`make(exporter, spool=None, **queue settings)`: an ExportProcessor under a fresh
    name, shut down (its gate opened) at the end of the test."""
    yield from made_processors()


@pytest.fixture
def reports() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """fapilog's diagnostics written during the test: (key, message, fields)."""
    yield from diagnostics()


def clock(monkeypatch: pytest.MonkeyPatch, *, monotonic: float, perf: list[float]) -> None:
    """The router's clock: `time.monotonic()` stands still, `time.perf_counter()` returns
    `perf`'s values in turn."""
    ticks = iter(perf)
    fake = types.SimpleNamespace(monotonic=lambda: monotonic, perf_counter=lambda: next(ticks))
    monkeypatch.setattr(router_module, "time", fake)


# -- one export call ---------------------------------------------------------------------


def test_a_record_without_a_severity_ranks_lowest_for_shedding() -> None:
    assert _record_severity(record(severity=None)) == 0
    assert _record_severity(record(severity=SeverityNumber.ERROR)) == 17


def test_a_delivered_export_resets_the_failure_streak(make: Any) -> None:
    exporter = Exporter(FAILURE)
    processor = make(exporter)
    batch = [record("a"), record("b")]
    assert processor._export(batch) == ("export_failed", 2)
    assert processor._export(batch) == ("export_failed", 2)
    assert (processor.failures, processor.consecutive_failures) == (2, 2)
    assert not processor.is_working()
    exporter.result = SUCCESS
    assert processor._export(batch) is None
    assert (processor.failures, processor.consecutive_failures) == (2, 0)
    assert processor.is_working()
    # the export in flight is known while it runs, and only then
    assert exporter.seen_began[0] is not None and processor.export_began is None


def test_an_exporter_that_raises_loses_the_batch_and_the_worker_goes_on(make: Any) -> None:
    processor = make(Exporter(raises=ValueError("boom")))
    assert processor._export([record()]) == ("export_failed", 1)
    assert processor.failures == 1 and processor.export_began is None


def test_an_export_slower_than_export_timeout_is_reported(
    make: Any, reports: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = make(Exporter(), export_timeout=1.0)
    clock(monkeypatch, monotonic=50.0, perf=[10.0, 11.0, 20.0, 22.5])
    assert processor._export([record()]) is None  # exactly export_timeout: not slow
    assert processor._export([record()]) is None
    slow = [(key, message, fields) for key, message, fields in reports if "slow" in key]
    assert slow == [
        (
            f"export-slow:{processor.name}",
            f"fapilog exporter {processor.name!r} took 2.5 s for one export, more than "
            "export_timeout (1.0 s)",
            {"exporter": processor.name},
        )
    ]
    assert processor.export_seconds == 3.5


def test_stats_count_export_seconds_to_the_microsecond(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = make(Exporter())
    clock(monkeypatch, monotonic=50.0, perf=[1.0, 1.1234567])
    processor._export([record()])
    assert processor.stats()["export_seconds"] == 0.123457


def test_an_export_in_flight_longer_than_stuck_after_is_not_working(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = make(Exporter())
    processor.export_began = 100.0
    clock(monkeypatch, monotonic=100.0 + router_module.STUCK_AFTER, perf=[])
    assert processor.is_working()  # exactly STUCK_AFTER: not yet
    clock(monkeypatch, monotonic=100.5 + router_module.STUCK_AFTER, perf=[])
    assert not processor.is_working()


class Lossy(Exporter):
    """Fails part of a batch and says how many records, and why (PartialLoss)."""

    def __init__(self, dropped: Any, reason: Any = None, reasons: Any = None) -> None:
        super().__init__(FAILURE)
        self.last_export_dropped = dropped
        self.last_export_reason = reason
        self.last_export_reasons = reasons


@pytest.mark.parametrize(
    ("exporter", "outcome"),
    [
        (Lossy(1), ("export_failed", 1)),
        (Lossy(0, "too_long"), ("too_long", 0)),
        (Lossy(2, ""), ("export_failed", 2)),
        (Lossy(1, "too_long", {"a": 1, "b": "2"}), ([("a", 1), ("b", 2)], 1)),
        (Lossy(1, None, [("c", 1)]), ([("c", 1)], 1)),
        (Lossy(1, "too_long", {}), ("too_long", 1)),
        (Lossy(3), ("export_failed", 3)),  # not fewer than the batch: the whole batch
        (Lossy(-1), ("export_failed", 3)),
        (Lossy(True), ("export_failed", 3)),  # not an int: the whole batch
        (Lossy(None), ("export_failed", 3)),
    ],
)
def test_an_exporter_says_how_many_records_of_a_failed_export_it_lost_and_why(
    make: Any, exporter: Lossy, outcome: Any
) -> None:
    processor = make(exporter)
    assert processor._export([record(n) for n in range(3)]) == outcome


def test_what_a_partly_lost_export_leaves_in_stats(make: Any) -> None:
    exporter = Lossy(2, "unknown_outcome")
    processor = make(exporter)
    processor.put_many([record(n) for n in range(3)])  # one batch
    assert processor.force_flush(5)
    assert processor.stats() == {
        "offered": 3,
        "exported": 1,
        "dropped": 0,  # a fate not known is not a loss: a term of its own
        "dropped_by_reason": {},
        "queued": 0,
        "in_flight": 0,
        "accepted": 3,
        "capacity": 1000,
        "filtered": 0,
        "export_failures": 1,
        "export_seconds": processor.stats()["export_seconds"],
        "unknown_outcome": 2,
        "spooled": 0,
        "adopted": 0,
    }
    assert processor.exported == 1
    exporter.last_export_reason = "too_long"
    processor.put(record("d"))
    assert processor.force_flush(5)
    figures = processor.stats()
    assert (figures["dropped"], figures["dropped_by_reason"]) == (1, {"too_long": 1})
    assert figures["unknown_outcome"] == 2 and figures["export_failures"] == 2


def test_a_failing_exporter_raises_an_alert_naming_the_error(make: Any, reports: Any) -> None:
    processor = make(Exporter(FAILURE))
    batch = [record(), record()]
    for _ in range(3):
        processor._export(batch)
    processor.exporter.raises = ValueError("boom")
    for _ in range(3):
        processor._export(batch)
    pause = threading.Event()  # never set: a bounded wait between looks
    for _ in range(500):  # the alert monitor's thread writes it
        key = f"alert:exporter_failing:{processor.name}"
        alerts = [fields for said, _, fields in reports if said == key]
        if alerts:
            break
        pause.wait(0.02)
    (alert,) = alerts
    assert alert["exporter"] == processor.name
    assert alert["error"] == f"export returned {FAILURE!r}"
    assert (alert["records"], alert["consecutive_failures"]) == (2, 3)


def alerts_named(reports: Any, key: str) -> list[dict[str, Any]]:
    """The alerts `key` the monitor thread has written (waits for the first, bounded)."""
    pause = threading.Event()  # never set: a bounded wait between looks
    for _ in range(500):
        found = [fields for said, _, fields in reports if said == key]
        if found:
            return found
        pause.wait(0.02)
    return []


def test_a_raising_exporters_alert_names_the_exception(make: Any, reports: Any) -> None:
    processor = make(Exporter(raises=ValueError("boom")))
    for _ in range(3):
        processor._export([record()])
    (alert,) = alerts_named(reports, f"alert:exporter_failing:{processor.name}")
    assert alert["error"] == "ValueError('boom')"


def test_an_exporter_that_exports_again_raises_the_recovered_alert(make: Any, reports: Any) -> None:
    processor = make(Exporter(FAILURE))
    for _ in range(3):
        processor._export([record()])
    assert alerts_named(reports, f"alert:exporter_failing:{processor.name}")
    processor.exporter.result = SUCCESS
    assert processor._export([record()]) is None
    (alert,) = alerts_named(reports, f"alert:exporter_recovered:{processor.name}")
    assert alert["exporter"] == processor.name


class Counting(Exporter):
    """Says how many records it lost (PartialLoss), and nothing about why."""

    def __init__(self, result: Any) -> None:
        super().__init__(result)
        self.last_export_dropped = 0


def test_an_exporter_counting_its_losses_without_reasons_succeeds_and_fails_plainly(
    make: Any,
) -> None:
    processor = make(Counting(SUCCESS))
    assert processor._export([record(), record()]) is None
    processor.exporter.result = FAILURE
    processor.exporter.last_export_dropped = 1
    assert processor._export([record(), record()]) == ("export_failed", 1)


# -- flush, shutdown, abort ----------------------------------------------------------------


def test_force_flush_delivers_then_flushes_the_exporter_with_the_time_left(make: Any) -> None:
    exporter = Exporter()
    processor = make(exporter)
    processor.put(record("a"))
    assert processor.force_flush(5)
    assert exporter.bodies() == ["a"]
    (millis,) = exporter.flushes
    assert 2500 < millis <= 5000
    assert processor.force_flush(0.5)
    assert 0 < exporter.flushes[1] <= 500
    assert processor.force_flush(0)  # no time left: the exporter is not asked
    assert len(exporter.flushes) == 2


def test_an_exporter_whose_force_flush_raises_is_reported_by_name(make: Any, reports: Any) -> None:
    class Raising(Exporter):
        def force_flush(self, timeout_millis: int = 30000) -> bool:
            raise RuntimeError("no")

    processor = make(Raising())
    assert processor.force_flush(5) is True  # what it was given is delivered
    name = f"{processor.name}-flush"
    assert (f"call:{name}", f"fapilog: {name} raised RuntimeError('no')", {}) in reports


def test_force_flush_reports_a_batch_still_in_the_exporters_hands(make: Any) -> None:
    exporter = Exporter()
    exporter.gate = threading.Event()
    processor = make(exporter)
    processor.put(record())
    assert exporter.entered.wait(5)
    assert processor.force_flush(0.05) is False
    exporter.gate.set()
    assert processor.force_flush(5) is True


def test_shutdown_delivers_what_is_queued_then_shuts_the_exporter_down_once(make: Any) -> None:
    exporter = Exporter()
    exporter.gate = threading.Event()
    processor = make(exporter, batch_size=1)
    for body in "abc":
        processor.put(record(body))
    assert exporter.entered.wait(5)
    exporter.gate.set()
    assert processor.shutdown(5) is True
    assert exporter.bodies() == ["a", "b", "c"] and exporter.shutdowns == 1
    assert processor.shutdown(5) is True  # a second time: nothing more to do
    assert exporter.shutdowns == 1


def test_an_exporter_whose_shutdown_raises_fails_the_shutdown(make: Any, reports: Any) -> None:
    class Raising(Exporter):
        def shutdown(self) -> None:
            raise RuntimeError("no")

    assert make(Raising()).shutdown(5) is False


class Stuck(Exporter):
    """An export that never returns by itself; with `abortable`, `abort()` ends it."""

    def __init__(self, *, delivered: int | None = None) -> None:
        super().__init__(FAILURE)
        self.gate = threading.Event()
        if delivered is not None:
            self.export_progress = delivered


class Abortable(Stuck):
    def __init__(self, raises: Exception | None = None) -> None:
        super().__init__()
        self.aborts = 0
        self.abort_raises = raises

    def abort(self) -> None:
        self.aborts += 1
        if self.abort_raises is not None:
            raise self.abort_raises
        assert self.gate is not None
        self.gate.set()


def test_at_the_deadline_a_stuck_export_counts_as_dropped_and_what_it_delivered_not(
    make: Any,
) -> None:
    exporter = Stuck(delivered=2)  # Progress: it got 2 records of 3 through
    processor = make(exporter)
    processor.put_many([record(n) for n in range(3)])  # one batch
    assert exporter.entered.wait(5)
    assert processor.abort() is False  # it cannot be told to give up
    assert processor.shutdown(0.05) is False
    figures = processor.stats()
    assert (figures["exported"], figures["dropped_by_reason"]) == (2, {"shutdown_timeout": 1})


def test_every_stuck_exporter_is_told_to_abort_and_given_a_grace_period(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router_module, "ABORT_GRACE", 5.0)  # (a loaded machine)
    first, second = Abortable(), Abortable()
    processors = [make(first), make(second)]
    for processor in processors:
        processor.put(record())
    assert first.entered.wait(5) and second.entered.wait(5)
    assert shutdown_processors(processors, 0.05) is True
    assert (first.aborts, second.aborts) == (1, 1)
    for processor in processors:  # returned within the grace: its own failure, not the deadline
        assert processor.stats()["dropped_by_reason"] == {"export_failed": 1}


def test_an_exporter_already_shutting_down_elsewhere_is_waited_for_under_the_deadline(
    make: Any,
) -> None:
    """(A reconfiguration drains the exporters it replaced on a thread of its own; the
    process's shutdown waits for them too.)"""
    exporter = Exporter()
    exporter.gate = threading.Event()
    processor = make(exporter)
    processor.put(record("last"))
    assert exporter.entered.wait(5)
    retiring = threading.Thread(target=processor.shutdown, args=(30,), daemon=True)
    retiring.start()
    while not processor._shutdown:
        exporter.entered.wait(0.005)
    results: list[bool] = []
    final = threading.Thread(target=lambda: results.append(shutdown_processors([processor], 30)))
    final.start()
    final.join(0.2)
    assert final.is_alive()  # waiting for the export in flight
    exporter.gate.set()
    final.join(10)
    retiring.join(10)
    assert results == [True] and exporter.bodies() == ["last"]


def test_an_exporter_shutting_down_elsewhere_still_stuck_at_the_deadline_is_written_off(
    make: Any,
) -> None:
    exporter = Stuck()
    processor = make(exporter)
    processor.put(record())
    assert exporter.entered.wait(5)
    retiring = threading.Thread(target=processor.shutdown, args=(30,), daemon=True)
    retiring.start()
    while not processor._shutdown:
        exporter.entered.wait(0.005)
    assert shutdown_processors([processor], 0.05) is False
    assert processor.stats()["dropped_by_reason"] == {"shutdown_timeout": 1}
    exporter.gate.set()
    retiring.join(10)
    assert processor.stats()["dropped_by_reason"] == {"shutdown_timeout": 1}  # counted once


def test_an_abort_that_raises_is_reported_and_counts_as_not_told(make: Any, reports: Any) -> None:
    exporter = Abortable(RuntimeError("no"))
    processor = make(exporter)
    assert processor.abort() is False
    assert (f"abort:{processor.name}", f"fapilog: {processor.name}.abort() raised "
            "RuntimeError('no')", {}) in reports  # fmt: skip
    healthy = make(Abortable())
    assert healthy.abort() is True and healthy.exporter.aborts == 1


def test_the_final_drain_gives_a_healthy_exporter_its_extra_time(make: Any) -> None:
    exporter = Exporter()
    exporter.gate = threading.Event()
    processor = make(exporter)
    processor.put(record("late"))
    assert exporter.entered.wait(5)
    results: list[bool] = []
    later = router_module.time.monotonic() + 10
    drain = threading.Thread(
        target=lambda: results.append(shutdown_processors([processor], 0, working_until=later))
    )
    drain.start()
    while not processor._shutdown:  # the deadline has passed: only the extra time is left
        exporter.entered.wait(0.005)
    exporter.gate.set()
    drain.join(10)
    assert results == [True] and exporter.bodies() == ["late"]


@pytest.mark.parametrize(("timeout", "deadline"), [(2.5, 102.5), (0, 100.0), (-3, 100.0)])
def test_the_shutdown_deadline_is_the_timeout_from_now_and_never_in_the_past(
    make: Any, monkeypatch: pytest.MonkeyPatch, timeout: float, deadline: float
) -> None:
    processor = make(Exporter())
    waits: list[tuple[str, float]] = []

    def joined(until: float) -> bool:
        waits.append(("join", until))
        return True

    def finished(until: float) -> bool:
        waits.append(("finish", until))
        return True

    monkeypatch.setattr(processor.queue, "join", joined)
    monkeypatch.setattr(processor.queue, "finish_shutdown", finished)
    clock(monkeypatch, monotonic=100.0, perf=[])
    assert shutdown_processors([processor], timeout) is True
    assert waits == [("join", deadline), ("finish", deadline)]


@pytest.mark.parametrize(("spooled", "until"), [(False, 102.5), (True, 100.0)])
def test_a_failing_exporter_is_waited_for_unless_it_has_a_spool_to_take_what_it_holds(
    make: Any, monkeypatch: pytest.MonkeyPatch, spooled: bool, until: float
) -> None:
    processor = make(Exporter())
    joins: list[float] = []

    def joined(deadline: float) -> bool:
        joins.append(deadline)
        return True

    monkeypatch.setattr(processor.queue, "join", joined)
    monkeypatch.setattr(processor, "is_working", lambda: False)
    spool = types.SimpleNamespace(close=lambda: None)  # (only its presence is read)
    monkeypatch.setattr(processor, "spool", spool if spooled else None)
    clock(monkeypatch, monotonic=100.0, perf=[])
    shutdown_processors([processor], 2.5, working_until=200.0)
    assert joins == [until]


def test_without_extra_time_the_deadline_cuts_a_healthy_export_off(make: Any) -> None:
    exporter = Exporter()
    exporter.gate = threading.Event()
    processor = make(exporter)
    processor.put(record("late"))
    assert exporter.entered.wait(5)
    assert shutdown_processors([processor], 0) is False
    assert processor.stats()["dropped_by_reason"] == {"shutdown_timeout": 1}


def test_an_exporters_own_figures_are_shown_and_a_failure_to_give_them_is_reported(
    make: Any, reports: Any
) -> None:
    class Detailed(Exporter):
        def __init__(self) -> None:
            super().__init__()
            self.figures: Any = {"requests": 3}

        def stats(self) -> dict[str, Any]:
            if isinstance(self.figures, Exception):
                raise self.figures
            return dict(self.figures)

    exporter = Detailed()
    processor = make(exporter)
    assert processor.stats()["details"] == {"requests": 3}
    exporter.figures = RuntimeError("no")
    figures = processor.stats()
    assert "details" not in figures and "spool" not in figures
    key = f"stats:{processor.name}"
    assert (key, f"fapilog: {processor.name}.stats() raised RuntimeError('no')", {}) in reports


def test_a_forked_child_starts_each_exporter_with_clean_figures(make: Any) -> None:
    processor = make(Exporter(FAILURE))
    processor._export([record()])
    processor.export_began = 1.0
    router_module._reinit_after_fork()
    assert (processor.failures, processor.consecutive_failures) == (0, 0)
    assert (processor.export_seconds, processor.export_began) == (0.0, None)

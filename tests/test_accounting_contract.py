"""`fapilog.stats()`'s arithmetic (`fapilog.pipeline.accounting`): what each exporter is
charged of what the intake shed during its life, how a replaced exporter's figures are
merged into its successor's, and which figures `unbalanced()` reports.

Driven on real `ExportProcessor`s (real queues and workers) with the intake's marks set as
a configuration sets them, and through `configure_logging()` for the whole picture.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import fapilog
from fapilog import configure_logging, log
from fapilog._state import STATE
from fapilog.capture import noise
from fapilog.capture.recorder import TOTALS
from fapilog.otel.logs import (
    LogRecordExporter,
    LogRecordExportResult,
    LogRecordProcessor,
    ReadableLogRecord,
)
from fapilog.pipeline.accounting import (
    IntakeMark,
    _exporter_figures,
    _merge,
    intake_mark,
    unbalanced,
)
from fapilog.pipeline.router import ExportProcessor
from fapilog.settings import QueueSettings


class Exporter(LogRecordExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.count += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@pytest.fixture
def processor() -> Iterator[ExportProcessor]:
    made = ExportProcessor(f"exp_{uuid.uuid4().hex[:8]}", Exporter(), QueueSettings(max_size=7))
    yield made
    made.shutdown(5)


def test_an_intake_mark_starts_at_zero() -> None:
    mark = IntakeMark()
    assert (mark.offered, mark.dropped) == (0, {})
    assert IntakeMark().dropped is not mark.dropped  # each its own
    given = {"queue_full": 2}
    assert IntakeMark(5, given).dropped is given


def test_without_a_bridge_the_intake_has_offered_and_dropped_nothing() -> None:
    assert STATE.bridge is None
    mark = intake_mark()
    assert (mark.offered, mark.dropped) == (0, {})


def test_an_exporter_is_charged_what_the_intake_shed_during_its_life(
    processor: ExportProcessor,
) -> None:
    processor.intake_start = IntakeMark(10, {"queue_full": 2, "block_timeout": 1})
    processor.intake_end = IntakeMark(15, {"queue_full": 5, "block_timeout": 1, "emit_error": 2})
    figures = _exporter_figures(processor, IntakeMark(99, {"queue_full": 50}), False)
    # block_timeout shed nothing while it received records: not named
    assert figures["dropped_by_reason"] == {"intake_queue_full": 3, "intake_emit_error": 2}
    assert (figures["emitted"], figures["dropped"]) == (5, 5)
    assert (figures["queued"], figures["in_flight"], figures["capacity"]) == (0, 0, 7)


def test_the_current_exporter_is_charged_up_to_now(processor: ExportProcessor) -> None:
    processor.intake_start = IntakeMark(4, {"queue_full": 1})
    now = IntakeMark(9, {"queue_full": 3, "sampled": 1})
    figures = _exporter_figures(processor, now, True)
    assert figures["dropped_by_reason"] == {"intake_queue_full": 2, "intake_sampled": 1}
    assert (figures["emitted"], figures["dropped"]) == (5, 3)


def test_a_replaced_exporters_figures_are_added_to_its_successors() -> None:
    current = {
        "exported": 2,
        "dropped": 1,
        "dropped_by_reason": {"queue_full": 1},
        "capacity": 10,
        "details": {"requests": 1},
    }
    retired = {
        "exported": 5,
        "dropped": 4,
        "dropped_by_reason": {"queue_full": 3, "export_failed": 1},
        "capacity": 99,
        "details": {"requests": 7},
        "spool": {"pending": 3},
    }
    _merge(current, retired)
    assert current == {
        "exported": 7,
        "dropped": 5,
        "dropped_by_reason": {"queue_full": 4, "export_failed": 1},
        "capacity": 10,  # the current queue's
        "details": {"requests": 1},  # the current exporter's own figures
        "spool": {"pending": 3},  # none of its own: the replaced one's
    }


BALANCED = {
    "emitted": 3, "adopted": 0, "exported": 3, "dropped": 0, "queued": 0, "in_flight": 0,
    "spooled": 0, "filtered": 0, "unknown_outcome": 0,
}  # fmt: skip


@pytest.mark.parametrize("term", [term for term in BALANCED if term != "emitted"])
def test_every_term_counts_in_the_balance(term: str) -> None:
    wrong = BALANCED | {term: BALANCED[term] + 1}
    found = unbalanced({"exporters": {"ok": dict(BALANCED), "off": wrong}})
    assert found == {"off": wrong}


def test_a_balanced_recorder_is_not_reported_and_an_unbalanced_one_is() -> None:
    recorder = {"captured": 6, "held": 1, "released": 2, "discarded": 1, "overflowed": 2}
    assert unbalanced({"exporters": {}, "recorder": recorder}) == {}
    for term in ("held", "released", "discarded", "overflowed"):
        off = recorder | {term: recorder[term] + 1}
        assert unbalanced({"exporters": {}, "recorder": off}) == {"recorder": off}


def test_stats_of_a_configured_pipeline_name_every_total(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    exporter = Exporter()
    configure_logging(exporters=[exporter_named(exporter)], queue={"max_size": 50})
    for n in range(4):
        log.info("n", n=n)
    assert fapilog.force_flush(10)
    figures = fapilog.stats()
    assert (figures["emitted"], figures["exported"], exporter.count) == (4, 4, 4)
    totals = ("dropped", "queued", "in_flight", "spooled", "filtered", "unknown_outcome")
    assert [figures[term] for term in (*totals, "adopted")] == [0] * 7
    assert figures["intake"] == {
        "accepted": 4,
        "dropped_by_reason": {},
        "queued": 0,
        "in_flight": 0,
        "capacity": 50,
    }
    assert figures["enricher_failures"] == {}
    assert (figures["unconfigured_dropped"], figures["abandoned_processors"]) == (0, 0)
    assert figures["recorder"] == TOTALS.figures()
    assert {key: figures[key] for key in noise.figures()} == noise.figures()
    others = ("intake", "exporters", "enricher_failures", "unconfigured_dropped", "recorder")
    named = [*totals, "emitted", "exported", "adopted", *others, "abandoned_processors"]
    assert sorted(figures) == sorted([*named, *noise.figures()])


class Holding(LogRecordProcessor):
    """An application's processor after fapilog's Router, on the bridge's worker: holds
    that worker on a record of body "hold" until `gate` opens (inert once it has)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.holding = threading.Event()

    def on_emit(self, log_record: Any) -> None:
        if log_record.log_record.body == "hold" and not self.gate.is_set():
            self.holding.set()
            self.gate.wait(30)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Gated(Exporter):
    """Holds its first export until `gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.exporting = threading.Event()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.exporting.set()
        self.gate.wait(30)
        return super().export(batch)


def test_what_waits_in_the_intake_counts_for_the_current_exporter(
    exporter_named: Callable[[LogRecordExporter], str],
) -> None:
    """The exporter held inside an export of one record, the bridge's worker held while it
    emits another, three more waiting in the intake: each is counted once for the exporter,
    as queued or in flight, and the figures add up while the pipeline stands still."""
    exporter = Gated()
    name = exporter_named(exporter)
    configure_logging(exporters=[name], queue={"max_delay": 0})
    assert STATE.bridge is not None and STATE.pipeline is not None
    holding = Holding()
    STATE.pipeline.provider.add_log_record_processor(holding)
    try:
        log.info("first")
        assert exporter.exporting.wait(10)
        log.info("hold")
        assert holding.holding.wait(10)
        for n in range(3):
            log.info("waiting", n=n)
        figures = fapilog.stats()
        mine = figures["exporters"][name]
        assert (mine["emitted"], mine["queued"], mine["in_flight"]) == (5, 3, 2)
        assert (figures["queued"], figures["in_flight"]) == (3, 2)
        assert (figures["intake"]["queued"], figures["intake"]["in_flight"]) == (3, 1)
        assert unbalanced(figures) == {}
    finally:
        holding.gate.set()
        exporter.gate.set()
    assert fapilog.force_flush(10) and exporter.count == 5

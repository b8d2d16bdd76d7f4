"""The router's contract, continued (helpers from test_router_contract.py):

- a disk spool behind an exporter: what a failed export gives it to retry, its figures;
- bounded calls into an exporter (`call_bounded`);
- the `Router`: the collecting of a batch's records and their hand-over to each exporter
  in order, a foreign record's request id, with and without a bridge;
- the per-exporter levels' routing decisions (`fapilog.pipeline.routes`).
"""

from __future__ import annotations

import threading
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from structlog.contextvars import bind_contextvars, clear_contextvars

import fapilog
from fapilog._state import STATE
from fapilog.pipeline import router as router_module
from fapilog.pipeline.router import (
    ExportProcessor,
    Router,
    call_bounded,
    collect_batch,
    shutdown_processors,
)
from fapilog.pipeline.routes import _CACHE_AT_MOST, Routes
from fapilog.pipeline.spool import Spool
from fapilog.pipeline.spooling import SpoolingQueue
from fapilog.settings import QueueSettings
from fapilog.settings.spool import SpoolSettings
from queue_support import Unfinished
from test_router_contract import (
    FAILURE,
    Exporter,
    Lossy,
    clock,
    diagnostics,
    made_processors,
    record,
    writable,
)


@pytest.fixture
def make() -> Iterator[Callable[..., ExportProcessor]]:
    """`make(exporter, spool=None, **queue settings)` (see test_router_contract.py)."""
    yield from made_processors()


@pytest.fixture
def reports() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    yield from diagnostics()


# -- a spool behind the exporter -----------------------------------------------------------


class Retrying(Exporter):
    """Says which records of a failed export a later attempt may deliver (Retryable)."""

    last_export_retry: Any = None


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    (tmp_path / "spool").mkdir()
    return Spool(str(tmp_path / "spool"), SpoolSettings(), f"s_{uuid.uuid4().hex[:6]}")


def test_a_spooled_exporter_is_told_so(make: Any, spool: Spool) -> None:
    exporter = Exporter()
    exporter.spooled = False  # type: ignore[attr-defined]
    make(exporter, spool=spool)
    assert exporter.spooled is True  # type: ignore[attr-defined]
    plain = Exporter()
    plain.spooled = False  # type: ignore[attr-defined]
    make(plain)
    assert plain.spooled is False  # type: ignore[attr-defined]


def test_a_spooled_exporters_queue_is_built_as_a_plain_ones(spool: Spool) -> None:
    """Its name, how it ranks records, its batching delay, the exporter's own shutdown at
    the end, and how far a cut-off export got."""
    exporter = Exporter()
    exporter.export_progress = 1  # type: ignore[attr-defined]  # (Progress)
    settings = QueueSettings(max_delay=0)
    processor = ExportProcessor("spooled_q", exporter, settings, max_delay=2.5, spool=spool)
    try:
        queue = processor.queue
        assert isinstance(queue, SpoolingQueue)
        assert (queue.name, queue.max_delay) == ("spooled_q", 2.5)
        assert queue._severity(record(severity=SeverityNumber.WARN)) == SeverityNumber.WARN.value
        assert queue._delivered_in_flight(3) == 1
    finally:
        assert processor.shutdown(5)
        spool.close()
    assert exporter.shutdowns == 1


def test_what_a_failed_export_gives_its_spool_to_retry(make: Any, spool: Spool) -> None:
    exporter = Retrying(FAILURE)
    processor = make(exporter, spool=spool)
    batch = [record(n) for n in range(3)]
    # not told: a batch lost whole may be retried whole
    assert processor._export(batch) == ("export_failed", 3, batch)
    exporter.last_export_retry = [batch[2]]
    assert processor._export(batch) == ("export_failed", 3, [batch[2]])
    exporter.last_export_retry = (batch[2],)  # not a list: as if not told
    assert processor._export(batch) == ("export_failed", 3, batch)
    exporter.last_export_retry = None
    exporter.raises = ValueError("boom")  # an exporter that raised: nothing to retry
    assert processor._export(batch) == ("export_failed", 3, [])


def test_a_partly_lost_batch_is_not_retried_unless_the_exporter_says_so(
    make: Any, spool: Spool
) -> None:
    processor = make(Lossy(1), spool=spool)
    assert processor._export([record(n) for n in range(3)]) == ("export_failed", 1, [])


def test_stats_show_the_spool_and_records_a_crash_cut_off(make: Any, spool: Spool) -> None:
    processor = make(Exporter(raises=ValueError("down")), spool=spool)
    processor.put(record(0))  # raised: nothing to retry, a loss of the queue's own
    assert processor.force_flush(5)
    spool.torn, spool.adopted = 2, 5  # found when taking over a dead process's spool
    figures = processor.stats()
    assert figures["dropped_by_reason"] == {"export_failed": 1, "spool_torn": 2}
    assert (figures["dropped"], figures["adopted"], figures["spooled"]) == (3, 5, 0)
    assert figures["spool"] == spool.stats()
    processor.exporter.raises = None
    processor.exporter.gate = threading.Event()  # a replay stays in flight, not acknowledged
    spool.write([record(1), record(2), record(3)])
    assert processor.stats()["spooled"] == 3


# -- bounded calls -------------------------------------------------------------------------


def test_a_bounded_call_runs_on_a_named_fapilog_thread() -> None:
    names: list[str] = []
    assert call_bounded("probe", lambda: names.append(threading.current_thread().name), 5)
    assert names == ["fapilog-probe"]


def test_a_bounded_call_that_blocks_returns_false_at_its_timeout() -> None:
    release = threading.Event()
    try:
        assert call_bounded("blocked", lambda: release.wait(10), 0.05) is False
        assert call_bounded("blocked", lambda: release.wait(10), -1) is False
    finally:
        release.set()


@pytest.mark.parametrize(("timeout", "waited"), [(2.5, 2.5), (0, 0.0), (-1, 0.0)])
def test_a_bounded_call_waits_its_timeout_and_never_less_than_nothing(
    monkeypatch: pytest.MonkeyPatch, timeout: float, waited: float
) -> None:
    thread = Unfinished()
    monkeypatch.setattr(router_module, "start_worker", lambda name, run: thread)
    assert call_bounded("stuck", lambda: None, timeout) is False
    assert thread.waits == [waited]


def test_where_no_thread_can_start_a_bounded_call_runs_on_the_caller(
    monkeypatch: pytest.MonkeyPatch, reports: Any
) -> None:
    """(At interpreter shutdown.) Its failure is reported the same way."""
    monkeypatch.setattr(router_module, "start_worker", lambda name, run: None)
    ran: list[str] = []
    assert call_bounded("inline", lambda: ran.append(threading.current_thread().name), 5)
    assert ran == [threading.current_thread().name]

    def fail() -> None:
        raise ValueError("boom")

    assert call_bounded("inline", fail, 5) is True
    assert ("call:inline", "fapilog: inline raised ValueError('boom')", {}) in reports


def test_a_bounded_call_that_raises_is_reported(reports: Any) -> None:
    def fail() -> None:
        raise ValueError("boom")

    assert call_bounded("thrower", fail, 5) is True
    assert ("call:thrower", "fapilog: thrower raised ValueError('boom')", {}) in reports


# -- the router --------------------------------------------------------------------------


@pytest.fixture
def routed(make: Any) -> Iterator[tuple[Router, list[ExportProcessor]]]:
    router = Router()
    processors = [make(Exporter()), make(Exporter())]
    router.targets = processors
    yield router, processors
    router.targets = ()


def test_a_router_without_exporters_takes_nothing() -> None:
    router = Router()
    router.on_emit(writable())  # nowhere to go: nothing happens
    assert router.targets == () and router.direct == ()
    assert router.force_flush() is True and router.shutdown() is None


def test_a_batch_is_handed_to_each_exporter_at_its_end_in_order(
    routed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, processors = routed
    handed: list[tuple[str, int]] = []
    for processor in processors:

        def put_many(records: Any, *args: Any, processor: Any = processor) -> None:
            handed.append((processor.name, len(records)))
            type(processor).put_many(processor, records, *args)

        monkeypatch.setattr(processor, "put_many", put_many)
    with collect_batch() as collected:
        for body in "abc":
            router.on_emit(writable(body))
        assert [pair[1].log_record.body for pair in collected] == ["a", "b", "c"]
        assert [p.queue.offered for p in processors] == [0, 0]
    assert [p.queue.offered for p in processors] == [3, 3]
    assert handed == [(p.name, 3) for p in processors]  # one put_many each, the whole batch
    for processor in processors:
        assert processor.force_flush(5)
        assert processor.exporter.bodies() == ["a", "b", "c"]


def test_an_exporter_whose_queue_raises_is_reported_and_the_others_get_the_batch(
    routed: Any, reports: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, (first, second) = routed

    def broken(*args: Any) -> None:
        raise RuntimeError("no room")

    monkeypatch.setattr(first, "put_many", broken)
    with collect_batch():
        router.on_emit(writable("a"))
    assert ("router", "fapilog could not queue records: RuntimeError('no room')", {}) in reports
    assert second.force_flush(5) and second.exporter.bodies() == ["a"]


def test_records_of_a_batch_go_to_the_exporters_current_when_each_was_emitted(
    routed: Any,
) -> None:
    router, (first, second) = routed
    with collect_batch():
        router.on_emit(writable("a"))
        router.targets = [first]
        router.on_emit(writable("b"))
        router.on_emit(writable("c"))
        router.targets = [second]
        router.on_emit(writable("d"))
    for processor in (first, second):
        assert processor.force_flush(5)
    assert first.exporter.bodies() == ["a", "b", "c"]
    assert second.exporter.bodies() == ["a", "d"]


def test_a_nested_batch_is_handed_over_at_its_own_end(routed: Any) -> None:
    router, (first, _) = routed
    with collect_batch():
        router.on_emit(writable("outer"))
        with collect_batch() as inner:
            router.on_emit(writable("inner"))
        assert len(inner) == 1 and first.queue.offered == 1
        router.on_emit(writable("outer again"))  # still collected by the outer batch
        assert first.queue.offered == 1
    assert first.queue.offered == 3
    assert first.force_flush(5)
    assert first.exporter.bodies() == ["inner", "outer", "outer again"]


def test_an_empty_batch_hands_nothing_over(routed: Any) -> None:
    _, (first, _) = routed
    with collect_batch() as collected:
        pass
    assert collected == [] and first.queue.offered == 0


def test_a_foreign_record_gets_the_requests_id_and_is_queued_without_a_bridge(
    routed: Any,
) -> None:
    router, processors = routed
    bind_contextvars(request_id=42)
    try:
        plain = writable("in a request")
        plain.log_record.attributes = None
        router.on_emit(plain)
        own = writable("has its own")
        own.log_record.attributes = {"request_id": "mine"}
        router.on_emit(own)
    finally:
        clear_contextvars()
    router.on_emit(writable("outside"))
    for processor in processors:
        assert processor.force_flush(5)
        got = [r.log_record.attributes for batch in processor.exporter.batches for r in batch]
        assert [dict(a or {}).get("request_id") for a in got] == ["42", "mine", None]


def test_a_record_that_cannot_take_the_request_id_still_goes_on(routed: Any, reports: Any) -> None:
    router, (first, _) = routed
    frozen = writable("frozen")
    frozen.log_record.attributes = types.MappingProxyType({})
    bind_contextvars(request_id="r1")
    try:
        router.on_emit(frozen)
    finally:
        clear_contextvars()
    assert first.force_flush(5) and first.exporter.bodies() == ["frozen"]
    ((_, message, _),) = [r for r in reports if r[0] == "foreign-request-id"]
    assert message.startswith("fapilog could not add request_id: TypeError(")


# -- per-exporter levels (fapilog.pipeline.routes) ------------------------------------------

DEBUG, INFO, WARN = SeverityNumber.DEBUG.value, SeverityNumber.INFO.value, SeverityNumber.WARN.value


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> Routes:
    monkeypatch.setattr(STATE, "default_level", 20)  # FAPILOG_LEVEL=info
    monkeypatch.setattr(STATE, "logger_levels", {})
    routes = Routes()
    routes.configure({"file": 10})  # file:debug
    return routes


class Target:
    """An exporter processor as the routes see it: a name (and, for the console, its
    exporter)."""

    def __init__(self, name: str, exporter: object = None) -> None:
        self.name = name
        if exporter is not None:
            self.exporter = exporter


FILE, STDOUT = Target("file"), Target("stdout")


def test_routes_before_any_configuration_take_everything_from_the_default_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(STATE, "default_level", 30)
    monkeypatch.setattr(STATE, "logger_levels", {})
    fresh = Routes()
    assert (fresh.active, fresh.levels) == (False, {})
    assert fresh.writes(object(), "app", DEBUG) is True  # no console named yet
    assert fresh.choose([FILE], "app", WARN) == ([FILE], ())
    assert fresh.choose([FILE], "app", INFO) == ((), (FILE,))


def test_each_exporter_takes_a_record_from_its_own_level_or_the_default(routes: Routes) -> None:
    targets = [FILE, STDOUT]
    assert routes.choose(targets, "app", DEBUG) == ((FILE,), (STDOUT,))
    taken, left = routes.choose(targets, "app", INFO)  # exactly stdout's level: taken
    assert taken is targets and left == ()  # all of them: the very same target set
    assert routes.choose(targets, "app", DEBUG - 1) == ((), (FILE, STDOUT))
    assert routes.severity_for("file", "app") == DEBUG
    assert routes.severity_for("stdout", "app") == INFO


def test_a_logger_level_applies_to_every_exporter(
    routes: Routes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(STATE, "logger_levels", {"noisy": 30})
    assert routes.choose([FILE, STDOUT], "noisy.child", INFO) == ((), (FILE, STDOUT))
    assert routes.severity_for("file", "noisy") == WARN


def test_a_level_of_notset_takes_everything(routes: Routes) -> None:
    routes.configure({"file": 0})
    assert routes.severity_for("file", "app") == 0
    assert routes.choose([FILE], "app", 0) == ([FILE], ())


def test_a_decision_is_remembered_until_the_levels_change(routes: Routes) -> None:
    targets = [FILE, STDOUT]
    first = routes.choose(targets, "app", DEBUG)
    assert routes.choose(targets, "app", DEBUG) is first
    routes.configure({"file": 30})
    assert routes.choose(targets, "app", DEBUG) == ((), (FILE, STDOUT))
    assert routes.choose(targets, "app", WARN) == (targets, ())


def test_the_decisions_remembered_are_bounded(routes: Routes) -> None:
    targets = [FILE, STDOUT]
    for n in range(_CACHE_AT_MOST + 1):
        routes.choose(targets, f"logger{n}", INFO)
        assert len(routes._cache) <= _CACHE_AT_MOST
    assert len(routes._cache) == 1  # forgotten all at once at the bound, then the newest
    assert routes.choose(targets, "logger0", DEBUG) == ((FILE,), (STDOUT,))


def test_levels_are_active_only_when_some_are_set(routes: Routes) -> None:
    given = {"file": 10}
    routes.configure(given)
    given["file"] = 40  # the caller's dict is not shared
    assert routes.active is True and routes.levels == {"file": 10}
    routes.configure({})
    assert routes.active is False and routes.levels == {}


def test_the_console_writes_only_what_reaches_its_own_level(routes: Routes) -> None:
    console, other = object(), object()
    routes.configure({"console": 30})
    routes.name_writers([Target("console", console), FILE])
    assert routes.writes(console, "app", WARN) is True
    assert routes.writes(console, "app", INFO) is False
    assert routes.writes(other, "app", DEBUG) is True  # not a named writer: not filtered


def test_a_foreign_record_reaches_the_exporters_through_the_bridge(memory_exporter: Any) -> None:
    """A record some other library emits on the application's thread, on the provider
    fapilog configured: handed to the bridge's intake (counted as emitted), with the
    request's id."""
    from fapilog import configure_logging, stats

    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline is not None and STATE.bridge is not None
    Router().on_emit(writable("nowhere"))  # a router without exporters hands on nothing
    assert STATE.bridge.intake.offered == 0
    logger = STATE.pipeline.provider.get_logger("foreign.lib")
    bind_contextvars(request_id="abc")
    try:
        logger.emit(LogRecord(body="elsewhere", severity_number=SeverityNumber.WARN))
    finally:
        clear_contextvars()
    (got,) = [r for r in memory_exporter.records() if r.log_record.body == "elsewhere"]
    assert got.log_record.attributes["request_id"] == "abc"
    assert STATE.bridge.intake.offered == stats()["emitted"] == 1


def test_each_export_records_its_duration_and_outcome(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    fapilog.register_metrics(MeterProvider(metric_readers=[reader]))
    processor = make(Exporter())
    clock(monkeypatch, monotonic=1.0, perf=[0.0, 0.25, 1.0, 1.5])
    processor._export([record()])
    processor.exporter.result = FAILURE
    processor._export([record()])
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        point.attributes["outcome"]: (point.count, point.sum)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "fapilog.export.duration"
        for point in metric.data.data_points
        if point.attributes["exporter"] == processor.name
    }
    assert points == {"success": (1, 0.25), "failure": (1, 0.5)}


def test_the_console_writes_a_foreign_record_at_its_own_level_during_the_call(
    memory_exporter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console writes on the calling thread: a foreign record below its own level is
    not written (the other exporter still gets it); one at its level is, before the call
    returns."""
    fapilog.configure_logging(
        level="INFO",
        exporters=["console", memory_exporter.name],
        exporter_levels={"console": "warning"},
        queue={"max_delay": 30},
    )
    assert STATE.pipeline is not None
    logger = STATE.pipeline.provider.get_logger("foreign.lib")
    logger.emit(LogRecord(body="routine", severity_number=SeverityNumber.INFO))
    logger.emit(LogRecord(body="odd", severity_number=SeverityNumber.WARN))
    print("after odd")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "odd" in lines[0] and lines[1] == "after odd", lines
    bodies = [r.log_record.body for r in memory_exporter.records()]
    assert bodies == ["routine", "odd"]


def test_the_console_applies_a_foreign_loggers_own_level_to_its_records(
    memory_exporter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A level set for the foreign record's logger (its instrumentation scope) decides for
    the console too; a record without a severity ranks below every level (never an error)."""
    fapilog.configure_logging(
        level="INFO",
        exporters=["console", memory_exporter.name],
        exporter_levels={"console": "warning"},
        logger_levels={"foreign.chatty": "debug"},
        queue={"max_delay": 30},
    )
    assert STATE.pipeline is not None
    chatty = STATE.pipeline.provider.get_logger("foreign.chatty")
    chatty.emit(LogRecord(body="chatter", severity_number=SeverityNumber.INFO))
    chatty.emit(LogRecord(body="no severity"))
    STATE.pipeline.provider.get_logger("foreign.lib").emit(
        LogRecord(body="routine", severity_number=SeverityNumber.INFO)
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "chatter" in lines[0], lines
    bodies = [r.log_record.body for r in memory_exporter.records()]
    assert bodies == ["chatter", "routine"]  # (below the exporter's level too)


class FailingThenStuck(Exporter):
    """Fails its first export at once; the next waits (at most `hold` s) until aborted."""

    def __init__(self, hold: float) -> None:
        super().__init__(FAILURE)
        self.hold = hold
        self.again = threading.Event()
        self.released = threading.Event()
        self.aborts = 0

    def export(self, batch: Any) -> Any:
        if self.batches:
            self.again.set()
            self.released.wait(self.hold)
        self.batches.append(list(batch))
        return FAILURE

    def abort(self) -> None:
        self.aborts += 1
        self.released.set()


def test_a_failing_exporter_with_a_spool_is_not_waited_for_at_shutdown(
    make: Any, spool: Spool
) -> None:
    """Its records go to disk instead: at shutdown it is told to abort at once, not
    after the deadline (here its export would have given up by itself before that)."""
    exporter = FailingThenStuck(hold=5)
    processor = make(exporter, spool=spool)
    processor.put(record("first"))
    processor.put(record("second"))
    assert exporter.again.wait(10)  # failed once, now in its next export
    assert not processor.is_working()
    shutdown_processors([processor], 30)
    assert exporter.aborts == 1


@pytest.mark.parametrize("upstream", ["full", "gone"])
def test_a_batch_asks_its_emitter_whether_to_wait_for_a_full_exporter_queue(
    make: Any, upstream: str
) -> None:
    """The bridge's worker hands a batch over: a full exporter queue is not waited for
    when the bridge's own queue is full, or past its shutdown deadline (it sheds)."""
    exporter = Exporter()
    exporter.gate = threading.Event()
    processor = make(exporter, max_size=1, batch_size=1, export_timeout=2)
    processor.put(record("held"))
    assert exporter.entered.wait(5)
    router = Router()
    router.targets = [processor]
    asked: list[str] = []

    def ask(which: str, answer: bool) -> Callable[[], bool]:
        return lambda: asked.append(which) is None and answer

    try:
        with collect_batch(ask("full", upstream == "full"), ask("gone", upstream == "gone")):
            router.on_emit(writable("a"))
            router.on_emit(writable("b"))
    finally:
        router.targets = ()
    assert asked[-1] == upstream
    assert processor.queue.dropped == {"queue_full": 1}

"""The contract of the bridge (`fapilog.otel.bridge`): what a capture becomes as an
OpenTelemetry LogRecord (body, attributes, trace ids, event name, severity text, observed
time, scope name), the figures and exact diagnostics of a record it cannot emit (or that a
processor after fapilog's raises on), the bounded SDK Logger generations and the logger
name redaction applied once per name, and the exporter levels applied to records other
code emits. A real Bridge with a real LoggerProvider and real captures; a recording
processor of the test's own where the bridge is used alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import fapilog
from conftest import MemoryExporter
from fapilog import _diag, configure_logging, get_logger
from fapilog._state import STATE
from fapilog.capture.record import Pending, Released, capture
from fapilog.otel import bridge as bridge_module
from fapilog.otel.bridge import Bridge, Forward, _severity, event_fields
from fapilog.otel.logs import (
    LogRecord,
    LogRecordExporter,
    LogRecordExportResult,
    LogRecordProcessor,
    SeverityNumber,
    new_provider,
    sdk_logger,
)
from fapilog.pipeline.routes import ROUTES
from fapilog.settings import QueueSettings

SPAN = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))


class Recording(LogRecordProcessor):
    """Remembers each record it is handed: (LogRecord, scope name); raises if told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.records: list[tuple[Any, str]] = []

    def on_emit(self, log_record: Any) -> None:
        self.records.append((log_record.log_record, log_record.instrumentation_scope.name))
        if self.fail:
            raise RuntimeError("processor broke")

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Named:
    """A logger as the capture sees it: its name."""

    def __init__(self, name: str) -> None:
        self.name = name


@pytest.fixture
def reports() -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def listen(key: str, message: str, fields: dict[str, Any]) -> None:
        if key in ("bridge", "bridge-after"):  # (not another test's alerts, written late)
            seen.append((key, message))

    _diag.reset()
    _diag.add_listener(listen)
    yield seen
    _diag.remove_listener(listen)


@pytest.fixture
def recording() -> Recording:
    return Recording()


@pytest.fixture
def bridge(recording: Recording) -> Iterator[Bridge]:
    provider = new_provider(Resource.create({}))
    provider.add_log_record_processor(recording)
    made = Bridge(provider, QueueSettings())
    yield made
    made.shutdown(5)


def _pending(name: str = "app", method: str = "info", **event: Any) -> Pending:
    return capture(Named(name), method, {"event": "hello", **event})


def _in_span(**event: Any) -> Pending:
    with trace.use_span(NonRecordingSpan(SPAN)):
        return _pending(**event)


# -- what a capture becomes ---------------------------------------------------------------------


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_event_fields_move_the_message_to_the_body_and_keep_the_event_name() -> None:
    body, attributes = event_fields(_pending(user=7, **{"event.name": "checkout"}))
    assert (body, attributes) == ("hello", {"user": 7, "event.name": "checkout"})
    assert event_fields(_pending(user=7)) == ("hello", {"user": 7})


def test_a_non_text_message_is_coerced_and_a_missing_one_is_none() -> None:
    assert event_fields(capture(Named("a"), "info", {"event": Opaque()}))[0] == "<opaque>"
    assert event_fields(capture(Named("a"), "info", {"event": {1: 2}}))[0] == {"1": 2}
    assert event_fields(capture(Named("a"), "info", {"event": 5}))[0] == 5
    assert event_fields(capture(Named("a"), "info", {"k": 1})) == (None, {"k": 1})


def test_a_held_records_message_is_converted_when_it_is_emitted() -> None:
    """A flight recorder holds its records unconverted (`fapilog.capture.recorder`): the
    message of one released later becomes an OpenTelemetry value on the way out."""
    held = _pending()._replace(event={"event": Opaque(), "n": 1})
    assert event_fields(held) == ("<opaque>", {"n": 1})
    assert event_fields(_pending()._replace(event={"n": 1})) == (None, {"n": 1})


def test_trace_ids_leave_the_attributes_only_inside_a_span() -> None:
    inside = _in_span(trace_id="t", span_id="s", other=1)
    assert event_fields(inside)[1] == {"other": 1}
    outside = _pending(trace_id="t", span_id="s", other=1)
    assert event_fields(outside)[1] == {"trace_id": "t", "span_id": "s", "other": 1}


def test_the_exception_becomes_semantic_convention_attributes() -> None:
    pending = capture(Named("a"), "error", {"event": "failed", "exc_info": KeyError("missing")})
    attributes = event_fields(pending)[1]
    assert attributes["exception.type"] == "KeyError"
    assert attributes["exception.message"] == "missing"
    assert "exc_info" not in attributes


def test_the_intake_sheds_by_the_records_own_severity() -> None:
    assert _severity(_pending(method="warning")) == SeverityNumber.WARN.value
    assert _severity(Forward((), 17, None)) == 17  # type: ignore[arg-type]


def test_the_emitted_record_carries_the_captures_fields(
    bridge: Bridge, recording: Recording
) -> None:
    before = _in_span(order=3, **{"event.name": "paid"})
    warned = _pending("shop", "warning", **{"event.name": 42})
    bridge._emit_batch([before, warned])
    (first, first_scope), (second, second_scope) = recording.records
    assert (first_scope, second_scope) == ("app", "shop")
    assert (first.body, dict(first.attributes)) == ("hello", {"order": 3})
    assert first.event_name == "paid"
    assert (first.trace_id, first.span_id) == (0x1234, 0x5678)
    assert (first.severity_number, first.severity_text) == (SeverityNumber.INFO, "INFO")
    assert first.timestamp == before.timestamp
    # the capture's own context travels with the record (a console's written-mark is on it)
    assert first.context is before.context
    # (a name that is not text is an ordinary attribute; WARNING is WARN in OpenTelemetry)
    assert second.event_name is None and dict(second.attributes) == {"event.name": 42}
    assert (second.severity_number, second.severity_text) == (SeverityNumber.WARN, "WARN")


def test_the_observed_time_is_the_handlers_else_the_emit_time(
    bridge: Bridge, recording: Recording
) -> None:
    own = _pending()._replace(timestamp=1_000)
    handled = _pending()._replace(timestamp=1_000, observed=2_000)
    unknown_text = _pending()._replace(severity_text="NOTICE")
    bridge._emit_batch([own, handled, unknown_text])
    (own_record, _), (handled_record, _), (notice, _) = recording.records
    assert own_record.observed_timestamp > 1_000_000_000 * 10**9
    assert handled_record.observed_timestamp == 2_000
    assert notice.severity_text == "NOTICE"


def test_flush_and_shutdown_say_whether_the_intake_finished(
    bridge: Bridge, recording: Recording
) -> None:
    """Records are emitted on the bridge's own worker, the thread ``fapilog-intake``; once
    it is shut down, a record offered is refused."""
    threads: list[str] = []
    original = recording.on_emit

    def on_emit(log_record: Any) -> None:
        threads.append(threading.current_thread().name)
        original(log_record)

    recording.on_emit = on_emit  # type: ignore[method-assign]
    assert bridge.put(_pending()) is True
    assert bridge.flush(5) is True
    assert threads == ["fapilog-intake"]
    assert bridge.shutdown(5) is True
    assert bridge.put(_pending()) is False


# -- records it cannot emit -------------------------------------------------------------------


def test_a_record_lost_before_fapilogs_router_is_counted_and_reported(
    reports: list[tuple[str, str]],
) -> None:
    """A processor before fapilog's raised: the record is lost, counted as an emit error
    (the next records of the batch still go out), reported once; a bridge replacing this
    one carries its figures on."""
    broken = Recording(fail=True)
    provider = new_provider(Resource.create({}))
    provider.add_log_record_processor(broken)
    first = Bridge(provider, QueueSettings())
    second = None
    try:
        first._emit_batch([_pending(), _pending(), _pending("other")])
        assert (len(broken.records), first.errors) == (3, 3)
        assert reports == [
            ("bridge", "fapilog could not emit a record: RuntimeError('processor broke')")
        ]
        assert first.put(_pending()) is True
        assert first.flush(5) is True
        assert (first.errors, first.intake.offered, first.intake.delivered) == (4, 1, 1)
        first.shutdown(5)
        second = Bridge(provider, QueueSettings(), earlier=first)
        assert (second.errors, second.intake.offered, second.intake.delivered) == (4, 1, 1)
    finally:
        first.shutdown(5)
        if second is not None:
            second.shutdown(5)


def test_with_exporter_levels_set_a_record_no_exporter_queue_took_is_left_alone(
    bridge: Bridge, recording: Recording, reports: list[tuple[str, str]]
) -> None:
    """Exporter levels apply to what fapilog's Router collected for its exporter queues; a
    record it did not collect (here the provider has no Router), or one lost on the way, is
    emitted or counted as it is, and the rest of the batch goes on."""
    broken = Recording(fail=True)
    provider = new_provider(Resource.create({}))
    provider.add_log_record_processor(broken)
    lost = Bridge(provider, QueueSettings())
    ROUTES.configure({"console": 30})
    try:
        bridge._emit_batch([_pending(), _pending("other", "error")])
        lost._emit_batch([_pending(), _pending("other", "error")])
    finally:
        ROUTES.configure({})
        lost.shutdown(5)
    assert [scope for _, scope in recording.records] == ["app", "other"]
    assert (bridge.errors, lost.errors) == (0, 2)


def test_a_forwarded_record_does_not_end_its_batch(bridge: Bridge, recording: Recording) -> None:
    """A record other code emitted goes straight to its exporters (none here); the
    captures after it in the same batch are emitted all the same."""
    record = Recording()
    bridge._emit_batch([Forward((), 9, record), _pending("after"), Forward((), 9, record)])  # type: ignore[arg-type]
    bridge._emit_batch([_pending("next")])
    assert [scope for _, scope in recording.records] == ["after", "next"]


def test_under_otel_sdk_disabled_records_go_to_fapilogs_processor_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK keeps every processor from receiving records then; fapilog's own (the
    Router, for its local exporters) still receives them, and no other processor."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = new_provider(Resource.create({}))
    other, fapilogs = Recording(), Recording()
    provider.add_log_record_processor(other)
    disabled = Bridge(provider, QueueSettings(), router=fapilogs)
    try:
        disabled._emit_batch([_pending("a")])
    finally:
        disabled.shutdown(5)
    assert [scope for _, scope in fapilogs.records] == ["a"]
    assert other.records == []


def test_a_processor_after_fapilogs_that_raises_loses_nothing(
    memory_exporter: MemoryExporter, reports: list[tuple[str, str]]
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline is not None and STATE.bridge is not None
    provider = STATE.pipeline.provider
    broken = Recording(fail=True)
    provider.add_log_record_processor(broken)
    try:
        get_logger("app").info("kept")
        fapilog.force_flush(10)
    finally:  # (the provider may be the process's global one: leave it as it was)
        multi = provider._multi_log_record_processor
        with multi._lock:
            multi._log_record_processors = tuple(
                p for p in multi._log_record_processors if p is not broken
            )
    assert len(broken.records) == 1
    assert [r.log_record.body for r in memory_exporter.records()] == ["kept"]
    assert STATE.bridge.errors == 0
    assert (
        "bridge-after",
        "a log record processor after fapilog's raised: RuntimeError('processor broke'); "
        "fapilog's exporters have the record",
    ) in reports
    assert "emit_error" not in fapilog.stats()["intake"]["dropped_by_reason"]


# -- SDK Loggers and logger names ------------------------------------------------------------


def test_sdk_loggers_are_kept_for_two_generations_and_named_once_each(
    bridge: Bridge, recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With generations of two names: a name unused for a whole generation is named (built)
    again; one used in the generation before comes back without being built."""
    monkeypatch.setattr(bridge_module, "LOGGER_GENERATION", 2)
    built: list[str] = []

    def shown(name: str) -> str:
        built.append(name)
        return f"<{name}>"

    bridge.show_names_as(shown)
    names = ["a", "b", "c", "a", "d", "b", "c", "a", "a"]
    bridge._emit_batch([_pending(name) for name in names])  # one batch
    assert built == ["a", "b", "c", "d", "b", "a"]
    assert [scope for _, scope in recording.records] == [f"<{n}>" for n in names]
    for name in names:  # one record per batch: the same generations
        bridge._emit_batch([_pending(name)])
    assert built == ["a", "b", "c", "d", "b", "a", "d", "c"]


def test_a_new_name_redaction_names_every_logger_again(
    bridge: Bridge, recording: Recording
) -> None:
    bridge._emit_batch([_pending("a")])
    upper = str.upper
    bridge.show_names_as(upper)
    bridge._emit_batch([_pending("a")])
    bridge.show_names_as(upper)  # the same: the loggers stay
    bridge._emit_batch([_pending("b")])
    bridge.show_names_as(None)
    bridge._emit_batch([_pending("a"), _pending("b")])
    assert [scope for _, scope in recording.records] == ["a", "A", "B", "a", "b"]


def test_an_unchanged_redaction_keeps_the_loggers_built(bridge: Bridge) -> None:
    built: list[str] = []
    shown = built.append
    bridge.show_names_as(lambda name: shown(name) or name)  # type: ignore[func-returns-value]
    bridge._emit_batch([_pending("a")])
    bridge.show_names_as(bridge._shown)
    bridge._emit_batch([_pending("a")])
    assert built == ["a"]


# -- exporter levels on the worker ------------------------------------------------------------


def _foreign(severity: SeverityNumber | None, body: str) -> None:
    """A record the OpenTelemetry logs API emits on an application thread."""
    assert STATE.pipeline is not None
    logger = sdk_logger(STATE.pipeline.provider, "foreign")
    logger.emit(LogRecord(severity_number=severity, body=body))


def test_records_others_emit_reach_an_exporter_from_its_own_level(
    memory_exporter: MemoryExporter,
) -> None:
    name = memory_exporter.name
    configure_logging(exporters=[name], exporter_levels={name: "warning"})
    _foreign(SeverityNumber.INFO, "info")
    _foreign(None, "no severity")
    _foreign(SeverityNumber.WARN, "warn")
    assert [r.log_record.body for r in memory_exporter.records()] == ["warn"]
    assert fapilog.stats()["exporters"][name]["filtered"] == 2


def test_a_loggers_own_level_wins_over_an_exporters_on_the_worker(
    memory_exporter: MemoryExporter,
) -> None:
    """A logger's entry in the logger levels applies to every exporter: its records reach
    an exporter whose own level is higher, be they fapilog's or others' (by scope name)."""
    name = memory_exporter.name
    configure_logging(
        exporters=[name],
        exporter_levels={name: "warning"},
        logger_levels={"db": "debug", "foreign": "debug"},
    )
    get_logger("db").info("query")
    get_logger("shop").info("routine")
    _foreign(SeverityNumber.INFO, "theirs")
    assert [r.log_record.body for r in memory_exporter.records()] == ["query", "theirs"]
    assert fapilog.stats()["exporters"][name]["filtered"] == 1


def test_captures_reach_an_exporter_from_its_own_level_released_ones_always(
    memory_exporter: MemoryExporter,
) -> None:
    name = memory_exporter.name
    configure_logging(exporters=[name], exporter_levels={name: "warning"})
    live = STATE.bridge
    assert live is not None
    info = capture(Named("app"), "info", {"event": "info"})
    released = tuple.__new__(Released, capture(Named("app"), "debug", {"event": "released"}))
    warned = capture(Named("app"), "warning", {"event": "warn"})
    debug = capture(Named("app"), "debug", {"event": "debug"})
    for item in (info, released, warned, debug):
        live.put(item)
    assert [r.log_record.body for r in memory_exporter.records()] == ["released", "warn"]
    assert fapilog.stats()["exporters"][name]["filtered"] == 2


# -- the hand-off to the exporter queues ------------------------------------------------------


class Stuck(LogRecordExporter):
    """An exporter whose first export blocks until the test releases it."""

    def __init__(self) -> None:
        self.exporting = threading.Event()
        self.release = threading.Event()

    def export(self, batch: Any) -> LogRecordExportResult:
        self.exporting.set()
        self.release.wait(30)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_a_full_intake_makes_a_full_exporter_queue_shed_instead_of_waiting(
    exporter_named: Any,
) -> None:
    """The bridge waits for room in a full exporter queue only while its own intake has
    room: once the intake is full too, waiting would only move the shedding upstream, so
    the exporter queue sheds by its policy at once (well before its export_timeout)."""
    stuck = Stuck()
    name = exporter_named(stuck)
    shed = threading.Event()

    def on_alert(alert: dict[str, Any]) -> None:
        if alert.get("exporter") == name:
            shed.set()

    configure_logging(
        exporters=[name],
        queue={"max_size": 2, "batch_size": 1, "export_timeout": 60},
        on_alert=on_alert,
    )
    app = get_logger("app")
    try:
        app.info("first")
        assert stuck.exporting.wait(10)
        # (records keep coming: whenever the bridge waits in the hand-off, its intake fills)
        for n in range(500):
            app.info("more", n=n)
            if shed.wait(0.02):
                break
        assert shed.is_set(), "the exporter queue waited for room with the intake full"
    finally:
        stuck.release.set()


def test_past_the_shutdown_deadline_the_bridge_hands_its_batch_on_without_waiting(
    exporter_named: Any,
) -> None:
    """At the shutdown deadline, the bridge waiting for room in a stuck exporter's full
    queue hands the rest of its batch over at once: that exporter counts each record
    (dropped, by its policy), none is written off by the intake as ``shutdown_timeout``."""
    stuck = Stuck()
    name = exporter_named(stuck)
    configure_logging(
        exporters=[name], queue={"max_size": 2, "batch_size": 1, "export_timeout": 60}
    )
    app = get_logger("app")
    try:
        app.info("first")
        assert stuck.exporting.wait(10)
        for n in range(3):
            app.info("more", n=n)
        fapilog.shutdown(timeout=0.5)
    finally:
        stuck.release.set()
    figures = fapilog.stats()
    assert "shutdown_timeout" not in figures["intake"]["dropped_by_reason"], figures

"""The contract of the calling-thread writers (`fapilog.pipeline.direct`): which exporters
write on the calling thread, which exception the console is handed (the one kept before the
redactor, or the capture's own), that the kept exceptions stay bounded per thread, that a
writer that raises never reaches the application (and is reported, exactly), and which
captures the end of the chain admits and hands to which writers (levels, flight recorder
releases). Real captures; the writers are small recording exporters of the test's own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fapilog import _diag
from fapilog._state import STATE
from fapilog.capture.record import ADMISSION, Pending, Released, capture
from fapilog.pipeline import direct
from fapilog.pipeline.direct import (
    AdmittingBridge,
    Direct,
    DirectBridge,
    before_redaction,
    direct_exporters,
    keep_exception,
    use_writers,
    write_foreign,
    write_released,
)
from fapilog.pipeline.routes import ROUTES


class Writer:
    """A calling-thread exporter that remembers what it was handed and marks each capture
    (its event gets ``written_by``)."""

    def __init__(self, name: str = "w", *, synchronous: bool = True, fail: bool = False) -> None:
        self.name = name
        self.synchronous = synchronous
        self.fail = fail
        self.captures: list[tuple[Pending, BaseException | None]] = []
        self.foreign: list[object] = []

    def write_capture(self, pending: Pending, exception: BaseException | None) -> Pending:
        self.captures.append((pending, exception))
        if self.fail:
            raise RuntimeError(f"{self.name} broke")
        event = {**pending.event, "written_by": [*pending.event.get("written_by", ()), self.name]}
        return tuple.__new__(type(pending), (*pending[:4], event, *pending[5:]))

    def write_foreign(self, record: object) -> None:
        self.foreign.append(record)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")


class Sink:
    """A logger as the chain's end sees it: a name and its exported severity."""

    def __init__(self, name: str = "app", export_severity: int = 9) -> None:
        self.name = name
        self.export_severity = export_severity


class Target:
    """What `Routes.name_writers` reads of an exporter queue: its exporter and name."""

    def __init__(self, exporter: Writer, name: str) -> None:
        self.exporter = exporter
        self.name = name


@pytest.fixture(autouse=True)
def _clean() -> Iterator[list[tuple[str, str]]]:
    reports: list[tuple[str, str]] = []

    def listen(key: str, message: str, fields: dict[str, Any]) -> None:
        if key in ("direct",):  # (not another test's alerts, written late)
            reports.append((key, message))

    admit, plain = ADMISSION.admit, ADMISSION.plain
    _diag.reset()
    _diag.add_listener(listen)
    direct._KEPT.pairs.clear()
    yield reports
    _diag.remove_listener(listen)
    use_writers(())
    direct._KEPT.pairs.clear()
    ADMISSION.admit, ADMISSION.plain = admit, plain
    ROUTES.configure({})
    ROUTES.name_writers(())


@pytest.fixture
def reports(_clean: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return _clean


def _raised(message: str) -> BaseException:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


def _pending(severity_method: str = "info", name: str = "app", **event: Any) -> Pending:
    return capture(Sink(name), severity_method, {"event": "hello", **event})


# -- which exporters write on the calling thread --------------------------------------------


def test_only_synchronous_direct_exporters_write_on_the_calling_thread() -> None:
    first, queued, last = Writer("a"), Writer("b", synchronous=False), Writer("c")
    assert isinstance(first, Direct)
    assert direct_exporters([first, object(), queued, None, last]) == (first, last)
    assert direct_exporters([queued]) == ()


def test_the_console_step_is_in_the_chain_only_with_a_calling_thread_console() -> None:
    assert before_redaction(True) == [keep_exception]
    assert before_redaction(False) == []


# -- keeping the exception for the console ----------------------------------------------------


def test_without_writers_no_exception_is_kept() -> None:
    event = {"event": "x", "exc_info": _raised("a")}
    assert keep_exception(None, "error", event) is event
    assert direct._KEPT.pairs == []


@pytest.mark.parametrize("info", [None, False, (None, None, None)])
def test_an_event_without_an_exception_keeps_nothing(info: object) -> None:
    use_writers((Writer(),))
    event = {"event": "x", "exc_info": info}
    assert keep_exception(None, "error", event) is event
    assert direct._KEPT.pairs == []


def test_the_exception_logged_is_kept_with_its_event() -> None:
    use_writers((Writer(),))
    exc = _raised("kept")
    event = {"event": "x", "exc_info": exc}
    keep_exception(None, "error", event)
    try:
        raise KeyError("handled")
    except KeyError as handled:
        current = {"event": "y", "exc_info": True}
        keep_exception(None, "exception", current)
        handled_exc = handled
    assert direct._KEPT.pairs == [(event, exc), (current, handled_exc)]


def test_at_most_eight_exceptions_are_kept_per_thread_the_latest() -> None:
    """A chain that never reached its end (a processor dropped the event) leaves its pair
    behind: the oldest go, memory stays bounded."""
    use_writers((Writer(),))
    events = [{"event": str(n), "exc_info": _raised(str(n))} for n in range(20)]
    for n, event in enumerate(events):
        keep_exception(None, "error", event)
        assert [pair[0] for pair in direct._KEPT.pairs] == events[max(0, n - 7) : n + 1]


def test_the_console_gets_the_exception_kept_for_that_very_event() -> None:
    """Two equal events, each with its exception: each capture is written with its own,
    and the pair is gone once used."""
    writer = Writer()
    use_writers((writer,))
    first_exc, second_exc, other_exc = _raised("1"), _raised("2"), _raised("other")
    first, second = {"event": "same"}, {"event": "same"}
    alone = {"event": "alone"}
    for event, exc in ((alone, other_exc), (first, first_exc), (second, second_exc)):
        keep_exception(None, "error", {**event, "exc_info": exc})
        direct._KEPT.pairs[-1] = (event, exc)
    bridge = DirectBridge()
    bridge(Sink(), "error", first)
    bridge(Sink(), "error", second)
    AdmittingBridge()(Sink(), "error", alone)
    assert [exc for _, exc in writer.captures] == [first_exc, second_exc, other_exc]
    assert direct._KEPT.pairs == []


def test_each_thread_keeps_its_own_exceptions() -> None:
    writer = Writer()
    use_writers((writer,))
    mine = {"event": "main"}
    direct._KEPT.pairs.append((mine, _raised("main")))

    def log_there() -> None:
        event = {"event": "there", "exc_info": _raised("there")}
        keep_exception(None, "error", event)
        event.pop("exc_info")
        DirectBridge()(Sink(), "error", event)

    thread = threading.Thread(target=log_there)
    thread.start()
    thread.join()
    assert str(writer.captures[0][1]) == "there"
    assert [pair[0] for pair in direct._KEPT.pairs] == [mine]


def test_the_captures_own_exception_wins_over_a_kept_one() -> None:
    writer = Writer()
    use_writers((writer,))
    kept, own = _raised("kept"), _raised("own")
    event: dict[str, Any] = {"event": "x"}
    direct._KEPT.pairs.append((event, kept))
    event["exc_info"] = own
    DirectBridge()(Sink(), "error", event)
    assert writer.captures[0][1] is own
    assert direct._KEPT.pairs == []  # (used up all the same)


def test_an_event_with_no_exception_is_written_with_none() -> None:
    writer = Writer()
    use_writers((writer,))
    direct._KEPT.pairs.append(({"event": "another"}, _raised("x")))
    DirectBridge()(Sink(), "info", {"event": "plain"})
    assert writer.captures[0][1] is None
    assert len(direct._KEPT.pairs) == 1


# -- the chain's last processor ---------------------------------------------------------------


def test_without_writers_the_capture_goes_on_unwritten() -> None:
    (pending,), kwargs = DirectBridge()(Sink("svc"), "warning", {"event": "w"})
    assert kwargs == {}
    assert (pending.logger, pending.severity_text, pending.event) == (
        "svc",
        "WARNING",
        {"event": "w"},
    )


def test_every_writer_writes_in_turn_and_the_marked_capture_goes_on() -> None:
    a, b = Writer("a"), Writer("b")
    use_writers((a, b))
    (pending,), kwargs = DirectBridge()(Sink(), "info", {"event": "hi"})
    assert kwargs == {}
    assert pending.event["written_by"] == ["a", "b"]
    assert b.captures[0][0].event["written_by"] == ["a"]


def test_a_writer_that_raises_never_reaches_the_application(
    reports: list[tuple[str, str]],
) -> None:
    """The failing writer's capture goes on unmarked (written from the queue); the next
    writer still writes; the report says what failed, once."""
    broken, after = Writer("broken", fail=True), Writer("after")
    use_writers((broken, after))
    (pending,), _ = DirectBridge()(Sink(), "info", {"event": "hi"})
    assert pending.event["written_by"] == ["after"]
    assert reports == [
        ("direct", "fapilog: the console could not write: RuntimeError('broken broke')")
    ]


def test_write_foreign_reaches_every_writer_and_reports_a_failure(
    reports: list[tuple[str, str]],
) -> None:
    broken, after = Writer("broken", fail=True), Writer("after")
    record = object()
    write_foreign([broken, after], record)
    assert broken.foreign == [record] and after.foreign == [record]
    assert reports == [
        ("direct", "fapilog: the console could not write: RuntimeError('broken broke')")
    ]


# -- admission at the chain's end -------------------------------------------------------------


class Admit:
    def __init__(self) -> None:
        self.seen: list[tuple[object, Pending]] = []

    def __call__(self, sink: object, pending: Pending) -> Pending:
        self.seen.append((sink, pending))
        return tuple.__new__(
            Pending, (*pending[:4], {**pending.event, "admitted": True}, *pending[5:])
        )


def test_without_admission_the_capture_goes_on_as_captured() -> None:
    ADMISSION.admit = None
    (pending,), kwargs = AdmittingBridge()(Sink(), "info", {"event": "x"})
    assert kwargs == {} and pending.event == {"event": "x"}


@pytest.mark.parametrize(
    ("method", "export_severity", "admitted"),
    [
        ("info", 9, False),  # at its logger's exported level, below WARNING: untouched
        ("info", 5, False),
        ("debug", 5, False),
        ("debug", 9, True),  # below the exported level: the recorder's
        ("warning", 9, True),  # WARNING and above: always decided
        ("warning", 13, True),
        ("error", 9, True),
    ],
)
def test_plain_admission_skips_exported_records_below_warning(
    method: str, export_severity: int, admitted: bool
) -> None:
    admit = Admit()
    ADMISSION.admit, ADMISSION.plain = admit, True
    writer = Writer()
    use_writers((writer,))
    sink = Sink(export_severity=export_severity)
    (pending,), _ = AdmittingBridge()(sink, method, {"event": "x"})
    assert bool(admit.seen) is admitted
    assert ("admitted" in pending.event) is admitted
    assert ("admitted" in writer.captures[0][0].event) is admitted  # written as admitted
    if admitted:
        assert admit.seen[0][0] is sink


def test_a_logger_without_an_exported_level_is_always_admitted() -> None:
    admit = Admit()
    ADMISSION.admit, ADMISSION.plain = admit, True
    AdmittingBridge()(object(), "info", {"event": "x"})
    assert len(admit.seen) == 1


def test_with_rate_limits_or_folding_every_capture_is_admitted() -> None:
    admit = Admit()
    ADMISSION.admit, ADMISSION.plain = admit, False
    AdmittingBridge()(Sink(export_severity=9), "info", {"event": "x"})
    assert len(admit.seen) == 1


def _routed(console_level: int) -> tuple[Writer, Writer]:
    """A console named in the exporter levels, and an unnamed writer."""
    console, other = Writer("console"), Writer("other")
    ROUTES.configure({"console": console_level})
    ROUTES.name_writers([Target(console, "console")])
    use_writers((console, other))
    return console, other


def test_the_console_writes_only_what_reaches_its_own_level() -> None:
    ADMISSION.admit = None
    console, other = _routed(30)
    bridge = AdmittingBridge()
    bridge(Sink(), "info", {"event": "below"})
    bridge(Sink(), "warning", {"event": "at"})
    assert [p.event["event"] for p, _ in console.captures] == ["at"]
    assert [p.event["event"] for p, _ in other.captures] == ["below", "at"]


def test_a_loggers_own_level_reaches_the_console_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A logger's entry in the logger levels applies to every exporter, the console's own
    level included: its debug lines are written, another logger's are not."""
    monkeypatch.setattr(STATE, "logger_levels", {"db": 10})
    ADMISSION.admit = None
    console, _ = _routed(30)
    AdmittingBridge()(Sink("db"), "debug", {"event": "query"})
    AdmittingBridge()(Sink("shop"), "debug", {"event": "routine"})
    write_released(_pending("debug", name="db"))
    write_released(_pending("debug", name="shop"))
    assert [p.event["event"] for p, _ in console.captures] == ["query", "hello"]


def test_a_released_record_is_written_whatever_the_consoles_level() -> None:
    def release(sink: object, pending: Pending) -> Pending:
        return tuple.__new__(Released, pending)

    ADMISSION.admit, ADMISSION.plain = release, False
    console, _ = _routed(40)
    (pending,), _ = AdmittingBridge()(Sink(), "debug", {"event": "held"})
    assert type(pending) is Released
    assert [p.event["event"] for p, _ in console.captures] == ["held"]


def test_an_inactive_level_table_filters_no_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without exporter levels, the console writes whatever the chain hands it (the
    caller's gate already applied the level)."""
    monkeypatch.setattr(STATE, "default_level", 40)
    ADMISSION.admit = None
    console, other = _routed(40)
    ROUTES.configure({})
    AdmittingBridge()(Sink(), "debug", {"event": "x"})
    write_released(_pending("debug"))
    assert len(console.captures) == len(other.captures) == 2


# -- records released later -------------------------------------------------------------------


def test_a_released_record_without_writers_is_returned_as_it_is() -> None:
    pending = _pending()
    assert write_released(pending) is pending


def test_a_released_record_is_written_now_and_returned_marked() -> None:
    writer = Writer()
    use_writers((writer,))
    direct._KEPT.pairs.append(({"event": "other"}, _raised("x")))
    out = write_released(_pending(event="summary"))
    assert out.event["written_by"] == ["w"]
    assert writer.captures[0][1] is None


def test_a_released_record_is_written_with_its_own_exception() -> None:
    writer = Writer()
    use_writers((writer,))
    failed = capture(Sink(), "error", {"event": "failed", "exc_info": _raised("held")})
    write_released(tuple.__new__(Released, failed))
    assert writer.captures[0][1] is failed.exception


def test_a_summary_line_is_written_only_by_a_console_whose_level_takes_it() -> None:
    console, other = _routed(30)
    write_released(_pending("info"))
    write_released(_pending("error"))
    released = tuple.__new__(Released, _pending("debug"))
    write_released(released)
    assert [p.severity_text for p, _ in console.captures] == ["ERROR", "DEBUG"]
    assert [p.severity_text for p, _ in other.captures] == ["INFO", "ERROR", "DEBUG"]

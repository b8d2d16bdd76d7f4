"""The drain's contract (`fapilog.lifecycle.drain`), in-process where it can be: the one exit
deadline and its arithmetic (`_budget`, `_last_part`), what `force_flush()` and `shutdown()`
return, the shutdown hooks and the seconds they are given, a shutdown asked for inside the
drain itself, the other processors flushed only when the process exits, the SIGTERM
handler's deferral while its own thread drains; and, in a child, that the handler ends the
process by the signal after delivering what was logged. (Its installation:
tests/test_lifecycle_contract.py.)
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import fapilog
from conftest import MemoryExporter, run_python
from fapilog import configure_logging, log
from fapilog._state import STATE
from fapilog.exporters import LogRecordExporter, LogRecordExportResult
from fapilog.lifecycle import drain
from fapilog.otel.logs import LogRecordProcessor


def approx(expected: Any) -> Any:
    """Seconds computed from the frozen clock: `deadline - now` rounds in the last bits."""
    return pytest.approx(expected, abs=1e-6)


class Clock:
    """`drain`'s clock, frozen unless moved; starts at the real time (deadlines stay real)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    fake = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(drain, "time", fake)
        yield fake


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[float], bool]], None]:
    monkeypatch.setattr(STATE, "shutdown_hooks", [])
    return drain.add_shutdown_hook


class Gate(LogRecordExporter):
    """An exporter whose exports wait until `opened` is set."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def export(self, batch: Any) -> LogRecordExportResult:
        self.opened.wait(30)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self.opened.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# -- the one exit deadline --------------------------------------------------------------------


def test_the_exit_deadline_starts_at_the_first_begin_exit_and_never_moves(clock: Clock) -> None:
    assert STATE.exit_started is None
    drain.begin_exit()
    assert STATE.exit_started == clock.now
    clock.now += 5
    drain.begin_exit()
    assert STATE.exit_started == clock.now - 5


def test_the_final_drain_keeps_a_fifth_of_the_deadline_up_to_a_quarter_second() -> None:
    assert drain._last_part(10) == 0.25
    assert drain._last_part(1) == pytest.approx(0.2)
    assert drain._last_part(0.5) == pytest.approx(0.1)


def test_outside_an_exit_a_flush_or_drain_gets_its_timeout_or_shutdown_timeout(
    clock: Clock,
) -> None:
    assert drain._budget(None, 10) == 10
    assert drain._budget(3, 10) == 3
    assert drain._budget(None, 10, flush=True) == 10
    assert drain._budget(30, 10, flush=True) == 30
    assert drain._budget(-1, 10) == 0.0  # never negative


def test_while_exiting_everything_shares_what_the_exit_deadline_has_left(clock: Clock) -> None:
    STATE.exit_started = clock.now - 3  # shutdown_timeout 10: 7 s left
    assert drain._budget(None, 10) == 7
    assert drain._budget(30, 10) == 7
    assert drain._budget(2, 10) == 2
    # a flush leaves the last part (0.25 s) to the final drain
    assert drain._budget(None, 10, flush=True) == 6.75
    assert drain._budget(2, 10, flush=True) == 2
    clock.now += 20  # past the deadline
    assert drain._budget(None, 10) == 0.0
    assert drain._budget(None, 10, flush=True) == 0.0


# -- force_flush() ------------------------------------------------------------------------------


def test_force_flush_says_false_while_an_exporter_holds_a_record_and_true_once_delivered(
    exporter_named: Callable[[Any], str],
) -> None:
    gate = Gate()
    configure_logging(exporters=[exporter_named(gate), "stdout"], capture_stdlib=False)
    log.info("held")
    assert fapilog.force_flush(0.2) is False
    gate.opened.set()
    assert fapilog.force_flush(10) is True


def record_calls(obj: Any, method: str) -> list[float]:
    """Record the timeouts `obj.method` is called with (the call itself runs as before)."""
    calls: list[float] = []
    original = getattr(obj, method)

    def recording(timeout: float) -> Any:
        calls.append(timeout)
        return original(timeout)

    setattr(obj, method, recording)
    return calls


def test_a_flush_gives_the_intake_and_every_exporter_the_same_budget(
    clock: Clock, memory_exporter: MemoryExporter
) -> None:
    """The whole timeout; exiting, what the exit deadline left but the final drain's part."""
    configure_logging(exporters=[memory_exporter.name, "stdout"], shutdown_timeout=10)
    assert STATE.pipeline is not None
    intake = record_calls(STATE.bridge, "flush")
    exporters = [record_calls(p, "force_flush") for p in STATE.pipeline.processors]
    assert fapilog.force_flush(3) is True
    assert intake == approx([3]) and exporters == [approx([3.0])] * 2
    STATE.exit_started = clock.now - 3
    assert fapilog.force_flush() is True
    assert intake == approx([3, 6.75]) and exporters == [approx([3.0, 6.75])] * 2
    STATE.exit_started = clock.now - 20  # past the deadline: no time left for anyone
    fapilog.force_flush()
    assert intake[-1] == 0 and [calls[-1] for calls in exporters] == [0.0, 0.0]


def test_a_flush_and_a_shutdown_end_the_runs_of_folded_repeats(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name], fold_repeats=60)
    for _ in range(3):
        log.warning("again")
    assert fapilog.force_flush(10) is True
    bodies = [str(r.log_record.body) for r in memory_exporter.exporter.get_finished_logs()]
    assert bodies[0] == "again" and bodies[1].startswith("again (repeated 2 times in ")
    for _ in range(4):
        log.warning("more")
    assert fapilog.shutdown(10) is True
    bodies = [str(r.log_record.body) for r in memory_exporter.exporter.get_finished_logs()]
    assert bodies[2] == "more" and bodies[3].startswith("more (repeated 3 times in ")
    assert len(bodies) == 4


def test_a_reconfiguration_never_waits_for_the_exporters_it_replaced(
    exporter_named: Callable[[Any], str], memory_exporter: MemoryExporter
) -> None:
    gate = Gate()
    old = exporter_named(gate)
    configure_logging(exporters=[old], shutdown_timeout=1, capture_stdlib=False)
    log.info("held")
    assert STATE.bridge is not None
    STATE.bridge.flush(10)  # in the old exporter's hands, which do not return
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=1)
    try:
        # back at once: the old exporter's drain still runs, in the background
        assert fapilog.stats()["exporters"][old]["dropped"] == 0
        assert any(t.name == "fapilog-retire" for t in threading.enumerate())
    finally:
        gate.opened.set()


# -- shutdown() ----------------------------------------------------------------------------------


def test_shutdown_hooks_run_once_each_with_the_seconds_left(
    clock: Clock, memory_exporter: MemoryExporter, hooks: Any
) -> None:
    given: list[float] = []

    def hook(seconds: float) -> bool:
        given.append(seconds)
        return True

    hooks(hook)
    hooks(hook)  # added twice: runs once
    configure_logging(exporters=[memory_exporter.name])
    log.info("one")
    assert fapilog.shutdown(3) is True
    assert given == approx([3.0])  # the frozen clock: the whole timeout is left
    assert STATE.shut_down is True
    assert fapilog.shutdown(3) is True  # done already: nothing runs again
    assert given == approx([3.0])
    assert [r.log_record.body for r in memory_exporter.exporter.get_finished_logs()] == ["one"]


def test_while_exiting_the_hooks_get_what_the_exit_deadline_left(
    clock: Clock, memory_exporter: MemoryExporter, hooks: Any
) -> None:
    given: list[float] = []
    hooks(lambda seconds: given.append(seconds) is None)
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=5)
    STATE.exit_started = clock.now - 1
    assert fapilog.shutdown() is True
    assert given == approx([4.0])


def test_a_hook_that_fails_or_raises_fails_the_shutdown_and_the_others_still_run(
    memory_exporter: MemoryExporter, hooks: Any
) -> None:
    ran: list[str] = []

    def hook(name: str, result: bool | None) -> Callable[[float], bool]:
        def run(seconds: float) -> bool:
            ran.append(name)
            if result is None:
                raise RuntimeError("hook")
            return result

        return run

    for name, result in (("declining", False), ("raising", None), ("fine", True)):
        hooks(hook(name, result))
    configure_logging(exporters=[memory_exporter.name])
    assert fapilog.shutdown(3) is False
    assert ran == ["declining", "raising", "fine"]
    assert STATE.shut_down is True


def test_a_shutdown_asked_for_inside_the_drain_returns_false_and_the_drain_finishes(
    memory_exporter: MemoryExporter, hooks: Any
) -> None:
    """A signal handler that runs on the draining thread and shuts down again."""
    inner: list[bool] = []
    hooks(lambda seconds: inner.append(fapilog.shutdown(1)) is None)
    configure_logging(exporters=[memory_exporter.name])
    log.info("one")
    assert fapilog.shutdown(3) is True
    assert inner == [False]
    assert STATE.shut_down is True and STATE.draining_thread is None
    assert len(memory_exporter.exporter.get_finished_logs()) == 1


def test_shutdown_ends_each_exporters_intake_where_it_stopped(
    clock: Clock, memory_exporter: MemoryExporter
) -> None:
    configure_logging(exporters=[memory_exporter.name, "stdout"], capture_stdlib=False)
    assert STATE.pipeline is not None
    processors = list(STATE.pipeline.processors)
    assert all(p.intake_end is None for p in processors)
    intake = record_calls(STATE.bridge, "shutdown")
    assert fapilog.shutdown(0.1) is True
    assert intake == approx([0.1])
    assert all(p.intake_end is not None for p in processors)
    assert fapilog.stats()["exporters"][memory_exporter.name]["exported"] == 0


def test_shutdown_reports_an_exporter_still_holding_a_record_at_the_deadline(
    exporter_named: Callable[[Any], str],
) -> None:
    gate = Gate()
    name = exporter_named(gate)
    configure_logging(exporters=[name], capture_stdlib=False)
    log.info("held")
    try:
        assert fapilog.shutdown(0.3) is False
    finally:
        gate.opened.set()
    assert fapilog.stats()["exporters"][name]["dropped_by_reason"] == {"shutdown_timeout": 1}


class Recording(LogRecordProcessor):
    """The application's own processor on the provider fapilog emits through."""

    def __init__(self, hang: bool = False) -> None:
        self.flushed: list[int] = []
        self.release = threading.Event()
        self.hang = hang

    def on_emit(self, log_record: Any) -> None:
        pass

    def shutdown(self) -> None:
        self.release.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed.append(timeout_millis)
        if self.hang:
            self.release.wait(30)
        return True


@pytest.fixture
def on_provider() -> Iterator[Callable[[LogRecordProcessor], None]]:
    """Add a processor to the pipeline's provider for one test (fapilog keeps it)."""
    added: list[tuple[Any, LogRecordProcessor]] = []

    def add(processor: LogRecordProcessor) -> None:
        assert STATE.pipeline is not None
        provider = STATE.pipeline.provider
        provider.add_log_record_processor(processor)
        added.append((provider, processor))

    yield add
    for provider, processor in added:
        multi = provider._multi_log_record_processor
        with multi._lock:
            multi._log_record_processors = tuple(
                p for p in multi._log_record_processors if p is not processor
            )


def test_the_applications_processor_is_flushed_at_exit_only(
    memory_exporter: MemoryExporter, on_provider: Any
) -> None:
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=4)
    theirs = Recording()
    on_provider(theirs)
    assert fapilog.shutdown(2) is True
    assert theirs.flushed == []  # an explicit shutdown: the process goes on, so do they
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=4)
    drain.at_exit()
    assert STATE.exit_started is not None and STATE.shut_down is True
    assert len(theirs.flushed) == 1 and 3000 < theirs.flushed[0] <= 4000


def test_past_the_exit_deadline_the_final_drain_still_has_its_last_part(
    clock: Clock, memory_exporter: MemoryExporter, on_provider: Any, hooks: Any
) -> None:
    """A server's shutdown took the whole deadline: what it logged last still reaches the
    exporters that work, and the application's processor, within the last 0.25 s."""
    given: list[float] = []
    theirs = Recording(hang=True)  # its flush ends as the hooks run, just before the wait
    hooks(lambda seconds: given.append(seconds) or not theirs.release.set())
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=5, queue={"max_delay": 30})
    on_provider(theirs)
    for n in range(5):
        log.info("last words", n=n)
    intake = record_calls(STATE.bridge, "shutdown")
    clock.now = time.monotonic()
    STATE.exit_started = clock.now - 6  # a second past the deadline
    assert fapilog.shutdown() is True
    assert intake == approx([0.25])
    assert theirs.flushed in ([249], [250])  # (whole milliseconds)
    assert given == approx([0.0])  # the hooks: the deadline itself
    assert len(memory_exporter.exporter.get_finished_logs()) == 5


def test_a_tracer_provider_that_breaks_never_stops_the_exit_drain(
    trace_globals: None, memory_exporter: MemoryExporter, capfd: pytest.CaptureFixture[str]
) -> None:
    class Broken:
        @property
        def _span_processors(self) -> Any:
            raise RuntimeError("broken")

    broken = TracerProvider(shutdown_on_exit=False)
    broken._active_span_processor = Broken()  # type: ignore[assignment]
    STATE.tracer_provider = broken
    configure_logging(exporters=[memory_exporter.name])
    log.info("delivered")
    drain.begin_exit()
    assert fapilog.shutdown(5) is True
    assert len(memory_exporter.exporter.get_finished_logs()) == 1
    reports = [json.loads(x) for x in capfd.readouterr().err.splitlines() if "exit-" in x]
    assert [(r["fapilog.diagnostic"], r["message"]) for r in reports] == [
        ("exit-others", "fapilog could not flush the other processors: RuntimeError('broken')")
    ]


def test_at_exit_a_hung_processor_is_abandoned_at_the_deadline_and_fails_the_drain(
    memory_exporter: MemoryExporter,
    on_provider: Any,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=0.5)
    hung = Recording(hang=True)
    on_provider(hung)
    monkeypatch.setattr(STATE, "abandoned_processors", 0)  # (a process-wide count: put back)
    abandoned = 0
    drain.begin_exit()
    try:
        assert fapilog.shutdown() is False
    finally:
        hung.release.set()
    assert fapilog.stats()["abandoned_processors"] == abandoned + 1
    assert "Recording still flushing: abandoned" in capfd.readouterr().err


# -- SIGTERM -------------------------------------------------------------------------------------


def test_a_sigterm_on_the_draining_thread_is_deferred_to_the_end_of_the_drain(
    clock: Clock,
) -> None:
    """It tells the watcher it began, starts the exit deadline, and only notes the signal."""
    from fapilog.lifecycle import wakeup

    read_fd, write_fd = os.pipe()
    watcher = wakeup._Watcher(drain.sigterm_drain(), read_fd, write_fd)
    STATE.draining_thread = threading.get_ident()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(wakeup, "_watcher", watcher)
            drain.sigterm_drain()(signal.SIGTERM, None)  # returns: the process lives on
        assert STATE.deferred_signal == signal.SIGTERM
        assert STATE.exit_started == clock.now  # the exit deadline started all the same
        assert watcher.began.is_set()
    finally:
        STATE.draining_thread = None
        STATE.deferred_signal = None
        watcher.close()


CHILD = textwrap.dedent(
    """
    import os, signal, sys, fapilog
    from fapilog.lifecycle import drain
    fapilog.configure_logging(exporters=["stdout"], capture_stdlib=False,
                              queue={"max_delay": 30})
    fapilog.log.info("before the signal")
    """
)


def test_sigterm_delivers_what_was_logged_then_ends_the_process_by_sigterm(
    subprocess_env: dict[str, str],
) -> None:
    code = CHILD + textwrap.dedent(
        """
        from fapilog.lifecycle import wakeup
        assert wakeup._watcher.handler is drain.sigterm_drain()  # (it makes sure it runs)
        os.kill(os.getpid(), signal.SIGTERM)
        print('SURVIVED')
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == -signal.SIGTERM, err
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["before the signal"]


def test_a_sigterm_in_the_middle_of_the_drain_ends_the_process_once_the_drain_is_done(
    subprocess_env: dict[str, str],
) -> None:
    code = CHILD + textwrap.dedent(
        """
        def hook(seconds):
            os.kill(os.getpid(), signal.SIGTERM)  # runs here, on the draining thread
            print("DRAIN-GOES-ON", flush=True)
            return True
        drain.add_shutdown_hook(hook)
        fapilog.shutdown(5)
        print("SURVIVED", flush=True)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == -signal.SIGTERM, err
    assert out.splitlines()[-1] == "DRAIN-GOES-ON"
    assert json.loads(out.splitlines()[0])["message"] == "before the signal"


def test_dying_by_a_signal_ends_the_process_even_past_its_own_handler(
    subprocess_env: dict[str, str],
) -> None:
    """`_die_by` restores the default action: the application's handler keeps nothing alive."""
    code = CHILD + textwrap.dedent(
        """
        signal.signal(signal.SIGUSR1, lambda *a: print("HANDLED", flush=True))
        drain._die_by(signal.SIGUSR1)
        print("SURVIVED", flush=True)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == -signal.SIGUSR1, err
    assert "HANDLED" not in out and "SURVIVED" not in out


# -- edges of the drain ----------------------------------------------------------------------------


def test_a_flush_between_the_bridge_and_the_pipeline_being_set_is_done_at_once(
    memory_exporter: MemoryExporter,
) -> None:
    """(Another thread flushing while the first `configure_logging()` is half way.)"""
    configure_logging(exporters=[memory_exporter.name])
    # (not monkeypatch: it would restore this pipeline after the reset that ends the test)
    pipeline, STATE.pipeline = STATE.pipeline, None
    try:
        assert fapilog.force_flush(1) is True
    finally:
        STATE.pipeline = pipeline  # so that the reset after the test shuts its bridge down


def test_past_its_deadline_a_shutdown_gives_the_exporters_no_time_at_all(
    clock: Clock, memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[float] = []
    real = drain.shutdown_processors

    def recording(processors: Any, timeout: float, **options: Any) -> bool:
        given.append(timeout)
        return real(processors, timeout, **options)

    monkeypatch.setattr(drain, "shutdown_processors", recording)
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.bridge is not None
    real_bridge_shutdown = STATE.bridge.shutdown

    def slow_bridge(timeout: float) -> bool:
        clock.now += timeout + 5  # the bridge's drain took all the time and more
        return real_bridge_shutdown(0)

    monkeypatch.setattr(STATE.bridge, "shutdown", slow_bridge)
    fapilog.shutdown(2)
    assert given == [0.0]


def test_the_exporters_a_reconfiguration_replaced_are_drained_on_their_own_thread_only(
    memory_exporter: MemoryExporter,
) -> None:
    drained: list[threading.Thread] = []
    done = threading.Event()

    class Retired:
        def shutdown(self, timeout: float) -> bool:
            drained.append(threading.current_thread())
            done.set()
            return True

    drain.drain_in_background([Retired(), Retired()], 1)  # type: ignore[list-item]
    assert done.wait(10)
    for thread in threading.enumerate():
        if thread.name == "fapilog-retire":
            thread.join(10)
    assert len(drained) == 2
    assert threading.current_thread() not in drained
    assert {thread.name for thread in drained} == {"fapilog-retire"}

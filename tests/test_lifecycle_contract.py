"""What the child processes and the exit rely on, checked in-process or by a bare fork
where the behaviour allows (fast): a forked child's own ``process.pid`` and gunicorn's
worker patch (`fapilog.lifecycle.fork`), the multiprocessing drain registered once per
process and skipped at ``atexit`` while a multiprocessing child's finalizers have yet to
run; the other processors flushed at exit, each in a worker thread, abandoned and named at
the deadline (`fapilog.lifecycle.foreign`); the SIGTERM drain installed only over a default
action, from the main thread; and the wake-up watcher (`fapilog.lifecycle.wakeup`), which
never takes a wake-up descriptor another library set.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanProcessor

import fapilog
from conftest import MemoryExporter, run_python
from fapilog import configure_logging
from fapilog._state import STATE
from fapilog.lifecycle import drain, foreign, fork
from fapilog.otel.logs import LoggerProvider, LogRecordProcessor
from fork_support import in_forked_child
from queue_support import Unfinished

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


# -- fork.py ------------------------------------------------------------------------------------


def _pid_in_resource() -> Any:
    assert STATE.pipeline is not None
    return STATE.pipeline.provider.resource.attributes.get("process.pid")


@needs_fork
def test_a_forked_child_logs_its_own_pid(memory_exporter: MemoryExporter) -> None:
    assert in_forked_child(lambda: STATE.pipeline is None) is True  # unconfigured: fine
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline is not None and STATE.pipeline.owns_provider
    assert _pid_in_resource() == os.getpid()
    child_pid, in_resource = in_forked_child(lambda: [os.getpid(), _pid_in_resource()])
    assert in_resource == child_pid != os.getpid()
    assert _pid_in_resource() == os.getpid()  # the parent's is unchanged


def _worker_patched() -> bool:
    from gunicorn.workers.base import Worker

    return bool(getattr(Worker.load_wsgi, "_fapilog_sigterm_drain", False))


@needs_fork
def test_a_configured_process_forked_by_gunicorn_gives_its_worker_the_drain(
    memory_exporter: MemoryExporter,
) -> None:
    """``--preload``: the child's `load_wsgi` installs the drain, the parent's does not."""
    import gunicorn.workers.base  # noqa: F401

    assert in_forked_child(_worker_patched) is False  # unconfigured: nothing to drain
    configure_logging(exporters=[memory_exporter.name])
    assert in_forked_child(_worker_patched) is True
    assert _worker_patched() is False


@pytest.fixture
def unhooked() -> Iterator[None]:
    """fork.py's once-per-process flags cleared for the test, restored afterwards."""
    saved = (STATE.multiprocessing_hooked, STATE.child_drain_pid)
    STATE.multiprocessing_hooked = False
    STATE.child_drain_pid = 0
    yield
    STATE.multiprocessing_hooked, STATE.child_drain_pid = saved


def _after_fork_hooks() -> int:
    registry = multiprocessing.util._afterfork_registry  # type: ignore[attr-defined]
    return sum(1 for key in list(registry) if key[2] is fork._multiprocessing_child)


def _drains() -> int:
    registry = multiprocessing.util._finalizer_registry  # type: ignore[attr-defined]
    return sum(
        1
        for key, finalizer in list(registry.items())
        if key[0] == -10 and getattr(finalizer, "_callback", None) is fork.at_exit
    )


def test_before_a_fork_multiprocessing_is_asked_once_to_drain_its_children(
    unhooked: None,
) -> None:
    hooks = _after_fork_hooks()
    fork._before_fork()
    assert STATE.multiprocessing_hooked is True
    assert _after_fork_hooks() == hooks + 1
    fork._before_fork()
    assert _after_fork_hooks() == hooks + 1


def test_the_child_drain_is_registered_once_per_process_after_the_applications_finalizers(
    unhooked: None,
) -> None:
    drains, hooks = _drains(), _after_fork_hooks()
    fork.register_child_drain()
    assert STATE.child_drain_pid == os.getpid()
    assert STATE.multiprocessing_hooked is True
    assert (_drains(), _after_fork_hooks()) == (drains + 1, hooks + 1)
    fork.register_child_drain()
    assert (_drains(), _after_fork_hooks()) == (drains + 1, hooks + 1)
    # a multiprocessing child starts its run: the finalizers were cleared, register again
    fork._multiprocessing_child(STATE)
    assert _drains() == drains + 2
    assert STATE.child_drain_pid == os.getpid()


def test_the_main_process_drains_at_interpreter_exit(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.child_drain_pid == os.getpid()  # (registered by configure_logging)
    fapilog.log.info("last")
    fork.at_interpreter_exit()
    assert STATE.shut_down is True and STATE.exit_started is not None
    assert [r.log_record.body for r in memory_exporter.exporter.get_finished_logs()] == ["last"]


def _exit_in_pool_child(conn: Any) -> None:
    """A multiprocessing child forked from a configured parent: atexit comes before its
    finalizers have run (skipped), then after them (drains)."""
    fork.at_interpreter_exit()
    early = STATE.shut_down
    multiprocessing.util._exiting = True  # type: ignore[attr-defined]
    fork.at_interpreter_exit()
    conn.send([early, STATE.shut_down])
    conn.close()


@needs_fork
def test_a_multiprocessing_child_leaves_its_atexit_drain_to_its_finalizers(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_exit_in_pool_child, args=(sending,))
    child.start()
    sending.close()
    assert receiving.poll(30)
    assert receiving.recv() == [False, True]
    child.join(30)
    assert child.exitcode == 0


# -- foreign.py ---------------------------------------------------------------------------------


class Flushing(LogRecordProcessor):
    """An application's processor: records each flush's timeout and the thread it ran in."""

    def __init__(self, fail: bool = False) -> None:
        self.flushed: list[int] = []
        self.threads: list[tuple[bool, str]] = []  # (a fapilog worker?, its name)
        self.fail = fail

    def on_emit(self, log_record: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed.append(timeout_millis)
        thread = threading.current_thread()
        self.threads.append((thread.ident in STATE.worker_ids, thread.name))
        if self.fail:
            raise RuntimeError("stuck")
        return True


class Stuck(Flushing):
    def __init__(self) -> None:
        super().__init__(fail=True)


class Spans(SpanProcessor):
    def __init__(self) -> None:
        self.flushed: list[int] = []

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed.append(timeout_millis)
        return True


def _abandoned_reports(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if '"exit-abandoned"' in line]


def test_each_other_processor_is_flushed_in_a_worker_with_the_time_left(
    trace_globals: None,
) -> None:
    provider = LoggerProvider()
    mine, theirs, also = Flushing(), Flushing(), Flushing()
    for processor in (mine, theirs, also):
        provider.add_log_record_processor(processor)
    flushing = foreign.flush_others(provider, mine, 1.5)
    assert [name for name, _ in flushing.jobs] == ["Flushing", "Flushing"]
    assert flushing.wait(time.monotonic() + 10) is True
    assert mine.flushed == []
    assert theirs.flushed == also.flushed == [1500]
    assert theirs.threads == [(True, "fapilog-flush-other")]


def test_a_provider_whose_processors_cannot_be_told_apart_is_flushed_whole(
    trace_globals: None,
) -> None:
    class Opaque:
        def __init__(self) -> None:
            self.flushed: list[int] = []

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            self.flushed.append(timeout_millis)
            return True

    provider = Opaque()
    flushing = foreign.flush_others(provider, None, -1)  # type: ignore[arg-type]
    assert [name for name, _ in flushing.jobs] == ["Opaque"]
    assert flushing.wait(time.monotonic() + 10) is True
    assert provider.flushed == [0]  # a deadline already past: no time at all


def test_the_span_processors_of_the_tracer_provider_in_use_are_flushed(
    trace_globals: None,
) -> None:
    owned = TracerProvider()
    owned_spans = Spans()
    owned.add_span_processor(owned_spans)
    STATE.tracer_provider = owned  # the one fapilog created: used when no global one
    flushing = foreign.flush_others(LoggerProvider(), None, 2)
    assert [name for name, _ in flushing.jobs] == ["Spans"]
    assert flushing.wait(time.monotonic() + 10) is True
    assert owned_spans.flushed == [2000]
    installed = TracerProvider()
    installed_spans = Spans()
    installed.add_span_processor(installed_spans)
    trace.set_tracer_provider(installed)  # the application's global one comes first
    assert foreign.flush_others(LoggerProvider(), None, 1).wait(time.monotonic() + 10)
    assert installed_spans.flushed == [1000] and owned_spans.flushed == [2000]


class OpaqueTracerProvider(TracerProvider):
    """A TracerProvider whose span processors cannot be read: flushed whole."""

    def __init__(self) -> None:
        super().__init__(shutdown_on_exit=False)
        self._active_span_processor = None  # type: ignore[assignment]
        self.flushed: list[int] = []

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed.append(timeout_millis)
        return True


def test_a_tracer_provider_whose_processors_cannot_be_read_is_flushed_whole(
    trace_globals: None,
) -> None:
    STATE.tracer_provider = provider = OpaqueTracerProvider()
    flushing = foreign.flush_others(LoggerProvider(), None, 0.25)
    assert [name for name, _ in flushing.jobs] == ["OpaqueTracerProvider"]
    assert flushing.wait(time.monotonic() + 10) is True
    assert provider.flushed == [250]


def test_a_processor_whose_flush_raises_is_named_on_stderr_and_does_not_count_as_hung(
    trace_globals: None, capfd: pytest.CaptureFixture[str]
) -> None:
    provider = LoggerProvider()
    provider.add_log_record_processor(Stuck())
    assert foreign.flush_others(provider, None, 1).wait(time.monotonic() + 10) is True
    err = capfd.readouterr().err
    [report] = [json.loads(line) for line in err.splitlines() if "flush-other:Stuck" in line]
    assert report["message"] == "fapilog: flushing Stuck raised RuntimeError('stuck')"
    assert _abandoned_reports(err) == []


def test_flushes_still_running_at_the_deadline_are_abandoned_counted_and_named(
    capfd: pytest.CaptureFixture[str],
) -> None:
    release = threading.Event()
    slow = threading.Thread(target=release.wait, args=(30,), daemon=True)
    finished = threading.Thread(target=release.is_set)
    slow.start()
    finished.start()
    before = STATE.abandoned_processors
    STATE.abandoned_processors = 3  # abandoned earlier: added to
    finished.join(10)
    try:
        flushing = foreign.OthersFlush([("Slow", slow), ("Quick", finished), ("Unstarted", None)])
        assert flushing.wait(time.monotonic()) is False
        assert STATE.abandoned_processors == 5
    finally:
        release.set()
        STATE.abandoned_processors = before
    [report] = _abandoned_reports(capfd.readouterr().err)
    assert report["level"] == "error"
    assert report["processors"] == ["Slow", "Unstarted"]
    assert report["message"] == (
        "fapilog: the exit deadline (shutdown_timeout) passed with "
        "Slow, Unstarted still flushing: abandoned, what it held is lost"
    )


def test_flushes_that_finish_in_time_are_waited_for_and_nothing_is_reported(
    capfd: pytest.CaptureFixture[str],
) -> None:
    gate = threading.Event()
    waiting = threading.Thread(target=gate.wait, args=(10,))
    waiting.start()
    threading.Timer(0.05, gate.set).start()
    before = STATE.abandoned_processors
    assert foreign.OthersFlush([("Late", waiting)]).wait(time.monotonic() + 10) is True
    assert not waiting.is_alive()
    assert STATE.abandoned_processors == before
    assert _abandoned_reports(capfd.readouterr().err) == []
    assert foreign.OthersFlush([]).wait(time.monotonic()) is True


# -- the SIGTERM drain's installation (lifecycle/drain.py) ---------------------------------


@pytest.fixture
def default_signals() -> Iterator[None]:
    """SIGTERM and SIGQUIT at their default action for the test, restored afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGQUIT)}
    for signum in saved:
        signal.signal(signum, signal.SIG_DFL)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_the_drain_is_installed_where_sigterm_has_its_default_action(
    default_signals: None,
) -> None:
    drain.install_sigterm_handler()
    assert signal.getsignal(signal.SIGTERM) is drain.sigterm_drain()
    assert signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL  # not asked for
    drain.install_sigterm_handler(quit_too=True)
    assert signal.getsignal(signal.SIGQUIT) is drain.sigterm_drain()
    drain.uninstall_sigterm_handler()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL


def test_the_applications_own_handlers_are_never_replaced_nor_removed(
    default_signals: None,
) -> None:
    def theirs(signum: int, frame: Any) -> None:
        pass

    signal.signal(signal.SIGTERM, theirs)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    drain.install_sigterm_handler(quit_too=True)
    assert signal.getsignal(signal.SIGTERM) is theirs
    assert signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN
    drain.uninstall_sigterm_handler()
    assert signal.getsignal(signal.SIGTERM) is theirs
    assert signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN


def test_only_the_main_thread_installs_the_drain(default_signals: None) -> None:
    worker = threading.Thread(target=drain.install_sigterm_handler, kwargs={"quit_too": True})
    worker.start()
    worker.join(10)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL


# -- wakeup.py ----------------------------------------------------------------------------------

WAKEUP = textwrap.dedent(
    """
    import os, signal, sys, threading
    from fapilog.lifecycle import wakeup

    handler = lambda signum, frame: None
    def watchers():
        return sum(t.name == "fapilog-signal-watcher" for t in threading.enumerate())
    """
)


def test_the_watcher_takes_only_a_free_wakeup_descriptor_from_the_main_thread_once(
    subprocess_env: dict[str, str],
) -> None:
    """From another thread: nothing (the pipe it opened closed again). With another
    library's descriptor set: it stays theirs, no watcher. A free one: taken once, one
    watcher thread, a non-blocking pipe (a full pipe never blocks the C handler)."""
    code = WAKEUP + textwrap.dedent(
        """
        before = len(os.listdir("/proc/self/fd"))
        worker = threading.Thread(target=wakeup.watch, args=(handler,))
        worker.start(); worker.join()
        after = len(os.listdir("/proc/self/fd"))
        print(wakeup._watcher is None, signal.set_wakeup_fd(-1), watchers(), after - before)

        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        before = len(os.listdir("/proc/self/fd"))
        wakeup.watch(handler)
        after = len(os.listdir("/proc/self/fd"))
        print(signal.set_wakeup_fd(-1) == write_fd, wakeup._watcher is None, watchers(),
              after - before)

        wakeup.watch(handler)
        first = wakeup._watcher
        wakeup.watch(handler)
        mine = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(mine)
        print(first is wakeup._watcher, mine == first.write_fd, first.handler is handler,
              first.pid == os.getpid(), watchers(), os.get_blocking(first.write_fd))
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    assert [line.split() for line in out.splitlines()] == [
        ["True", "-1", "0", "0"],
        ["True", "True", "0", "0"],
        ["True", "True", "True", "True", "1", "False"],
    ]


def test_a_forked_child_leaves_a_descriptor_set_since_by_another_library(
    subprocess_env: dict[str, str],
) -> None:
    """Before 3.12 nothing clears the wake-up descriptor at fork: one the application set
    after fapilog's watcher began stays the application's in the child, which then has no
    watcher. From 3.12 asyncio clears it in every child: the child takes it, as a free one."""
    code = WAKEUP + textwrap.dedent(
        """
        wakeup.watch(handler)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        pid = os.fork()
        if pid == 0:
            current = signal.set_wakeup_fd(-1)
            print(current == write_fd, wakeup._watcher is None, watchers(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    if sys.version_info < (3, 12):
        assert out.split() == ["True", "True", "0"]
    else:  # pragma: no cover - 3.12+
        assert out.split() == ["False", "False", "1"]


def test_without_thread_signal_masks_there_is_no_watcher(
    subprocess_env: dict[str, str],
) -> None:
    """Where threads cannot be sent a signal (Windows: no `signal.pthread_kill`), the
    watcher could not wake the main thread: none is started, the descriptor stays free."""
    code = WAKEUP + textwrap.dedent(
        """
        del signal.pthread_kill
        wakeup.watch(handler)
        print(wakeup._watcher is None, signal.set_wakeup_fd(-1), watchers())
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert (status, out.split()) == (0, ["True", "-1", "0"]), err


def test_where_no_thread_can_start_the_descriptor_is_given_back(
    subprocess_env: dict[str, str],
) -> None:
    code = WAKEUP + textwrap.dedent(
        """
        wakeup.start_worker = lambda *args: None
        before = len(os.listdir("/proc/self/fd"))
        wakeup.watch(handler)
        after = len(os.listdir("/proc/self/fd"))
        print(wakeup._watcher is None, signal.set_wakeup_fd(-1), watchers(), after - before)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert (status, out.split()) == (0, ["True", "-1", "0", "0"]), err


def test_a_full_wakeup_pipe_is_never_a_warning_on_stderr(
    subprocess_env: dict[str, str],
) -> None:
    """While the watcher waits for a drain to begin, signals may fill its pipe: the C
    handler then drops their numbers quietly (the handlers still run), no "Exception
    ignored" on the application's stderr."""
    code = WAKEUP + textwrap.dedent(
        """
        wakeup.GRACE = 30.0  # the watcher waits this long for the drain below to begin
        signal.signal(signal.SIGUSR1, handler)
        ran = []
        signal.signal(signal.SIGUSR2, lambda signum, frame: ran.append(signum))
        wakeup.watch(handler)
        write_fd = wakeup._watcher.write_fd
        os.write(write_fd, bytes([signal.SIGUSR1]))
        while True:  # the watcher is waiting for the drain: fill its pipe
            try:
                os.write(write_fd, bytes([signal.SIGWINCH]) * 65536)
            except BlockingIOError:
                break
        signal.raise_signal(signal.SIGUSR2)
        wakeup.handler_began()  # the watcher goes back to reading
        print(ran == [signal.SIGUSR2], flush=True)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert (status, out.split()) == (0, ["True"]), err
    assert "Exception ignored" not in err and "BlockingIOError" not in err, err


def test_of_signals_read_at_once_only_those_of_a_pending_drain_are_sent_again(
    subprocess_env: dict[str, str],
) -> None:
    """Two signal numbers in one read of the wake-up pipe (the C handler wrote both before
    the watcher woke): the application's own SIGUSR1 is left alone (its handler runs where
    Python runs it, never a second time), and the SIGTERM whose handler, fapilog's drain,
    has not begun within GRACE is sent again to the main thread, which sleeps."""
    code = WAKEUP + textwrap.dedent(
        """
        def drain(signum, frame):
            print("drain", signum, flush=True)
            os._exit(3)

        signal.signal(signal.SIGTERM, drain)
        signal.signal(signal.SIGUSR1, lambda signum, frame: print("usr1 again", flush=True))
        wakeup.watch(drain)
        asleep = threading.Lock()
        asleep.acquire()
        os.write(wakeup._watcher.write_fd, bytes([signal.SIGUSR1, signal.SIGTERM]))
        print("woken", asleep.acquire(timeout=5), flush=True)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert (status, out.split()) == (3, ["drain", str(int(signal.SIGTERM))]), err


def test_waiting_for_the_others_past_the_deadline_waits_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(STATE, "abandoned_processors", 0)  # (a process-wide count: put back)
    stuck = Unfinished()
    flushing = foreign.OthersFlush([("Stuck", stuck)])  # type: ignore[list-item]
    assert flushing.wait(time.monotonic() - 5) is False
    assert stuck.waits == [0.0] and STATE.abandoned_processors == 1

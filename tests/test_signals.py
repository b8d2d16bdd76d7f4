"""Signals never deadlock the process: the path a signal handler takes (logging, or
fapilog's own SIGTERM drain) acquires no lock that the interrupted log call can hold.

Each scenario runs in a real child process, with a timeout, many times (`runs()`: a few in
`make test`, the full counts in `make soak`).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import runs

TIGHT_LOOP = textwrap.dedent(
    """
    import os, sys
    import fapilog

    path, progress = sys.argv[1], int(sys.argv[2])
    fapilog.configure_logging(
        exporters=["file"], file={"path": path}, capture_stdlib=False, shutdown_timeout=2,
        queue={"overflow": "block", "block_timeout": 60},
    )
    log = fapilog.get_logger("loop")
    i = 0
    while True:
        log.info("n", i=i)
        if i % 50 == 0:
            os.write(progress, b"%d\\n" % i)  # reported after its record was logged
        i += 1
    """
)


def _numbers(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["i"] for line in path.read_text().splitlines() if line]


def _sigterm_run(tmp_path: Path, env: dict[str, str], run: int) -> None:
    path = tmp_path / f"loop-{run}.log"
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", TIGHT_LOOP, str(path), str(write_end)],
        env=env,
        pass_fds=(write_end,),
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    reported = -1
    buffered = b""
    try:
        deadline = time.monotonic() + 30
        wanted = random.randint(200, 20_000)  # signal at a different point each run
        while reported < wanted and time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 1)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                if lines:
                    reported = int(lines[-1])
        assert reported >= 0, "the child never got going"
        child.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = child.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        os.close(read_end)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGTERM, err.decode()[-2000:]
    assert took < 3.0, f"run {run}: exit took {took:.2f} s"
    numbers = _numbers(path)
    assert numbers == list(range(len(numbers))), f"run {run}: a gap in the file"
    assert numbers and numbers[-1] >= reported, (run, numbers[-1:], reported)


@pytest.mark.slow
@pytest.mark.soak
def test_sigterm_into_a_tight_logging_loop_exits_in_time_with_a_gap_free_file(
    tmp_path: Path, timed_env: dict[str, str]
) -> None:
    """SIGTERM lands anywhere in a log call (the loop blocks on a full queue half the time):
    the drain finishes within shutdown_timeout + 1 s, and the file holds every record up to
    the last one the loop reported, in order, without a gap."""
    for run in range(runs(quick=5, soak=100)):
        _sigterm_run(tmp_path, timed_env, run)


HANDLER_LOGS = textwrap.dedent(
    """
    import logging, os, signal, sys
    import fapilog

    path, acks, expected, via = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    fapilog.configure_logging(exporters=["file"], file={"path": path})
    log = fapilog.get_logger("loop")
    stdlib = logging.getLogger("handler")
    handled = 0

    def on_usr1(signum, frame):
        global handled
        handled += 1
        if via == "stdlib":
            stdlib.warning("handled %d", handled)
        else:
            log.warning("handled", n=handled)
        os.write(acks, b"%d\\n" % handled)

    signal.signal(signal.SIGUSR1, on_usr1)
    os.write(acks, b"ready\\n")
    i = 0
    while handled < expected:
        log.info("n", i=i)
        i += 1
    """
)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("via", ["fapilog", "stdlib"])
def test_a_signal_handler_that_logs_never_hangs_and_every_line_arrives(
    tmp_path: Path, subprocess_env: dict[str, str], via: str
) -> None:
    """An application's SIGUSR1 handler logs while the main thread is in the middle of a
    log call, over and over: no hang, and every handler line is delivered."""
    expected = runs(quick=50, soak=200)
    path = tmp_path / "handler.log"
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", HANDLER_LOGS, str(path), str(write_end), str(expected), via],
        env=subprocess_env,
        pass_fds=(write_end,),
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    acks = os.fdopen(read_end, "rb")
    try:
        assert acks.readline() == b"ready\n"
        for n in range(1, expected + 1):
            time.sleep(random.random() / 500)  # land at a different point of the loop
            child.send_signal(signal.SIGUSR1)
            ready, _, _ = select.select([acks], [], [], 10)
            assert ready, f"no answer to signal {n}: the process hangs"
            assert acks.readline() == b"%d\n" % n
        _, err = child.communicate(timeout=20)
    finally:
        acks.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    handled = [
        line for line in lines if line["logger"] == "handler" or line["message"] == "handled"
    ]
    if via == "stdlib":
        assert [line["message"] for line in handled] == [
            f"handled {n}" for n in range(1, expected + 1)
        ]
    else:
        assert [line["n"] for line in handled] == list(range(1, expected + 1))


SIGTERM_DURING_DRAIN = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import fapilog
    from fapilog.exporters import LogRecordExporter, LogRecordExportResult, register_exporter

    armed = threading.Event()

    class Slow(LogRecordExporter):
        signalled = False

        def export(self, batch):
            armed.wait(30)  # until the main thread is about to drain
            if not Slow.signalled:  # the drain is under way: SIGTERM lands in it
                Slow.signalled = True
                time.sleep(0.3)  # the main thread is waiting for this exporter's queue
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)
            with open(sys.argv[1], "a") as out:
                out.writelines(f"{r.log_record.attributes['i']}\\n" for r in batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self): pass
        def force_flush(self, timeout_millis=30000): return True

    register_exporter("slow", lambda settings: Slow())
    fapilog.configure_logging(
        exporters=["slow"], capture_stdlib=False,
        queue={"batch_size": 100, "max_size": 5000},
    )
    for i in range(1000):
        fapilog.log.info("n", i=i)
    armed.set()
    fapilog.shutdown(10)  # the main thread is here when the signal arrives
    print("survived the signal")
    """
)


def test_a_sigterm_during_the_drain_lets_the_drain_finish_then_ends_the_process(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """A SIGTERM that interrupts the thread running the drain (a multiprocessing worker's
    exit drain when `Pool.terminate()` signals it) does not cut the drain short: every record
    is delivered, then the process ends by SIGTERM."""
    path = tmp_path / "drain.txt"
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_DURING_DRAIN, str(path)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    assert "survived" not in result.stdout
    assert sorted(int(n) for n in path.read_text().split()) == list(range(1000))


PENDING_WHILE_ASLEEP = textwrap.dedent(
    """
    import signal, sys, threading
    import fapilog

    fapilog.configure_logging(exporters=["file"], file={"path": sys.argv[1]}, capture_stdlib=False)
    for i in range(300):
        fapilog.log.info("n", i=i)
    main = threading.main_thread().native_id
    asleep = threading.Lock()
    asleep.acquire()
    about_to_sleep = threading.Event()

    def application_thread():
        # wait until the main thread sleeps in the lock below, then take the SIGTERM in
        # this thread: the kernel interrupts only this one, the main thread sleeps on
        # with the Python handler pending (as when a signal lands just before it sleeps).
        # (Not before: asleep in Thread.start() or waiting for the GIL, the main thread would
        # wake up by itself and run the handler, watcher or not.)
        about_to_sleep.wait()
        while open(f"/proc/self/task/{main}/stat").read().rsplit(")", 1)[1].split()[0] != "S":
            pass
        print("signalled", flush=True)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=application_thread, daemon=True).start()
    about_to_sleep.set()
    asleep.acquire()  # never released: only the SIGTERM handler ends this process
    print("survived the signal")
    """
)


@pytest.mark.soak
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_handler_left_pending_while_the_main_thread_sleeps_still_runs(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """A SIGTERM the kernel gives to another thread (or that lands just before the main
    thread sleeps) leaves CPython's handler pending while the main thread sleeps in a system
    call: fapilog's watcher wakes the main thread, the drain delivers everything, and the
    process ends by SIGTERM (it used to sleep for ever: a Pool worker that `terminate()`
    signalled as it went back to wait for a task)."""
    for run in range(runs(quick=3, soak=50)):
        path = tmp_path / f"pending-{run}.log"
        result = subprocess.run(
            [sys.executable, "-c", PENDING_WHILE_ASLEEP, str(path)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == -signal.SIGTERM, (run, result.stdout, result.stderr[-2000:])
        assert "signalled" in result.stdout and "survived" not in result.stdout
        assert _numbers(path) == list(range(300)), run


# the same, in a child forked from a configured process: the child has a watcher of its own
PENDING_IN_A_FORKED_CHILD = (
    PENDING_WHILE_ASLEEP.replace(
        "for i in range(300):",
        textwrap.dedent(
            """\
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            print("child", os.waitstatus_to_exitcode(status), flush=True)
            sys.exit(0)
        signal.alarm(20)  # a child left asleep ends all the same (by SIGALRM)
        for i in range(300):"""
        ),
        1,
    )
    .replace("import signal, sys, threading", "import os, signal, sys, threading", 1)
    .replace(
        # (in a forked child, Python 3.11 keeps the parent's native_id on the main thread)
        "threading.main_thread().native_id",
        "threading.get_native_id()",
        1,
    )
)


# A library's at-fork hook that clears the wake-up fd in every forked child, registered
# before fapilog's: asyncio's does so from Python 3.12 (asyncio.events.on_fork), so on 3.12+
# both variants meet it; on older Pythons only this one does
CLEARED_AT_FORK = textwrap.dedent(
    """
    import os, signal
    os.register_at_fork(after_in_child=lambda: signal.set_wakeup_fd(-1))
    """
)


@pytest.mark.soak
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("at_fork", ["as-forked", "wakeup-fd-cleared-at-fork"])
def test_a_forked_child_has_its_own_watcher_for_a_pending_handler(
    tmp_path: Path, subprocess_env: dict[str, str], at_fork: str
) -> None:
    """A child forked from a configured process, its handler left pending while its main
    thread sleeps: the child's own watcher wakes it, the child drains and ends by SIGTERM;
    also where an at-fork hook cleared the wake-up fd the child inherited first (asyncio's,
    from Python 3.12: the child then had no watcher and slept until its SIGALRM guard)."""
    script = PENDING_IN_A_FORKED_CHILD
    if at_fork == "wakeup-fd-cleared-at-fork":
        script = CLEARED_AT_FORK + script
    for run in range(runs(quick=1, soak=20)):
        path = tmp_path / f"forked-{run}.log"
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (run, result.stdout, result.stderr[-2000:])
        assert f"child {-signal.SIGTERM}" in result.stdout, (run, result.stdout)
        assert "signalled" in result.stdout and "survived" not in result.stdout
        assert _numbers(path) == list(range(300)), run


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_fapilogs_threads_block_the_signals_sent_to_the_process(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """The kernel gives a process-wide signal to a thread that does not block it; CPython
    runs the handler in the main thread only. fapilog's threads block those signals, so a
    SIGTERM or SIGINT interrupts the application's thread, not a fapilog worker."""
    script = textwrap.dedent(
        """
        import signal, threading
        import fapilog

        fapilog.configure_logging(exporters=["stdout", "file"], file={"path": "x.log"})
        fapilog.log.info("hello")
        fapilog.force_flush()
        for thread in threading.enumerate():
            status = open(f"/proc/self/task/{thread.native_id}/status").read()
            blocked = int(status.split("SigBlk:")[1].split()[0], 16)
            print(thread.name, all(blocked >> (s - 1) & 1 for s in (signal.SIGTERM, signal.SIGINT)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    lines = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines() if " " in line)
    workers = {name: blocked for name, blocked in lines.items() if name.startswith("fapilog-")}
    assert {"fapilog-intake", "fapilog-signal-watcher", "fapilog-file"} <= set(workers), lines
    assert set(workers.values()) == {"True"}, workers
    assert lines["MainThread"] == "False"

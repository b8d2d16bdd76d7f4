"""The development console writes each record during its log call: in call order with what
the application prints, while the other exporters stay behind their queues; and a signal
handler that logs while a console write is in progress (or while the application prints)
neither raises nor hangs. Real child processes, stdout a pipe."""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

import fapilog
from conftest import run_python, runs
from fapilog import configure_logging, log
from fapilog.exporters import (
    LogRecordExporter,
    LogRecordExportResult,
    ReadableLogRecord,
    register_exporter,
    unregister_exporter,
)

RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \[(\w+) *\] (\S+) (\S+) +(\w+)=(\d+)$")

ORDER = textwrap.dedent(
    """
    import logging, sys
    from fapilog import configure_logging, log

    configure_logging()  # FAPILOG_ENV=development: the console on stdout
    stdlib = logging.getLogger("lib")
    for n in range(300):
        log.info("a", n=n)
        print(f"b {n}")
        stdlib.warning("c n=%d", n)
        sys.stdout.write(f"d {n}\\n")
    """
)


def test_records_and_prints_come_out_in_call_order(subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "FAPILOG_ENV": "development"}
    code, out, err = run_python(ORDER, env)
    assert code == 0, err
    assert "\x1b" not in out  # a pipe: no colours
    expected = [f"{part} {n}" for n in range(300) for part in "abcd"]
    assert [_short(line) for line in out.splitlines()] == expected


def _short(line: str) -> str:
    """A console line as ``a 7`` (the stdlib record ``c n=7`` as ``c 7``); the printed
    lines as they are."""
    record = RECORD.match(line)
    return f"{record.group(3)} {record.group(5)}" if record is not None else line


class Gate(LogRecordExporter):
    """An exporter whose export waits until it is let through."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.records: list[Any] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.entered.set()
        self.release.wait(30)
        self.records.extend(record.log_record.body for record in batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_the_console_is_written_at_once_while_the_other_exporters_stay_queued(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gate = Gate()
    register_exporter("gate", lambda settings: gate)
    try:
        configure_logging(exporters=["console", "gate"])
        log.info("first")
        assert "first" in capsys.readouterr().out  # written during the call
        assert gate.entered.wait(10)  # the gate's worker holds "first", waiting
        log.info("second")  # returns although the gate is stuck
        assert "second" in capsys.readouterr().out
        assert gate.records == []
        gate.release.set()
        assert fapilog.force_flush(10)
        assert gate.records == ["first", "second"]
    finally:
        gate.release.set()
        unregister_exporter("gate")
    figures = fapilog.stats()["exporters"]
    assert figures["console"]["exported"] == figures["gate"]["exported"] == 2


# -- signals --------------------------------------------------------------------------------

HANDLER_LOGS = textwrap.dedent(
    """
    import fcntl, json, os, signal, sys
    import fapilog
    from fapilog.pipeline.accounting import unbalanced

    acks, expected, long_writes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "long"
    try:  # a small pipe: the writes wait for the reader often, and a signal interrupts them
        fcntl.fcntl(1, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    except OSError:
        pass
    fapilog.configure_logging(exporters=["console"], capture_stdlib=False)
    log = fapilog.get_logger("loop")
    handled = 0

    def on_usr1(signum, frame):
        global handled
        handled += 1
        log.warning("handled", n=handled)
        os.write(acks, b"%d\\n" % handled)

    signal.signal(signal.SIGUSR1, on_usr1)
    os.write(acks, b"ready\\n")
    i = 0
    while handled < expected:
        log.info("n", i=i)
        # the application's own writes between the records, now and then a long one
        # (one write each: print() writes its end apart)
        if i % 3 == 0:
            sys.stdout.write(f"p {i}\\n")
        if long_writes and i % 50 == 0:
            sys.stdout.write("".join(f"p {i}.{k}\\n" for k in range(1000)))
        i += 1
    fapilog.force_flush(10)
    figures = fapilog.stats()
    result = {"unbalanced": unbalanced(figures), "console": figures["exporters"]["console"],
              "logged": i}
    sys.stderr.write("RESULT " + json.dumps(result) + "\\n")
    """
)
LOOP_LINE = re.compile(
    r"^\d\d:\d\d:\d\d\.\d{3} \[(info|warning) *\] loop (n|handled) +(i|n)=(\d+)$"
)


def _written_by_the_application(logged: int, long_writes: bool) -> list[str]:
    lines = []
    for i in range(logged):
        if i % 3 == 0:
            lines.append(f"p {i}")
        if long_writes and i % 50 == 0:
            lines.extend(f"p {i}.{k}" for k in range(1000))
    return lines


def _signal_run(env: dict[str, str], expected: int, long_writes: bool) -> None:
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HANDLER_LOGS,
            str(write_end),
            str(expected),
            "long" if long_writes else "short",
        ],
        env=env,
        pass_fds=(write_end,),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    assert child.stdout is not None and child.stderr is not None
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.extend(child.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    acks = os.fdopen(read_end, "rb")
    try:
        ready, _, _ = select.select([acks], [], [], 60)
        assert ready and acks.readline() == b"ready\n"
        for n in range(1, expected + 1):
            time.sleep(random.random() / 1000)  # land at a different point of the loop
            child.send_signal(signal.SIGUSR1)
            ready, _, _ = select.select([acks], [], [], 10)
            assert ready, f"no answer to signal {n}: the process hangs"
            assert acks.readline() == b"%d\n" % n
        err = child.stderr.read()
        assert child.wait(30) == 0, err.decode()[-3000:]
        reader.join(30)
    finally:
        acks.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert b"Traceback" not in err, err.decode()[-3000:]
    result = json.loads(err.decode().split("RESULT ", 1)[1])
    assert result["unbalanced"] == {}, result
    console = result["console"]
    assert console["dropped"] == 0 and console["exported"] == console["emitted"], console
    loop, handled, written = [], [], []
    for raw in out:
        line = raw.decode("utf-8").rstrip("\n")
        match = LOOP_LINE.match(line)
        if match is not None:
            (loop if match.group(2) == "n" else handled).append(int(match.group(4)))
        else:
            written.append(line)
    assert loop == list(range(result["logged"])), "a record of the loop is missing"
    assert sorted(handled) == list(range(1, expected + 1)), handled
    # every line the application wrote is whole, in its order
    assert written == _written_by_the_application(result["logged"], long_writes)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("stdout", ["buffered", "unbuffered"])
def test_a_signal_handler_that_logs_during_a_console_write_never_raises_nor_hangs(
    subprocess_env: dict[str, str], stdout: str
) -> None:
    """SIGUSR1, whose handler logs, lands over and over in a loop that writes to the
    console (a pipe, often full: the write waits) and writes lines of its own: every run
    ends, every line is whole, every record is written once and counted. Buffered, a
    handler landing inside the application's own long write finds the stream refusing a
    reentrant call. Unbuffered (``PYTHONUNBUFFERED``), the console's write a signal cuts
    short goes on with the rest; the application writes short lines only there: Python's
    unbuffered text stream itself drops the rest of a long write that a signal cuts short."""
    env = dict(subprocess_env)
    if stdout == "buffered":
        env.pop("PYTHONUNBUFFERED", None)
    else:
        env["PYTHONUNBUFFERED"] = "1"
    for _ in range(runs(quick=3, soak=50)):
        _signal_run(env, expected=30, long_writes=stdout == "buffered")


BROKEN_PIPE = textwrap.dedent(
    """
    import json, sys
    import fapilog
    from fapilog.pipeline.accounting import unbalanced

    fapilog.configure_logging(exporters=["console"], capture_stdlib=False)
    for n in range(2000):
        fapilog.log.info("n", i=n)
    fapilog.force_flush(10)
    figures = fapilog.stats()
    result = {"unbalanced": unbalanced(figures), "console": figures["exporters"]["console"]}
    sys.stderr.write("RESULT " + json.dumps(result) + "\\n")
    """
)


def test_a_reader_that_goes_away_costs_the_application_nothing(
    subprocess_env: dict[str, str],
) -> None:
    """`app | head -1`: the console's writes fail once the reader is gone; the application
    never sees it, and what was not written counts as dropped (``broken_pipe``)."""
    child = subprocess.Popen(
        [sys.executable, "-c", BROKEN_PIPE],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    first = child.stdout.readline()
    child.stdout.close()
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()[-3000:]
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} \[info +\] app n +i=0$", first.decode()), first
    result = json.loads(err.decode().split("RESULT ", 1)[1])
    console = result["console"]
    assert result["unbalanced"] == {}, result
    assert console["dropped_by_reason"].get("broken_pipe", 0) > 0, console
    assert console["exported"] + console["dropped"] == console["emitted"] == 2000


PRINT_INTERRUPTED = textwrap.dedent(
    """
    import signal, sys, threading, time
    from fapilog import configure_logging, force_flush, log

    configure_logging(exporters=["console"])
    signal.signal(signal.SIGUSR1, lambda signum, frame: log.warning("in handler"))

    def other():
        time.sleep(0.3)  # the main thread is inside its print() by then (the pipe is full)
        sys.stderr.write("other thread logging\\n")
        sys.stderr.flush()
        log.info("from thread")  # takes the console, then waits for stdout's own lock

    threading.Thread(target=other, daemon=True).start()
    sys.stdout.write("x" * 1_000_000)  # blocks: nobody reads the pipe yet
    sys.stdout.flush()
    force_flush()
    sys.stderr.write("main done\\n")
    """
)


def _interrupted_print_hangs(env: dict[str, str]) -> bool:
    """One run of PRINT_INTERRUPTED: whether it hung (its output checked otherwise)."""
    child = subprocess.Popen(
        [sys.executable, "-c", PRINT_INTERRUPTED],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stderr is not None and child.stdout is not None
    out: list[bytes] = []
    try:
        assert child.stderr.readline() == b"other thread logging\n"
        time.sleep(0.3)  # the other thread is inside its write: no event can say so
        child.send_signal(signal.SIGUSR1)
        reader = threading.Thread(
            target=lambda stream: out.append(stream.read()), args=(child.stdout,)
        )
        reader.start()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            return True
        reader.join(10)
        err = child.stderr.read().decode()
        assert child.returncode == 0, err
        assert "main done" in err
        text = out[0].decode()
        assert "in handler" in text and "from thread" in text, text[-500:]
        return False
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.soak
def test_a_handler_that_logs_in_an_interrupted_print_never_waits_for_another_threads_write(
    subprocess_env: dict[str, str],
) -> None:
    """The main thread is inside a `print()` to a full pipe (holding stdout's lock); another
    thread is writing a console line (holding the console's lock, waiting for stdout's); a
    signal handler on the main thread logs. It must not wait for the other thread: that
    one waits for the print the handler interrupted."""
    env = {k: v for k, v in subprocess_env.items() if k != "PYTHONUNBUFFERED"}
    hangs = sum(_interrupted_print_hangs(env) for _ in range(runs(2, 20)))
    assert hangs == 0

"""Graceful shutdown in real processes: drain at normal exit, under uvicorn on SIGTERM
mid-load, and a bounded exit when an exporter's endpoint is dead."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port, run_python, sigterm_mid_load

pytestmark = pytest.mark.slow


def test_normal_exit_delivers_every_record(subprocess_env: dict[str, str]) -> None:
    """50,000 events, then the interpreter exits; every line is written."""
    code = textwrap.dedent(
        """
        import fapilog
        fapilog.configure_logging(exporters=["stdout"], queue={"max_size": 100_000})
        log = fapilog.get_logger("exit")
        for i in range(50_000):
            log.info("line", i=i)
        # no flush, no shutdown: exit must drain
        """
    )
    code_rc, out, err = run_python(code, subprocess_env, timeout=120)
    assert code_rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["i"] for line in lines if line["message"] == "line"] == list(range(50_000))


def test_a_burst_with_the_default_queues_is_not_shed_between_workers(
    tmp_path: Path, timed_env: dict[str, str]
) -> None:
    """The default queues (1,000 records, drop_oldest), a file, a 50,000-event burst and
    exit. The application never waits on an exporter; the bridge's worker waits (bounded)
    for the exporter's instead of shedding, so nothing is lost between the workers, every
    record is accounted for, and (the caller yielding the GIL to the workers when the
    intake fills) most or all of the burst is written. The child runs without coverage:
    coverage's tracer slows the workers far more than the caller (on Python 3.10 the
    intake then sheds most of the burst), and this test is about the pipeline's own pace."""
    log_path = tmp_path / "app.log"
    code = textwrap.dedent(
        """
        import json, sys, fapilog
        fapilog.configure_logging(exporters=["file"], file={"path": sys.argv[1], "max_bytes": 0},
                                  capture_stdlib=False)
        log = fapilog.get_logger("burst")
        for i in range(50_000):
            log.info("line", i=i, user="u", ok=True)
        fapilog.force_flush(30)
        print(json.dumps(fapilog.stats()))
        """
    )
    # a CI machine can stall the file worker past the default 50 ms hand-off bound, which
    # would shed legitimately; this test is about a healthy exporter
    env = dict(timed_env, FAPILOG_QUEUE__BLOCK_TIMEOUT="5")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(log_path)], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    (exporter,) = figures["exporters"].values()
    assert "queue_full" not in exporter["dropped_by_reason"]  # none shed between workers
    assert figures["emitted"] == 50_000
    assert figures["exported"] + figures["dropped"] == 50_000
    lines = [json.loads(line)["i"] for line in log_path.read_text().splitlines()]
    assert len(lines) == figures["exported"] == len(set(lines))
    # what the intake keeps depends on thread scheduling (the GIL hand-over is best effort):
    # all of it on 3.11 and 3.13 here, 82-99 % on 3.10; before, about 40 %
    assert figures["exported"] >= 0.6 * 50_000, figures["intake"]


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung collector)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    host, port = server.getsockname()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.close()


def _exit_takes(
    code: str, env: dict[str, str], deadline: float, *, wait: float = 60
) -> tuple[float, str]:
    """Run `code`; return seconds from its last statement (the line ``EXITING <monotonic>``
    it writes to stderr: on stdout, a pipe, it could land inside a large write of
    fapilog's) to the process being gone, and its stdout. The process is killed (and the
    test fails) if it is still running `wait` seconds past `deadline`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=deadline + wait)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = time.monotonic()  # CLOCK_MONOTONIC is system-wide on Linux
    marks = [line for line in err.splitlines() if line.startswith("EXITING ")]
    assert marks, f"no exit mark; stderr: {err[-2000:]}"
    return ended - float(marks[-1].split()[1]), out


BLOCKING_EXPORTER = """
import sys, threading, time, fapilog
from fapilog.exporters import LogRecordExporter, LogRecordExportResult

class Forever(LogRecordExporter):
    def export(self, batch):
        threading.Event().wait()  # never returns
        return LogRecordExportResult.SUCCESS
    def shutdown(self):
        threading.Event().wait()  # neither does its shutdown
    def force_flush(self, timeout_millis=30000):
        return True

fapilog.register_exporter("forever", lambda settings: Forever())
"""


def test_exit_is_bounded_by_the_deadline_when_an_exporter_blocks_forever(
    timed_env: dict[str, str],
) -> None:
    """A dead exporter cannot make exit take longer than shutdown_timeout."""
    code = BLOCKING_EXPORTER + textwrap.dedent(
        """
        # queues larger than the burst: under CPU contention a 1,000-record queue overflows
        # (drop_oldest, counted) and this test is about the deadline, not overflow
        fapilog.configure_logging(exporters=["forever", "stdout"], shutdown_timeout=3,
                                  queue={"max_size": 5_000})
        for i in range(2_000):
            fapilog.log.info("queued behind a dead exporter", i=i)
        print("EXITING", time.monotonic(), file=sys.stderr, flush=True)
        """
    )
    took, out = _exit_takes(code, timed_env, 3)
    assert took < 3 + 3.0, took  # the deadline, plus interpreter teardown on a busy machine
    # the healthy exporter was not starved of the deadline by the dead one
    assert out.count('"message":"queued behind a dead exporter"') == 2_000


NEVER_CLOSING_EXPORTER = """
import json, sys, threading, time, fapilog
from fapilog.exporters import LogRecordExporter, LogRecordExportResult

class NeverCloses(LogRecordExporter):
    def export(self, batch):
        return LogRecordExportResult.SUCCESS  # exports fine
    def shutdown(self):
        threading.Event().wait()  # but its shutdown never returns
    def force_flush(self, timeout_millis=30000):
        return True

fapilog.register_exporter("never_closes", lambda settings: NeverCloses())
"""


def test_an_explicit_shutdown_is_bounded_when_an_exporters_shutdown_never_returns(
    tmp_path: Path, timed_env: dict[str, str]
) -> None:
    """`fapilog.shutdown()` called by the application, an exporter whose export works but
    whose own `shutdown()` never returns: the call returns False at its deadline, the
    process then exits at once, and the file exporter beside it has every record."""
    log_path = tmp_path / "app.log"
    code = NEVER_CLOSING_EXPORTER + textwrap.dedent(
        f"""
        fapilog.configure_logging(exporters=["never_closes", "file"], shutdown_timeout=1,
                                  file={{"path": {str(log_path)!r}, "max_bytes": 0}},
                                  capture_stdlib=False, queue={{"max_size": 5_000}})
        for i in range(1_000):
            fapilog.log.info("before shutdown", i=i)
        print("EXITING", time.monotonic(), file=sys.stderr, flush=True)
        drained = fapilog.shutdown()
        exported = {{name: figures["exported"]
                    for name, figures in fapilog.stats()["exporters"].items()}}
        print(json.dumps({{"drained": drained, "exported": exported}}))
        """
    )
    took, out = _exit_takes(code, timed_env, 1, wait=15)
    assert took < 1 + 3.0, took  # the deadline, plus interpreter teardown on a busy machine
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"drained": False, "exported": {"never_closes": 1_000, "file": 1_000}}
    lines = [json.loads(line)["i"] for line in log_path.read_text().splitlines()]
    assert lines == list(range(1_000))


@pytest.mark.parametrize("exporter", ["otlp", "loki"])
def test_exit_is_bounded_with_an_unreachable_real_endpoint(
    exporter: str, dead_endpoint: str, timed_env: dict[str, str]
) -> None:
    env = dict(timed_env)
    if exporter == "otlp":
        env["FAPILOG_OTLP__ENDPOINT"] = dead_endpoint
        env["FAPILOG_OTLP__PROTOCOL"] = "http/protobuf"
    else:
        env["FAPILOG_LOKI__URL"] = dead_endpoint
    code = textwrap.dedent(
        f"""
        import sys, time, fapilog
        fapilog.configure_logging(exporters=["{exporter}"], shutdown_timeout=2)
        for i in range(1_000):
            fapilog.log.info("to a dead collector", i=i)
        time.sleep(0.5)  # let the exporter start talking to the dead endpoint
        print("EXITING", time.monotonic(), file=sys.stderr, flush=True)
        """
    )
    took, _ = _exit_takes(code, env, 2)
    assert took < 2 + 3.0, took


UVICORN_APP = """
import os
from pathlib import Path

from fastapi import FastAPI

import fapilog

# a queue large enough that nothing overflows: what is measured is the drain at shutdown
# max_bytes=0: no rotation, the test reads one file (a busy run writes over 10 MB)
fapilog.configure_logging(exporters=["file"], file={"path": os.environ["LOG_PATH"], "max_bytes": 0},
                          capture_stdlib=False, queue={"max_size": 200_000})
log = fapilog.get_logger("app")
emitted = 0
app = FastAPI()


@app.get("/work/{n}")
async def work(n: int) -> dict[str, int]:
    global emitted
    for k in range(20):
        log.info("work", n=n, k=k)
        emitted += 1
    return {"n": n}


@app.on_event("shutdown")
async def report() -> None:
    Path(os.environ["COUNT_PATH"]).write_text(str(emitted))
"""


def test_uvicorn_sigterm_mid_load_delivers_everything_emitted(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """uvicorn receives SIGTERM while requests are flowing: every record emitted is delivered."""
    (tmp_path / "sigapp.py").write_text(UVICORN_APP)
    log_path, count_path = tmp_path / "app.log", tmp_path / "count"
    env = dict(subprocess_env, LOG_PATH=str(log_path), COUNT_PATH=str(count_path))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "sigapp:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    err = sigterm_mid_load(server, port, requests_per_client=20_000, wait=60)
    emitted = int(count_path.read_text())
    assert emitted >= 200 * 20
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sum(1 for line in lines if line["message"] == "work") == emitted, err[-2000:]

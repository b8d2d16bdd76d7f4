"""The disk spool across real processes (tests/peers/spool_app.py) and the strict Loki and
OTLP receivers: an outage followed by an exit, SIGKILL mid-outage, four workers killed and
four new ones started at once, outages within one process. `make soak` runs the full
durations and counts; `make test` shorter ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ROOT, SOAK, free_port, runs
from peers.loki_receiver import LokiReceiver
from peers.otlp_receiver import OtlpReceiver

APP = str(ROOT / "tests" / "peers" / "spool_app.py")
OUTAGE = 20.0 if SOAK else 3.0  # seconds the sink is down while the app logs 1,000/s


class App:
    """One run of spool_app.py, its output read as it comes."""

    def __init__(self, env: dict[str, str], run: str, count: int, rate: float, then: str):
        self.run = run
        self.logged: list[tuple[int, float]] = []  # (seq, monotonic time), every 50
        self.lines: list[str] = []
        self.done = threading.Event()
        self.on_disk = threading.Event()  # (THEN=sleep) all it logged is on disk
        self.proc = subprocess.Popen(
            [sys.executable, APP, run, str(count), str(rate), then],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr: list[str] = []
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("logged "):
                _, seq, at = line.split()
                self.logged.append((int(seq), float(at)))
            elif line.startswith("done"):
                self.done.set()
            elif line.startswith("on disk"):
                self.on_disk.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def wait(self, timeout: float) -> float:
        """Wait for the process to end; returns when it ended (monotonic)."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        ended = time.monotonic()
        self._reader.join(5)
        self._err_reader.join(5)
        return ended

    def kill(self) -> float:
        at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return at

    def logged_before(self, moment: float) -> int:
        """Records logged before `moment`: every seq up to the last mark before it."""
        marks = [seq for seq, at in self.logged if at < moment]
        return marks[-1] + 1 if marks else 0

    def stderr(self) -> str:
        return "".join(self._stderr)

    def figures(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.lines[-1])
        return found


@pytest.fixture
def spool_env(subprocess_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in subprocess_env.items() if k != "COVERAGE_PROCESS_START"}
    env.update(
        FAPILOG_SERVICE_NAME="spooled",
        FAPILOG_SPOOL__DIR=str(tmp_path / "spool"),
        FAPILOG_SHUTDOWN_TIMEOUT="2",
        FAPILOG_CAPTURE_STDLIB="false",
    )
    return env


@pytest.fixture
def loki_env(spool_env: dict[str, str], loki: LokiReceiver) -> dict[str, str]:
    return {
        **spool_env,
        "FAPILOG_EXPORTERS": "loki",
        "FAPILOG_LOKI__URL": loki.url,
        "FAPILOG_LOKI__BATCH_WAIT": "0.1",
        # the exporter's own retries stay short, so that recovery is quick to observe
        "FAPILOG_LOKI__MAX_BACKOFF": "1",
    }


def stored(receiver: LokiReceiver) -> Counter[tuple[str, int]]:
    """(run, seq) of every entry the receiver stored."""
    return Counter((e.json()["run"], e.json()["seq"]) for e in receiver.entries())


def pushed_entries(receiver: LokiReceiver) -> int:
    return sum(push.accepted for push in receiver.pushes)


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)  # polling a receiver that another process feeds
    return bool(predicate())


def test_a_429_burst_then_exit_is_bounded_and_the_next_start_delivers_everything(
    loki_env: dict[str, str], loki: LokiReceiver
) -> None:
    loki.fail(429, seconds=4, body="Ingestion rate limit exceeded for user fake")
    first = App(loki_env, "burst", 3000, 0, "exit")
    assert first.done.wait(30), first.stderr()
    done_at = time.monotonic()
    ended = first.wait(30)
    assert first.proc.returncode == 0, first.stderr()
    assert ended - done_at <= 2 + 1, first.stderr()  # shutdown_timeout + 1 s
    second_started = time.time_ns()
    second = App(loki_env, "second", 0, 0, "deliver")
    second.wait(60)
    assert second.proc.returncode == 0, second.stderr()
    found = stored(loki)
    assert {key for key in found if key[0] == "burst"} == {("burst", n) for n in range(3000)}
    assert second.figures()["adopted"] > 0
    # replayed with the original timestamps (logged by the first process, before the second)
    burst = [e for e in loki.entries() if e.json().get("run") == "burst"]
    assert max(entry.timestamp for entry in burst) < second_started


@pytest.mark.soak
@pytest.mark.parametrize("sink", ["loki", "otlp"])
def test_an_outage_while_logging_1000_per_second_loses_nothing_in_the_same_process(
    sink: str, loki_env: dict[str, str], spool_env: dict[str, str], loki: LokiReceiver
) -> None:
    count = int(OUTAGE * 1000)
    if sink == "loki":
        loki.down()
        app = App(loki_env, "outage", count, 1000, "deliver")
        assert app.done.wait(OUTAGE + 30), app.stderr()
        loki.up()
        app.wait(120)
        assert app.proc.returncode == 0, app.stderr()
        found = stored(loki)
        assert set(found) == {("outage", n) for n in range(count)}
        return
    with OtlpReceiver() as otlp:
        otlp.down()
        env = {
            **spool_env,
            "FAPILOG_EXPORTERS": "otlp",
            "FAPILOG_OTLP__ENDPOINT": otlp.http_endpoint,
            "FAPILOG_OTLP__PROTOCOL": "http/protobuf",
            "FAPILOG_OTLP__TIMEOUT": "1",
        }
        app = App(env, "outage", count, 1000, "deliver")
        assert app.done.wait(OUTAGE + 30), app.stderr()
        otlp.up()
        app.wait(120)
        assert app.proc.returncode == 0, app.stderr()
        seqs = Counter(
            log.attributes["seq"] for log in otlp.logs if log.attributes.get("run") == "outage"
        )
        assert set(seqs) == set(range(count))


@pytest.mark.soak
@pytest.mark.parametrize("round_", range(runs(1, 3)))
def test_sigkill_during_an_outage_then_a_restart_delivers_what_was_logged_before(
    round_: int, loki_env: dict[str, str], loki: LokiReceiver
) -> None:
    loki.down()
    app = App(loki_env, "killed", 1_000_000, 1000, "sleep")
    wait_for(lambda: len(app.logged) >= 60, 30)  # about 3 s of logging
    killed_at = app.kill()
    safe = app.logged_before(killed_at - 1.0)
    assert safe >= 1500
    restart = App(loki_env, "restart", 0, 0, "deliver")
    time.sleep(0.5)  # the restarted process adopts the spool while Loki is still down
    loki.up()
    restart.wait(120)
    assert restart.proc.returncode == 0, restart.stderr()
    found = stored(loki)
    killed = {seq for run, seq in found if run == "killed"}
    assert set(range(safe)) <= killed
    assert pushed_entries(loki) - len(found) <= 512  # duplicates: at most one batch


@pytest.mark.soak
@pytest.mark.parametrize("round_", range(runs(1, 3)))
def test_four_workers_killed_then_four_new_ones_deliver_everything_once(
    round_: int, loki_env: dict[str, str], loki: LokiReceiver
) -> None:
    loki.down()
    workers = [App(loki_env, f"w{n}", 2000, 0, "sleep") for n in range(4)]
    for worker in workers:
        assert worker.on_disk.wait(60), worker.stderr()  # what is tested: on disk, then killed
    for worker in workers:
        worker.kill()
    fresh = [App(loki_env, f"new{n}", 0, 0, "deliver") for n in range(4)]
    time.sleep(0.5)
    loki.up()
    for app in fresh:
        app.wait(120)
        assert app.proc.returncode == 0, app.stderr()
    found = stored(loki)
    for n in range(4):
        assert {seq for run, seq in found if run == f"w{n}"} == set(range(2000))
    # each spool was replayed by exactly one of the new workers
    assert sum(app.figures()["adopted"] for app in fresh) == 8000
    # duplicates: at most one batch in flight per killed process
    assert pushed_entries(loki) - len(found) <= 4 * 512


@pytest.fixture
def loki() -> Iterator[LokiReceiver]:
    with LokiReceiver() as receiver:
        yield receiver


FORKING = """
import os, sys, fapilog
fapilog.configure_logging()
log = fapilog.get_logger("forked")
children = []
for n in range(2):
    pid = os.fork()
    if pid == 0:
        for seq in range(300):
            log.info("spool test", run=f"child{n}", seq=seq)
        fapilog.shutdown(5)
        os._exit(0)
    children.append(pid)
for seq in range(300):
    log.info("spool test", run="parent", seq=seq)
for pid in children:
    os.waitpid(pid, 0)
fapilog.shutdown(5)
"""


def test_forked_children_spool_into_their_own_segments(
    loki_env: dict[str, str], loki: LokiReceiver
) -> None:
    """A parent configured before fork (gunicorn --preload): each child writes its own
    segments, never the parent's, and a later process delivers everything once."""
    loki.down()
    proc = subprocess.run(
        [sys.executable, "-c", FORKING],
        env=loki_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    loki.up()
    later = App(loki_env, "later", 0, 0, "deliver")
    later.wait(60)
    assert later.proc.returncode == 0, later.stderr()
    found = stored(loki)
    for run in ("parent", "child0", "child1"):
        assert {seq for r, seq in found if r == run} == set(range(300)), run
    assert max(found.values()) == 1  # none twice


def _server(server: str, port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if server == "uvicorn-workers":
        return [str(bin_dir / "uvicorn"), "server_app:app", "--port", str(port), "--workers", "2"]
    if server == "gunicorn":
        return [str(bin_dir / "gunicorn"), "server_app:app", "-b", f"127.0.0.1:{port}", "-w",
                "2", "-k", "uvicorn_worker.UvicornWorker"]  # fmt: skip
    return [str(bin_dir / "hypercorn"), "server_app:app", "--bind", f"127.0.0.1:{port}",
            "--workers", "2"]  # fmt: skip


@pytest.mark.parametrize("server", ["uvicorn-workers", "gunicorn", "hypercorn"])
def test_a_servers_workers_spool_an_outage_and_the_next_start_delivers_it_once(
    server: str, loki_env: dict[str, str], loki: LokiReceiver, tmp_path: Path
) -> None:
    """Two workers of a real server on one spool directory, Loki refusing connections:
    200 requests (more until both workers served), SIGTERM (the exit stays within
    shutdown_timeout + 1 s); Loki back, the next process delivers every request's line,
    none twice."""
    loki.down()
    port = free_port()
    env = {
        **loki_env,
        "FAPILOG_CAPTURE_STDLIB": "true",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "peers"), loki_env["PYTHONPATH"]]),
    }
    process = subprocess.Popen(
        _server(server, port), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: _answers(port), 60), "the server never answered"
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10, limits=fresh,
            headers={"Connection": "close"},
        ) as client:  # fmt: skip
            # at least 200 requests, and on until both workers have served (the second one
            # may still be booting on a loaded machine); bounded
            pids: set[int] = set()
            sent_n = 0
            while sent_n < 200 or (len(pids) < 2 and sent_n < 2000):
                sent_n += 1
                pids.add(client.get(f"/work/{sent_n}").json()["pid"])
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert took <= 2 + 1, f"exit took {took:.2f} s"
    assert len(pids) == 2  # both workers served, and spooled
    loki.up()
    later = App(loki_env, "later", 0, 0, "deliver")
    later.wait(60)
    assert later.proc.returncode == 0, later.stderr()
    work = Counter(
        line["n"] for line in (e.json() for e in loki.entries()) if line["message"] == "work"
    )
    assert set(range(1, sent_n + 1)) <= set(work)
    assert all(work[n] == 1 for n in range(1, sent_n + 1))  # none twice


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/work/0", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_a_survivor_takes_over_the_spool_of_a_worker_that_died_during_the_outage(
    loki_env: dict[str, str], loki: LokiReceiver
) -> None:
    """Two workers log through an outage; one is killed; when Loki is back, the survivor
    (started before the death, so it could not take that spool over then) delivers the
    dead one's records as well as its own."""
    loki.down()
    survivor = App(loki_env, "survivor", 1000, 500, "sleep")
    victim = App(loki_env, "victim", 1000, 0, "sleep")
    assert victim.on_disk.wait(60) and survivor.done.wait(30), victim.stderr()
    victim.kill()  # (all it logged is on disk: what is tested)
    loki.up()
    try:
        assert wait_for(
            lambda: {seq for run, seq in stored(loki) if run == "victim"} == set(range(1000)),
            60,
        ), survivor.stderr()
        assert {seq for run, seq in stored(loki) if run == "survivor"} == set(range(1000))
    finally:
        survivor.kill()

"""Every record is delivered when a server stops, in every server fapilog supports, and the
process exits within one deadline even with dead network sinks.

Each server runs the same app (tests/peers/server_app.py) with two workers (or a reloader),
serves 200 requests, and is stopped with SIGTERM (Loki and OTLP endpoints that refuse
connections, or that accept and never answer) or SIGINT. Then the file holds every
request's line, each worker's shutdown line and, where the server logs one, each worker's
own last line; and from the app's shutdown to the end of the process it took at most
`shutdown_timeout` + 1.5 s (from the signal, + 3 s: the server's own shutdown comes first).
A supervisor that never imports the app logs what it logs itself (docs/fastapi.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SHUTDOWN_TIMEOUT = 2.0
EXIT_MARGIN = 1.5  # seconds: the interpreters' teardown (see `_run`)


def _server_command(server: str, port: int, graceful: int = 20) -> list[str]:
    app = "server_app:app"
    if server == "uvicorn-workers":
        return [str(BIN / "uvicorn"), app, "--port", str(port), "--workers", "2"]
    if server == "uvicorn-reload":
        return [str(BIN / "uvicorn"), app, "--port", str(port), "--reload"]
    if server.startswith("gunicorn"):
        command = [str(BIN / "gunicorn"), app, "-b", f"127.0.0.1:{port}", "-w", "2"]
        command += ["-k", "uvicorn_worker.UvicornWorker", "--graceful-timeout", str(graceful)]
        return [*command, "--preload"] if server == "gunicorn-preload" else command
    if server == "hypercorn":
        return [str(BIN / "hypercorn"), app, "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    if server == "granian":
        command = [str(BIN / "granian"), "--interface", "asgi", "--port", str(port)]
        return [*command, "--workers", "2", app]
    raise AssertionError(server)


SERVERS = ["uvicorn-workers", "uvicorn-reload", "gunicorn", "gunicorn-preload", "hypercorn",
           "granian"]  # fmt: skip
# the last line each server's worker logs itself, when it logs one through stdlib logging
LAST_LINE = {
    "uvicorn-workers": "Finished server process",
    "uvicorn-reload": "Finished server process",
    "gunicorn": "Finished server process",
    "gunicorn-preload": "Finished server process",
    "granian": "Stopping worker",  # granian's worker, through its `_granian` logger
}  # hypercorn's workers log nothing of their own at shutdown


@pytest.fixture
def dead_endpoint(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port where Loki and the OTLP collector should be: nothing listening (refuse), or
    a listener that accepts and never answers (hole)."""
    if request.param == "refuse":
        yield free_port()
        return
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(hole.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(hole.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        hole.close()


def _run(server: str, env: dict[str, str], tmp_path: Path, signum: int, sinks: int | None) -> None:
    port = free_port()
    path = tmp_path / f"{server}.log"
    env = {
        **env,
        "FAPILOG_EXPORTERS": "file" if sinks is None else "file,loki,otlp",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "peers"), env["PYTHONPATH"]]),
    }
    if sinks is not None:
        env["FAPILOG_LOKI__URL"] = f"http://127.0.0.1:{sinks}"
        env["FAPILOG_OTLP__ENDPOINT"] = f"http://127.0.0.1:{sinks}"
    process = subprocess.Popen(
        # gunicorn's SIGINT (quick shutdown) leaves uvicorn workers running, fapilog or
        # not, until the graceful timeout ends them with SIGKILL: keep that wait short
        _server_command(server, port, graceful=5 if signum == signal.SIGINT else 20),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/work/0", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        pids = set()
        # a new connection each (no keep-alive): the requests reach every worker; one client
        # (`httpx.get` builds a client, TLS context included, per call: 60 ms each)
        fresh = httpx.Limits(max_keepalive_connections=0)
        headers = {"Connection": "close"}  # the server closes it: none is left idle
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10, limits=fresh, headers=headers
        ) as client:
            for n in range(1, 201):
                pids.add(client.get(f"/work/{n}").json()["pid"])
        process.send_signal(signum)
        sent = time.monotonic()
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - sent
        ended = time.time()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    work = {line["n"] for line in lines if line["message"] == "work"}
    assert work >= set(range(1, 201)), (server, sorted(set(range(1, 201)) - work)[:10])
    if not (server.startswith("gunicorn") and signum == signal.SIGINT):
        # (gunicorn's SIGINT is its quick shutdown: workers stop without the app's shutdown
        # and without uvicorn's last lines; everything they logged is delivered still)
        goodbyes = {line["pid"] for line in lines if line["message"] == "worker shutting down"}
        assert pids <= goodbyes, (server, pids, goodbyes)
    quick = server.startswith("gunicorn") and signum == signal.SIGINT
    last = LAST_LINE.get(server) if not quick else None
    if last is not None:
        ends = {line["process.pid"] for line in lines if line["message"].startswith(last)}
        assert pids <= ends, (server, pids, ends, err.decode()[-2000:])
    if sinks is not None:
        # from the app's own shutdown line (the server has stopped serving; it begins the one
        # exit deadline) to the end of the process: fapilog's drain, then the interpreters'
        # teardown (the workers', then the supervisor's: 0.4 to 0.6 s on an idle machine, over
        # 1 s on a loaded one); the server's own way to the app's shutdown is not fapilog's
        last_goodbye = max(
            _epoch(line["timestamp"]) for line in lines if line["message"] == "worker shutting down"
        )
        ours = ended - last_goodbye
        assert ours <= SHUTDOWN_TIMEOUT + EXIT_MARGIN, f"{server}: exit took {ours:.2f} s"
        assert took <= SHUTDOWN_TIMEOUT + 2 * EXIT_MARGIN, f"{server}: signal to exit {took:.2f} s"


def _epoch(timestamp: str) -> float:
    """A record's RFC 3339 timestamp as seconds since the epoch."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("dead_endpoint", ["refuse", "hole"], indirect=True)
@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_delivers_every_line_and_exits_in_time_with_dead_sinks(
    server: str, dead_endpoint: int, tmp_path: Path, timed_env: dict[str, str]
) -> None:
    _run(server, timed_env, tmp_path, signal.SIGTERM, dead_endpoint)


@pytest.mark.parametrize("server", SERVERS)
def test_sigint_delivers_every_line(
    server: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    _run(server, subprocess_env, tmp_path, signal.SIGINT, None)

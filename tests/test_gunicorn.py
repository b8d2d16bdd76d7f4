"""Graceful shutdown under gunicorn with uvicorn workers: SIGTERM to the arbiter mid-load
delivers every record the workers emitted, with and without `--preload`, including a burst
logged by the app's own shutdown handler right before each worker exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, sigterm_mid_load

pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn_worker")

pytestmark = pytest.mark.slow

# Like tests/test_shutdown.py's uvicorn app, but each worker process writes its own count
# file (gunicorn runs two workers) at lifespan shutdown.
GUNICORN_APP = """
import os
from pathlib import Path

from fastapi import FastAPI

import fapilog

app = FastAPI()
# with app=, fapilog's middleware also flushes at lifespan shutdown (what --preload needs)
# max_bytes=0: no rotation, the test reads one file (a busy run writes over 10 MB)
fapilog.configure_logging(exporters=["file"], file={"path": os.environ["LOG_PATH"], "max_bytes": 0},
                          capture_stdlib=False, queue={"max_size": 200_000},
                          app=app if os.environ.get("INSTRUMENT") == "1" else None)
log = fapilog.get_logger("app")
emitted = 0


@app.on_event("startup")
async def started() -> None:
    Path(os.environ["READY_DIR"], str(os.getpid())).touch()


@app.get("/work/{n}")
async def work(n: int) -> dict[str, int]:
    global emitted
    for k in range(20):
        log.info("work", n=n, k=k, pid=os.getpid())
        emitted += 1
    return {"n": n}


@app.on_event("shutdown")
async def report() -> None:
    # the last records come right before the worker exits: still queued when uvicorn
    # re-raises SIGTERM, so they reach the file only if the worker drains
    global emitted
    for k in range(LATE):
        log.info("work", n=-1, k=k, pid=os.getpid())
        emitted += 1
    Path(os.environ["COUNT_DIR"], str(os.getpid())).write_text(str(emitted))


LATE = 3000
"""


@pytest.mark.parametrize(
    ("preload", "instrument", "hook"),
    [
        pytest.param(False, False, False, id="no-preload"),
        pytest.param(False, True, False, id="no-preload-app"),
        pytest.param(True, True, False, id="preload-app"),
        pytest.param(True, False, True, id="preload-plain-with-hook"),
        # configured in the arbiter, no app=, no hook: fapilog's at-fork patch of the
        # worker gives each worker its SIGTERM drain back (see fapilog.gunicorn)
        pytest.param(True, False, False, id="preload-plain"),
    ],
)
def test_gunicorn_sigterm_mid_load_delivers_everything_emitted(
    preload: bool, instrument: bool, hook: bool, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    (tmp_path / "gunapp.py").write_text(GUNICORN_APP)
    config = tmp_path / "gunicorn_conf.py"
    config.write_text("from fapilog.gunicorn import post_worker_init\n" if hook else "")
    log_path, count_dir, ready_dir = tmp_path / "app.log", tmp_path / "counts", tmp_path / "ready"
    count_dir.mkdir()
    ready_dir.mkdir()
    env = dict(subprocess_env, LOG_PATH=str(log_path), COUNT_DIR=str(count_dir),
               READY_DIR=str(ready_dir), INSTRUMENT="1" if instrument else "0")  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "gunapp:app", "--workers", "2",
         "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", f"127.0.0.1:{port}",
         "--graceful-timeout", "20", "--log-level", "warning", "--config", str(config),
         *(["--preload"] if preload else [])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # SIGTERM once both workers have started (a worker still booting under a loaded
    # machine would end without a lifespan: nothing of it to deliver, nothing to check)
    err = sigterm_mid_load(
        server, port, requests_per_client=400, ready=lambda: len(list(ready_dir.iterdir())) >= 2
    )
    counts = {path.name: int(path.read_text()) for path in count_dir.iterdir()}
    assert len(counts) == 2, (counts, err[-2000:])  # both workers ran their lifespan shutdown
    emitted = sum(counts.values())
    assert emitted >= 200 * 20
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    per_worker: dict[str, int] = {}
    for line in lines:
        if line["message"] == "work":
            per_worker[str(line["pid"])] = per_worker.get(str(line["pid"]), 0) + 1
    assert per_worker == {pid: n for pid, n in counts.items() if n}, err[-2000:]


def test_the_worker_patch_installs_the_drain_only_over_the_default_action(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the at-fork patch does in a gunicorn worker, on this process: `load_wsgi` runs
    as before, then SIGTERM's default action becomes fapilog's drain; a handler someone
    set (gunicorn's sync workers set one) stays. Patched once."""
    import signal

    from gunicorn.workers import base

    from fapilog.gunicorn import patch_worker_after_fork
    from fapilog.lifecycle import drain

    monkeypatch.setattr(base.Worker, "load_wsgi", lambda self: "loaded")
    assert patch_worker_after_fork() is True
    assert patch_worker_after_fork() is False
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert base.Worker.load_wsgi(object()) == "loaded"  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGTERM) is drain._on_sigterm

        def theirs(signum: int, frame: object) -> None:
            return None

        signal.signal(signal.SIGTERM, theirs)
        base.Worker.load_wsgi(object())  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, previous)

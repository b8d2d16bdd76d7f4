"""Run an unmodified FastAPI app under `opentelemetry-instrument uvicorn` for end-to-end tests.

    app = InstrumentedApp(tmp_path, env, APP)
    try:
        base = app.start()               # http://127.0.0.1:<port>
        httpx.get(base + "/orders/1")
        app.stop()                       # SIGTERM, waits for exit; returns seconds taken
    finally:
        app.kill()

stdout and stderr are read continuously on threads (a full pipe never stalls the server).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["APP", "APP_WITH_CONFIGURE", "APP_WITH_CONFIGURE_APP", "InstrumentedApp", "json_lines"]

BIN = Path(sys.executable).parent

# No fapilog, no OpenTelemetry: what a team has before adopting either (the example).
APP = (
    Path(__file__).resolve().parents[2] / "examples" / "opentelemetry_instrument" / "app.py"
).read_text()

# The same app, also calling configure_logging() at import (as a fapilog user would).
APP_WITH_CONFIGURE = "import fapilog\nfapilog.configure_logging()\n" + APP

# ... and with configure_logging(app=app): fapilog's request events, no second instrumentation.
APP_WITH_CONFIGURE_APP = APP + "\nimport fapilog\nfapilog.configure_logging(app=app)\n"

_RUNNING = re.compile(r"Uvicorn running on https?://127\.0\.0\.1:(\d+)")


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Parse every line as one JSON object (a non-JSON line fails the test loudly)."""
    parsed = []
    for line in lines:
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"stdout line is not JSON: {line!r}") from None
    return parsed


class InstrumentedApp:
    def __init__(self, directory: Path, env: dict[str, str], source: str = APP) -> None:
        self.directory = directory
        self.env = dict(env)
        self.env["PATH"] = os.pathsep.join([str(BIN), self.env.get("PATH", "")])
        self.source = source
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()

    def start(self, timeout: float = 30.0) -> str:
        (self.directory / "app.py").write_text(self.source)
        self.proc = subprocess.Popen(
            [str(BIN / "opentelemetry-instrument"), "uvicorn", "app:app",
             "--host", "127.0.0.1", "--port", "0"],
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            thread = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        port = self.wait_for(self._port, timeout)
        if port is None:
            self.kill()
            raise AssertionError(
                "the app did not start:\nstdout:\n" + "\n".join(self.stdout)
                + "\nstderr:\n" + "\n".join(self.stderr)
            )  # fmt: skip
        return f"http://127.0.0.1:{port}"

    def _port(self) -> int | None:
        for line in self.stdout + self.stderr:
            match = _RUNNING.search(line)
            if match:
                return int(match.group(1))
        if self.proc is not None and self.proc.poll() is not None:
            return -1
        return None

    def wait_for(self, probe: Callable[[], Any], timeout: float) -> Any:
        """Poll `probe` (re-evaluated whenever output arrives) until it returns a truthy
        value or the deadline passes; returns its last value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = probe()
                if value or time.monotonic() >= deadline:
                    return value if value != -1 else None
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> float:
        """Signal the server and wait for it to exit; returns the seconds that took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout)
        elapsed = time.monotonic() - started
        for thread in self._threads:
            thread.join(5)
        return elapsed

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def records(self) -> list[dict[str, Any]]:
        with self._cond:
            return json_lines(list(self.stdout))

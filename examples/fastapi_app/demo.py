"""`make demo`: serve the example app (main.py) with uvicorn, send it a few requests, show
its logs, stop it.

Everything runs on fapilog's embedded defaults: stdout (JSON lines when piped, the pretty
console on a terminal) plus a local log file, logs/fastapi_app.log in the repository
(git-ignored; FAPILOG_FILE__PATH chooses another). No collector or other server is needed.

    python examples/fastapi_app/demo.py          # pretty on a terminal
    python examples/fastapi_app/demo.py | cat    # JSON lines
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
LOG_FILE = HERE.parent.parent / "logs" / "fastapi_app.log"  # git-ignored
UPSTREAM_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_TRACEPARENT = f"00-{UPSTREAM_TRACE_ID}-00f067aa0ba902b7-01"
_PORT = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ServerOutput:
    """Echoes the server's output and lets the demo wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(process,), daemon=True)
        self._thread.start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        regex = re.compile(pattern)
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    found = regex.search(line)
                    if found:
                        return found
                    if line == "":
                        return None
                seen = len(self.lines)
                if not self._changed.wait(timeout):
                    return None

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def say(text: str) -> None:
    print(f"\n### {text}", flush=True)


def main() -> int:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    log_file = None
    if importlib.util.find_spec("fapilog.exporters.file") is not None:
        env.setdefault("FAPILOG_EXPORTERS", "stdout,file")
        if "FAPILOG_FILE__PATH" not in env:
            log_file = LOG_FILE
            log_file.unlink(missing_ok=True)  # this run's lines only
            env["FAPILOG_FILE__PATH"] = str(log_file)
    if sys.stdout.isatty():
        env.setdefault("FAPILOG_JSON_CONSOLE", "false")  # the server's stdout is a pipe
    command = [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(HERE),
               "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
    say("starting: uvicorn main:app (examples/fastapi_app) on a free port")
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = ServerOutput(server)
    try:
        started = output.wait_for(_PORT.pattern, timeout=60)
        if started is None:
            print("the server did not start", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{started.group(1)}"
        steps = [
            ("GET /items/42 continuing an upstream trace (traceparent header)", "GET",
             "/items/42", {"traceparent": UPSTREAM_TRACEPARENT, "X-Request-ID": "demo-1"}, None),
            ("GET /items/7 as user bob, a fresh trace", "GET", "/items/7",
             {"X-User": "bob", "X-Request-ID": "demo-2"}, None),
            ("POST /orders (a background task sends the receipt)", "POST", "/orders",
             {"X-Request-ID": "demo-3"}, {"item_id": 7, "quantity": 2}),
            ("GET /items/5000: a 404, logged as a warning", "GET", "/items/5000",
             {"X-Request-ID": "demo-4"}, None),
            ("GET /boom: the endpoint raises, one error event with the stack trace", "GET",
             "/boom", {"X-Request-ID": "demo-5"}, None),
            ("GET /slow: duration_ms >= 50", "GET", "/slow", {"X-Request-ID": "demo-6"}, None),
        ]  # fmt: skip
        # one connection per request: uvicorn closes the connection of a request whose app
        # raised, and reusing a kept-alive connection would race with that close
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base, timeout=10, limits=no_keepalive) as client:
            for title, method, path, headers, body in steps:
                say(title)
                response = client.request(method, path, headers=headers, json=body)
                print(f"--> {response.status_code} {response.text[:60]}", flush=True)
                # let the request's lines show before the next step
                output.wait_for(
                    f"(?=.*{headers['X-Request-ID']})(?=.*request (completed|failed))", 10
                )
            say("GET /health: excluded, no request event")
            client.get("/health")
        say("stopping the server (SIGTERM): every line is delivered before it exits")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        output.join(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    lines = [line for line in output.lines if line]
    say(f"done: {len(lines)} log lines; the upstream trace id {UPSTREAM_TRACE_ID} is on "
        f"{sum(UPSTREAM_TRACE_ID in line for line in lines)} of them")  # fmt: skip
    if log_file is not None and log_file.exists():
        print(f"the same records, as JSON lines, are in {log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

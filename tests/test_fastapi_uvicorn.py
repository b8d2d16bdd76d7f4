"""FastAPI integration end to end: the example app served by a real uvicorn subprocess on
127.0.0.1, real HTTP requests, SIGTERM, and every line of its stdout read back."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "fastapi_app"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
PORT = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

pytestmark = pytest.mark.slow


class Server:
    """A subprocess whose stdout and stderr are collected line by line."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self.stdout)),
            threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()

    def port(self, timeout: float = 60) -> int:
        """Wait for uvicorn's "running on" line (a JSON line on stdout, or plain text on
        stderr when uvicorn's own handlers print it)."""

        def found() -> int | None:
            for line in self.stdout + self.stderr:
                match = PORT.search(line)
                if match:
                    return int(match.group(1))
            return None

        with self._changed:
            ok = self._changed.wait_for(
                lambda: found() is not None or self.process.poll() is not None, timeout
            )
        port = found()
        assert ok and port is not None, f"server did not start:\n{self.stderr}"
        return port

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit and the end of its output."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(10)


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:  # pragma: no cover - the assertion below reports it
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


@pytest.mark.parametrize("tracing", ["native", "instrumentation"])
def test_uvicorn_stdout_is_json_lines_correlated_per_request_and_sigterm_loses_none(
    subprocess_env: dict[str, str], tracing: str
) -> None:
    env = {**subprocess_env, "FAPILOG_REQUEST__TRACING": tracing}
    server = Server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "main:app",
            "--app-dir",
            str(EXAMPLE),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        env,
    )
    try:
        port = server.port()
        # a connection per request: uvicorn closes the connection of a request whose app
        # raised, and a pooled keep-alive connection would race with that close
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10, limits=no_keepalive) as client:
            responses = {
                "req-a": client.get(
                    "/items/42", headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-a"}
                ),
                "req-b": client.get("/items/7", headers={"X-Request-ID": "req-b", "X-User": "bob"}),
                "req-c": client.post(
                    "/orders", json={"item_id": 3, "quantity": 2}, headers={"X-Request-ID": "req-c"}
                ),
                "req-d": client.get("/boom", headers={"X-Request-ID": "req-d"}),
                "req-e": client.get("/items/5000", headers={"X-Request-ID": "req-e"}),
                "req-g": client.get("/slow", headers={"X-Request-ID": "req-g"}),
            }
            assert client.get("/health").status_code == 200
        code = server.stop()
    finally:
        server.kill()
    assert code in (0, -signal.SIGTERM), server.stderr
    assert {k: r.status_code for k, r in responses.items()} == {
        "req-a": 200, "req-b": 200, "req-c": 201, "req-d": 500, "req-e": 404, "req-g": 200,
    }  # fmt: skip
    assert all(r.headers["x-request-id"] == k for k, r in responses.items() if k != "req-d")

    lines = json_lines(server.stdout)  # stdout holds JSON lines only
    assert not [line for line in server.stderr if not line.startswith("{")], server.stderr

    # uvicorn's own lines are there, as JSON, from startup to after SIGTERM
    uvicorn_messages = [e["message"] for e in lines if e["logger"] == "uvicorn.error"]
    for expected in ("Started server process", "Application startup complete.",
                     "Uvicorn running on", "Shutting down", "Finished server process"):  # fmt: skip
        assert any(m.startswith(expected) for m in uvicorn_messages), (expected, uvicorn_messages)
    access = [e for e in lines if e["logger"] == "uvicorn.access"]
    assert len(access) == 7

    # every request's lines share its trace id; request events are complete
    events = {e["request_id"]: e for e in lines if e["logger"] == "fapilog.request"}
    assert set(events) == set(responses)  # /health is excluded
    traces: dict[str, set[str]] = defaultdict(set)
    for entry in lines:
        if "request_id" in entry:
            traces[entry["request_id"]].add(entry["trace_id"])
    assert dict(traces) == {rid: {event["trace_id"]} for rid, event in events.items()}
    assert len({event["trace_id"] for event in events.values()}) == len(events)
    assert events["req-a"]["trace_id"] == TRACE_ID
    by_trace = defaultdict(list)
    for entry in lines:
        if "trace_id" in entry:
            by_trace[entry["trace_id"]].append(entry)
    assert sorted((e["logger"], e["message"]) for e in by_trace[TRACE_ID]) == [
        ("fapilog.request", "request completed"),
        ("shop", "item looked up"),
        ("shop.inventory", "stock checked for item 42"),  # stdlib logging
        ("uvicorn.access", access[0]["message"]),  # uvicorn's own access line
    ]
    assert access[0]["message"].endswith('"GET /items/42 HTTP/1.1" 200')
    order_lines = [e["message"] for e in by_trace[events["req-c"]["trace_id"]]]
    assert "order placed" in order_lines and "receipt sent" in order_lines  # background task
    assert events["req-b"]["user.id"] == "bob"  # the context hook
    assert events["req-e"]["level"] == "warning"
    assert events["req-g"]["duration_ms"] >= 50.0
    assert events["req-c"]["http.request.body.size"] == len(b'{"item_id":3,"quantity":2}')

    # the failing request: one error event with the stack trace and the trace id
    errors = [e for e in lines if e["level"] in ("error", "critical")]
    assert len(errors) == 1, errors
    (error,) = errors
    assert error is events["req-d"]
    assert error["http.response.status_code"] == 500
    assert error["exception.type"] == "RuntimeError"
    assert "payment provider unreachable" in error["exception.stacktrace"]
    assert "in boom" in error["exception.stacktrace"]
    assert not [e for e in lines if e["message"].startswith("Exception in ASGI application")]
    assert {e["trace_id"] for e in by_trace[error["trace_id"]]} == {error["trace_id"]}
    assert {e["message"] for e in by_trace[error["trace_id"]]} >= {"about to fail"}


UVICORN_RUN = """
import sys
sys.path.insert(0, {example!r})
import uvicorn
from main import app  # configure_logging(app=app) runs here, before uvicorn's dictConfig

uvicorn.run(app, host="127.0.0.1", port=0{extra})
"""


@pytest.mark.parametrize("log_config_none", [True, False], ids=["log_config=None", "default"])
def test_uvicorn_run_after_configure_logging(
    subprocess_env: dict[str, str], log_config_none: bool
) -> None:
    code = UVICORN_RUN.format(
        example=str(EXAMPLE), extra=", log_config=None" if log_config_none else ""
    )
    server = Server([sys.executable, "-c", textwrap.dedent(code)], subprocess_env)
    try:
        port = server.port()
        response = httpx.get(
            f"http://127.0.0.1:{port}/items/1", headers={"traceparent": TRACEPARENT}, timeout=10
        )
        assert response.status_code == 200
        server.stop()
    finally:
        server.kill()
    lines = json_lines(server.stdout)  # JSON only, whatever uvicorn's log_config
    messages = [e["message"] for e in lines]
    assert "Application startup complete." in messages
    assert messages[-1].startswith("Finished server process")
    access = [e for e in lines if e["logger"] == "uvicorn.access"]
    assert len(access) == 1 and access[0]["trace_id"] == TRACE_ID
    # with its default log_config, uvicorn.run() configures logging after the application's
    # configure_logging(): fapilog takes its loggers back right after that dictConfig
    text = [line for line in server.stderr if not line.startswith("{")]
    assert text == []
    assert messages[0].startswith("Started server process")


def test_make_demo_script(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    env = {**subprocess_env, "FAPILOG_FILE__PATH": str(tmp_path / "demo.log")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = json_lines([line for line in proc.stdout.splitlines() if line.startswith("{")])
    upstream = [e for e in lines if e.get("trace_id") == TRACE_ID]
    assert {e["message"] for e in upstream} >= {"item looked up", "request completed"}
    assert [e["message"] for e in lines if e["level"] == "error"] == ["request failed"]
    assert lines[-1]["message"].startswith("Finished server process")
    if (ROOT / "src" / "fapilog" / "exporters" / "file.py").exists():
        in_file = json_lines((tmp_path / "demo.log").read_text().splitlines())
        assert len(in_file) == len(lines)

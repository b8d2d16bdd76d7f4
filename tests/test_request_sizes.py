"""Body sizes taken from headers are validated: a ``Content-Length`` counts only as a plain
decimal number of at most 2**63 - 1 (the largest OpenTelemetry integer); anything else is
ignored as if it were absent, so ``http.request.body.size`` (and the pathsend response's
``http.response.body.size``) is always an integer in range.

What reaches the application: uvicorn's h11 refuses a sign, ``_`` and more than 20 digits,
and collapses ``5, 5``; httptools refuses a sign and anything above 2**64 - 1. Both let
2**63 through, h11 up to 20 nines: those run against a real uvicorn (each HTTP
implementation). The values servers refuse are driven in process through a raw ASGI scope.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conftest import free_port
from fapilog import configure_logging
from fapilog.integrations.request_head import MAX_SIZE, content_length
from fapilog.middleware import RequestLoggingMiddleware
from fapilog.settings import RequestSettings
from fapilog.testing import capture_logs
from fastapi_support import requests_of

BAD = [
    b"-5", b"+5", b"", b" ", b"5 5", b"5\n", b"1_000", b"0x10", b"5.0", b"1e3",
    "\u0665".encode(), "\uff15".encode(), b"9" * 4000, str(2**63).encode(),
    str(2**64 - 1).encode(), b"9" * 20,
]  # fmt: skip
GOOD = [(b"0", 0), (b"7", 7), (b"0007", 7), (b" 7\t", 7), (str(MAX_SIZE).encode(), MAX_SIZE),
        (b"0" * 30 + b"12", 12)]  # fmt: skip


@pytest.mark.parametrize("value", BAD)
def test_a_bad_content_length_is_no_size(value: bytes) -> None:
    assert content_length(value) is None
    assert content_length(value.decode("utf-8")) is None


@pytest.mark.parametrize(("value", "size"), GOOD)
def test_a_plain_decimal_content_length_is_a_size(value: bytes, size: int) -> None:
    assert content_length(value) == size


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/size", "raw_path": b"/size", "root_path": "",
        "query_string": b"", "headers": [(b"host", b"example"), *headers],
        "client": ("10.1.2.3", 5000), "server": ("example", 80),
    }  # fmt: skip


async def _drive(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _sizes_of(headers_list: list[list[tuple[bytes, bytes]]]) -> list[Any]:
    app = FastAPI()

    @app.get("/size")
    async def size() -> dict[str, str]:  # reads no body: the header is all there is
        return {}

    configure_logging(app=app)
    with capture_logs() as logs:
        for headers in headers_list:
            asyncio.run(_drive(app, _scope(headers)))
    return [event.get("http.request.body.size", "absent") for event in requests_of(logs)]


def test_the_request_event_takes_only_a_valid_content_length() -> None:
    cases = [[(b"content-length", value)] for value in BAD]
    cases += [[(b"content-length", value)] for value, _ in GOOD]
    # several Content-Length headers count when they agree, and not at all otherwise
    cases += [
        [(b"content-length", b"5"), (b"content-length", b"5")],
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"5"), (b"content-length", b"-5")],
        [(b"content-length", b"-5"), (b"content-length", b"5")],
    ]
    assert _sizes_of(cases) == [0] * len(BAD) + [size for _, size in GOOD] + [5, 0, 0, 0]


@pytest.mark.parametrize(("value", "size"), [(b"-77", 0), (b"9" * 4000, 0), (b"77", 77)])
def test_a_pathsend_response_size_comes_from_a_valid_content_length(
    value: bytes, size: int
) -> None:
    async def pathsend_app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", value)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": "/tmp/file.bin"})

    configure_logging()
    middleware = RequestLoggingMiddleware(pathsend_app, RequestSettings(request_id=False))
    with capture_logs() as logs:
        asyncio.run(_drive(middleware, _scope([])))
    (event,) = requests_of(logs)
    assert event["http.response.body.size"] == size


SIZE_APP = """
from fastapi import FastAPI

import fapilog

app = FastAPI()
fapilog.configure_logging(app=app)


@app.get("/size/{case}")
async def size(case: int) -> dict[str, int]:  # reads no body: the header is all there is
    return {"case": case}
"""
# what each HTTP implementation lets through to the application, and the size recorded
THROUGH = {
    "h11": [(str(2**63).encode(), 0), (str(2**64 - 1).encode(), 0), (b"9" * 20, 0),
            (b"5, 5", 5), (str(MAX_SIZE).encode(), MAX_SIZE)],
    "httptools": [(str(2**63).encode(), 0), (str(2**64 - 1).encode(), 0),
                  (str(MAX_SIZE).encode(), MAX_SIZE)],
}  # fmt: skip


def _raw_get(port: int, path: str, length: bytes) -> bytes:
    """A GET whose Content-Length announces a body that never comes (the app reads none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
            + b"Content-Length: "
            + length
            + b"\r\n\r\n"
        )
        return conn.recv(4096)


@pytest.mark.slow
@pytest.mark.parametrize("http", list(THROUGH))
def test_uvicorn_lets_through_lengths_beyond_the_range_and_the_event_ignores_them(
    http: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "size_app.py").write_text(SIZE_APP)
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {
        **subprocess_env,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), subprocess_env["PYTHONPATH"]]),
        "FAPILOG_EXPORTERS": "stdout",
    }
    command = [sys.executable, "-m", "uvicorn", "size_app:app", "--host", "127.0.0.1",
               "--port", str(port), "--http", http]  # fmt: skip
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/size/0", timeout=30)
                break
            except httpx.HTTPError:
                assert process.poll() is None, err.read_text()[-3000:]
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        for case, (length, _) in enumerate(THROUGH[http], 1):
            answer = _raw_get(port, f"/size/{case}", length)
            assert answer.startswith(b"HTTP/1.1 200"), (length, answer[:100])
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    events = {
        int(line["url.path"].rpartition("/")[2]): line
        for line in map(json.loads, out.read_text().splitlines())
        if line["logger"] == "fapilog.request"
    }
    assert {
        case: events[case]["http.request.body.size"] for case in range(1, len(THROUGH[http]) + 1)
    } == {case: size for case, (_, size) in enumerate(THROUGH[http], 1)}

"""stdlib logging and uvicorn's loggers flow through fapilog, once each, without recursion."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

import fapilog
from conftest import MemoryExporter
from fapilog import configure_logging, register_exporter
from fapilog.exporters import LogRecordExporter, LogRecordExportResult, unregister_exporter


def _attrs(record: Any) -> dict[str, Any]:
    return dict(record.log_record.attributes or {})


def test_stdlib_records_become_structured(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    logging.getLogger("lib").warning("disk %s%% full", 91, extra={"mount": "/data", "n": 2})
    logging.getLogger("lib").info("info passes the INFO level")
    logging.getLogger("lib").debug("debug filtered")
    records = memory_exporter.records()
    assert [r.log_record.body for r in records] == [
        "disk 91% full",
        "info passes the INFO level",
    ]
    first = records[0]
    assert first.instrumentation_scope.name == "lib"
    assert first.log_record.severity_text == "WARN"
    assert _attrs(first) == {"mount": "/data", "n": 2}


def test_stdlib_exception_and_custom_level(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    logging.addLevelName(25, "NOTICE")
    logging.getLogger("svc").log(25, "custom level")
    try:
        raise OSError("disk gone")
    except OSError:
        logging.getLogger("svc").exception("write failed")
    custom, error = memory_exporter.records()
    assert custom.log_record.severity_text == "NOTICE"
    assert custom.log_record.severity_number.value == 12  # INFO4: the SDK's mapping of 25
    assert _attrs(error)["exception.type"] == "OSError"
    assert "disk gone" in _attrs(error)["exception.stacktrace"]


def test_root_console_handlers_replaced_not_duplicated(
    memory_exporter: MemoryExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.basicConfig(stream=sys.stderr, force=True)  # a plain-text handler pre-installed
    try:
        configure_logging(exporters=[memory_exporter.name])
        configure_logging(exporters=[memory_exporter.name])
        logging.getLogger("x").warning("once")
        assert [r.log_record.body for r in memory_exporter.records()] == ["once"]
        assert "once" not in capsys.readouterr().err
        handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "FapilogHandler"]
        assert len(handlers) == 1
    finally:
        for handler in list(logging.getLogger().handlers):
            if type(handler) is logging.StreamHandler:
                logging.getLogger().removeHandler(handler)


def test_capture_stdlib_off_leaves_logging_alone(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name], capture_stdlib=False)
    logging.getLogger("lib").warning("not ours")
    assert memory_exporter.records() == []


def test_python_warnings_are_captured(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
    [record] = memory_exporter.records()
    assert record.instrumentation_scope.name == "py.warnings"
    assert "old api" in record.log_record.body


class ChattyExporter(LogRecordExporter):
    """An exporter whose library logs a warning on every export, like an HTTP client or the
    OTel SDK itself would: that must not feed back into the pipeline."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        logging.getLogger("opentelemetry.sdk.chatty").warning("exporting %d", len(batch))
        self.exported += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_no_recursion_when_exporting_logs(capfd: pytest.CaptureFixture[str]) -> None:
    chatty = ChattyExporter()
    register_exporter("chatty", lambda settings: chatty)
    try:
        configure_logging(exporters=["chatty"])
        for i in range(20):
            logging.getLogger("app").info("work %d", i)
        fapilog.force_flush(5)
        # a feedback loop would export the exporter's own warnings too
        assert chatty.exported == 20
        assert fapilog.stats()["emitted"] == 20
        assert "exporting" in capfd.readouterr().err  # reported on stderr, rate limited
    finally:
        unregister_exporter("chatty")


UVICORN_APP = textwrap.dedent(
    """
    import logging
    from fapilog import configure_logging

    configure_logging(service_name="uvicorn-test")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        logging.getLogger("lib").warning("library says", extra={"order": 7})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    """
)


@pytest.mark.slow
def test_uvicorn_lines_are_json_once(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    # a real uvicorn: its own lines, the access line and a library's line, each once, as JSON
    (tmp_path / "plainapp.py").write_text(UVICORN_APP)
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{subprocess_env['PYTHONPATH']}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "plainapp:app", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            message = json.loads(line)["message"]
            if "Uvicorn running on" in message:
                port = int(message.split(":")[-1].split()[0])
        assert port is not None, lines
        response = httpx.get(f"http://127.0.0.1:{port}/orders?x=1", timeout=10)
        assert response.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        lines.extend(out.splitlines(keepends=True))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # uvicorn re-raises SIGTERM after its graceful shutdown: the process ends by the signal,
    # after fapilog drained (every line below was delivered)
    assert proc.returncode in (0, -signal.SIGTERM), err
    parsed = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    messages = [line["message"] for line in parsed]
    assert messages.count(f"Started server process [{proc.pid}]") == 1
    assert messages.count("Application startup complete.") == 1
    access = [line for line in parsed if line["logger"] == "uvicorn.access"]
    assert len(access) == 1
    assert '"GET /orders HTTP/1.1" 200' in access[0]["message"]  # (its query string left out)
    library = [line for line in parsed if line["logger"] == "lib"]
    assert len(library) == 1 and library[0]["order"] == 7
    assert all(line["service.name"] == "uvicorn-test" for line in parsed)
    assert "Shutting down" in messages
    assert err.strip() == ""


def test_silenced_uvicorn_access_log_stays_silent(memory_exporter: MemoryExporter) -> None:
    # what `uvicorn --no-access-log` leaves behind: no handlers, no propagation
    access = logging.getLogger("uvicorn.access")
    saved = (access.propagate, list(access.handlers))
    access.handlers = []
    access.propagate = False
    try:
        configure_logging(exporters=[memory_exporter.name])
        access.info("GET / 200")
        logging.getLogger("uvicorn.error").info("kept")
        assert [r.log_record.body for r in memory_exporter.records()] == ["kept"]
    finally:
        access.propagate, access.handlers = saved[0], saved[1]


def test_uvicorn_color_message_is_not_a_field(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    logging.getLogger("uvicorn.error").info(
        "Started", extra={"color_message": "\x1b[32mStarted\x1b[0m"}
    )
    [record] = memory_exporter.records()
    assert "color_message" not in _attrs(record)

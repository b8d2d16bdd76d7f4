"""Unhandled exceptions (main thread, other threads) become ERROR records with the
structured exception, delivered before exit; the previous hooks still run (traceback on
stderr, exit status); ``capture_exceptions=False`` and `reset()` take fapilog's hooks away."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import fapilog.testing
from conftest import MemoryExporter
from fapilog import configure_logging, log

SCRIPT = """
import sys, threading
import fapilog

fapilog.configure_logging()

def fail():
    raise RuntimeError("thread broke")

worker = threading.Thread(target=fail, name="worker-1")
worker.start()
worker.join()
if "main" in sys.argv:
    raise ValueError("boom")
print("done", flush=True)
"""


def _run(
    tmp_path: Path, env: dict[str, str], *args: str, code: str = SCRIPT
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _errors(stdout: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [r for r in records if r["level"] == "error"]


@pytest.mark.slow
def test_an_unhandled_exception_is_one_json_error_record_then_the_usual_exit(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _run(tmp_path, subprocess_env, "main")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: boom")
    thread_record, main_record = _errors(proc.stdout)
    assert main_record["message"] == "unhandled exception"
    assert main_record["logger"] == "fapilog.excepthook"
    assert main_record["exception.type"] == "ValueError"
    assert main_record["exception.message"] == "boom"
    assert 'raise ValueError("boom")' in main_record["exception.stacktrace"]
    assert main_record["thread.name"] == "MainThread"
    assert thread_record["exception.type"] == "RuntimeError"


@pytest.mark.slow
def test_an_exception_in_another_thread_is_a_json_error_record(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _run(tmp_path, subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
    assert "Exception in thread worker-1" in proc.stderr  # Python's own hook still ran
    (record,) = _errors(proc.stdout)
    assert record["message"] == "unhandled exception"
    assert record["thread.name"] == "worker-1"
    assert record["exception.type"] == "RuntimeError"
    assert record["exception.message"] == "thread broke"
    assert "in fail" in record["exception.stacktrace"]


@pytest.mark.slow
def test_with_capture_exceptions_off_neither_becomes_a_record(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**subprocess_env, "FAPILOG_CAPTURE_EXCEPTIONS": "false"}
    proc = _run(tmp_path, env, "main")
    assert proc.returncode == 1
    assert _errors(proc.stdout) == []
    assert "Exception in thread worker-1" in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: boom")


@pytest.mark.slow
def test_hooks_installed_before_still_run(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    """An application's (or a library's) own hooks, installed before configure_logging(),
    still see every exception, after fapilog logged it."""
    code = """
    import sys, threading
    import fapilog

    def mine(kind, exc, tb):
        print("my hook saw", kind.__name__, file=sys.stderr, flush=True)

    def my_thread_hook(args):
        print("my thread hook saw", args.exc_type.__name__, file=sys.stderr, flush=True)

    sys.excepthook = mine
    threading.excepthook = my_thread_hook
    fapilog.configure_logging()

    def fail():
        raise RuntimeError("thread broke")

    worker = threading.Thread(target=fail)
    worker.start()
    worker.join()
    raise ValueError("boom")
    """
    proc = _run(tmp_path, subprocess_env, code=code)
    assert proc.returncode == 1
    assert "my thread hook saw RuntimeError" in proc.stderr
    assert "my hook saw ValueError" in proc.stderr
    assert "Traceback" not in proc.stderr  # the application's hook replaced Python's
    assert [r["exception.type"] for r in _errors(proc.stdout)] == ["RuntimeError", "ValueError"]


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_the_record_carries_the_exception_as_log_exception_does(
    memory_exporter: MemoryExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    exc = _raised(ValueError("boom"))
    sys.excepthook(type(exc), exc, exc.__traceback__)
    log.exception("handled", exc_info=exc)
    unhandled, handled = memory_exporter.records()
    assert unhandled.log_record.severity_text == "ERROR"
    assert unhandled.log_record.body == "unhandled exception"
    assert unhandled.instrumentation_scope.name == "fapilog.excepthook"
    for key in ("exception.type", "exception.message", "exception.stacktrace"):
        assert unhandled.log_record.attributes[key] == handled.log_record.attributes[key], key
    assert "ValueError: boom" in capsys.readouterr().err  # then Python's own hook


def test_ctrl_c_is_not_an_error(
    memory_exporter: MemoryExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    exc = _raised(KeyboardInterrupt())
    sys.excepthook(type(exc), exc, exc.__traceback__)
    assert memory_exporter.records() == []
    assert "KeyboardInterrupt" in capsys.readouterr().err


def test_reset_and_the_setting_put_the_previous_hooks_back(
    memory_exporter: MemoryExporter,
) -> None:
    before = (sys.excepthook, threading.excepthook)
    configure_logging(exporters=[memory_exporter.name])
    assert (sys.excepthook, threading.excepthook) != before
    configure_logging(exporters=[memory_exporter.name], capture_exceptions=False)
    assert (sys.excepthook, threading.excepthook) == before
    configure_logging(exporters=[memory_exporter.name])
    assert sys.excepthook is not before[0]
    fapilog.testing.reset()
    assert (sys.excepthook, threading.excepthook) == before


def test_a_hook_installed_on_top_of_fapilogs_is_left_in_place(
    memory_exporter: MemoryExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library that chains its hook to fapilog's keeps working after reset(), and a new
    configuration logs each exception once, not once per fapilog hook in the chain."""
    original = sys.excepthook
    configure_logging(exporters=[memory_exporter.name])
    underneath = sys.excepthook
    seen: list[str] = []

    def library_hook(kind: Any, exc: BaseException, tb: Any) -> None:
        seen.append(kind.__name__)
        underneath(kind, exc, tb)

    sys.excepthook = library_hook
    try:
        fapilog.testing.reset()
        assert sys.excepthook is library_hook
        configure_logging(exporters=[memory_exporter.name])
        exc = _raised(ValueError("once"))
        sys.excepthook(type(exc), exc, exc.__traceback__)
        assert seen == ["ValueError"]
        assert [r.log_record.body for r in memory_exporter.records()] == ["unhandled exception"]
        assert capsys.readouterr().err.count("ValueError: once") == 1
    finally:
        fapilog.testing.reset()
        sys.excepthook = original

"""The pretty console exporter, and the testing helpers as a user's test suite uses them."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import fapilog
from conftest import ROOT
from fapilog import configure_logging, log
from fapilog.exporters.stdout import ConsoleExporter


def test_console_output_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(exporters=["console"])
    log.info("user logged in", user_id=42)
    try:
        raise ValueError("bad input")
    except ValueError:
        log.exception("handler failed")
    fapilog.force_flush(5)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "[info" in first and "user logged in" in first and "user_id=42" in first
    assert "\x1b[" not in out  # not a terminal: no colour codes
    assert "Traceback (most recent call last)" in out
    assert "ValueError: bad input" in out
    assert "service.name" not in out  # resource noise stays out of the console


def test_development_env_uses_console_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(env="development")
    log.warning("pretty")
    fapilog.force_flush(5)
    out = capsys.readouterr().out
    assert not out.startswith("{") and "pretty" in out


def test_json_console_true_forces_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(env="development", json_console=True)
    log.warning("json anyway")
    fapilog.force_flush(5)
    assert capsys.readouterr().out.startswith("{")


def test_console_colours_on_terminals() -> None:
    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = FakeTTY()
    exporter = ConsoleExporter(stream=stream)
    from fapilog.otel.logs import InMemoryLogRecordExporter  # noqa: F401 - adapter import

    configure_logging()
    fapilog.register_exporter("tty", lambda settings: exporter)
    try:
        configure_logging(exporters=["tty"])
        log.error("red alert")
        fapilog.force_flush(5)
    finally:
        fapilog.exporters.unregister_exporter("tty")
    assert "\x1b[" in stream.getvalue() and "red alert" in stream.getvalue()


USER_TESTS = textwrap.dedent(
    """
    import logging
    from fapilog import configure_logging, get_logger
    from fapilog.testing import capture_logs

    def checkout(cart):
        get_logger("shop").info("order placed", items=len(cart))
        logging.getLogger("payments").warning("slow gateway")

    def test_with_context_manager():
        configure_logging()
        with capture_logs() as logs:
            checkout([1, 2])
        assert logs == [
            {"message": "order placed", "level": "info", "logger": "shop", "items": 2},
            {"message": "slow gateway", "level": "warning", "logger": "payments"},
        ]

    def test_with_fixture(fapilog_logs):
        checkout([1])
        assert fapilog_logs.messages() == ["order placed", "slow gateway"]
        assert fapilog_logs.by_level("warning")[0]["logger"] == "payments"

    def test_fixture_is_isolated(fapilog_logs):
        assert fapilog_logs == []
    """
)


@pytest.mark.slow
def test_testing_helpers_in_a_users_suite(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    # the plugin is found through its pytest11 entry point, in a separate run
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("--rootdir", str(tmp_path), str(tmp_path)),
        ],
        cwd=ROOT,  # coverage data of the child lands beside the parent's
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_in_memory_exporter_keeps_what_the_real_pipeline_exported() -> None:
    from fapilog.testing import InMemoryExporter

    with InMemoryExporter() as memory:
        configure_logging(exporters=[memory.name], service_name="shop")
        log.info("paid", order_id=7)
        [line] = memory.lines()
        assert line["message"] == "paid" and line["order_id"] == 7
        assert line["service.name"] == "shop"  # the JSON line, resource attributes included
        configure_logging(exporters=[memory.name], service_name="shop", level="DEBUG")
        log.debug("after a reconfiguration")
        assert [r.log_record.body for r in memory.records()] == [
            "paid",
            "fapilog.config.changed",
            "after a reconfiguration",
        ]
        memory.clear()
        assert memory.records(flush=False) == []
        name = memory.name
    with pytest.raises(fapilog.ConfigurationError, match="unknown exporter"):
        configure_logging(exporters=[name])  # closed: the name is unregistered


def test_reset_forgets_the_configuration() -> None:
    import logging

    from fapilog._state import STATE
    from fapilog.capture import stdlib
    from fapilog.testing import reset

    configure_logging(level="DEBUG")
    assert STATE.is_configured() and stdlib.installed_handler() in logging.getLogger().handlers
    reset()
    assert not STATE.is_configured() and STATE.pipeline is None
    assert stdlib.installed_handler() is None
    assert fapilog.stats()["emitted"] == 0


def test_the_exporter_fixture(fapilog_exporter: Any) -> None:
    configure_logging(exporters=[fapilog_exporter.name])
    log.warning("seen")
    assert [line["message"] for line in fapilog_exporter.lines()] == ["seen"]

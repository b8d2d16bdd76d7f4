"""A logging configuration made after configure_logging() (dictConfig, fileConfig,
basicConfig; Alembic's env.py, Celery, uvicorn.run) does not take stdlib logging away from
fapilog while stdlib capture is on: fapilog's handler goes back on the root logger, the
handlers the configuration added stay, and a console handler among them that prints the
same lines twice is named once. With capture off, fapilog never touches stdlib logging.

The configurations run in child interpreters: `disable_existing_loggers` and replaced root
handlers would change the test process's own logging."""

from __future__ import annotations

import json
import logging
import logging.config
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import fapilog.testing
from conftest import MemoryExporter
from fapilog import configure_logging
from fapilog._state import STATE

pytestmark = pytest.mark.slow

DICT_CONFIG = """
import logging, logging.config, sys
import fapilog

fapilog.configure_logging()
logging.config.dictConfig({
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                             "formatter": "plain"}},
    "formatters": {"plain": {"format": "plain %(levelname)s %(message)s"}},
    "root": {"handlers": ["console"], "level": "INFO"},
})
logging.getLogger("x").warning("after")
logging.config.dictConfig({  # the same configuration again: no second warning
    "version": 1,
    "disable_existing_loggers": False,  # (else "x" would be disabled: stdlib's rule)
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                             "formatter": "plain"}},
    "formatters": {"plain": {"format": "plain %(levelname)s %(message)s"}},
    "root": {"handlers": ["console"], "level": "INFO"},
})
logging.getLogger("x").warning("again")
root = logging.getLogger()
print("root handlers", [type(h).__name__ for h in root.handlers], file=sys.stderr)
"""


def _run(
    tmp_path: Path, env: dict[str, str], code: str, *args: str
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
        cwd=tmp_path,
    )


def _json(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _plain(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("{")]


def _duplicate_warnings(stderr: str) -> list[dict[str, Any]]:
    return [
        line
        for line in _json(stderr)
        if str(line.get("fapilog.diagnostic", "")).startswith("stdlib-duplicate")
    ]


def test_dictconfig_after_configure_logging_keeps_the_records_flowing(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _run(tmp_path, subprocess_env, DICT_CONFIG)
    assert proc.returncode == 0, proc.stderr
    assert [e["message"] for e in _json(proc.stdout) if e["logger"] == "x"] == ["after", "again"]
    # the handler the application configured stays, and is named once: it prints twice
    assert _plain(proc.stdout) == ["plain WARNING after", "plain WARNING again"]
    (warning,) = _duplicate_warnings(proc.stderr)
    assert "'console' (StreamHandler to stdout) on the root logger" in warning["message"]
    assert warning["handler"] == "console"
    assert "root handlers ['StreamHandler', 'FapilogHandler']" in proc.stderr


def test_with_capture_stdlib_off_the_configured_handler_alone_prints(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**subprocess_env, "FAPILOG_CAPTURE_STDLIB": "false"}
    proc = _run(tmp_path, env, DICT_CONFIG)
    assert proc.returncode == 0, proc.stderr
    assert [e for e in _json(proc.stdout) if e["logger"] == "x"] == []
    assert _plain(proc.stdout) == ["plain WARNING after", "plain WARNING again"]
    assert _duplicate_warnings(proc.stderr) == []
    assert "root handlers ['StreamHandler']" in proc.stderr


def test_with_capture_stdlib_off_fapilog_never_touches_stdlib_logging(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    code = """
    import logging, logging.config
    functions = (logging.config.dictConfig, logging.config.fileConfig, logging.basicConfig)
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    import fapilog
    fapilog.configure_logging(capture_stdlib=False)
    fapilog.configure_logging(capture_stdlib=False, level="DEBUG")
    assert (logging.config.dictConfig, logging.config.fileConfig, logging.basicConfig) == functions
    assert logging.getLogRecordFactory() is logging.LogRecord
    assert root.handlers == [handler] and root.level == logging.DEBUG
    assert not logging.getLogger("py.warnings").handlers
    print("untouched")
    """
    proc = _run(tmp_path, subprocess_env, code)
    assert proc.returncode == 0, proc.stderr
    assert "untouched" in proc.stdout


ALEMBIC_INI = """
[loggers]
keys = root,alembic
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
qualname =
[logger_alembic]
level = INFO
handlers =
qualname = alembic
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


def test_fileconfig_imported_before_fapilog_as_in_alembics_env_py(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """Alembic's env.py imports `fileConfig` by name at its top, before anything imports
    fapilog: the call bypasses fapilog's wrapper, and fapilog still takes logging back
    before the next record (the configuration closed its handler)."""
    (tmp_path / "alembic.ini").write_text(ALEMBIC_INI)
    code = """
    from logging.config import fileConfig
    import logging
    import fapilog

    fapilog.configure_logging()
    fileConfig("alembic.ini")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade -> 1a2b")
    """
    proc = _run(tmp_path, subprocess_env, code)
    assert proc.returncode == 0, proc.stderr
    (record,) = [e for e in _json(proc.stdout) if e["logger"].startswith("alembic")]
    assert record["message"] == "Running upgrade -> 1a2b"
    assert record["level"] == "info"
    (warning,) = _duplicate_warnings(proc.stderr)
    assert "'console' (StreamHandler to stderr) on the root logger" in warning["message"]
    assert "INFO  [alembic.runtime.migration] Running upgrade -> 1a2b" in proc.stderr


def test_basicconfig_force_and_a_hijacked_root_logger(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """`basicConfig(force=True)`, and the root handlers replaced by hand as Celery's worker
    does (`root.handlers = []`, then its own handler): the next record is fapilog's again."""
    code = """
    import logging, sys
    import fapilog

    fapilog.configure_logging()
    logging.basicConfig(force=True, format="plain %(message)s")
    logging.getLogger("job").warning("after basicConfig")
    root = logging.getLogger()
    root.handlers = []
    root.addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("job").warning("after hijack")
    """
    proc = _run(tmp_path, subprocess_env, code)
    assert proc.returncode == 0, proc.stderr
    got = [e["message"] for e in _json(proc.stdout) if e["logger"] == "job"]
    assert got == ["after basicConfig", "after hijack"]
    warnings = _duplicate_warnings(proc.stderr)
    assert len(warnings) == 1  # both are an unnamed StreamHandler to stderr on the root
    assert "StreamHandler to stderr on the root logger" in warnings[0]["message"]


def test_a_console_handler_on_a_propagating_logger_is_named_one_that_does_not_is_not(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    code = """
    import logging, logging.config
    import fapilog

    fapilog.configure_logging()
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "shared": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "own": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "app": {"handlers": ["shared"], "level": "INFO"},
            "audit": {"handlers": ["own"], "level": "INFO", "propagate": False},
        },
    })
    logging.getLogger("app.orders").warning("to both")
    logging.getLogger("audit").warning("to its own handler only")
    """
    proc = _run(tmp_path, subprocess_env, code)
    assert proc.returncode == 0, proc.stderr
    assert [e["message"] for e in _json(proc.stdout)] == ["to both"]
    (warning,) = _duplicate_warnings(proc.stderr)
    assert "'shared' (StreamHandler to stderr) on the logger 'app'" in warning["message"]
    assert warning["source_logger"] == "app"


def test_reset_and_capture_off_put_the_logging_functions_back(
    memory_exporter: MemoryExporter,
) -> None:
    functions = (logging.config.dictConfig, logging.config.fileConfig, logging.basicConfig)
    factory = logging.getLogRecordFactory()
    configure_logging(exporters=[memory_exporter.name])
    assert logging.config.dictConfig is not functions[0]
    assert logging.getLogRecordFactory() is not factory
    assert STATE.stdlib_guard
    configure_logging(exporters=[memory_exporter.name], capture_stdlib=False)
    assert (logging.config.dictConfig, logging.config.fileConfig, logging.basicConfig) == (
        functions
    )
    assert logging.getLogRecordFactory() is factory
    configure_logging(exporters=[memory_exporter.name])
    fapilog.testing.reset()
    assert logging.config.dictConfig is functions[0]
    assert logging.getLogRecordFactory() is factory
    assert not STATE.stdlib_guard


def test_a_record_factory_installed_on_top_keeps_working(
    memory_exporter: MemoryExporter,
) -> None:
    """A factory installed after fapilog's (the OpenTelemetry logging instrumentation does
    this) and chained to it keeps working after fapilog's is removed."""
    original = logging.getLogRecordFactory()
    configure_logging(exporters=[memory_exporter.name])
    underneath = logging.getLogRecordFactory()

    def tagging(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = underneath(*args, **kwargs)
        record.tagged = True
        return record

    logging.setLogRecordFactory(tagging)
    try:
        logging.getLogger("factory").warning("tagged")
        (record,) = memory_exporter.records()
        assert record.log_record.attributes["tagged"] is True
        fapilog.testing.reset()
        assert logging.getLogRecordFactory() is tagging
        assert logging.makeLogRecord({}).tagged is True
    finally:
        logging.setLogRecordFactory(original)

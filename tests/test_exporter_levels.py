"""Per-exporter levels (``FAPILOG_EXPORTER_LEVELS``): each exporter keeps what reaches its
own level, the caller's gate is the lowest level anything wants, what an exporter does not
take is counted as its ``filtered``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fapilog
from conftest import run_python
from fapilog import ConfigurationError, configure_logging, get_logger
from fapilog._state import STATE
from fapilog.capture.logger import sink_for
from fapilog.otel.logs import SeverityNumber
from fapilog.pipeline.routes import _CACHE_AT_MOST, ROUTES


def test_debug_goes_to_the_file_and_not_to_stdout(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    path = tmp_path / "app.log"
    env = {
        **subprocess_env,
        "FAPILOG_LEVEL": "info",
        "FAPILOG_EXPORTERS": "stdout,file",
        "FAPILOG_EXPORTER_LEVELS": "file:debug",
        "FAPILOG_FILE__PATH": str(path),
    }
    code = (
        "import logging, fapilog\n"
        "fapilog.configure_logging()\n"
        "log = fapilog.get_logger('app')\n"
        "log.debug('detail', n=1)\n"
        "logging.getLogger('lib').debug('stdlib detail')\n"
        "log.info('summary')\n"
        "fapilog.force_flush()\n"
        "s = fapilog.stats()['exporters']\n"
        "import sys; print(s['stdout']['filtered'], s['file']['filtered'], file=sys.stderr)\n"
    )
    rc, out, err = run_python(code, env)
    assert rc == 0, err
    stdout_messages = [json.loads(line)["message"] for line in out.splitlines()]
    file_messages = [json.loads(line)["message"] for line in path.read_text().splitlines()]
    assert stdout_messages == ["summary"]
    assert file_messages == ["detail", "stdlib detail", "summary"]
    assert err.strip().splitlines()[-1] == "2 0"


def test_each_exporter_keeps_what_reaches_its_level(tmp_path: Path) -> None:
    debug_path, warn_path = tmp_path / "debug.log", tmp_path / "other.log"
    configure_logging(
        level="WARNING",
        exporters=["file"],
        exporter_levels={"file": "debug"},
        file={"path": str(debug_path)},
    )
    log = get_logger("svc")
    assert sink_for("svc").min_level == 10  # the lowest level anything wants
    log.debug("d")
    log.info("i")
    log.warning("w")
    fapilog.force_flush()
    assert [json.loads(x)["message"] for x in debug_path.read_text().splitlines()] == [
        "d",
        "i",
        "w",
    ]
    # without exporter levels, the gate is the level itself: nothing captured for nobody
    configure_logging(level="WARNING", exporter_levels={}, file={"path": str(warn_path)})
    assert sink_for("svc").min_level == 30


def test_a_logger_level_applies_to_every_exporter(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(
        level="INFO",
        exporters=["file"],
        exporter_levels={"file": "debug"},
        logger_levels={"noisy": "WARNING"},
        file={"path": str(path)},
    )
    get_logger("noisy.sub").info("not kept")
    get_logger("app").debug("kept")
    fapilog.force_flush()
    assert [json.loads(x)["message"] for x in path.read_text().splitlines()] == ["kept"]


def test_an_exporter_level_for_an_exporter_not_configured_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"FAPILOG_EXPORTER_LEVELS.*'loki'.*stdout"):
        configure_logging(exporters=["stdout"], exporter_levels={"loki": "info"})


def test_the_env_form_takes_name_colon_level_and_rejects_a_bad_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPILOG_EXPORTER_LEVELS", "stdout:warn")
    assert fapilog.LoggingSettings().exporter_levels == {"stdout": "WARNING"}
    monkeypatch.setenv("FAPILOG_EXPORTER_LEVELS", "stdout:loud")
    with pytest.raises(ConfigurationError, match="FAPILOG_EXPORTER_LEVELS"):
        fapilog.LoggingSettings()


def test_a_custom_exporter_can_be_named(tmp_path: Path, memory_exporter: object) -> None:
    name = memory_exporter.name  # type: ignore[attr-defined]
    path = tmp_path / "app.log"
    configure_logging(
        level="DEBUG",
        exporters=["file", name],
        exporter_levels={name: "error"},
        file={"path": str(path)},
    )
    log = get_logger("app")
    log.info("info")
    log.error("error")
    records = memory_exporter.records()  # type: ignore[attr-defined]
    assert [r.log_record.body for r in records] == ["error"]
    assert fapilog.stats()["exporters"][name]["filtered"] == 1


def file_messages(path: Path) -> list[str]:
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def test_the_console_writes_what_reaches_its_own_level_during_the_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the console writes on the calling thread, in call order with print(): its level (and a
    # logger's entry, which applies to every exporter) is applied there, not on the worker
    path = tmp_path / "app.log"
    configure_logging(
        level="INFO",
        exporters=["console", "file"],
        exporter_levels={"console": "warning"},
        logger_levels={"db": "debug"},
        file={"path": str(path)},
        queue={"max_delay": 30},  # (nothing is written from the queues before the flush)
    )
    get_logger("shop").info("routine")
    get_logger("shop").warning("odd")
    print("after odd")
    get_logger("db").debug("query")
    print("after query")
    fapilog.force_flush()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith("shop odd") and lines[1] == "after odd", lines
    assert lines[2].endswith("db query") and lines[3] == "after query", lines
    assert file_messages(path) == ["routine", "odd", "query"]
    assert fapilog.stats()["exporters"]["console"]["filtered"] == 1


def test_a_logger_level_below_an_exporters_own_level_reaches_that_exporter(
    tmp_path: Path, memory_exporter: object
) -> None:
    name = memory_exporter.name  # type: ignore[attr-defined]
    path = tmp_path / "app.log"
    configure_logging(
        level="INFO",
        exporters=["file", name],
        exporter_levels={"file": "warning"},
        logger_levels={"db": "debug"},
        file={"path": str(path)},
    )
    get_logger("db.pool").debug("query")
    get_logger("app").info("hello")
    get_logger("app").warning("slow")
    records = memory_exporter.records()  # type: ignore[attr-defined]
    assert [r.log_record.body for r in records] == ["query", "hello", "slow"]
    assert file_messages(path) == ["query", "slow"]


def test_routing_decisions_stay_right_past_the_decision_cache_bound(tmp_path: Path) -> None:
    # one decision per (logger, severity, exporters): more loggers than the cache holds
    path = tmp_path / "app.log"
    configure_logging(
        level="INFO",
        exporters=["stdout", "file"],
        exporter_levels={"stdout": "error", "file": "info"},
        file={"path": str(path)},
    )
    assert STATE.pipeline is not None
    targets = tuple(STATE.pipeline.router.targets)
    info, error = SeverityNumber.INFO.value, SeverityNumber.ERROR.value
    names = [f"svc.{n}" for n in range(_CACHE_AT_MOST + 2)]
    for logger in names:
        chosen, left = ROUTES.choose(targets, logger, info)
        assert [t.name for t in chosen] == ["file"] and [t.name for t in left] == ["stdout"]
    chosen, _ = ROUTES.choose(targets, names[0], error)
    assert [t.name for t in chosen] == ["stdout", "file"]

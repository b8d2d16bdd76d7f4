"""configure_logging() lifecycle: idempotence, reconfiguration, attaching to existing providers."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

import fapilog
from conftest import MemoryExporter, run_python
from fapilog import configure_logging, log
from fapilog.testing import capture_logs


def test_configure_twice_never_duplicates(memory_exporter: MemoryExporter) -> None:
    first = configure_logging(exporters=[memory_exporter.name])
    second = configure_logging(exporters=[memory_exporter.name])
    assert first == second
    log.info("once")
    records = memory_exporter.records()
    assert [r.log_record.body for r in records] == ["once"]  # no config.changed either


def test_reconfiguration_logs_one_change_event(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    configure_logging(exporters=[memory_exporter.name], level="DEBUG", service_version="2.0")
    log.debug("after")
    bodies = [r.log_record.body for r in memory_exporter.records()]
    assert bodies == ["fapilog.config.changed", "after"]
    [change] = [r for r in memory_exporter.records() if r.log_record.body != "after"]
    changed: Any = dict(change.log_record.attributes or {})["changed"]
    assert set(changed) == {"level", "service_version"}
    assert dict(changed["level"]) == {"from": "INFO", "to": "DEBUG"}
    # the resource follows the new service version
    assert memory_exporter.records()[-1].resource.attributes["service.version"] == "2.0"


def test_changing_exporters_drains_the_old_ones(
    memory_exporter: MemoryExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(exporters=["stdout"])
    for i in range(100):
        log.info("to stdout", i=i)
    configure_logging(exporters=[memory_exporter.name])
    log.info("to memory")
    fapilog.force_flush(10)
    fapilog.shutdown(10)
    stdout_lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["i"] for line in stdout_lines if line["message"] == "to stdout"] == list(
        range(100)
    )
    bodies = [r.log_record.body for r in memory_exporter.exporter.get_finished_logs()]
    assert bodies == ["fapilog.config.changed", "to memory"]


def test_shutdown_is_idempotent_and_logging_after_is_counted(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    log.info("before")
    assert fapilog.shutdown(5) is True
    assert fapilog.shutdown(5) is True
    log.info("after shutdown")  # never raises
    figures = fapilog.stats()
    assert figures["exported"] == 1
    assert figures["intake"]["dropped_by_reason"] == {"shutdown": 1}
    configure_logging(exporters=[memory_exporter.name])  # configure again after shutdown works
    log.info("again")
    assert fapilog.force_flush(5)


def test_force_flush_without_configuration() -> None:
    assert fapilog.force_flush(1) is True
    assert fapilog.shutdown(1) is True


def test_capture_logs_without_configuration() -> None:
    import logging

    with capture_logs() as logs:
        log.info("captured", n=1)
        logging.getLogger("lib").warning("stdlib %s", "too", extra={"k": "v"})
        log.debug("debug shows while capturing")
    assert logs == [
        {"message": "captured", "level": "info", "logger": "app", "n": 1},
        {"message": "stdlib too", "level": "warning", "logger": "lib", "k": "v"},
        {"message": "debug shows while capturing", "level": "debug", "logger": "app"},
    ]
    assert logs.messages()[0] == "captured"
    assert logs.by_level("warning")[0]["k"] == "v"


def test_capture_logs_after_configuration_restores_pipeline(
    memory_exporter: MemoryExporter,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    configure_logging(exporters=[memory_exporter.name])
    tracer = TracerProvider().get_tracer("t")
    with capture_logs() as logs, tracer.start_as_current_span("s") as span:
        log.info("in span")
        try:
            raise RuntimeError("x")
        except RuntimeError:
            log.exception("failed")
    assert logs[0]["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert logs[1]["exception.type"] == "RuntimeError"
    log.info("exported again")
    assert [r.log_record.body for r in memory_exporter.records()] == ["exported again"]


@pytest.mark.slow
def test_attaches_to_preinstalled_logger_provider(subprocess_env: dict[str, str]) -> None:
    # records reach the user's exporter AND fapilog's stdout; provider kept
    code = textwrap.dedent(
        """
        from opentelemetry._logs import get_logger_provider, set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import (
            InMemoryLogRecordExporter, SimpleLogRecordProcessor)
        from opentelemetry.sdk.resources import Resource
        import fapilog
        from fapilog import configure_logging, log
        provider = LoggerProvider(resource=Resource.create({"service.name": "users-svc"}))
        mine = InMemoryLogRecordExporter()
        provider.add_log_record_processor(SimpleLogRecordProcessor(mine))
        set_logger_provider(provider)
        configure_logging()
        configure_logging(service_name="not-used")  # the provider's own Resource stays
        log.info("shared", k=1)
        fapilog.force_flush(5)
        assert get_logger_provider() is provider
        got = [(r.log_record.body, dict(r.log_record.attributes)) for r in mine.get_finished_logs()]
        import sys
        print("USER-EXPORTER", got, file=sys.stderr)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["message"] for x in lines] == ["fapilog.config.changed", "shared"]
    line = lines[1]
    assert line["k"] == 1
    assert line["service.name"] == "users-svc"  # the user's resource is used
    assert "('shared', {'k': 1})]" in err.split("USER-EXPORTER ")[1]

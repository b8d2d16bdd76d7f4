"""System enrichment: service, version, environment, host and process as Resource attributes
on every line; process memory and CPU sampled in the background and attached from a cache."""

from __future__ import annotations

import json
import os
import platform
import socket
import textwrap
import threading
import time
from importlib.metadata import version
from typing import Any

import pytest

import fapilog
from conftest import MemoryExporter, run_python
from fapilog import configure_logging, force_flush, log
from fapilog._state import STATE


def _stdout_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    force_flush(10)
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_json_line_carries_the_resource_attributes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAPILOG_SERVICE_NAME", "checkout")
    monkeypatch.setenv("FAPILOG_SERVICE_VERSION", "2.4.1")
    monkeypatch.setenv("FAPILOG_ENV", "staging")
    monkeypatch.setenv("FAPILOG_JSON_CONSOLE", "true")
    configure_logging()
    log.info("paid", order_id=7)
    [line] = _stdout_lines(capsys)
    assert line["message"] == "paid"
    assert line["service.name"] == "checkout"
    assert line["service.version"] == "2.4.1"
    assert line["deployment.environment.name"] == "staging"
    assert line["host.name"] == socket.gethostname()
    assert line["process.pid"] == os.getpid()
    assert line["process.runtime.name"] == platform.python_implementation().lower()
    assert line["process.runtime.version"] == platform.python_version()
    assert "process.memory.usage" not in line  # metrics are opt-in


def test_resource_is_set_once_not_per_record(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name], service_name="svc")
    log.info("one")
    log.info("two")
    first, second = memory_exporter.records()
    assert first.resource is second.resource
    assert "service.name" not in (first.log_record.attributes or {})


def test_version_from_the_installed_distribution(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAPILOG_SYSTEM__PACKAGE", "fapilog")
    configure_logging(exporters=[memory_exporter.name])
    log.info("x")
    [record] = memory_exporter.records()
    assert record.resource.attributes["service.version"] == version("fapilog")


def test_explicit_version_wins_over_the_package(memory_exporter: MemoryExporter) -> None:
    configure_logging(
        exporters=[memory_exporter.name], service_version="9.9", system={"package": "fapilog"}
    )
    log.info("x")
    assert memory_exporter.records()[0].resource.attributes["service.version"] == "9.9"


def test_process_metrics_are_attached_from_a_cache(memory_exporter: MemoryExporter) -> None:
    configure_logging(
        exporters=[memory_exporter.name], system={"metrics": True, "metrics_interval": 3600}
    )
    sampler = STATE.sampler
    assert sampler is not None
    samples = sampler.samples
    for index in range(200):
        log.info("tick", n=index)
    records = memory_exporter.records()
    assert len(records) == 200
    values = {
        (
            r.log_record.attributes["process.memory.usage"],
            r.log_record.attributes["process.cpu.utilization"],
        )
        for r in records
    }
    # one sample served 200 events: nothing was measured per event
    assert sampler.samples == samples
    assert len(values) == 1
    [(rss, cpu)] = values
    assert isinstance(rss, int)
    assert rss > 1024 * 1024
    assert 0.0 <= cpu <= 1.0


def test_the_sampler_refreshes_in_the_background_and_stops(memory_exporter: MemoryExporter) -> None:
    configure_logging(
        exporters=[memory_exporter.name], system={"metrics": True, "metrics_interval": 0.1}
    )
    sampler = STATE.sampler
    assert sampler is not None
    thread = sampler._thread
    assert thread is not None
    assert thread.daemon
    assert thread.name == "fapilog-process-metrics"
    first = sampler.samples
    assert _wait_for(lambda: sampler.samples >= first + 2)
    assert thread.ident in STATE.worker_ids  # anything it logs goes to stderr
    # burn some CPU on this thread: the next samples show it
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        sum(range(1000))
    assert _wait_for(lambda: sampler.snapshot["process.cpu.utilization"] > 0)
    log.info("after")
    attrs = memory_exporter.records()[-1].log_record.attributes
    assert attrs["process.memory.usage"] > 0

    # turning metrics off stops the thread; so does shutting fapilog down
    configure_logging(exporters=[memory_exporter.name])
    assert not thread.is_alive()
    configure_logging(
        exporters=[memory_exporter.name], system={"metrics": True, "metrics_interval": 0.1}
    )
    restarted = sampler._thread
    assert restarted is not None
    assert restarted is not thread
    fapilog.shutdown()
    assert _wait_for(lambda: not restarted.is_alive())
    assert restarted.ident not in STATE.worker_ids


def test_no_process_metrics_no_psutil_thread(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    assert not any(
        t.name == "fapilog-process-metrics" and t.is_alive() for t in threading.enumerate()
    )


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_after_fork_the_child_has_its_own_pid_and_sampler(subprocess_env: dict[str, str]) -> None:
    code = textwrap.dedent(
        """
        import json, os, sys, time
        import fapilog
        from fapilog import configure_logging, log
        from fapilog._state import STATE

        configure_logging(json_console=True, system={"metrics": True, "metrics_interval": 0.1})
        log.info("parent")
        fapilog.force_flush()
        parent_thread = STATE.sampler._thread
        pid = os.fork()
        if pid == 0:
            log.info("child")  # restarts the sampler in the child
            sampler = STATE.sampler
            first = sampler.samples
            deadline = time.monotonic() + 10
            while sampler.samples < first + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            log.info("child sampled", fresh=sampler.samples > first,
                     new_thread=sampler._thread is not parent_thread)
            fapilog.shutdown()
            os._exit(0)
        os.waitpid(pid, 0)
        log.info("parent again")
        fapilog.shutdown()
        print(json.dumps({"parent": os.getpid(), "child": pid}), file=sys.stderr)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    pids = json.loads(err.strip().splitlines()[-1])
    lines = {line["message"]: line for line in map(json.loads, out.splitlines())}
    assert lines["parent"]["process.pid"] == pids["parent"]
    assert lines["parent again"]["process.pid"] == pids["parent"]
    assert lines["child"]["process.pid"] == pids["child"]
    assert lines["child"]["process.memory.usage"] > 0
    assert lines["child sampled"]["fresh"] is True
    assert lines["child sampled"]["new_thread"] is True

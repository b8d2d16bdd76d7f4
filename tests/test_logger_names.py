"""Logger names cost bounded memory: what fapilog keeps per logger name (the interned Sink,
the bridge's SDK Logger, the provider's Logger cache) does not grow with the number of
distinct names a process logs under, and levels still reach every live logger."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import structlog

import fapilog
from conftest import MemoryExporter, run_python
from fapilog import configure_logging, get_logger
from fapilog._state import STATE, UNCONFIGURED_LEVEL
from fapilog.capture.logger import _SINKS
from fapilog.otel.bridge import LOGGER_GENERATION
from fapilog.testing import capture_logs

NAMES = 110_000

MEMORY = """
import gc, json, sys
import psutil, structlog
import fapilog

fapilog.configure_logging(exporters=["file"], file={{"path": {path!r}, "max_bytes": 0}})
process = psutil.Process()
growth = {{}}
for kind, factory in (("fapilog", fapilog.get_logger), ("structlog", structlog.get_logger)):
    factory(f"{{kind}}-warm").info("warm")  # threads started, code paths loaded
    assert fapilog.force_flush(30)
    gc.collect()
    before = process.memory_info().rss
    for i in range({names}):
        factory(f"{{kind}}-n{{i}}").info("hello", i=i)
    assert fapilog.force_flush(60)
    gc.collect()
    growth[kind] = (process.memory_info().rss - before) / 1e6
stats = fapilog.stats()
reasons = {{n: e["dropped_by_reason"] for n, e in stats["exporters"].items()}}
print(json.dumps({{"growth": growth, "emitted": stats["emitted"], "dropped": stats["dropped"],
                  "reasons": reasons}}))
"""


@pytest.mark.slow
def test_memory_stays_bounded_with_distinct_logger_names(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """110,000 distinct names through `fapilog.get_logger` and through `structlog.get_logger`:
    each grows the process by less than 10 MB (it was about 120 MB), and every record is
    written under its own logger name."""
    path = tmp_path / "names.log"
    env = {
        **subprocess_env,
        "FAPILOG_QUEUE__OVERFLOW": "block",
        "FAPILOG_QUEUE__BLOCK_TIMEOUT": "60",  # a loaded machine: wait, never drop
    }
    env.pop("COVERAGE_PROCESS_START", None)  # measure fapilog, not the coverage tracer
    code, out, err = run_python(MEMORY.format(path=str(path), names=NAMES), env, timeout=300)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["growth"]["fapilog"] < 10, result
    assert result["growth"]["structlog"] < 10, result
    assert result["dropped"] == 0, result
    lines = path.read_text().splitlines()
    assert len(lines) == result["emitted"] == 2 * NAMES + 2
    for line in (lines[1], lines[NAMES // 2], lines[-1]):
        record = json.loads(line)
        assert record["logger"].endswith(f"-n{record['i']}"), record


def test_a_logger_name_is_interned_while_a_logger_holds_it(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    logger = get_logger("names.held")
    assert get_logger("names.held")._logger is logger._logger
    assert structlog.get_logger("names.held").bind()._logger is logger._logger
    get_logger("names.dropped").info("once")
    gc.collect()
    assert "names.held" in _SINKS
    assert "names.dropped" not in _SINKS


def test_levels_reach_every_live_logger_and_loggers_made_later(
    memory_exporter: MemoryExporter,
) -> None:
    held = get_logger("names.level.held")
    for i in range(1000):
        get_logger(f"names.level.gone{i}").debug("nobody keeps me")
    configure_logging(exporters=[memory_exporter.name], level="WARNING",
                      logger_levels={"names.level": "DEBUG"})  # fmt: skip
    assert held.is_enabled_for(10)
    assert get_logger("names.level.gone7").is_enabled_for(10)
    assert not get_logger("names.other").is_enabled_for(20)
    configure_logging(exporters=[memory_exporter.name], level="INFO")
    assert not held.is_enabled_for(10) and held.is_enabled_for(20)
    held.debug("filtered")
    held.info("kept")
    bodies = [r.log_record.body for r in memory_exporter.records()]
    assert "kept" in bodies and "filtered" not in bodies


def test_capture_logs_restores_the_levels_of_loggers_made_inside() -> None:
    """Unconfigured, capture_logs() captures at DEBUG; a logger made inside it is back at
    the level it had before afterwards (unconfigured: every event reaches the first event's
    configuration), like the loggers made before, and the configured level reaches both."""
    before = get_logger("names.before")
    with capture_logs() as logs:
        inside = get_logger("names.inside")
        inside.debug("seen")
        assert before.is_enabled_for(10) and not before.is_enabled_for(5)
    assert [e["message"] for e in logs] == ["seen"]
    assert inside.is_enabled_for(UNCONFIGURED_LEVEL) and before.is_enabled_for(UNCONFIGURED_LEVEL)
    configure_logging()
    assert not inside.is_enabled_for(10) and not before.is_enabled_for(10)


def test_the_bridge_keeps_a_bounded_number_of_sdk_loggers(
    memory_exporter: MemoryExporter,
) -> None:
    """More names than the bridge keeps, then the first one again: every record carries its
    own logger name as its instrumentation scope, the bridge keeps at most two generations
    of SDK Loggers and the provider caches none of them. (The queues hold the whole burst:
    whether a burst of new names outruns the bridge is not this test's question.)"""
    count = 3 * LOGGER_GENERATION
    configure_logging(exporters=[memory_exporter.name], queue={"max_size": 2 * count})
    first = get_logger("names.bridge.0")
    first.info("first")
    for i in range(1, count):
        get_logger(f"names.bridge.{i}").info("next")
    first.info("again")
    records = memory_exporter.records()
    assert [r.instrumentation_scope.name for r in records] == [
        *(f"names.bridge.{i}" for i in range(count)),
        "names.bridge.0",
    ]
    assert records[-1].log_record.body == "again"
    bridge = STATE.bridge
    assert len(bridge._loggers) + len(bridge._older) <= 2 * LOGGER_GENERATION
    cached = getattr(STATE.pipeline.provider, "_logger_cache", {})
    assert not [key for key in cached if str(key[0]).startswith("names.bridge.")]


def test_a_logger_used_throughout_stays_with_the_bridge(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    hot = get_logger("names.hot")
    hot.info("start")
    fapilog.force_flush(10)
    bridge = STATE.bridge
    kept = bridge._loggers["names.hot"]
    for i in range(3 * LOGGER_GENERATION):
        get_logger(f"names.cold.{i}").info("cold")
        if i % 100 == 0:
            hot.info("hot")
            fapilog.force_flush(10)  # one batch per round: the hot name is used each time
    fapilog.force_flush(10)
    assert (bridge._loggers.get("names.hot") or bridge._older.get("names.hot")) is kept


def test_without_the_sdk_shortcut_loggers_come_from_the_provider(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the installed SDK builds Loggers differently (the import-time check fails),
    the bridge asks the provider's public `get_logger`: records keep their scope names."""
    from fapilog.otel import logs

    monkeypatch.setattr(logs, "_UNCACHED_LOGGERS", False)
    configure_logging(exporters=[memory_exporter.name])
    get_logger("names.public.a").info("a")
    get_logger("names.public.b").info("b")
    records = memory_exporter.records()
    assert [r.instrumentation_scope.name for r in records] == ["names.public.a", "names.public.b"]

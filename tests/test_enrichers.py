"""The enricher registry: code registration, the `fapilog.enrichers` entry-point group (a
real distribution on sys.path), order from settings, and failing enrichers that never lose
the event."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from structlog import DropEvent

import fapilog
from conftest import PYTHON, MemoryExporter, run_python
from fapilog import ConfigurationError, configure_logging, log
from fapilog.enrichers import (
    ENTRY_POINT_GROUP,
    failure_counts,
    known_enrichers,
    register_enricher,
    unregister_enricher,
)

PLUGIN = '''
"""Enrichers shipped by a third-party distribution (written by the test)."""


def tenant(event_dict):
    event_dict["tenant"] = "acme"
    return event_dict


def append_a(logger, method_name, event_dict):
    event_dict.setdefault("order", []).append("a")
    return event_dict


class AppendB:
    """A small class: instantiated without arguments, its instances are processors."""

    def __init__(self):
        self.label = "b"

    def __call__(self, logger, method_name, event_dict):
        event_dict.setdefault("order", []).append(self.label)
        return event_dict


def broken(event_dict):
    if event_dict.get("event") == "fail":
        raise KeyError("tenant lookup failed")
    event_dict["broken_ran"] = True
    return event_dict


def unloadable(event_dict):  # the entry point names an attribute that does not exist
    return event_dict
'''


def make_distribution(root: Path) -> Path:
    """A real installed distribution (a *.dist-info next to its module) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "acme_enrichers.py").write_text(PLUGIN)
    info = root / "acme_enrichers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-enrichers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [{ENTRY_POINT_GROUP}]
            tenant = acme_enrichers:tenant
            append_a = acme_enrichers:append_a
            append_b = acme_enrichers:AppendB
            broken = acme_enrichers:broken
            unloadable = acme_enrichers:does_not_exist
            """
        )
    )
    return root


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    return root


def _attrs(record: Any) -> dict[str, Any]:
    return dict(record.log_record.attributes or {})


class Reports:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, key: str, message: str, fields: dict[str, Any]) -> None:
        self.keys.append(key)


@pytest.fixture
def reports() -> Any:
    listener = Reports()
    fapilog._diag.add_listener(listener)
    yield listener
    fapilog._diag.remove_listener(listener)


def test_entry_point_enrichers_apply_in_the_configured_order(
    plugin: Path, memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"tenant", "append_a", "append_b"} <= set(known_enrichers())
    monkeypatch.setenv("FAPILOG_ENRICHERS", "append_b,tenant,append_a")
    configure_logging(exporters=[memory_exporter.name])
    log.info("paid")
    configure_logging(exporters=[memory_exporter.name], enrichers=["append_a", "append_b"])
    log.info("paid again")
    first, second = [
        r for r in memory_exporter.records() if r.log_record.body != "fapilog.config.changed"
    ]
    assert first.log_record.body == "paid"
    assert _attrs(first) == {"order": ["b", "a"], "tenant": "acme"}
    assert _attrs(second) == {"order": ["a", "b"]}


def test_a_failing_enricher_is_skipped_and_the_event_kept(
    plugin: Path, memory_exporter: MemoryExporter, reports: Reports
) -> None:
    configure_logging(exporters=[memory_exporter.name], enrichers=["tenant", "broken", "append_a"])
    for _ in range(3):
        log.info("fail", n=1)
    log.info("fine")
    records = memory_exporter.records()
    assert [r.log_record.body for r in records] == ["fail", "fail", "fail", "fine"]
    # the enrichers before and after the failing one still ran
    assert _attrs(records[0]) == {"n": 1, "tenant": "acme", "order": ["a"]}
    assert _attrs(records[3]) == {"tenant": "acme", "broken_ran": True, "order": ["a"]}
    assert failure_counts() == {"tenant": 0, "broken": 3, "append_a": 0}
    assert reports.keys.count("enricher:broken") == 1  # reported once


def test_unknown_enricher_fails_at_configure_time_with_the_known_list(plugin: Path) -> None:
    register_enricher("in_code", lambda event: event)
    try:
        with pytest.raises(ConfigurationError) as info:
            configure_logging(enrichers=["tenant", "nope"])
    finally:
        unregister_enricher("in_code")
    message = str(info.value)
    assert "FAPILOG_ENRICHERS" in message
    assert "'nope'" in message
    assert "append_a" in message
    assert "in_code" in message
    assert "tenant" in message


def test_unknown_enricher_with_nothing_registered() -> None:
    with pytest.raises(ConfigurationError, match="none are registered"):
        configure_logging(enrichers=["missing"])


def test_entry_point_that_cannot_load_is_a_configuration_error(plugin: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'unloadable'.*failed to load"):
        configure_logging(enrichers=["unloadable"])


def test_registered_in_code_three_shapes(memory_exporter: MemoryExporter) -> None:
    def processor(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["level_method"] = method_name
        return event_dict

    class Region:
        def __call__(self, event_dict: dict[str, Any]) -> dict[str, Any]:
            event_dict["region"] = "eu"
            return event_dict

    def in_place(event_dict: dict[str, Any], extra: str = "x") -> None:
        event_dict["in_place"] = extra  # returns None: accepted as changed in place

    register_enricher("Processor", processor)
    register_enricher("region", Region)
    register_enricher("in_place", in_place)
    try:
        configure_logging(
            exporters=[memory_exporter.name], enrichers="processor,REGION,in_place,region"
        )
        log.warning("hello")
    finally:
        for name in ("processor", "region", "in_place"):
            unregister_enricher(name)
    assert _attrs(memory_exporter.records()[0]) == {
        "level_method": "warning",
        "region": "eu",
        "in_place": "x",
    }


def test_registration_errors() -> None:
    register_enricher("dup", lambda e: e)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_enricher("dup", lambda e: e)
        register_enricher("dup", lambda e: e, replace=True)
    finally:
        unregister_enricher("dup")
    with pytest.raises(ValueError, match="invalid enricher name"):
        register_enricher("no spaces", lambda e: e)
    with pytest.raises(TypeError, match="must be callable"):
        register_enricher("value", 42)


def test_wrong_return_type_counts_as_a_failure(
    memory_exporter: MemoryExporter, reports: Reports
) -> None:
    register_enricher("wrong", lambda event: "not a dict")
    try:
        configure_logging(exporters=[memory_exporter.name], enrichers=["wrong"])
        log.info("kept", a=1)
    finally:
        unregister_enricher("wrong")
    [record] = memory_exporter.records()
    assert record.log_record.body == "kept"
    assert _attrs(record) == {"a": 1}
    assert failure_counts() == {"wrong": 1}
    assert "enricher:wrong" in reports.keys


def test_drop_event_drops_on_purpose(memory_exporter: MemoryExporter) -> None:
    def sample(event_dict: dict[str, Any]) -> dict[str, Any]:
        if event_dict.get("noisy"):
            raise DropEvent
        return event_dict

    register_enricher("sample", sample)
    try:
        configure_logging(exporters=[memory_exporter.name], enrichers=["sample"])
        log.info("dropped", noisy=True)
        log.info("kept")
    finally:
        unregister_enricher("sample")
    assert [r.log_record.body for r in memory_exporter.records()] == ["kept"]
    assert failure_counts() == {"sample": 0}


def test_enrichers_apply_to_stdlib_records(memory_exporter: MemoryExporter) -> None:
    import logging

    register_enricher("tag", lambda event: {**event, "tag": "t"})
    try:
        configure_logging(exporters=[memory_exporter.name], enrichers=["tag"])
        logging.getLogger("lib").warning("from stdlib")
    finally:
        unregister_enricher("tag")
    assert _attrs(memory_exporter.records()[0])["tag"] == "t"


def test_register_enricher_is_exported() -> None:
    assert fapilog.register_enricher is register_enricher
    assert "register_enricher" in fapilog.__all__
    assert fapilog.__all__ == sorted(fapilog.__all__)


@pytest.mark.slow
def test_entry_point_in_a_fresh_interpreter(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """The whole path as a user gets it: an installed plugin, FAPILOG_ENRICHERS, JSON out."""
    root = make_distribution(tmp_path / "site")
    env = dict(subprocess_env)
    env["PYTHONPATH"] = f"{root}:{env['PYTHONPATH']}"
    env["FAPILOG_ENRICHERS"] = "append_b,broken,tenant,append_a"
    env["FAPILOG_JSON_CONSOLE"] = "true"
    code = "from fapilog import log\nlog.info('fail')\nlog.info('ok')\n"
    status, out, err = run_python(code, env)
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["message"] for line in lines] == ["fail", "ok"]
    assert lines[0]["order"] == ["b", "a"]
    assert lines[0]["tenant"] == "acme"
    assert lines[1]["broken_ran"] is True
    assert err.count('"fapilog.diagnostic":"enricher:broken"') == 1
    assert PYTHON  # the child ran the same interpreter as the tests


@pytest.mark.slow
def test_the_example_runs(subprocess_env: dict[str, str]) -> None:
    """examples/enrich_and_redact.py, as documented in docs/enrichment.md."""
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "enrich_and_redact.py")],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = [json.loads(text) for text in proc.stdout.splitlines()]
    assert line["cloud.region"] == "eu-west-1"
    assert line["service.version"] == "1.4.2"
    assert line["process.memory.usage"] > 0
    assert line["billing"] == {"iban": "[REDACTED]", "plan": "pro"}
    for secret in ("hunter2", "DE8937", "4111", "s3cret", "token=abc"):
        assert secret not in proc.stdout


def test_enricher_failures_show_in_stats() -> None:
    import fapilog

    def broken(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
        raise RuntimeError("enricher bug")

    fapilog.register_enricher("broken_for_stats", broken)
    try:
        fapilog.configure_logging(enrichers=["broken_for_stats"], exporters=["console"])
        fapilog.log.info("kept")
        assert fapilog.stats()["enricher_failures"] == {"broken_for_stats": 1}
    finally:
        from fapilog import enrichers

        enrichers.unregister_enricher("broken_for_stats")

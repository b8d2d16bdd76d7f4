"""The exporter registry: built-in names, exporters registered in code or by entry point,
per-exporter options, configure-time errors; the documented example; and the stdout
exporter's synchronous fallback when no worker thread can run (PRD FR-5.1.3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fapilog
import fapilog.testing
from fapilog._state import STATE
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import (
    BUILTIN,
    ExporterSpec,
    LogRecordExporter,
    exporter_options,
    exporter_spec,
    known_exporters,
    register_exporter,
    unregister_exporter,
)
from fapilog.exporters.registry import create_exporter
from fapilog.otel.logs import InMemoryLogRecordExporter
from fapilog.settings import LoggingSettings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def make_distribution(site: Path, entries: dict[str, str], modules: dict[str, str]) -> None:
    """An installed distribution (dist-info with entry points) plus its modules in `site`:
    what `pip install` of a plugin package leaves on sys.path."""
    info = site / "fapilog_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fapilog-plugin\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[fapilog.exporters]\n{lines}\n")
    for name, code in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(code))


def test_builtin_names_are_known() -> None:
    assert {"stdout", "console", "file", "loki", "otlp"} <= set(BUILTIN)
    assert {"stdout", "console", "file", "loki", "otlp"} <= set(known_exporters())
    assert exporter_spec("file").name == "file"
    assert exporter_spec("LOKI").name == "loki"


def test_unknown_name_fails_at_configure_time_listing_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        fapilog.configure_logging(exporters=["stdout", "kafka"])
    message = str(info.value)
    assert message == (
        "FAPILOG_EXPORTERS (setting 'exporters'): 'kafka' is invalid: unknown exporter "
        f"(allowed: known exporters: {', '.join(known_exporters())})"
    )
    for name in ("console", "file", "loki", "otlp", "stdout"):
        assert name in message


def test_unknown_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAPILOG_EXPORTERS", "stdout,nope")
    with pytest.raises(ConfigurationError, match="'nope' is invalid: unknown exporter") as caught:
        fapilog.configure_logging()
    (error,) = caught.value.errors  # the documented keys, `error` included
    assert error["setting"] == "exporters" and error["env"] == "FAPILOG_EXPORTERS"
    assert error["value"] == "'nope'" and error["error"] == "unknown exporter"
    assert error["allowed"].startswith("known exporters: ") and "stdout" in error["allowed"]


def test_registered_in_code_selected_by_env_and_receives_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory = InMemoryLogRecordExporter()
    seen: list[LoggingSettings] = []

    def factory(settings: LoggingSettings) -> LogRecordExporter:
        seen.append(settings)
        return memory

    fapilog.register_exporter("mem_sink", factory)
    try:
        monkeypatch.setenv("FAPILOG_EXPORTERS", "mem_sink")
        monkeypatch.setenv("FAPILOG_EXPORTER_OPTIONS__MEM_SINK__ENDPOINT", "http://x:1")
        fapilog.configure_logging()
        fapilog.get_logger("app").info("hello", n=1)
        assert fapilog.force_flush(10)
    finally:
        unregister_exporter("mem_sink")
    (record,) = memory.get_finished_logs()
    assert record.log_record.body == "hello"
    assert exporter_options(seen[0], "mem_sink") == {"endpoint": "http://x:1"}
    assert exporter_options(seen[0], "other") == {}
    assert "mem_sink" in fapilog.stats()["exporters"]


def test_exporter_options_in_code_and_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = LoggingSettings(exporter_options={"Sink": {"batch": 5}})
    assert exporter_options(settings, "sink") == {"batch": 5}
    monkeypatch.setenv("FAPILOG_EXPORTER_OPTIONS", '{"sink": {"url": "u"}}')
    assert exporter_options(LoggingSettings(), "sink") == {"url": "u"}


def test_registration_rules() -> None:
    memory = InMemoryLogRecordExporter()
    with pytest.raises(ValueError, match="invalid exporter name"):
        register_exporter("bad name!", lambda s: memory)
    with pytest.raises(TypeError, match="must be callable"):
        register_exporter("x", memory)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        register_exporter("stdout", lambda s: memory)
    register_exporter("twice", lambda s: memory)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_exporter("twice", lambda s: memory)
        register_exporter("twice", lambda s: memory, replace=True)
    finally:
        unregister_exporter("twice")


@pytest.mark.parametrize("name", ["_", "-", "_-", "  ", "a b", "a.b"])
def test_a_name_needs_a_letter_or_digit_and_only_underscores_or_hyphens_besides(
    name: str,
) -> None:
    with pytest.raises(ValueError, match="invalid exporter name"):
        register_exporter(name, lambda s: InMemoryLogRecordExporter())


def test_names_are_lower_case_and_a_registration_spools_only_when_asked() -> None:
    memory = InMemoryLogRecordExporter()
    register_exporter(" My-Sink_2 ", lambda s: memory)
    register_exporter("spooled", lambda s: memory, spool=True, max_delay=0.25)
    try:
        plain = exporter_spec("MY-SINK_2")
        assert (plain.name, plain.spool, plain.max_delay) == ("my-sink_2", False, None)
        spooled = exporter_spec("spooled")
        assert (spooled.spool, spooled.max_delay) == (True, 0.25)
    finally:
        unregister_exporter("my-sink_2")
        unregister_exporter(" SPOOLED ")
    assert "my-sink_2" not in known_exporters() and "spooled" not in known_exporters()


def test_unregistering_a_name_never_registered_is_quiet() -> None:
    unregister_exporter("never-registered")


PREFIX = "FAPILOG_EXPORTERS (setting 'exporters'): "


def test_the_configure_time_errors_of_a_factory_name_the_exporter_and_the_setting() -> None:
    def broken(settings: object) -> object:
        raise RuntimeError("boom")

    with pytest.raises(ConfigurationError) as raised:
        create_exporter(ExporterSpec("mine", broken), LoggingSettings())
    assert str(raised.value) == (
        f"{PREFIX}'mine' is invalid: exporter 'mine' could not be created: RuntimeError('boom')"
    )
    with pytest.raises(ConfigurationError) as raised:
        create_exporter(ExporterSpec("mine", lambda s: 42), LoggingSettings())  # type: ignore[arg-type,return-value]
    assert str(raised.value) == (
        f"{PREFIX}'mine' is invalid: exporter factory for 'mine' returned int, not an "
        "opentelemetry LogRecordExporter"
    )


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("fapilog.nothing_here:SPEC", "No module named 'fapilog.nothing_here'"),
        (
            "fapilog.exporters.stdout:NOPE",
            "module 'fapilog.exporters.stdout' has no attribute 'NOPE'",
        ),
    ],
)
def test_a_builtin_exporter_that_cannot_be_imported_says_why(
    target: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BUILTIN, "gone", target)
    with pytest.raises(ConfigurationError) as raised:
        exporter_spec(" Gone")
    assert (
        str(raised.value) == f"{PREFIX}' Gone' is invalid: exporter 'gone' is not available: {why}"
    )


def test_a_builtin_name_may_point_at_a_plain_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BUILTIN, "plain", "fapilog.otel.logs:InMemoryLogRecordExporter")
    spec = exporter_spec("Plain")
    assert (spec.name, spec.factory, spec.max_delay, spec.spool) == (
        "plain",
        InMemoryLogRecordExporter,
        None,
        False,
    )


def test_factories_that_fail_or_return_wrong_types_fail_at_configure_time() -> None:
    def broken(settings: LoggingSettings) -> LogRecordExporter:
        raise RuntimeError("no endpoint")

    register_exporter("broken", broken)
    register_exporter("wrong", lambda s: object())  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ConfigurationError, match="'broken' could not be created"):
            fapilog.configure_logging(exporters=["broken"])
        with pytest.raises(ConfigurationError, match="not an opentelemetry LogRecordExporter"):
            fapilog.configure_logging(exporters=["wrong"])
    finally:
        unregister_exporter("broken")
        unregister_exporter("wrong")


def test_max_delay_may_depend_on_settings() -> None:
    memory = InMemoryLogRecordExporter()
    register_exporter("delayed", lambda s: memory, max_delay=lambda s: s.shutdown_timeout / 10)
    try:
        fapilog.configure_logging(exporters=["delayed"], shutdown_timeout=3)
        (processor,) = STATE.pipeline.processors
        assert processor.queue.max_delay == pytest.approx(0.3)
    finally:
        unregister_exporter("delayed")
    assert ExporterSpec("n", lambda s: memory, 0.5).delay_for(LoggingSettings()) == 0.5
    assert ExporterSpec("n", lambda s: memory).delay_for(LoggingSettings()) is None


def test_entry_point_errors_are_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path,
        {
            "ep_broken": "ep_plugin:missing",
            "ep_value": "ep_plugin:NOT_CALLABLE",
            "ep_spec": "ep_plugin:SPEC",
            "ep_factory": "ep_plugin:factory",
        },
        {
            "ep_plugin": """
                from fapilog.otel.logs import InMemoryLogRecordExporter
                from fapilog.exporters import ExporterSpec
                NOT_CALLABLE = 42
                MEMORY = InMemoryLogRecordExporter()
                SPEC = ExporterSpec("some-other-name", lambda s: MEMORY, max_delay=0.0)
                def factory(settings):
                    return MEMORY
            """
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"ep_broken", "ep_value", "ep_spec"} <= set(known_exporters())
    with pytest.raises(ConfigurationError, match="failed to load"):
        fapilog.configure_logging(exporters=["ep_broken"])
    with pytest.raises(ConfigurationError) as raised:
        exporter_spec("EP_Broken")
    assert str(raised.value).startswith(
        f"{PREFIX}'EP_Broken' is invalid: exporter 'ep_broken' (entry point "
        "ep_plugin:missing) failed to load: AttributeError("
    )
    assert isinstance(raised.value.__cause__, AttributeError)
    with pytest.raises(ConfigurationError) as raised:
        fapilog.configure_logging(exporters=["ep_value"])
    assert str(raised.value) == (
        f"{PREFIX}'ep_value' is invalid: exporter 'ep_value' (entry point "
        "ep_plugin:NOT_CALLABLE) is int, not an exporter factory or ExporterSpec"
    )
    factory = exporter_spec("EP_factory")
    assert (factory.name, factory.max_delay, factory.spool) == ("ep_factory", None, False)
    spec = exporter_spec("ep_spec")
    assert (spec.name, spec.max_delay) == ("ep_spec", 0.0)  # named by its entry point
    fapilog.configure_logging(exporters=["ep_spec"])
    fapilog.get_logger("p").info("via spec")
    assert fapilog.force_flush(10)
    import ep_plugin

    assert [r.log_record.body for r in ep_plugin.MEMORY.get_finished_logs()] == ["via spec"]
    assert "ep_spec" in fapilog.stats()["exporters"]


@pytest.mark.slow
def test_entry_point_exporter_selected_by_env_receives_records(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """An exporter installed by entry point (the documented example),
    selected by FAPILOG_EXPORTERS, configured by FAPILOG_EXPORTER_OPTIONS__*."""
    site = tmp_path / "site"
    make_distribution(site, {"jsonl": "custom_exporter:factory"}, {})
    out = tmp_path / "out.jsonl"
    env = {
        **subprocess_env,
        "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLES), subprocess_env["PYTHONPATH"]]),
        "FAPILOG_EXPORTERS": "jsonl",
        "FAPILOG_EXPORTER_OPTIONS__JSONL__PATH": str(out),
        "FAPILOG_EXPORTER_OPTIONS__JSONL__MIN_LEVEL": "warning",
    }
    code = (
        "import fapilog\n"
        "log = fapilog.get_logger('plugin')\n"  # auto-configured from the environment
        "log.info('not kept')\n"
        "log.warning('kept', n=1)\n"
        "log.error('kept too', n=2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["message"], line["n"]) for line in lines] == [("kept", 1), ("kept too", 2)]
    assert lines[0]["logger"] == "plugin"
    bad = {**env, "FAPILOG_EXPORTER_OPTIONS__JSONL__MIN_LEVEL": "loud"}
    failed = subprocess.run(
        [sys.executable, "-c", "import fapilog; fapilog.configure_logging()"],
        env=bad, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "FAPILOG_EXPORTER_OPTIONS__JSONL__MIN_LEVEL" in failed.stderr


@pytest.mark.slow
def test_the_custom_exporter_example_runs(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    out = tmp_path / "app.jsonl"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_exporter.py"), str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["message"] for line in lines] == ["order placed", "stock low"]
    assert lines[0]["order_id"] == 7


SYNC_FALLBACK = textwrap.dedent(
    """
    import os, sys, threading

    original = threading.Thread.start

    def refuse(self):  # fapilog's workers cannot run (as at the thread limit)
        if self.name.startswith("fapilog"):
            raise RuntimeError("can't start new thread")
        return original(self)

    threading.Thread.start = refuse
    import fapilog
    fapilog.configure_logging(exporters=["stdout"], json_console=True)
    fapilog.get_logger("sync").info("written at once", n=1)
    os.write(1, b"MARKER\\n")  # after log.info returned: the line must already be out
    fapilog.get_logger("sync").warning("again", n=2)
    print(sorted(t.name for t in threading.enumerate() if t.name.startswith("fapilog")),
          flush=True)
    print(fapilog.stats()["exporters"]["stdout"]["exported"], flush=True)
    """
)


@pytest.mark.slow
def test_stdout_falls_back_to_synchronous_writes_when_no_worker_can_start(
    subprocess_env: dict[str, str],
) -> None:
    """PRD FR-5.1.3: no worker thread can be started: the stdout exporter still writes,
    synchronously on the caller's thread, in order, nothing lost."""
    done = subprocess.run(
        [sys.executable, "-c", SYNC_FALLBACK], env=subprocess_env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    first = json.loads(lines[0])
    assert (first["message"], first["n"]) == ("written at once", 1)
    assert lines[1] == "MARKER"
    assert json.loads(lines[2])["message"] == "again"
    assert lines[3] == "[]"  # no fapilog worker ran
    assert lines[4] == "2"


def test_exporter_types_are_reexported_for_custom_exporters() -> None:
    import fapilog.exporters as public

    for name in ("LogRecordExporter", "LogRecordExportResult", "ReadableLogRecord", "json_line"):
        assert name in public.__all__


def test_exporter_extras_are_typed_protocols() -> None:
    from fapilog.exporters import DetailedStats, PartialLoss
    from fapilog.exporters.file import FileExporter
    from fapilog.exporters.loki import LokiExporter
    from fapilog.settings import FileSettings, LokiSettings

    loki = LokiExporter(LokiSettings())
    assert isinstance(loki, PartialLoss) and isinstance(loki, DetailedStats)
    assert isinstance(FileExporter(FileSettings()), DetailedStats)
    plain = InMemoryLogRecordExporter()
    assert not isinstance(plain, PartialLoss) and not isinstance(plain, DetailedStats)


def test_each_exporters_own_figures_are_in_stats(tmp_path: Path) -> None:
    """`details` carries an exporter's own figures (DetailedStats); a partial loss it
    reports (PartialLoss) counts only the lost records as dropped; a stats() that raises
    costs only its details."""
    from fapilog.exporters import LogRecordExporter, LogRecordExportResult

    class Halves(LogRecordExporter):
        def __init__(self) -> None:
            self.last_export_dropped: int | None = None
            self.calls = 0

        def export(self, batch: object) -> LogRecordExportResult:
            self.calls += 1
            self.last_export_dropped = len(batch) // 2  # type: ignore[arg-type]
            return LogRecordExportResult.FAILURE

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

        def stats(self) -> dict[str, int]:
            return {"calls": self.calls}

    class BrokenFigures(Halves):
        def stats(self) -> dict[str, int]:
            raise RuntimeError("no figures")

    register_exporter("halves", lambda settings: Halves())
    register_exporter("broken_figures", lambda settings: BrokenFigures())
    try:
        fapilog.configure_logging(
            exporters=["file", "halves", "broken_figures"],
            file={"path": str(tmp_path / "app.log")},
            queue={"batch_size": 4, "max_delay": 5},
        )
        for i in range(4):
            fapilog.log.info("record", i=i)
        fapilog.force_flush(10)
        figures = fapilog.stats()["exporters"]
        assert figures["file"]["details"]["written"] == 4
        assert figures["file"]["details"]["rotations"] == 0
        assert figures["halves"]["details"] == {"calls": 1}
        assert figures["halves"]["exported"] == 2 and figures["halves"]["dropped"] == 2
        assert "details" not in figures["broken_figures"]
        assert figures["broken_figures"]["exported"] == 2
    finally:
        unregister_exporter("halves")
        unregister_exporter("broken_figures")

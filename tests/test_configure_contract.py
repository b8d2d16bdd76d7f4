"""The contract of `configure_logging()` and `reset()` (`fapilog.lifecycle.configure`):
what is refused before anything runs, record-only mode, listeners, when exporters are kept
or rebuilt (the old ones getting what was logged before), the chain, a configuration after
a shutdown or in another process, configuring from the environment, what reset() undoes."""

from __future__ import annotations

import atexit
import json
import logging
import os
import textwrap
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.contextvars import merge_contextvars

import fapilog
import fapilog.testing
from conftest import MemoryExporter, run_python
from fapilog import ConfigurationError, LoggingSettings, _diag, configure_logging, log
from fapilog._state import STATE
from fapilog.capture import enrichers
from fapilog.capture.processors import add_trace_context
from fapilog.capture.redaction import Redactor
from fapilog.lifecycle import configure
from fapilog.pipeline.direct import DirectBridge, keep_exception


@pytest.fixture
def diagnostics() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    found: list[tuple[str, str, dict[str, Any]]] = []

    def listener(key: str, message: str, fields: dict[str, Any]) -> None:
        found.append((key, message, fields))

    _diag.add_listener(listener)
    try:
        yield found
    finally:
        _diag.remove_listener(listener)


def bodies(exporter: MemoryExporter) -> list[Any]:
    return [r.log_record.body for r in exporter.records()]


def test_something_other_than_settings_is_refused_naming_its_type() -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure_logging({"level": "DEBUG"})  # type: ignore[arg-type]
    assert str(raised.value) == "configure_logging() takes a LoggingSettings, got dict"
    assert STATE.pipeline is None


def test_a_level_for_an_exporter_not_configured_is_refused(
    memory_exporter: MemoryExporter,
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure_logging(exporters=[memory_exporter.name], exporter_levels={"loki": "DEBUG"})
    assert str(raised.value) == (
        "FAPILOG_EXPORTER_LEVELS (setting 'exporter_levels') names 'loki', not among the "
        f"exporters ({memory_exporter.name}): add it to FAPILOG_EXPORTERS or leave it out"
    )
    assert STATE.pipeline is None


def test_record_only_mode_records_each_call_and_configures_nothing(
    memory_exporter: MemoryExporter,
) -> None:
    given = LoggingSettings(level="WARNING")
    with configure.recording() as calls:
        first = configure_logging(exporters=[memory_exporter.name], level="DEBUG")
        second = configure_logging(given, service_name="svc")
        with pytest.raises(RuntimeError) as raised, configure.recording():
            pass
    assert str(raised.value) == "fapilog is already recording configure_logging() calls"
    assert STATE.recording is None and STATE.pipeline is None
    assert calls == [
        configure.Recorded(None, {"exporters": [memory_exporter.name], "level": "DEBUG"}, first),
        configure.Recorded(given, {"service_name": "svc"}, second),
    ]
    assert (first.level, second.level, second.service_name) == ("DEBUG", "WARNING", "svc")


def test_record_only_mode_still_refuses_what_building_would_refuse() -> None:
    with configure.recording() as calls:
        with pytest.raises(ConfigurationError, match="unknown enricher"):
            configure_logging(enrichers=["no_such_enricher"])
        with pytest.raises(ConfigurationError, match="no_such_exporter"):
            configure_logging(exporters=["no_such_exporter"])
    assert calls == [] and STATE.recording is None
    with pytest.raises(ValueError), configure.recording():
        raise ValueError("the block failed")
    assert STATE.recording is None


def test_a_failing_listener_is_reported_and_the_others_still_see_the_settings(
    memory_exporter: MemoryExporter, diagnostics: list[Any]
) -> None:
    seen: list[LoggingSettings] = []

    def failing(settings: LoggingSettings) -> None:
        raise RuntimeError("listener broke")

    STATE.listeners.extend([failing, seen.append])
    try:
        settings = configure_logging(exporters=[memory_exporter.name])
    finally:
        STATE.listeners.remove(failing)
        STATE.listeners.remove(seen.append)
    assert seen == [settings]
    assert [(key, message) for key, message, _ in diagnostics] == [
        ("configure-listener", f"fapilog: {failing!r} failed: RuntimeError('listener broke')")
    ]


def test_the_change_event_lists_the_changed_settings_in_order(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name], level="INFO")
    configure_logging(exporters=[memory_exporter.name], service_name="svc", level="DEBUG")
    (record,) = memory_exporter.records()
    assert record.log_record.body == "fapilog.config.changed"
    assert record.instrumentation_scope.name == "fapilog"
    changed: Any = record.log_record.attributes["changed"]
    assert list(changed) == ["level", "service_name"]
    assert dict(changed["level"]) == {"from": "INFO", "to": "DEBUG"}
    assert dict(changed["service_name"]) == {"from": None, "to": "svc"}


def test_a_redaction_change_rebuilds_the_console_which_redacts_what_it_renders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(exporters=["console"])
    processors = STATE.pipeline.processors
    configure_logging(exporters=["console"], level="DEBUG")
    assert STATE.pipeline.processors is processors
    configure_logging(exporters=["console"], redaction={"keys": ["pin"]})
    assert STATE.pipeline.processors is not processors
    assert STATE.retired == processors


def test_new_exporters_get_only_what_is_logged_after_and_the_old_ones_the_rest(
    memory_exporter: MemoryExporter, exporter_named: Any
) -> None:
    from fapilog.otel.logs import InMemoryLogRecordExporter

    other = InMemoryLogRecordExporter()
    configure_logging(exporters=[memory_exporter.name])
    old = STATE.pipeline.processors
    for i in range(200):
        log.info("before", i=i)
    configure_logging(exporters=[exporter_named(other)])
    log.info("after")
    assert STATE.retired == old and old[0].intake_end is not None
    assert STATE.pipeline.processors[0].intake_end is None
    assert fapilog.shutdown(10)  # waits for the old exporters, draining on a thread of their own
    assert bodies(memory_exporter) == ["before"] * 200
    assert [r.log_record.body for r in other.get_finished_logs()] == [
        "fapilog.config.changed",
        "after",
    ]


class HoldFirst:
    """A LogRecordProcessor on the provider that holds the bridge's worker on the first
    record it sees until `release` (what is logged next waits in the intake)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def on_emit(self, log_record: Any) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)

    def shutdown(self) -> None:
        self.release.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_what_was_logged_before_a_change_of_exporters_goes_to_the_old_ones(
    memory_exporter: MemoryExporter, exporter_named: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fapilog.otel.logs import InMemoryLogRecordExporter

    other = InMemoryLogRecordExporter()
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline is not None and STATE.bridge is not None
    multi = STATE.pipeline.provider._multi_log_record_processor
    hold = HoldFirst()
    STATE.pipeline.provider.add_log_record_processor(hold)
    try:
        log.info("a")
        assert hold.entered.wait(5)  # the worker holds "a"; "b" and "c" wait in the intake
        log.info("b")
        log.info("c")
        flushing = threading.Event()
        real = STATE.bridge.flush

        def flush(timeout: float) -> bool:
            flushing.set()
            return real(timeout)

        monkeypatch.setattr(STATE.bridge, "flush", flush)
        change = threading.Thread(
            target=configure_logging, kwargs={"exporters": [exporter_named(other)]}
        )
        change.start()
        assert flushing.wait(5)  # the change waits for what was logged before it
        hold.release.set()
        change.join(10)
        assert fapilog.shutdown(10)
    finally:
        hold.release.set()
        with multi._lock:
            multi._log_record_processors = tuple(
                p for p in multi._log_record_processors if p is not hold
            )
    assert bodies(memory_exporter) == ["a", "b", "c"]
    assert [r.log_record.body for r in other.get_finished_logs()] == ["fapilog.config.changed"]


def test_metrics_that_cannot_be_registered_are_reported_and_logging_goes_on(
    memory_exporter: MemoryExporter,
    monkeypatch: pytest.MonkeyPatch,
    diagnostics: list[tuple[str, str, dict[str, Any]]],
) -> None:
    def broken() -> None:
        raise RuntimeError("no meter")

    monkeypatch.setattr(configure.metrics, "register_metrics", broken)
    configure_logging(exporters=[memory_exporter.name])
    log.info("still logged")
    assert bodies(memory_exporter) == ["still logged"]
    assert ("metrics", "fapilog could not register its metrics: RuntimeError('no meter')", {}) in (
        diagnostics
    )


def test_the_same_settings_in_another_process_are_applied_again(
    memory_exporter: MemoryExporter,
) -> None:
    """(A forked child configuring as its parent did: STATE.pid tells them apart.)"""
    configure_logging(exporters=[memory_exporter.name])
    pipeline = STATE.pipeline
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline is pipeline
    STATE.pid = -1
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline is not pipeline and STATE.pid == os.getpid()
    assert STATE.pipeline.processors is pipeline.processors
    log.info("one")
    assert bodies(memory_exporter) == ["one"]  # no change event: nothing changed


def test_after_a_shutdown_a_configuration_starts_again_keeping_the_figures(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    log.info("first")
    bridge = STATE.bridge
    fapilog.shutdown(5)
    assert STATE.shut_down is True
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.shut_down is False and STATE.exit_started is None
    assert STATE.bridge is not bridge
    log.info("second")
    assert bodies(memory_exporter) == ["first", "second"]
    assert fapilog.stats()["intake"]["accepted"] == 2


def test_one_router_per_provider_and_one_exit_drain_per_process(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    router = STATE.pipeline.router
    assert STATE.routers[id(STATE.pipeline.provider)] is router
    callbacks = atexit._ncallbacks()
    configure_logging(exporters=[memory_exporter.name], level="DEBUG")
    fapilog.testing.reset()
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline.router is router  # (the same global provider: the same router)
    assert atexit._ncallbacks() == callbacks and STATE.atexit_registered is True


def _enricher(event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict["enriched"] = True
    return event_dict


def test_the_chain_merges_context_then_traces_enriches_redacts_and_bridges() -> None:
    fapilog.register_enricher("contract_enricher", _enricher, replace=True)
    try:
        settings = LoggingSettings(
            exporters=["console"], enrichers=["contract_enricher"], console={"synchronous": True}
        )
        chain, enricher_chain = configure.build_chain(settings)
        assert chain[:2] == [merge_contextvars, add_trace_context]
        assert chain[2] is enricher_chain and enricher_chain is not None
        assert chain[3] is keep_exception
        assert isinstance(chain[4], Redactor) and type(chain[5]) is DirectBridge
        assert len(chain) == 6
        plain, none = configure.build_chain(
            LoggingSettings(exporters=["stdout"], json_console=True, redaction={"enabled": False})
        )
        assert plain[:2] == [merge_contextvars, add_trace_context] and none is None
        assert len(plain) == 3 and type(plain[2]) is DirectBridge
    finally:
        enrichers.unregister_enricher("contract_enricher")


def test_logger_names_are_shown_redacted_unless_redaction_is_off(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    fapilog.get_logger("db.postgres://u:secretpw@h/db").info("a")
    configure_logging(exporters=[memory_exporter.name], redaction={"enabled": False})
    fapilog.get_logger("db.postgres://u:secretpw@h/db").info("b")
    names = [
        r.instrumentation_scope.name
        for r in memory_exporter.records()
        if r.log_record.body in ("a", "b")
    ]
    assert names == ["db.postgres://[REDACTED]@h/db", "db.postgres://u:secretpw@h/db"]


def test_the_sdk_switch_leaves_out_the_otlp_exporter_saying_so_once(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch, diagnostics: list[Any]
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    configure_logging(exporters=[memory_exporter.name])
    assert diagnostics == []
    configure_logging(exporters=["otlp", memory_exporter.name])
    assert list(fapilog.stats()["exporters"]) == [memory_exporter.name]
    assert [(key, message) for key, message, _ in diagnostics] == [
        (
            "otlp-sdk-disabled",
            "fapilog: OTEL_SDK_DISABLED=true: the 'otlp' exporter is not started (no OTLP "
            "export of logs or spans); the other exporters work as configured",
        )
    ]


def test_the_first_event_configures_from_the_environment(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAPILOG_EXPORTERS", memory_exporter.name)
    log.info("first")
    assert STATE.pipeline is not None
    assert bodies(memory_exporter) == ["first"]


def test_an_environment_that_cannot_be_configured_is_reported_and_the_defaults_apply(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAPILOG_EXPORTERS", "no_such_exporter")
    settings = configure.configure_from_environment("the test")
    assert settings == LoggingSettings.model_construct()
    assert STATE.pipeline is not None and STATE.pipeline.settings == settings
    reports = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    (report,) = [r for r in reports if "fapilog.diagnostic" in r]
    assert report["fapilog.diagnostic"] == "configure:the test"
    assert report["level"] == "error"
    assert report["message"].startswith(
        "fapilog: FAPILOG_EXPORTERS (setting 'exporters'): 'no_such_exporter' is invalid: "
        "unknown exporter"
    )
    assert report["message"].endswith("; using defaults")


def test_an_implicit_configuration_names_itself_in_what_it_reports(
    memory_exporter: MemoryExporter,
    monkeypatch: pytest.MonkeyPatch,
    diagnostics: list[tuple[str, str, dict[str, Any]]],
) -> None:
    """(The first event logged before `configure_logging()` configures from the
    environment: an unknown variable is reported under that name, the rest applies.)"""
    monkeypatch.setenv("FAPILOG_EXPORTERS", memory_exporter.name)
    monkeypatch.setenv("FAPILOG_LEVL", "DEBUG")
    log.info("first")
    assert bodies(memory_exporter) == ["first"]
    assert [key for key, _, _ in diagnostics] == ["settings-unknown:autoconfigure"]
    assert diagnostics[0][2]["variables"] == ["FAPILOG_LEVL"]
    diagnostics.clear()
    configure.configure_from_environment("the test")
    assert [key for key, _, _ in diagnostics] == ["settings-unknown:the test"]


def test_nothing_configures_itself_after_a_shutdown_or_while_recording(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAPILOG_EXPORTERS", memory_exporter.name)
    with configure.recording():
        assert configure._autoconfigure() is None
    assert STATE.pipeline is None
    configure_logging(exporters=[memory_exporter.name])
    assert configure._autoconfigure() is STATE.bridge
    fapilog.shutdown(5)
    assert configure._autoconfigure() is None
    log.info("after shutdown")
    assert STATE.shut_down is True


def test_an_environment_that_cannot_be_built_leaves_fapilog_unconfigured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(An exporter factory failing even with the defaults: the event is dropped, the
    application goes on.)"""
    monkeypatch.setenv("FAPILOG_EXPORTERS", "no_such_exporter")

    def broken(what: str) -> LoggingSettings:
        raise RuntimeError("cannot build")

    monkeypatch.setattr(configure, "configure_from_environment", broken)
    assert configure._autoconfigure() is None
    assert STATE.pipeline is None


def test_reset_gives_the_stdlib_loggers_fapilog_leveled_their_own_levels_back(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = logging.getLogger("test.own_level")
    monkeypatch.setattr(mine, "level", 15)
    configure_logging(
        exporters=[memory_exporter.name],
        logger_levels={"test.own_level": "ERROR", "test.no_level": "ERROR"},
    )
    assert (mine.level, logging.getLogger("test.no_level").level) == (40, 40)
    fapilog.testing.reset()
    assert (mine.level, logging.getLogger("test.no_level").level) == (15, logging.NOTSET)


def test_reset_forgets_the_configuration_and_puts_the_process_back(
    memory_exporter: MemoryExporter,
) -> None:
    root = logging.getLogger()
    configure_logging(exporters=[memory_exporter.name], level="DEBUG")
    configure._SAME_ENDPOINT_NAMED.add("http://example:4318")
    STATE.pid = -1
    fapilog.shutdown(5)
    fapilog.testing.reset()
    assert STATE.pipeline is None and STATE.bridge is None
    assert STATE.retired == [] and STATE.shut_down is False and STATE.exit_started is None
    assert STATE.pid == os.getpid() and STATE.autoconfigure is configure._autoconfigure
    assert STATE.excepthooks is None
    assert not configure._SAME_ENDPOINT_NAMED
    assert root.level == logging.WARNING
    assert type(STATE.chain[-1]) is not DirectBridge  # structlog's default chain again


def _on_alert(alert: dict[str, Any]) -> None:
    return None


TOKEN = "s3cret-admin-token-0123456789"
# fmt: off
CHAIN_ONLY: dict[str, Any] = {
    "level": "DEBUG", "logger_levels": {"x": "DEBUG"}, "capture_stdlib": False,
    "capture_exceptions": False, "enrichers": ["contract_enricher"],
    "redaction": {"keys": ["pin"]}, "request": {"enabled": False}, "shutdown_timeout": 3.0,
    "on_alert": _on_alert, "allow_unknown": True,
    "exporter_levels": "DEBUG",  # (for the memory exporter)
    "rate_limits": {"x": 5.0}, "fold_repeats": 2.0, "admin": {"token": TOKEN},
}
# fmt: on


@pytest.mark.parametrize("field", list(CHAIN_ONLY))
def test_a_setting_of_the_chain_alone_keeps_the_exporters_and_their_queues(
    memory_exporter: MemoryExporter, field: str
) -> None:
    value = CHAIN_ONLY[field]
    if field == "exporter_levels":
        value = {memory_exporter.name: value}
    fapilog.register_enricher("contract_enricher", _enricher, replace=True)
    try:
        configure_logging(exporters=[memory_exporter.name])
        processors = STATE.pipeline.processors
        configure_logging(exporters=[memory_exporter.name], **{field: value})
        assert getattr(STATE.pipeline.settings, field) != getattr(LoggingSettings(), field)
        assert STATE.pipeline.processors is processors and STATE.retired == []
    finally:
        enrichers.unregister_enricher("contract_enricher")


@pytest.mark.parametrize(
    "change", [{"service_name": "svc"}, {"queue": {"max_size": 50}}, {"json_console": True}]
)
def test_a_setting_of_the_exporters_rebuilds_them(
    memory_exporter: MemoryExporter, change: dict[str, Any]
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    processors = STATE.pipeline.processors
    configure_logging(exporters=[memory_exporter.name], **change)
    assert STATE.pipeline.processors is not processors and STATE.retired == processors


def test_the_console_keeps_the_exception_aside_only_when_it_writes_synchronously() -> None:
    settings = LoggingSettings(exporters=["console"], console={"synchronous": False})
    chain, _ = configure.build_chain(settings)
    assert keep_exception not in chain
    chain, _ = configure.build_chain(
        LoggingSettings(exporters=["stdout"], json_console=True, console={"synchronous": True})
    )
    assert keep_exception not in chain


def test_a_configuration_after_an_exit_began_is_no_longer_exiting(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    STATE.exit_started = 1.0
    configure_logging(exporters=[memory_exporter.name], level="DEBUG")
    assert STATE.exit_started is None


def test_the_otlp_exporter_is_left_out_where_the_users_processor_sends_the_same_logs(
    diagnostics: list[Any],
) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    from fapilog.exporters import otlp
    from fapilog.exporters.registry import exporter_spec

    provider = LoggerProvider(shutdown_on_exit=False)
    endpoint = "http://collector.example:4318/v1/logs"
    provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint)))
    previous: Any = types.SimpleNamespace(provider=provider)
    stdout = exporter_spec("stdout")
    same = LoggingSettings(otlp={"endpoint": "http://collector.example:4318", "protocol": "http"})
    other = LoggingSettings(otlp={"endpoint": "http://elsewhere:4318", "protocol": "http"})
    try:
        assert configure._not_sent_twice([stdout], same, previous) == [stdout]
        assert configure._not_sent_twice([stdout, otlp.SPEC], other, previous) == [
            stdout,
            otlp.SPEC,
        ]
        assert diagnostics == []
        for _ in range(2):  # named once
            assert configure._not_sent_twice([otlp.SPEC, stdout], same, previous) == [stdout]
        ((key, message, fields),) = diagnostics
        assert key == f"otlp-same-endpoint:{endpoint}" and fields == {"endpoint": endpoint}
        assert message.startswith(
            "fapilog: the LoggerProvider fapilog attached to already exports logs over OTLP "
            f"to {endpoint}, where the 'otlp' exporter would send them"
        )
        assert message.endswith(
            "(through that processor, outside fapilog's queues and fapilog.stats())"
        )  # what the user gives up: said
        assert endpoint in configure._SAME_ENDPOINT_NAMED
    finally:
        configure._SAME_ENDPOINT_NAMED.clear()
        provider.shutdown()


def test_without_the_sdk_switch_the_otlp_exporter_is_kept(diagnostics: list[Any]) -> None:
    from fapilog.exporters import otlp
    from fapilog.exporters.registry import exporter_spec

    specs = [otlp.SPEC, exporter_spec("stdout")]
    assert configure._without_otlp_when_disabled(specs) == specs and diagnostics == []


def test_a_reconfiguration_gives_fapilogs_provider_the_new_resource(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name], service_name="first")
    log.info("one")
    configure_logging(exporters=[memory_exporter.name], service_name="second")
    log.info("two")
    names = {
        r.log_record.body: r.resource.attributes["service.name"] for r in memory_exporter.records()
    }
    assert (names["one"], names["two"]) == ("first", "second")


def test_the_provider_fapilog_installs_first_is_its_own_to_give_a_new_resource(
    subprocess_env: dict[str, str],
) -> None:
    """(In a fresh process: the global provider can be installed once per process.)"""
    code = (
        "import fapilog\n"
        "from fapilog._state import STATE\n"
        "fapilog.configure_logging(service_name='first', json_console=True)\n"
        "assert STATE.pipeline.owns_provider\n"
        "fapilog.configure_logging(service_name='second', json_console=True)\n"
        "fapilog.log.info('after')\n"
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    lines = {json.loads(line)["message"]: json.loads(line) for line in out.splitlines()}
    assert lines["after"]["service.name"] == "second"


def test_with_the_sdk_disabled_only_the_local_exporters_get_the_records(
    subprocess_env: dict[str, str],
) -> None:
    """(``OTEL_SDK_DISABLED=true``: the SDK's own processors on the provider, the user's,
    get nothing, as the SDK would have it; the bridge routes fapilog's records to its
    local exporters itself.)"""
    code = textwrap.dedent(
        """
        import sys
        from fapilog.otel.logs import InMemoryLogRecordExporter, SimpleLogRecordProcessor
        import fapilog
        from fapilog._state import STATE
        fapilog.configure_logging(json_console=True)
        users = InMemoryLogRecordExporter()
        STATE.pipeline.provider.add_log_record_processor(SimpleLogRecordProcessor(users))
        fapilog.log.info("here")
        fapilog.shutdown()
        print("USERS", len(users.get_finished_logs()), file=sys.stderr)
        """
    )
    status, out, err = run_python(code, {**subprocess_env, "OTEL_SDK_DISABLED": "true"})
    assert status == 0, err
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["here"]
    assert "USERS 0" in err


def test_after_a_reset_the_next_configuration_gives_the_provider_its_resource(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name], service_name="first")
    fapilog.testing.reset()
    configure_logging(exporters=[memory_exporter.name], service_name="second")
    log.info("x")
    (record,) = memory_exporter.records()
    assert record.resource.attributes["service.name"] == "second"


def test_reset_waits_at_most_two_seconds_for_the_exporters(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeouts: list[float | None] = []
    real = configure.shutdown

    def spy(timeout: float | None = None) -> bool:
        timeouts.append(timeout)
        return real(timeout)

    monkeypatch.setattr(configure, "shutdown", spy)
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=30)
    fapilog.testing.reset()
    assert timeouts == [2.0]


def test_a_network_exporters_spool_is_named_by_exporter_service_and_destination(
    memory_exporter: MemoryExporter, tmp_path: Any
) -> None:
    from fapilog.pipeline.spool import destination_dir

    url = "http://127.0.0.1:9/loki/api/v1/push"
    configure_logging(
        exporters=["loki", memory_exporter.name],
        service_name="svc",
        loki={"url": url},
        spool={"dir": str(tmp_path)},
    )
    figures = fapilog.stats()["exporters"]
    assert "spool" not in figures[memory_exporter.name]
    expected = destination_dir(str(tmp_path), "loki", "svc", f"{url} tenant=")
    assert figures["loki"]["spool"]["directory"] == expected


def test_each_exporter_batches_with_the_delay_its_registration_gives(
    memory_exporter: MemoryExporter, tmp_path: Any
) -> None:
    """(Loki's ``batch_wait``; an exporter registered without one: the queue setting.)"""
    configure_logging(
        exporters=["loki", memory_exporter.name],
        loki={"url": "http://127.0.0.1:9/loki/api/v1/push", "batch_wait": 0.25},
        queue={"max_delay": 3.5},
        spool={"dir": str(tmp_path)},
    )
    assert STATE.pipeline is not None
    delays = {p.name: p.queue.max_delay for p in STATE.pipeline.processors}
    assert delays == {"loki": 0.25, memory_exporter.name: 3.5}


def test_a_spooled_exporter_that_names_no_destination_gets_a_spool_of_its_own(
    tmp_path: Any,
) -> None:
    """(A third-party exporter registered with ``spool=True`` that is not a `Destination`.)"""
    from fapilog.exporters import register_exporter, unregister_exporter
    from fapilog.otel.logs import InMemoryLogRecordExporter
    from fapilog.pipeline.spool import destination_dir

    register_exporter("plain_spooled", lambda settings: InMemoryLogRecordExporter(), spool=True)
    try:
        configure_logging(
            exporters=["plain_spooled"], service_name="svc", spool={"dir": str(tmp_path)}
        )
        figures = fapilog.stats()["exporters"]["plain_spooled"]
        expected = destination_dir(str(tmp_path), "plain_spooled", "svc", "")
        assert figures["spool"]["directory"] == expected
    finally:
        fapilog.testing.reset()
        unregister_exporter("plain_spooled")


def test_an_app_given_is_instrumented_with_the_settings_given(
    memory_exporter: MemoryExporter,
) -> None:
    from fastapi import FastAPI

    from fapilog.middleware import RequestLoggingMiddleware

    app = FastAPI()
    configure_logging(exporters=[memory_exporter.name], app=app, request={"tracing": "off"})
    assert [entry.cls for entry in app.user_middleware] == [RequestLoggingMiddleware]
    assert app.user_middleware[0].kwargs == {}  # tracing off: no server span of its own


def test_reset_forgets_the_router_of_a_provider_that_could_not_be_made_global(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the global LoggerProvider cannot be set (the API sets it once per process),
    fapilog's own provider is not the global one: a reset forgets the router it added to
    it, so that nothing keeps that provider alive or routes through it again."""
    real_global = configure.global_sdk_provider
    monkeypatch.setattr(STATE, "own_provider", STATE.own_provider)  # (put back after)
    monkeypatch.setattr(configure, "global_sdk_provider", lambda: None)
    monkeypatch.setattr(configure, "set_global_provider", lambda provider: None)
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.pipeline is not None
    provider = STATE.pipeline.provider
    assert provider is not real_global() and id(provider) in STATE.routers
    monkeypatch.setattr(configure, "global_sdk_provider", real_global)
    global_router = STATE.routers.get(id(real_global()))
    configure.reset()
    assert id(provider) not in STATE.routers
    assert STATE.routers.get(id(real_global())) is global_router  # the global's stays

"""fapilog under `opentelemetry-instrument`: an unmodified FastAPI app gets fapilog's JSON
lines, correlated with the server spans, each record exactly once.

The end-to-end tests run the real CLI (`opentelemetry-instrument uvicorn app:app`) with the
spans exported to a real OTLP receiver. The CLI puts its own sitecustomize first on
PYTHONPATH, so those children run without coverage; the tests at the end drive the same
machinery (`opentelemetry.instrumentation.auto_instrumentation._initialize`, which the CLI's
sitecustomize calls) in coverage-enabled children.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import run_python
from peers.instrumented_app import APP, APP_WITH_CONFIGURE, APP_WITH_CONFIGURE_APP, InstrumentedApp
from peers.otlp_receiver import OtlpReceiver

SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
REQUESTS = 4


def _run_app(tmp_path: Path, env: dict[str, str], source: str, receiver: OtlpReceiver) -> tuple[
    list[dict[str, object]], list[str], list[object]
]:  # fmt: skip
    env = {
        **env,
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    app = InstrumentedApp(tmp_path, env, source)
    try:
        base = app.start()
        with httpx.Client(base_url=base, timeout=10) as client:
            for order in range(1, REQUESTS + 1):
                assert client.get(f"/orders/{order}").json() == {"id": order}
        app.wait_for(
            lambda: sum(r.get("logger") == "uvicorn.access" for r in app.records()) >= REQUESTS,
            15,
        )
        app.stop()
    finally:
        app.kill()
    spans = receiver.wait_for_spans(
        lambda spans: sum(s.kind == SERVER for s in spans) >= REQUESTS, 15
    )
    return app.records(), app.stderr, spans


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "sdk_handler_flag"),
    [
        pytest.param(APP, None, id="unmodified-app"),
        pytest.param(APP_WITH_CONFIGURE, "true", id="app-calls-configure_logging-sdk-handler-on"),
        pytest.param(APP_WITH_CONFIGURE_APP, None, id="app-calls-configure_logging-app"),
    ],
)
def test_unmodified_app_logs_json_correlated_with_server_spans_once(
    tmp_path: Path, subprocess_env: dict[str, str], source: str, sdk_handler_flag: str | None
) -> None:
    env = dict(subprocess_env)
    if sdk_handler_flag is not None:
        # the SDK's own LoggingHandler switch: must not lead to a second export route
        env["OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"] = sdk_handler_flag
    with OtlpReceiver() as receiver:
        records, stderr, spans = _run_app(tmp_path, env, source, receiver)

    server_spans = {s.trace_id: s for s in spans if s.kind == SERVER}
    assert len(server_spans) == REQUESTS
    app_lines = [r for r in records if r.get("message") == "order looked up"]
    access_lines = [r for r in records if r.get("logger") == "uvicorn.access"]
    # each record exactly once: one app line and one access line per request
    assert sorted(r["order_id"] for r in app_lines) == list(range(1, REQUESTS + 1))
    assert len(access_lines) == REQUESTS
    for line in app_lines + access_lines:
        span = server_spans[str(line["trace_id"])]  # the trace id of a FastAPI server span
        assert line["span_id"] == span.span_id
        assert line["service.name"] == "shop" == span.resource["service.name"]
    assert {r["trace_id"] for r in app_lines} == set(server_spans)
    for line in app_lines:
        assert line["level"] == "warning"
        assert line["logger"] == "shop.orders"
        assert line["vip"] == (line["order_id"] % 2 == 0)
    # uvicorn's own lines are fapilog JSON too, and nothing is printed twice
    assert any(r["logger"] == "uvicorn.error" for r in records)
    counts = Counter((r["message"], r.get("trace_id"), r["timestamp"]) for r in records)
    assert max(counts.values()) == 1
    assert not [line for line in stderr if "order looked up" in line or "GET /orders" in line]
    if source is APP_WITH_CONFIGURE_APP:
        # fapilog's request event, inside the auto-instrumented server span, once
        events = [r for r in records if r["message"] == "request completed"]
        assert len(events) == REQUESTS
        assert {(r["trace_id"], r["span_id"]) for r in events} == {
            (t, s.span_id) for t, s in server_spans.items()
        }
    # no fapilog.config.changed: configure_logging() found the pipeline already configured
    assert not [r for r in records if r["message"] == "fapilog.config.changed"]


# -- the auto-instrumentation machinery, in coverage-enabled children -----------------------

_INIT = """
import logging, os, sys
from opentelemetry.instrumentation.auto_instrumentation import _initialize
_initialize(swallow_exceptions=False)
import fapilog
from fapilog._state import STATE
from fapilog.capture import stdlib as _stdlib
"""


def _child(code: str, env: dict[str, str]) -> tuple[int, str, str]:
    return run_python(_INIT + textwrap.dedent(code), env, timeout=60)


@pytest.mark.slow
def test_initialize_selects_fapilog_and_configures_one_pipeline(
    subprocess_env: dict[str, str],
) -> None:
    code = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from fapilog.otel.logs import global_sdk_provider
    import fapilog.distro as distro
    assert os.environ["OTEL_PYTHON_CONFIGURATOR"] == "fapilog"
    assert STATE.is_configured()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    logs = global_sdk_provider()
    # one Resource for traces and logs
    assert dict(provider.resource.attributes) == dict(logs.resource.attributes)
    assert provider.resource.attributes["telemetry.distro.name"] == "fapilog"
    assert provider.resource.attributes["telemetry.distro.version"] == fapilog.__version__
    assert "telemetry.auto.version" not in provider.resource.attributes  # (deprecated)
    assert provider.resource.attributes["service.name"] == "svc"
    root = logging.getLogger()
    assert [type(h).__name__ for h in root.handlers] == ["FapilogHandler"]
    # the app's own configure_logging(): same pipeline, no second router or handler
    routers = list(STATE.routers.values())
    fapilog.configure_logging()
    fapilog.configure_logging(level="DEBUG")
    assert list(STATE.routers.values()) == routers
    assert len(logs._multi_log_record_processor._log_record_processors) == 1
    assert [type(h).__name__ for h in root.handlers] == ["FapilogHandler"]
    with trace.get_tracer("t").start_as_current_span("s") as span:
        logging.getLogger("lib").warning("from stdlib %d", 1)
        fapilog.log.info("from structlog", n=2)
    fapilog.force_flush(5)
    print("TRACE", format(span.get_span_context().trace_id, "032x"))
    """
    env = {**subprocess_env, "OTEL_SERVICE_NAME": "svc", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_TRACES_EXPORTER": "none", "OTEL_PYTHON_LOG_CORRELATION": "true"}  # fmt: skip
    code_, out, err = _child(code, env)
    assert code_ == 0, err
    import json

    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    trace_id = next(line.split()[1] for line in out.splitlines() if line.startswith("TRACE"))
    mine = [line for line in lines if line["message"] in ("from stdlib 1", "from structlog")]
    assert [line["message"] for line in mine] == ["from stdlib 1", "from structlog"]
    assert {line["trace_id"] for line in mine} == {trace_id}
    assert mine[1]["n"] == 2


@pytest.mark.slow
def test_otel_logs_exporter_names_map_to_fapilog_exporters(
    subprocess_env: dict[str, str],
) -> None:
    code = """
    assert os.environ["FAPILOG_EXPORTERS"] == "stdout,otlp,console", os.environ["FAPILOG_EXPORTERS"]
    assert os.environ["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"] == "http/protobuf"
    assert STATE.settings.exporters == ["stdout", "otlp", "console"]
    from fapilog.otlp import resolve_protocol
    assert resolve_protocol(STATE.settings, "logs") == "http/protobuf"
    """
    env = {**subprocess_env, "OTEL_LOGS_EXPORTER": "fapilog_stdout, otlp_proto_http,console,nope",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"}  # fmt: skip
    code_, _out, err = _child(code, env)
    assert code_ == 0, err
    assert "'nope'" in err  # an unknown name is reported, not fatal


@pytest.mark.slow
def test_disabled_with_fapilog_auto_instrument_false(subprocess_env: dict[str, str]) -> None:
    code = """
    assert "OTEL_PYTHON_CONFIGURATOR" not in os.environ
    assert not STATE.is_configured()
    assert not any(type(h).__name__ == "FapilogHandler" for h in logging.getLogger().handlers)
    print("OK")
    """
    env = {**subprocess_env, "FAPILOG_AUTO_INSTRUMENT": "false", "OTEL_METRICS_EXPORTER": "none"}
    code_, out, err = _child(code, env)
    assert code_ == 0, err
    assert "OK" in out


@pytest.mark.slow
def test_foreign_configurator_handler_is_removed_and_fapilog_attaches(
    subprocess_env: dict[str, str],
) -> None:
    """Another configurator ran (as with opentelemetry-distro selected): it installed its
    LoggerProvider and, with OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED, the SDK's
    LoggingHandler on the root logger. The post-instrument hook leaves fapilog's handler as
    the only route, attached to that provider, and survives a later dictConfig()."""
    code = """
    import logging.config
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    provider = get_logger_provider()
    memory = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    root = logging.getLogger()
    assert any(type(h).__name__ == "LoggingHandler" for h in root.handlers), root.handlers
    assert not STATE.is_configured()

    from fapilog.distro import post_instrument
    os.environ["FAPILOG_AUTO_INSTRUMENT"] = "true"
    post_instrument()
    assert STATE.pipeline.provider is provider and not STATE.pipeline.owns_provider
    assert [type(h).__name__ for h in root.handlers] == ["FapilogHandler"]
    # uvicorn-style dictConfig after start-up: fapilog takes the loggers back
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False}},
        "root": {"handlers": ["default"], "level": "INFO"},
    })
    # the root handler the call configured stays (named in a warning: it prints twice)
    assert [type(h).__name__ for h in root.handlers] == ["StreamHandler", "FapilogHandler"]
    uvicorn_logger = logging.getLogger("uvicorn")
    assert uvicorn_logger.propagate and not uvicorn_logger.handlers
    logging.getLogger("uvicorn.error").info("once")
    fapilog.force_flush(5)
    got = [r.log_record.body for r in memory.get_finished_logs()]
    assert got == ["once"], got
    print("OK")
    """
    # the stock SDK configuration runs (fapilog off), with the SDK's LoggingHandler switch on;
    # then fapilog's post-instrument hook runs as it would after another configurator
    env = {**subprocess_env, "FAPILOG_AUTO_INSTRUMENT": "false", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_TRACES_EXPORTER": "none",
           "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true"}  # fmt: skip
    code_, out, err = _child(code, env)
    assert code_ == 0, err
    assert out.count('"message":"once"') == 1
    assert "OK" in out
    assert "the logging handler 'default' (StreamHandler to stderr)" in err


def test_fapilog_distro_keeps_the_logging_instrumentation_handler_off() -> None:
    """`FapilogDistro.load_instrumentor` runs the stock logging instrumentation (record
    factory, optional trace fields) without its root handler."""
    import logging
    from importlib.metadata import entry_points

    from fapilog.distro import FapilogDistro

    (entry,) = [
        ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "logging"
    ]
    before = list(logging.getLogger().handlers)
    instrumentor_class = entry.load()
    try:
        FapilogDistro().load_instrumentor(entry, skip_dep_check=True)
        assert logging.getLogger().handlers == before
    finally:
        instrumentor_class().uninstrument()


def test_entry_points_are_registered() -> None:
    from importlib.metadata import entry_points

    def names(group: str) -> dict[str, str]:
        return {ep.name: ep.value for ep in entry_points(group=group)}

    assert names("opentelemetry_distro")["fapilog"] == "fapilog.distro:FapilogDistro"
    assert names("opentelemetry_configurator")["fapilog"] == "fapilog.distro:FapilogConfigurator"
    assert names("opentelemetry_post_instrument")["fapilog"] == "fapilog.distro:post_instrument"
    logs = names("opentelemetry_logs_exporter")
    for name in ("fapilog_stdout", "fapilog_console", "fapilog_file", "fapilog_loki"):
        assert logs[name].startswith("fapilog.distro:")


def test_logs_exporter_entry_point_classes_are_sdk_log_exporters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under the SDK's own configurator, ``fapilog_stdout`` is instantiated without
    arguments and fed by the SDK's batch processor: it still writes fapilog's JSON line."""
    import json
    from importlib.metadata import entry_points

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor

    (entry,) = [
        ep
        for ep in entry_points(group="opentelemetry_logs_exporter")
        if ep.name == "fapilog_stdout"
    ]
    exporter_class = entry.load()
    assert issubclass(exporter_class, LogRecordExporter)
    provider = LoggerProvider(shutdown_on_exit=False)
    exporter = exporter_class()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    from opentelemetry._logs import LogRecord, SeverityNumber

    provider.get_logger("sdk").emit(
        LogRecord(body="via sdk", severity_number=SeverityNumber.WARN, severity_text="WARN",
                  attributes={"k": 1})
    )  # fmt: skip
    provider.shutdown()
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["message"], line["level"], line["logger"], line["k"]) == (
        "via sdk", "warning", "sdk", 1
    )  # fmt: skip


@pytest.mark.slow
def test_bad_configuration_is_reported_and_the_app_still_starts(
    subprocess_env: dict[str, str],
) -> None:
    code = """
    from opentelemetry import trace
    assert STATE.is_configured()
    assert STATE.settings.level == "INFO"  # FAPILOG_LEVEL was invalid: defaults
    processors = trace.get_tracer_provider()._active_span_processor._span_processors
    # console loaded; 'nope' and the OTLP exporter with a bogus protocol reported, not fatal
    assert [type(p.span_exporter).__name__ for p in processors] == ["ConsoleSpanExporter"]
    logging.getLogger("app").warning("still logging")
    fapilog.force_flush(5)
    """
    env = {**subprocess_env, "FAPILOG_LEVEL": "LOUD", "OTEL_METRICS_EXPORTER": "bogus",
           "OTEL_TRACES_EXPORTER": "otlp,console,nope",
           "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "bogus"}  # fmt: skip
    code_, out, err = _child(code, env)
    assert code_ == 0, err
    assert '"message":"still logging"' in out
    for fragment in ("FAPILOG_LEVEL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "'nope'", "metrics"):
        assert fragment in err, fragment


def test_other_opentelemetry_logs_exporters_run_behind_fapilog_batching(
    subprocess_env: dict[str, str],
) -> None:
    """An OTEL_LOGS_EXPORTER name fapilog does not know is loaded from its entry point (here
    the SDK's own ``console``, registered under ``otel_console``) and fed by fapilog. (In a
    child: the SDK's console exporter writes to the ``sys.stdout`` of the moment its module
    was imported, which under pytest is the session's capture, not the test's.)"""
    code = """
    import fapilog
    from fapilog.integrations.distro import _register_otel_log_exporter

    assert _register_otel_log_exporter("console") == "otel_console"
    assert _register_otel_log_exporter("console") == "otel_console"  # once
    fapilog.configure_logging(exporters=["otel_console"])
    fapilog.log.warning("through the sdk console exporter")
    assert fapilog.force_flush(5)
    """
    code_, out, err = run_python(textwrap.dedent(code), subprocess_env, timeout=60)
    assert code_ == 0, err
    assert out.count('"body": "through the sdk console exporter"') == 1, out


@pytest.mark.parametrize(
    "name", ["StdoutExporter", "ConsoleExporter", "FileExporter", "LokiExporter"]
)
def test_every_logs_exporter_entry_point_builds_from_the_environment(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fapilog.distro

    monkeypatch.setenv("FAPILOG_FILE__PATH", str(tmp_path / "app.log"))
    exporter = getattr(fapilog.distro, name)()
    try:
        assert exporter.force_flush(100)
    finally:
        exporter.shutdown()


# -- with another distro installed (a replica of opentelemetry-distro) ----------------------

_OTHER_DISTRO = """
import os

from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk._configuration import _OTelSDKConfigurator


class OtherConfigurator(_OTelSDKConfigurator):
    pass


class OtherDistro(BaseDistro):
    def _configure(self, **kwargs):
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
        os.environ.setdefault("OTEL_LOGS_EXPORTER", "console")
"""


@pytest.fixture
def other_distro(tmp_path: Path, subprocess_env: dict[str, str]) -> dict[str, str]:
    """An installed distribution with its own distro and configurator entry points, first on
    sys.path (as opentelemetry-distro would be), for child interpreters."""
    site = tmp_path / "site"
    info = site / "otherdistro-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "otherdistro.py").write_text(_OTHER_DISTRO)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: otherdistro\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_distro]\nother = otherdistro:OtherDistro\n\n"
        "[opentelemetry_configurator]\nother = otherdistro:OtherConfigurator\n"
    )
    env = dict(subprocess_env)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(site)])
    return env


_WHO_CONFIGURED = """
from fapilog._state import STATE
print("FAPILOG_CONFIGURATOR", STATE.distro_configured)
print("HANDLERS", [type(h).__name__ for h in logging.getLogger().handlers])
logging.getLogger("app").warning("exactly once")
fapilog.force_flush(5)
"""


@pytest.mark.slow
def test_with_another_distro_otel_python_distro_selects_fapilog(
    other_distro: dict[str, str],
) -> None:
    env = {**other_distro, "OTEL_PYTHON_DISTRO": "fapilog", "OTEL_METRICS_EXPORTER": "none"}
    code_, out, err = _child(_WHO_CONFIGURED, env)
    assert code_ == 0, err
    assert "FAPILOG_CONFIGURATOR True" in out  # OTEL_PYTHON_DISTRO=fapilog was enough
    assert "HANDLERS ['FapilogHandler']" in out
    assert out.count("exactly once") == 1


@pytest.mark.slow
def test_when_another_configurator_wins_records_still_go_once_per_destination(
    other_distro: dict[str, str],
) -> None:
    """The other distro and its configurator run (the SDK's defaults, its LoggingHandler
    switched on, its console log exporter): fapilog's hook removes the SDK handler and
    attaches, so each record reaches fapilog's stdout once and the SDK's exporter once."""
    env = {**other_distro, "OTEL_PYTHON_DISTRO": "other",
           "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true"}  # fmt: skip
    code_, out, err = _child(_WHO_CONFIGURED, env)
    assert code_ == 0, err
    assert "FAPILOG_CONFIGURATOR False" in out
    assert "HANDLERS ['FapilogHandler']" in out
    assert out.count('"message":"exactly once"') == 1  # fapilog's JSON line
    assert out.count('"body": "exactly once"') == 1  # the SDK console exporter's record

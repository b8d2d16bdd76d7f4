"""fapilog beside an OpenTelemetry logs setup the application made itself: each record
reaches stdout and the collector exactly once.

- OpenTelemetry's `LoggingHandler` on the root logger (before `configure_logging()`, or
  added by a later `logging.config.dictConfig()`) is taken off while fapilog captures
  stdlib logging, named once on stderr, and put back when fapilog stops capturing;
- a processor on the attached LoggerProvider that already exports OTLP logs to the `otlp`
  exporter's endpoint: fapilog does not build its own `otlp` exporter (named once); to
  another endpoint, both export.

Each case runs in a child interpreter (the global LoggerProvider can be set once per
process) against real OTLP receivers on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor

from fapilog import LoggingSettings
from fapilog.exporters.otlp import exported_by
from peers.otlp_receiver import OtlpReceiver

RECORDS = 5
HANDLER_WARNING = "removed the OpenTelemetry logging handler"
SAME_ENDPOINT_WARNING = "does not create its 'otlp' exporter"

_HANDLER_CHILD = """
import json, logging, logging.config, sys
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
import fapilog

HTTP, WHERE, SHARED, RECORDS = sys.argv[1], sys.argv[2], sys.argv[3] == "shared", int(sys.argv[4])
provider = LoggerProvider()
if SHARED:
    # fapilog attaches to this provider: the handler's records would reach its exporters
    set_logger_provider(provider)
else:
    # the application's own provider, exporting to the same collector as fapilog's otlp
    provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
        endpoint=HTTP + "/v1/logs")))
root = logging.getLogger()

def otel_handler():
    return LoggingHandler(logger_provider=provider)

def dict_config():
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"otel": {"()": otel_handler}},
        "root": {"handlers": ["otel"], "level": "INFO"},
    })

if WHERE == "before":
    root.addHandler(otel_handler())
fapilog.configure_logging(exporters=["stdout", "otlp"],
                          otlp={"endpoint": HTTP, "protocol": "http/protobuf"})
if WHERE == "dictconfig":
    dict_config()
    dict_config()  # again: a new handler of the same type, named no second time
kinds = [type(h).__name__ for h in root.handlers]
assert kinds == ["FapilogHandler"], kinds
for number in range(RECORDS):
    logging.getLogger("app").warning("stdlib record %d", number)
assert fapilog.force_flush(10)
# fapilog stops capturing stdlib logging: the handler taken last is back on the root logger
fapilog.configure_logging(exporters=["stdout", "otlp"], capture_stdlib=False,
                          otlp={"endpoint": HTTP, "protocol": "http/protobuf"})
kinds = [type(h).__name__ for h in root.handlers]
assert kinds.count("LoggingHandler") == 1, kinds
print(json.dumps({"done": True}))
"""


def _run(child: str, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `child` in a fresh interpreter with `args` and RECORDS as its arguments."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(child), *args, str(RECORDS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before", "dictconfig"])
@pytest.mark.parametrize("provider", ["shared", "own"])
def test_an_otel_logging_handler_on_the_root_logger_is_removed_once(
    subprocess_env: dict[str, str], where: str, provider: str
) -> None:
    """`shared`: the handler emits to the global provider fapilog attaches to (its records
    would reach fapilog's exporters a second time); `own`: to the application's provider,
    which exports to the same collector as fapilog's `otlp` exporter."""
    with OtlpReceiver() as receiver:
        code, out, err = _run(
            _HANDLER_CHILD, subprocess_env, receiver.http_endpoint, where, provider
        )
        assert code == 0, err
        # (the child has exited: everything either route sent has arrived)
        received = sorted(
            str(entry.body) for entry in receiver.logs if str(entry.body).startswith("stdlib")
        )
    expected = sorted(f"stdlib record {number}" for number in range(RECORDS))
    printed = sorted(str(line["message"]) for line in _lines(out) if line.get("logger") == "app")
    assert printed == expected
    assert received == expected
    assert err.count(HANDLER_WARNING) == 1, err
    assert "opentelemetry.sdk._logs._internal.LoggingHandler" in err


_PROCESSOR_CHILD = """
import json, sys
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
import fapilog

PROTOCOL, THEIRS, OURS, RECORDS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if PROTOCOL == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    exporter = OTLPLogExporter(endpoint=THEIRS, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    exporter = OTLPLogExporter(endpoint=THEIRS + "/v1/logs")
provider = LoggerProvider()
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
set_logger_provider(provider)
fapilog.configure_logging(exporters=["stdout", "otlp"],
                          otlp={"endpoint": OURS, "protocol": PROTOCOL})
# the same configuration again changes nothing (and names nothing again)
fapilog.configure_logging(exporters=["stdout", "otlp"],
                          otlp={"endpoint": OURS, "protocol": PROTOCOL})
log = fapilog.get_logger("app")
for number in range(RECORDS):
    log.info("processor record", number=number)
assert fapilog.force_flush(10)
assert provider.force_flush(10000)
print(json.dumps({"exporters": sorted(fapilog.stats()["exporters"])}))
"""


def _numbers(receiver: OtlpReceiver) -> list[int]:
    return sorted(
        int(entry.attributes["number"])
        for entry in receiver.logs
        if entry.body == "processor record"
    )


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_processor_exporting_to_the_same_endpoint_is_not_doubled(
    subprocess_env: dict[str, str], protocol: str
) -> None:
    with OtlpReceiver() as receiver:
        endpoint = receiver.endpoint(protocol)
        code, out, err = _run(_PROCESSOR_CHILD, subprocess_env, protocol, endpoint, endpoint)
        assert code == 0, err
        received = _numbers(receiver)
    assert received == list(range(RECORDS))  # once each, through the application's processor
    lines = _lines(out)
    assert sorted(int(str(line["number"])) for line in lines if "number" in line) == list(
        range(RECORDS)
    )
    assert lines[-1] == {"exporters": ["stdout"]}  # no `otlp` exporter built, none counted
    assert err.count(SAME_ENDPOINT_WARNING) == 1, err


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_processor_exporting_elsewhere_is_a_second_destination(
    subprocess_env: dict[str, str], protocol: str
) -> None:
    with OtlpReceiver() as theirs, OtlpReceiver() as ours:
        code, out, err = _run(
            _PROCESSOR_CHILD,
            subprocess_env,
            protocol,
            theirs.endpoint(protocol),
            ours.endpoint(protocol),
        )
        assert code == 0, err
        assert _numbers(theirs) == list(range(RECORDS))
        assert _numbers(ours) == list(range(RECORDS))
    assert _lines(out)[-1] == {"exporters": ["otlp", "stdout"]}
    assert SAME_ENDPOINT_WARNING not in err


def _provider_exporting_to(exporter: object) -> LoggerProvider:
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))  # type: ignore[arg-type]
    return provider


@pytest.mark.parametrize(
    ("protocol", "ours", "theirs", "same"),
    [
        ("http/protobuf", "http://LocalHost:4318/", "http://localhost:4318/v1/logs", True),
        ("http/protobuf", "http://localhost:80", "http://localhost/v1/logs/", True),
        ("http/protobuf", "http://localhost:4318", "https://localhost:4318/v1/logs", False),
        ("http/protobuf", "http://localhost:4318", "http://localhost:4319/v1/logs", False),
        ("http/protobuf", "http://localhost:4318", "http://localhost:4318/logs", False),
        ("http/protobuf", "http://localhost:4318", "http://127.0.0.1:4318/v1/logs", False),
        ("http/protobuf", "https://collector", "https://collector:443/v1/logs", True),
        ("http/protobuf", "https://collector:444", "https://collector/v1/logs", False),
        ("http/protobuf", "http://localhost:4318", "http://localhost:4318/v1/logsX", False),
        ("grpc", "http://collector:4317", "http://COLLECTOR:4317", True),
        ("grpc", "https://collector:4317", "collector:4317", True),
        ("grpc", "http://collector:4317", "http://collector:4318", False),
    ],
)
def test_endpoints_are_compared_normalised(
    protocol: str, ours: str, theirs: str, same: bool
) -> None:
    if protocol == "grpc":
        exporter: object = GrpcExporter(endpoint=theirs, insecure=True)
    else:
        exporter = HttpExporter(endpoint=theirs)
    provider = _provider_exporting_to(exporter)
    settings = LoggingSettings(otlp={"endpoint": ours, "protocol": protocol})
    try:
        assert (exported_by(provider, settings) is not None) is same
        # a processor of the other protocol, at the same address, is another destination
        other = LoggingSettings(
            otlp={"endpoint": ours, "protocol": "grpc" if protocol != "grpc" else "http/protobuf"}
        )
        assert exported_by(provider, other) is None
    finally:
        provider.shutdown()


def test_the_logs_protocol_variable_decides_which_exporters_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")
    provider = _provider_exporting_to(HttpExporter(endpoint="http://collector:4318/v1/logs"))
    settings = LoggingSettings(otlp={"endpoint": "http://collector:4318"})
    try:
        assert exported_by(provider, settings) == "http://collector:4318/v1/logs"
    finally:
        provider.shutdown()


def test_a_processor_inside_wrappers_is_found() -> None:
    """A processor wrapped in others (Logfire's processors wrap a multi processor) and the
    simple processor's exporter are found too."""
    from opentelemetry.sdk._logs._internal import SynchronousMultiLogRecordProcessor

    class Wrapper(SimpleLogRecordProcessor):
        def __init__(self, processor: object) -> None:
            self.processor = processor

    inner = SynchronousMultiLogRecordProcessor()
    inner.add_log_record_processor(
        SimpleLogRecordProcessor(HttpExporter(endpoint="http://collector:4318/v1/logs"))
    )
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(Wrapper(Wrapper(inner)))  # type: ignore[arg-type]
    settings = LoggingSettings(otlp={"endpoint": "http://collector:4318", "protocol": "http"})
    assert exported_by(provider, settings) == "http://collector:4318/v1/logs"


def test_the_sdk_provider_inside_a_few_wrappers_is_found() -> None:
    """A LoggerProvider that keeps another under a known attribute (Logfire's proxy:
    ``provider``) is unwrapped, at most four deep; one that only forwards attribute
    lookups (``__getattr__``) or the API's no-op provider is not an SDK provider."""
    from opentelemetry._logs import LoggerProvider as ApiProvider
    from opentelemetry._logs import NoOpLoggerProvider

    from fapilog.otel.logs import sdk_provider_of

    class Wrapping(ApiProvider):
        def __init__(self, inner: object) -> None:
            self.provider = inner

        def get_logger(self, *args: Any, **kwargs: Any) -> Any:
            return self.provider.get_logger(*args, **kwargs)  # type: ignore[attr-defined]

    class Forwarding(ApiProvider):
        def __init__(self, inner: object) -> None:
            self._inner = inner

        def get_logger(self, *args: Any, **kwargs: Any) -> Any:
            return self._inner.get_logger(*args, **kwargs)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    sdk = LoggerProvider(shutdown_on_exit=False)
    assert sdk_provider_of(sdk) is sdk
    wrapped: object = sdk
    for _ in range(4):
        wrapped = Wrapping(wrapped)
    assert sdk_provider_of(wrapped) is sdk
    assert sdk_provider_of(Wrapping(wrapped)) is None  # five deep
    assert sdk_provider_of(Forwarding(sdk)) is None
    assert sdk_provider_of(NoOpLoggerProvider()) is None
    assert sdk_provider_of(Wrapping(None)) is None


def test_the_logging_instrumentations_handler_is_taken_off_and_put_back() -> None:
    """The handler `opentelemetry-instrumentation-logging` adds, on its own LoggerProvider:
    off the root logger while fapilog captures stdlib logging (its provider gets nothing,
    one warning however often fapilog is configured), back when capture stops."""
    import logging

    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter

    from fapilog import _diag, configure_logging
    from fapilog.capture.stdlib import is_otel_logging_handler

    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    handler = LoggingHandler(logger_provider=provider)
    assert is_otel_logging_handler(handler)
    assert not is_otel_logging_handler(logging.StreamHandler())
    reports: list[str] = []

    def listen(key: str, message: str, fields: dict[str, Any]) -> None:
        reports.append(key)

    root = logging.getLogger()
    root.addHandler(handler)
    _diag.add_listener(listen)
    try:
        configure_logging(exporters=["stdout"])
        configure_logging(exporters=["stdout"], level="DEBUG")
        assert handler not in root.handlers
        logging.getLogger("app").warning("captured by fapilog only")
        assert memory.get_finished_logs() == ()
        kind = "opentelemetry.instrumentation.logging.handler.LoggingHandler"
        assert reports.count(f"stdlib-otel-handler:{kind}") == 1, reports
        configure_logging(exporters=["stdout"], capture_stdlib=False)
        assert handler in root.handlers
        logging.getLogger("app").warning("through the handler again")
        assert [r.log_record.body for r in memory.get_finished_logs()] == [
            "through the handler again"
        ]
    finally:
        _diag.remove_listener(listen)
        root.removeHandler(handler)
        provider.shutdown()


_FOREIGN_CONFIGURATOR_CHILD = """
import json, logging, os, sys
from opentelemetry.instrumentation.auto_instrumentation import _initialize
_initialize(swallow_exceptions=False)
from opentelemetry._logs import get_logger_provider
import fapilog
from fapilog.distro import post_instrument

RECORDS = int(sys.argv[1])
os.environ["FAPILOG_AUTO_INSTRUMENT"] = "true"
post_instrument()  # as after another configurator: fapilog attaches to its provider
for number in range(RECORDS):
    logging.getLogger("app").warning("configured record %d", number)
assert fapilog.force_flush(10)
assert get_logger_provider().force_flush(10000)
print(json.dumps({"exporters": sorted(fapilog.stats()["exporters"])}))
"""


@pytest.mark.slow
def test_otlp_in_the_sdk_configurator_and_in_fapilog_is_exported_once(
    subprocess_env: dict[str, str],
) -> None:
    """The SDK's own configurator ran with ``OTEL_LOGS_EXPORTER=otlp`` (its batch processor
    on the provider it installed), and fapilog's exporters name `otlp` too, both from the
    same ``OTEL_EXPORTER_OTLP_*`` variables: the collector gets each record once."""
    with OtlpReceiver() as receiver:
        env = {
            **subprocess_env,
            "FAPILOG_AUTO_INSTRUMENT": "false",  # the stock configuration runs first
            "FAPILOG_EXPORTERS": "stdout,otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        }
        code, out, err = _run(_FOREIGN_CONFIGURATOR_CHILD, env)
        assert code == 0, err
        received = sorted(
            str(entry.body) for entry in receiver.logs if str(entry.body).startswith("configured")
        )
    assert received == sorted(f"configured record {number}" for number in range(RECORDS))
    assert _lines(out)[-1] == {"exporters": ["stdout"]}
    assert err.count(SAME_ENDPOINT_WARNING) == 1, err

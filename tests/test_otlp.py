"""The `otlp` exporter and OTLP span export, in process, against a real OTLP receiver on
127.0.0.1 (gRPC and HTTP/protobuf, on the official opentelemetry-proto definitions)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import fapilog
from fapilog import ConfigurationError, LoggingSettings, configure_logging, get_logger, log
from fapilog.otel.otlp import (
    _EXIT,
    BoundedBatchSpanProcessor,
    GuardedSpanExporter,
    resolve_protocol,
    resolve_timeout,
    sdk_span_exporter,
    span_processors,
    trace_protocols,
)
from fapilog.otel.resource import build_resource
from peers.otlp_receiver import OtlpReceiver, closed_port

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _tracer_provider(settings: LoggingSettings) -> TracerProvider:
    """A TracerProvider as fapilog builds one: fapilog's Resource, fapilog's span export."""
    provider = TracerProvider(resource=build_resource(settings), shutdown_on_exit=False)
    for processor in span_processors(settings):
        provider.add_span_processor(processor)
    return provider


# -- settings and their OTEL_* fallbacks ---------------------------------------------------


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAPILOG_OTLP__ENDPOINT", "https://collector.example:4317")
    monkeypatch.setenv("FAPILOG_OTLP__PROTOCOL", "HTTP")
    monkeypatch.setenv("FAPILOG_OTLP__HEADERS", "authorization=Bearer abc=,x-tenant=acme")
    monkeypatch.setenv("FAPILOG_OTLP__TIMEOUT", "2.5")
    monkeypatch.setenv("FAPILOG_OTLP__TRACES", "false")
    monkeypatch.setenv("FAPILOG_OTLP__COMPRESSION", "gzip")
    otlp = LoggingSettings().otlp
    assert otlp.endpoint == "https://collector.example:4317"
    assert otlp.protocol == "http/protobuf"
    assert {k: v.get_secret_value() for k, v in otlp.headers.items()} == {
        "authorization": "Bearer abc=",
        "x-tenant": "acme",
    }
    assert "abc" not in repr(otlp)  # header values are secrets
    assert (otlp.timeout, otlp.traces, otlp.compression) == (2.5, False, "gzip")


def test_protocol_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = LoggingSettings()
    assert resolve_protocol(settings, "logs") == "grpc"  # the Python SDK's default
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert resolve_protocol(settings, "logs") == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    assert resolve_protocol(settings, "logs") == "grpc"
    assert resolve_protocol(settings, "traces") == "http/protobuf"
    assert resolve_protocol(LoggingSettings(otlp={"protocol": "http/protobuf"}), "logs") == (
        "http/protobuf"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        resolve_protocol(settings, "traces")


def test_timeout_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = LoggingSettings()
    assert resolve_timeout(settings, "logs") == 5.0
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7")
    assert resolve_timeout(settings, "logs") == 7.0
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "3")
    assert resolve_timeout(settings, "logs") == 3.0
    assert resolve_timeout(settings, "traces") == 7.0
    assert resolve_timeout(LoggingSettings(otlp={"timeout": 1.5}), "logs") == 1.5
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
        resolve_timeout(settings, "traces")


@pytest.mark.parametrize("setting", ["certificate", "client_certificate", "client_key"])
def test_missing_certificate_file_fails_at_configure_time(tmp_path: Path, setting: str) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigurationError) as info:
        configure_logging(exporters=["otlp"], otlp={setting: missing})
    assert f"FAPILOG_OTLP__{setting.upper()}" in str(info.value)
    assert "nope.pem" in str(info.value)


@pytest.mark.parametrize(
    ("env", "settings", "expected"),
    [
        ({}, {}, []),
        ({}, {"exporters": ["otlp"]}, ["grpc"]),
        ({}, {"otlp": {"traces": True}}, ["grpc"]),
        ({}, {"exporters": ["otlp"], "otlp": {"traces": False}}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, {"exporters": ["otlp"]}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, {"exporters": ["otlp"]}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, {}, ["grpc"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
         {}, ["http/protobuf"]),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_http,otlp_proto_grpc"}, {},
         ["http/protobuf", "grpc"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, {"otlp": {"traces": False}}, []),
        ({}, {"otlp": {"traces": True, "protocol": "http/protobuf"}}, ["http/protobuf"]),
    ],
)  # fmt: skip
def test_trace_protocols(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], settings: dict[str, Any],
    expected: list[str],
) -> None:  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert trace_protocols(LoggingSettings(**settings)) == expected


def test_span_processors_are_bounded_and_guarded() -> None:
    assert span_processors(LoggingSettings()) == []
    (processor,) = span_processors(LoggingSettings(exporters=["otlp"], shutdown_timeout=2))
    assert isinstance(processor, BoundedBatchSpanProcessor)
    assert processor.shutdown_timeout == 2
    assert isinstance(processor.span_exporter, GuardedSpanExporter)
    processor.shutdown()


# -- export to a real receiver ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_logs_and_spans_reach_the_collector_correlated(
    receiver: OtlpReceiver, protocol: str
) -> None:
    marker = f"checkout-{protocol}"
    settings = configure_logging(
        exporters=["otlp"],
        service_name="shop",
        service_version="1.2.3",
        env="staging",
        otlp={"endpoint": receiver.endpoint(protocol), "protocol": protocol},
    )
    provider = _tracer_provider(settings)
    try:
        with provider.get_tracer("shop").start_as_current_span(marker) as span:
            log.warning(
                "payment declined", marker=marker, order_id=7, amount=12.5, retry=False,
                tags=["a", "b"], card={"brand": "visa"},
            )  # fmt: skip
            get_logger("shop.db").error("query failed", marker=marker)
        assert fapilog.force_flush(10)
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    logs = receiver.wait_for_logs(
        lambda got: sum(e.attributes.get("marker") == marker for e in got) >= 2
    )
    spans = receiver.wait_for_spans(lambda got: any(s.name == marker for s in got))
    (span_entry,) = [s for s in spans if s.name == marker]
    warning, error = [e for e in logs if e.attributes.get("marker") == marker]
    transport = "grpc" if protocol == "grpc" else "http"
    assert warning.transport == error.transport == span_entry.transport == transport
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert warning.trace_id == error.trace_id == span_entry.trace_id == trace_id
    assert warning.span_id == span_entry.span_id
    for key in ("service.name", "service.version", "deployment.environment.name"):
        assert warning.resource[key] == span_entry.resource[key]
    assert warning.resource == span_entry.resource
    assert warning.resource["service.name"] == "shop"
    assert warning.resource["service.version"] == "1.2.3"
    assert warning.resource["deployment.environment.name"] == "staging"
    assert (warning.severity_number, warning.severity_text) == (13, "WARN")
    assert (error.severity_number, error.severity_text) == (17, "ERROR")
    assert (warning.body, warning.scope, error.scope) == ("payment declined", "app", "shop.db")
    assert warning.attributes == {
        "marker": marker, "order_id": 7, "amount": 12.5, "retry": False,
        "tags": ["a", "b"], "card": {"brand": "visa"},
    }  # fmt: skip
    assert fapilog.stats()["exporters"]["otlp"]["exported"] >= 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_headers_from_settings_and_from_otel_env(
    receiver: OtlpReceiver, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"headers-{protocol}"
    configure_logging(
        exporters=["otlp"],
        otlp={"endpoint": receiver.endpoint(protocol), "protocol": protocol,
              "headers": {"x-tenant": "acme"}},
    )  # fmt: skip
    log.info("with headers", marker=marker)
    fapilog.force_flush(10)
    (entry,) = receiver.wait_for_logs(lambda got: any(e.body == "with headers" and
                                      e.attributes.get("marker") == marker for e in got),
                                      )[-1:]  # fmt: skip
    assert entry.headers["x-tenant"] == "acme"
    fapilog.testing.reset()
    # unset in fapilog: the standard variable is used
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=from-env")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint(protocol))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    configure_logging(exporters=["otlp"])
    log.info("with env headers", marker=marker)
    fapilog.force_flush(10)
    logs = receiver.wait_for_logs(lambda got: any(e.body == "with env headers" and
                                  e.attributes.get("marker") == marker for e in got))  # fmt: skip
    (entry,) = [
        e for e in logs if e.body == "with env headers" and e.attributes["marker"] == marker
    ]
    assert entry.headers["x-tenant"] == "from-env"


def test_http_gzip_and_endpoint_with_signal_path(receiver: OtlpReceiver) -> None:
    configure_logging(
        exporters=["otlp"],
        otlp={"endpoint": receiver.http_endpoint + "/v1/logs", "protocol": "http/protobuf",
              "compression": "gzip"},
    )  # fmt: skip
    log.info("compressed")
    fapilog.force_flush(10)
    logs = receiver.wait_for_logs(lambda got: any(e.body == "compressed" for e in got))
    (entry,) = [e for e in logs if e.body == "compressed"]
    assert entry.headers["content-encoding"] == "gzip"


def test_collector_rejecting_records_counts_them_dropped() -> None:
    with OtlpReceiver(http_status=400) as rejecting:
        configure_logging(
            exporters=["otlp"],
            otlp={"endpoint": rejecting.http_endpoint, "protocol": "http/protobuf"},
        )
        for index in range(5):
            log.info("rejected", index=index)
        fapilog.force_flush(10)
        figures = fapilog.stats()["exporters"]["otlp"]
    assert figures["exported"] == 0
    assert figures["dropped_by_reason"].get("export_failed") == 5


# -- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_from_certificate_settings(certificate: tuple[str, str], protocol: str) -> None:
    cert, key = certificate
    with OtlpReceiver(tls=certificate, require_client_cert=True) as secure:
        endpoint = secure.endpoint(protocol)
        if protocol == "grpc":  # certificates alone switch grpc to TLS, whatever the scheme
            endpoint = endpoint.replace("https://", "http://")
        settings = configure_logging(
            exporters=["otlp"],
            otlp={"endpoint": endpoint, "protocol": protocol, "certificate": cert,
                  "client_certificate": cert, "client_key": key},
        )  # fmt: skip
        provider = _tracer_provider(settings)
        try:
            with provider.get_tracer("t").start_as_current_span("secure"):
                log.info("over tls")
            assert fapilog.force_flush(10)
            assert provider.force_flush(10_000)
        finally:
            provider.shutdown()
        logs = secure.wait_for_logs(lambda got: any(e.body == "over tls" for e in got))
        spans = secure.wait_for_spans(lambda got: any(s.name == "secure" for s in got))
    assert logs[0].trace_id == spans[0].trace_id


def test_tls_certificate_from_otel_environment(
    certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = certificate
    with OtlpReceiver(tls=certificate) as secure:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", secure.http_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", cert)
        configure_logging(exporters=["otlp"])
        log.info("verified by the env certificate")
        fapilog.force_flush(10)
        logs = secure.wait_for_logs(lambda got: len(got) >= 1)
    assert [e.body for e in logs] == ["verified by the env certificate"]


def test_tls_collector_that_cannot_be_verified_gets_nothing(
    certificate: tuple[str, str],
) -> None:
    with OtlpReceiver(tls=certificate) as secure:
        configure_logging(
            exporters=["otlp"],
            otlp={"endpoint": secure.http_endpoint, "protocol": "http/protobuf", "timeout": 0.5},
            spool={"enabled": False},  # memory only: the record is dropped
        )
        log.info("must not be sent to an unverified server")
        fapilog.force_flush(10)
        assert fapilog.stats()["exporters"]["otlp"]["dropped"] == 1
        assert secure.logs == []


# -- a dead or black-holed collector ---------------------------------------------------------


def test_logging_never_waits_on_a_dead_collector() -> None:
    configure_logging(
        exporters=["otlp"],
        otlp={"endpoint": f"http://127.0.0.1:{closed_port()}", "timeout": 0.5},
    )
    for index in range(200):
        log.info("into the void", index=index)
    deadline = time.monotonic() + 10
    while fapilog.stats()["exporters"]["otlp"]["spooled"] < 200 and time.monotonic() < deadline:
        time.sleep(0.01)  # the records reaching the disk spool is what is observed
    figures = fapilog.stats()["exporters"]["otlp"]
    assert figures["exported"] == 0
    assert figures["spooled"] == 200  # all of them kept on disk for a later replay
    assert figures["dropped"] == 0
    assert figures["export_failures"] >= 1
    assert fapilog.shutdown(5) is False  # a failing exporter is not waited for


def test_span_force_flush_honours_its_timeout(blackhole_port: int) -> None:
    settings = LoggingSettings(
        otlp={"endpoint": f"http://127.0.0.1:{blackhole_port}", "timeout": 20}
    )
    processor = BoundedBatchSpanProcessor(
        GuardedSpanExporter(sdk_span_exporter(settings, "grpc")), shutdown_timeout=1
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("hung"):
        pass
    started = time.monotonic()
    assert processor.force_flush(300) is False  # the export is still hanging
    assert time.monotonic() - started < 10  # bounded by its timeout, not the export's 20 s
    started = time.monotonic()
    processor.shutdown()
    assert time.monotonic() - started < 10  # bounded by shutdown_timeout, not 30 s


def test_after_exit_started_a_failing_exporter_gives_up_at_once() -> None:
    """Once the interpreter is exiting, an OTLP exporter whose last export failed does not
    retry into the dead collector again: its back-off is aborted, later batches fail fast."""
    settings = LoggingSettings(otlp={"endpoint": f"http://127.0.0.1:{closed_port()}", "timeout": 1})
    exporter = GuardedSpanExporter(sdk_span_exporter(settings, "http/protobuf"))
    calls: list[int] = []
    real_export = exporter.inner.export

    def counting(spans: Any) -> Any:
        calls.append(len(spans))
        return real_export(spans)

    exporter.inner.export = counting  # type: ignore[method-assign]
    provider = TracerProvider(shutdown_on_exit=False)
    with provider.get_tracer("t").start_as_current_span("lost") as span:
        pass
    readable = [span]  # type: ignore[list-item]
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export(readable) is SpanExportResult.FAILURE  # type: ignore[arg-type]
    assert calls == [1]
    saved = _EXIT.started_at
    try:
        _EXIT.start()  # what threading's exit hook does
        assert exporter._guard.closed  # the failing exporter was released
        assert exporter.export(readable) is SpanExportResult.FAILURE  # type: ignore[arg-type]
        assert calls == [1]  # no second attempt
    finally:
        _EXIT.started_at = saved


def test_span_export_at_exit_shares_the_one_exit_deadline() -> None:
    """The span processors' shutdown budget counts from the start of the one exit deadline
    (a signal, the lifespan's shutdown) when that came before the interpreter's exit: a
    spawned server worker whose SDK TracerProvider shuts down at interpreter exit, after
    fapilog's drain, gets what is left, not a second full deadline."""
    from fapilog._state import STATE
    from fapilog.otel.otlp import exit_budget

    saved = STATE.exit_started
    try:
        STATE.exit_started = None
        assert exit_budget(2.0) == 2.0
        STATE.exit_started = time.monotonic() - 1.5
        assert 0.0 < exit_budget(2.0) <= 0.5
        STATE.exit_started = time.monotonic() - 5
        assert exit_budget(2.0) == 0.0
    finally:
        STATE.exit_started = saved

"""OTLP end to end, real processes.

An unmodified FastAPI app under `opentelemetry-instrument uvicorn` exports its log records
(``OTEL_LOGS_EXPORTER=fapilog_stdout,otlp``) and its spans (``OTEL_TRACES_EXPORTER=otlp``)
to a real OTLP receiver on 127.0.0.1, over gRPC and over HTTP/protobuf. With the collector
unreachable, requests are unaffected and the process still exits within fapilog's deadline.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_python
from peers.instrumented_app import InstrumentedApp
from peers.otlp_receiver import OtlpReceiver, closed_port

SERVER = 2  # SpanKind SERVER in opentelemetry.proto.trace.v1
SEVERITY_WARN = 13
REQUESTS = 3
RESOURCE_KEYS = ("service.name", "service.version", "deployment.environment.name")


def _otel_env(env: dict[str, str], endpoint: str, protocol: str) -> dict[str, str]:
    return {
        **env,
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=2.4.1,deployment.environment.name=staging",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "fapilog_stdout,otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_receives_correlated_logs_and_spans(
    tmp_path: Path, subprocess_env: dict[str, str], protocol: str
) -> None:
    with OtlpReceiver() as receiver:
        env = _otel_env(subprocess_env, receiver.endpoint(protocol), protocol)
        env["OTEL_BSP_SCHEDULE_DELAY"] = "60000"
        app = InstrumentedApp(tmp_path, env)
        try:
            base = app.start()
            with httpx.Client(base_url=base, timeout=10) as client:
                for order in range(1, REQUESTS + 1):
                    assert client.get(f"/orders/{order}").status_code == 200
            # stopped at once: what is still queued (all the spans: the span batch delay is
            # 60 s here) is delivered by the SIGTERM drain, within fapilog's deadline
            app.stop()
        finally:
            app.kill()
        logs = receiver.wait_for_logs(
            lambda got: sum(e.body == "order looked up" for e in got) >= REQUESTS
        )
        spans = receiver.wait_for_spans(lambda got: sum(s.kind == SERVER for s in got) >= REQUESTS)
        stdout = app.records()

    transport = "grpc" if protocol == "grpc" else "http"
    server_spans = {s.trace_id: s for s in spans if s.kind == SERVER}
    app_logs = [e for e in logs if e.body == "order looked up"]
    assert len(app_logs) == REQUESTS == len(server_spans)  # each record exported once
    for entry in app_logs:
        span = server_spans[entry.trace_id]  # log trace id == the request's server span
        assert entry.span_id == span.span_id
        assert entry.transport == span.transport == transport
        for key in RESOURCE_KEYS:
            assert entry.resource[key] == span.resource[key]
        assert [entry.resource[key] for key in RESOURCE_KEYS] == ["shop", "2.4.1", "staging"]
        assert (entry.severity_number, entry.severity_text) == (SEVERITY_WARN, "WARN")
        assert entry.scope == "shop.orders"
        assert entry.attributes == {
            "order_id": entry.attributes["order_id"],
            "vip": entry.attributes["order_id"] % 2 == 0,
        }
    assert sorted(e.attributes["order_id"] for e in app_logs) == [1, 2, 3]
    # uvicorn's access records went too, in the same traces
    access = [e for e in logs if e.scope == "uvicorn.access"]
    assert {e.trace_id for e in access} == set(server_spans)
    # and stdout (fapilog_stdout) carries the same records with the same ids
    lines = [r for r in stdout if r.get("message") == "order looked up"]
    assert {(r["trace_id"], r["span_id"]) for r in lines} == {
        (e.trace_id, e.span_id) for e in app_logs
    }


# -- the collector is unreachable ------------------------------------------------------------


DEADLINE = 2.0  # FAPILOG_SHUTDOWN_TIMEOUT for these tests
MARGIN = 3.0  # interpreter start-up and teardown


@pytest.mark.slow
@pytest.mark.parametrize("collector", ["closed-port", "blackhole"])
def test_unreachable_collector_never_blocks_requests_or_exit(
    tmp_path: Path, timed_env: dict[str, str], collector: str, blackhole_port: int
) -> None:
    port = closed_port() if collector == "closed-port" else blackhole_port
    env = _otel_env(timed_env, f"http://127.0.0.1:{port}", "grpc")
    env["FAPILOG_SHUTDOWN_TIMEOUT"] = str(DEADLINE)
    app = InstrumentedApp(tmp_path, env)
    try:
        base = app.start()
        with httpx.Client(base_url=base, timeout=5) as client:
            # a request blocked by the exporter would hit the 5 s client timeout and fail
            statuses = [client.get(f"/orders/{n}").status_code for n in range(1, 21)]
        assert statuses == [200] * 20
        # the records still reach stdout although OTLP export fails
        app.wait_for(
            lambda: sum(r.get("message") == "order looked up" for r in app.records()) >= 20,
            10,
        )
        elapsed = app.stop()
    finally:
        app.kill()
    # uvicorn re-raises the SIGTERM it handled: dying by it is its normal exit
    assert app.proc is not None
    assert app.proc.returncode in (0, -signal.SIGTERM), "\n".join(app.stderr)
    print(f"exit took {elapsed:.2f}s")
    assert elapsed < DEADLINE + MARGIN, f"exit took {elapsed:.1f}s"
    lines = [r for r in app.records() if r.get("message") == "order looked up"]
    assert len(lines) == 20


@pytest.mark.slow
def test_short_script_with_dead_collector_exits_within_deadline(
    subprocess_env: dict[str, str],
) -> None:
    """No server, no signals: a script logs and returns; at interpreter exit the OTLP
    exporter (with spans too) gives up within fapilog's deadline instead of the SDK's
    default retries (which took over 90 s)."""
    code = """
import fapilog
from fapilog import configure_logging, log
from fapilog.otlp import span_processors
from fapilog.otel.resource import build_resource
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
settings = configure_logging(exporters=["stdout", "otlp"])
provider = TracerProvider(resource=build_resource(settings))
for processor in span_processors(settings):
    provider.add_span_processor(processor)
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("job")
for batch in range(5):
    with tracer.start_as_current_span("batch"):
        for i in range(400):
            log.info("row", batch=batch, i=i)
print("DONE", flush=True)
"""
    env = {
        **subprocess_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "FAPILOG_SHUTDOWN_TIMEOUT": str(DEADLINE),
        "FAPILOG_QUEUE__MAX_SIZE": "5000",
    }
    started = time.monotonic()
    code_, out, err = run_python(code, env, timeout=60)
    elapsed = time.monotonic() - started
    assert code_ == 0, err
    assert "DONE" in out
    assert out.count('"message":"row"') == 2000  # stdout unaffected by the dead collector
    assert elapsed < DEADLINE + MARGIN + 2, f"took {elapsed:.1f}s"  # + the 2,000 lines' work

"""SIGTERM drains the other processors on the providers fapilog uses, within the one exit
deadline: real processes, a real OTLP receiver, a collector that accepts and never answers.

- a script whose LoggerProvider also carries the application's own SDK batch processor
  (exporting over OTLP): on SIGTERM that processor's records reach the collector; with a
  hung collector the process still exits within ``shutdown_timeout`` + 1 s and names the
  processor it abandoned; a plain exit flushes that processor too;
- the stock configurator (``FAPILOG_AUTO_INSTRUMENT=false opentelemetry-instrument uvicorn``),
  whose SDK batch processors sit next to fapilog's Router: uvicorn's last lines and the
  request spans reach the collector.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_python, runs
from peers.instrumented_app import APP_WITH_CONFIGURE, InstrumentedApp
from peers.otlp_receiver import OtlpReceiver

SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
DEADLINE = 2.0  # shutdown_timeout in these tests
LINES = 5

SCRIPT = textwrap.dedent(
    """
    import signal, sys
    import fapilog
    from fapilog import configure_logging, log
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    configure_logging(exporters=["stdout"], shutdown_timeout=DEADLINE)
    # the application's own processor on the provider fapilog uses; its schedule delay
    # (60 s) keeps every record in it until something flushes it
    fapilog._state.STATE.pipeline.provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=ENDPOINT, timeout=30))
    )
    for n in range(LINES):
        log.info("line", n=n)
    fapilog.force_flush(5)  # on stdout: fapilog's own exporter
    print("READY", flush=True)
    signal.pause()
    """
)


def _start(env: dict[str, str], endpoint: str, script: str = SCRIPT) -> subprocess.Popen[str]:
    prelude = f"DEADLINE = {DEADLINE}\nLINES = {LINES}\nENDPOINT = {endpoint!r}\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + script],
        env={**env, "OTEL_BLRP_SCHEDULE_DELAY": "60000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _terminate(proc: subprocess.Popen[str]) -> tuple[float, str, str]:
    """Wait for READY, send SIGTERM; returns (seconds to exit, stdout, stderr)."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    lines = [first]
    while first and "READY" not in first:
        first = proc.stdout.readline()
        lines.append(first)
    assert "READY" in first, lines
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return time.monotonic() - started, "".join(lines) + out, err


@pytest.mark.slow
def test_sigterm_flushes_the_applications_own_log_processor(
    timed_env: dict[str, str],
) -> None:
    with OtlpReceiver() as receiver:
        proc = _start(timed_env, receiver.http_endpoint + "/v1/logs")
        elapsed, out, err = _terminate(proc)
        assert proc.returncode == -signal.SIGTERM, err
        # the process is gone: every export it made was answered, so stored
        bodies = [entry.body for entry in receiver.logs]
    assert sorted(bodies) == ["line"] * LINES, err
    assert elapsed < DEADLINE + 1, f"exit took {elapsed:.2f}s"
    assert out.count('"message":"line"') == LINES
    assert "abandoned" not in err


@pytest.mark.slow
def test_a_plain_exit_flushes_the_applications_own_log_processor(
    timed_env: dict[str, str],
) -> None:
    """No signal: the script returns. fapilog's own provider has no atexit hook of its own
    (fapilog drains it), so the application's processor on it is flushed by fapilog's."""
    with OtlpReceiver() as receiver:
        endpoint = receiver.http_endpoint + "/v1/logs"
        prelude = f"DEADLINE = {DEADLINE}\nLINES = {LINES}\nENDPOINT = {endpoint!r}\n"
        code, out, err = run_python(
            prelude + SCRIPT.replace("signal.pause()", "pass"),
            {**timed_env, "OTEL_BLRP_SCHEDULE_DELAY": "60000"},
        )
        assert code == 0, err
        bodies = [entry.body for entry in receiver.logs]
    assert sorted(bodies) == ["line"] * LINES, err
    assert out.count('"message":"line"') == LINES


@pytest.mark.slow
@pytest.mark.soak
def test_sigterm_abandons_a_hung_processor_and_exits_within_the_deadline(
    timed_env: dict[str, str], blackhole_port: int
) -> None:
    """Repeated (a hang is a race with the exporter's connection): every run exits within
    the deadline and a second, with fapilog's own records delivered."""
    late: list[str] = []
    for _ in range(runs(quick=1, soak=10)):
        proc = _start(timed_env, f"http://127.0.0.1:{blackhole_port}/v1/logs")
        elapsed, out, err = _terminate(proc)
        assert proc.returncode == -signal.SIGTERM, err
        if elapsed >= DEADLINE + 1:
            late.append(f"{elapsed:.2f}s")
        assert out.count('"message":"line"') == LINES  # fapilog's own exporter delivered
        [report] = [json.loads(line) for line in err.splitlines() if '"exit-abandoned"' in line]
        assert report["processors"] == ["BatchLogRecordProcessor"]
        assert report["level"] == "error"
        assert report["message"] == (
            "fapilog: the exit deadline (shutdown_timeout) passed with "
            "BatchLogRecordProcessor still flushing: abandoned, what it held is lost"
        )
    assert late == [], f"runs that exited late: {late}"


SPANS = textwrap.dedent(
    """
    import signal
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    import fapilog
    from fapilog import configure_logging, log

    class Stuck(LogRecordProcessor):
        def on_emit(self, log_record): pass
        def shutdown(self): pass
        def force_flush(self, timeout_millis=30000): raise RuntimeError("stuck")

    # the application's TracerProvider: its batch processor keeps every span (schedule delay
    # 60 s) until something flushes it
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=ENDPOINT, timeout=30),
                           schedule_delay_millis=60000)
    )
    trace.set_tracer_provider(provider)
    configure_logging(exporters=["stdout"], shutdown_timeout=DEADLINE)
    # and a processor of the application's whose flush raises, on fapilog's LoggerProvider
    fapilog._state.STATE.pipeline.provider.add_log_record_processor(Stuck())
    with trace.get_tracer("shop").start_as_current_span("checkout"):
        log.info("line")
    fapilog.force_flush(5)
    print("READY", flush=True)
    signal.pause()
    """
)


@pytest.mark.slow
def test_sigterm_flushes_the_applications_span_processor_and_reports_a_raising_one(
    timed_env: dict[str, str],
) -> None:
    with OtlpReceiver() as receiver:
        proc = _start(timed_env, receiver.http_endpoint + "/v1/traces", SPANS)
        _, out, err = _terminate(proc)
        assert proc.returncode == -signal.SIGTERM, err
        names = [span.name for span in receiver.spans]
    assert names == ["checkout"], err
    assert out.count('"message":"line"') == 1
    [report] = [json.loads(line) for line in err.splitlines() if "flush-other:Stuck" in line]
    assert report["message"] == "fapilog: flushing Stuck raised RuntimeError('stuck')"


@pytest.mark.slow
def test_stock_configurator_delivers_uvicorns_last_lines_on_sigterm(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    with OtlpReceiver() as receiver:
        env = {
            **subprocess_env,
            "FAPILOG_AUTO_INSTRUMENT": "false",
            "FAPILOG_SHUTDOWN_TIMEOUT": str(DEADLINE),
            "OTEL_SERVICE_NAME": "shop",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            # the SDK's batch processors export nothing on their own before the exit
            "OTEL_BLRP_SCHEDULE_DELAY": "60000",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "FAPILOG_QUEUE__MAX_DELAY": "0.05",  # (fapilog's queues read OTEL_BLRP_* too)
            # (the stock logging instrumentation runs: its handler on the root logger is
            # taken off by configure_logging(), so each line goes out once)
        }
        app = InstrumentedApp(tmp_path, env, APP_WITH_CONFIGURE)
        try:
            base = app.start()
            with httpx.Client(base_url=base, timeout=10) as client:
                for order in (1, 2):
                    assert client.get(f"/orders/{order}").json() == {"id": order}
            elapsed = app.stop()  # SIGTERM
        finally:
            app.kill()
        assert app.proc is not None
        assert app.proc.returncode in (0, -signal.SIGTERM), "\n".join(app.stderr)
        logs = list(receiver.logs)
        spans = list(receiver.spans)
    bodies = [str(entry.body) for entry in logs]
    for last in ("Shutting down", "Application shutdown complete."):
        assert last in bodies, bodies
    assert any(body.startswith("Finished server process") for body in bodies), bodies
    assert bodies.count("order looked up") == 2
    assert sum(span.kind == SERVER for span in spans) == 2
    # and on stdout, through fapilog's own exporter, as before
    assert any(
        str(r.get("message", "")).startswith("Finished server process") for r in app.records()
    )
    assert elapsed < DEADLINE + 5, f"exit took {elapsed:.2f}s"

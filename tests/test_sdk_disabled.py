"""``OTEL_SDK_DISABLED=true``: nothing leaves the process over OTLP, neither log records nor
spans, while the local exporters keep working. Real processes and a real OTLP receiver:
after a plain ``configure_logging(exporters=["stdout", "otlp"], app=app)`` (with a user's
own SDK batch processor on the provider too), and under ``opentelemetry-instrument``, with
fapilog's configurator and with the stock one. Each child exits before the receiver is read:
every export it made was answered, so stored, by then.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from conftest import run_python
from peers.instrumented_app import APP, APP_WITH_CONFIGURE, InstrumentedApp
from peers.otlp_receiver import OtlpReceiver

REQUESTS = 3
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER

PLAIN = textwrap.dedent(
    """
    import json, sys
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    import fapilog
    from fapilog import configure_logging, log

    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, int]:
        log.warning("order looked up", order_id=order_id)
        return {"id": order_id}

    configure_logging(exporters=["stdout", "otlp"], app=app)
    # a user's own batch processor exporting over OTLP, on the provider fapilog uses
    provider = fapilog._state.STATE.pipeline.provider
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=ENDPOINT))
    )
    with TestClient(app) as client:
        for n in range(1, REQUESTS + 1):
            assert client.get(f"/orders/{n}").json() == {"id": n}
    with trace.get_tracer("job").start_as_current_span("batch"):
        log.info("job done")
    fapilog.force_flush(10)
    figures = fapilog.stats()
    fapilog.shutdown()
    provider.force_flush(10000)
    sys.stderr.write("FIGURES " + json.dumps(figures["exporters"]) + "\\n")
    """
)


def _plain_env(env: dict[str, str], receiver: OtlpReceiver, protocol: str) -> dict[str, str]:
    return {
        **env,
        "OTEL_SDK_DISABLED": "true",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint(protocol),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
    }


def _figures(err: str) -> dict[str, dict[str, int]]:
    [line] = [line for line in err.splitlines() if line.startswith("FIGURES ")]
    figures: dict[str, dict[str, int]] = json.loads(line.removeprefix("FIGURES "))
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_plain_configure_exports_nothing_over_otlp_and_logs_locally(
    subprocess_env: dict[str, str], protocol: str
) -> None:
    with OtlpReceiver() as receiver:
        env = _plain_env(subprocess_env, receiver, protocol)
        code, out, err = _run(env, receiver)
        assert code == 0, err
        assert (receiver.logs, receiver.spans, receiver.requests) == ([], [], 0)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    looked_up = [line for line in lines if line["message"] == "order looked up"]
    assert sorted(line["order_id"] for line in looked_up) == list(range(1, REQUESTS + 1))
    assert any(line["message"] == "job done" for line in lines)
    # the otlp exporter is not built: no record is counted as exported over OTLP
    figures = _figures(err)
    assert set(figures) == {"stdout"}, figures
    assert figures["stdout"]["exported"] == figures["stdout"]["emitted"] > REQUESTS
    assert "OTEL_SDK_DISABLED=true: the 'otlp' exporter is not started" in err


def _run(env: dict[str, str], receiver: OtlpReceiver) -> tuple[int, str, str]:
    prelude = f"REQUESTS = {REQUESTS}\nENDPOINT = {receiver.http_endpoint + '/v1/logs'!r}\n"
    return run_python(prelude + PLAIN, env)


@pytest.mark.slow
def test_without_the_switch_the_same_script_exports_logs_and_spans(
    subprocess_env: dict[str, str],
) -> None:
    """The control: the script above does reach the receiver when the SDK is enabled
    (so the test above can fail), once through fapilog, once through the user's processor."""
    with OtlpReceiver() as receiver:
        env = _plain_env(subprocess_env, receiver, "http/protobuf")
        del env["OTEL_SDK_DISABLED"]
        code, _, err = _run(env, receiver)
        assert code == 0, err
        logs = receiver.wait_for_logs(
            lambda got: sum(e.body == "order looked up" for e in got) >= 2 * REQUESTS
        )
        spans = receiver.wait_for_spans(lambda got: len(got) >= REQUESTS + 1)
    assert sum(e.body == "order looked up" for e in logs) == 2 * REQUESTS
    assert {s.name for s in spans} >= {"batch"}
    assert "otlp" in _figures(err)


@pytest.mark.slow
@pytest.mark.parametrize("disabled", [True, False], ids=["disabled", "control"])
@pytest.mark.parametrize(
    ("configurator", "source"),
    [
        pytest.param("fapilog", APP, id="fapilog"),
        pytest.param("stock", APP_WITH_CONFIGURE, id="stock"),
    ],
)
def test_under_opentelemetry_instrument_nothing_reaches_the_collector(
    tmp_path: Path,
    subprocess_env: dict[str, str],
    configurator: str,
    source: str,
    disabled: bool,
) -> None:
    """With the switch, nothing reaches the collector; without it (the control: the same
    application, variables and receiver), logs and spans do."""
    with OtlpReceiver() as receiver:
        env = {
            **subprocess_env,
            "OTEL_SDK_DISABLED": "true" if disabled else "false",
            "OTEL_SERVICE_NAME": "shop",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "fapilog_stdout,otlp" if configurator == "fapilog" else "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
        }
        if configurator == "stock":
            env["FAPILOG_AUTO_INSTRUMENT"] = "false"
        app = InstrumentedApp(tmp_path, env, source)
        try:
            base = app.start()
            with httpx.Client(base_url=base, timeout=10) as client:
                for order in range(1, REQUESTS + 1):
                    assert client.get(f"/orders/{order}").json() == {"id": order}
            app.stop()  # SIGTERM: the drain, then the process is gone
        finally:
            app.kill()
        if disabled:
            assert (receiver.logs, receiver.spans, receiver.requests) == ([], [], 0)
        else:
            bodies = [str(entry.body) for entry in receiver.logs]
            assert bodies.count("order looked up") == REQUESTS, bodies
            assert sum(span.kind == SERVER for span in receiver.spans) == REQUESTS
    records = app.records()
    looked_up = [r for r in records if r.get("message") == "order looked up"]
    assert sorted(r["order_id"] for r in looked_up) == list(range(1, REQUESTS + 1))
    assert any(r.get("message", "").startswith("Finished server process") for r in records)

"""fapilog under Logfire: `logfire.configure()` first, then `configure_logging()`.

Logfire installs its SDK LoggerProvider inside a wrapper of its own (a proxy it can swap the
provider in). fapilog attaches to the SDK provider inside, keeping its Resource: fapilog's,
structlog's and stdlib records reach Logfire's log processors, with the service name of
Logfire's spans. Runs in a child interpreter (the global providers can be set once per
process), nothing sent over the network (``send_to_logfire=False``, no console).
"""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import run_python

pytest.importorskip("logfire", reason="logfire is not installed (pip install -e '.[dev]')")

# Logfire configured first, its spans and log records kept in memory (nothing sent)
_LOGFIRE = """
import logfire
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import fapilog
from fapilog._state import STATE

logs, spans = InMemoryLogRecordExporter(), InMemorySpanExporter()
logfire.configure(
    service_name="svc-lf", send_to_logfire=False, console=False, inspect_arguments=False,
    additional_span_processors=[SimpleSpanProcessor(spans)],
    advanced=logfire.AdvancedOptions(log_record_processors=[SimpleLogRecordProcessor(logs)]),
)
"""

_CHILD = (
    _LOGFIRE
    + """
import json, logging
import structlog
from opentelemetry._logs import get_logger_provider
wrapper = get_logger_provider()
inner = wrapper.provider  # Logfire's SDK LoggerProvider
resource = inner.resource
# fapilog's own service name is not forced on a provider it does not own
fapilog.configure_logging(exporters=["stdout"], service_name="not-this-one")
assert STATE.pipeline.provider is inner, (wrapper, STATE.pipeline.provider)
assert not STATE.pipeline.owns_provider
assert get_logger_provider() is wrapper and inner.resource is resource

with logfire.span("request"):
    fapilog.get_logger("app.fapilog").info("via fapilog", kind="fapilog")
    structlog.get_logger("app.structlog").info("via structlog")
    logging.getLogger("app.stdlib").warning("via stdlib")
assert fapilog.force_flush(10)
print(json.dumps({
    "logs": [
        {"body": r.log_record.body, "service": r.resource.attributes.get("service.name"),
         "trace_id": r.log_record.trace_id, "scope": r.instrumentation_scope.name}
        for r in logs.get_finished_logs()
    ],
    "spans": [
        {"name": s.name, "service": s.resource.attributes.get("service.name"),
         "trace_id": s.context.trace_id}
        for s in spans.get_finished_spans()
    ],
}))
"""
)


@pytest.mark.slow
def test_fapilog_structlog_and_stdlib_records_reach_logfires_processors(
    subprocess_env: dict[str, str],
) -> None:
    code, out, err = run_python(textwrap.dedent(_CHILD), subprocess_env)
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    logs, spans = result["logs"], result["spans"]
    # each record once, through Logfire's processors
    assert sorted(r["body"] for r in logs) == ["via fapilog", "via stdlib", "via structlog"]
    assert {r["scope"] for r in logs} == {"app.fapilog", "app.structlog", "app.stdlib"}
    # one service: the records carry the Resource of Logfire's provider, as its spans do
    (span,) = [s for s in spans if s["name"] == "request"]
    assert span["service"] == "svc-lf"
    assert {r["service"] for r in logs} == {"svc-lf"}
    assert {r["trace_id"] for r in logs} == {span["trace_id"]}
    # fapilog built no LoggerProvider of its own (the API would refuse to install it)
    assert "Overriding of current LoggerProvider" not in err
    printed = [json.loads(line) for line in out.splitlines()[:-1] if line.startswith("{")]
    assert {line["service.name"] for line in printed} == {"svc-lf"}
    assert len(printed) == 3


_CHILD_APP = (
    _LOGFIRE
    + """
import json
from fastapi import FastAPI
from fastapi.testclient import TestClient
app = FastAPI()

@app.get("/orders/{order_id}")
def order(order_id: int) -> dict:
    fapilog.get_logger("app.orders").info("order looked up", order_id=order_id)
    return {"id": order_id}

fapilog.configure_logging(app=app, exporters=["stdout"])
assert STATE.tracer_provider is None  # (no TracerProvider of fapilog's: Logfire's is used)
with TestClient(app) as client:
    assert client.get("/orders/7").status_code == 200
assert fapilog.force_flush(10)
print(json.dumps({
    "logs": [
        {"body": r.log_record.body, "service": r.resource.attributes.get("service.name"),
         "trace_id": r.log_record.trace_id}
        for r in logs.get_finished_logs()
    ],
    "spans": [
        {"name": s.name, "kind": s.kind.name, "service": s.resource.attributes.get("service.name"),
         "trace_id": s.context.trace_id}
        for s in spans.get_finished_spans()
    ],
}))
"""
)


@pytest.mark.slow
def test_request_spans_and_logs_reach_logfire_with_one_service_name(
    subprocess_env: dict[str, str],
) -> None:
    """configure_logging(app=app) under Logfire: the server span of each request is made by
    Logfire's TracerProvider (inside its wrapper), so it reaches Logfire's span processors
    with the service name of the request's log records."""
    code, out, err = run_python(textwrap.dedent(_CHILD_APP), subprocess_env)
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    servers = [s for s in result["spans"] if s["kind"] == "SERVER"]
    assert len(servers) == 1, result["spans"]
    (looked_up,) = [r for r in result["logs"] if r["body"] == "order looked up"]
    assert looked_up["trace_id"] == servers[0]["trace_id"]
    assert {s["service"] for s in result["spans"]} == {"svc-lf"}
    assert {r["service"] for r in result["logs"]} == {"svc-lf"}

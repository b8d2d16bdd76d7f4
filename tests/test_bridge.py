"""The structlog -> OpenTelemetry bridge, checked on the LogRecords an exporter receives."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import logging
import pathlib
import threading
import uuid
import warnings
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import fapilog
from conftest import MemoryExporter, run_python
from fapilog import configure_logging, get_logger, log
from fapilog.otel.logs import SeverityNumber


def _attrs(record: Any) -> dict[str, Any]:
    return dict(record.log_record.attributes or {})


def test_record_fields_inside_a_span(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name], service_name="checkout")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        log.warning("payment retried", order_id=7, attempt=2)
    expected = span.get_span_context()
    [record] = memory_exporter.records()
    rec = record.log_record
    assert rec.trace_id == expected.trace_id
    assert rec.span_id == expected.span_id
    assert rec.trace_flags == expected.trace_flags
    assert rec.timestamp and rec.timestamp > 1_700_000_000 * 10**9
    assert rec.severity_number == SeverityNumber.WARN
    assert rec.severity_text == "WARN"
    assert rec.body == "payment retried"
    # the ids travel as record fields, not as duplicate attributes
    assert _attrs(record) == {"order_id": 7, "attempt": 2}
    assert record.resource.attributes["service.name"] == "checkout"
    assert record.instrumentation_scope.name == "app"


def test_no_span_means_no_trace_ids(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    log.info("outside")
    [record] = memory_exporter.records()
    assert record.log_record.trace_id == 0
    assert "trace_id" not in _attrs(record)


def test_trace_context_is_read_on_the_calling_thread(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    tracer = TracerProvider().get_tracer("test")
    seen: dict[str, int] = {}

    def worker(name: str) -> None:
        with tracer.start_as_current_span(name) as span:
            seen[name] = span.get_span_context().trace_id
            log.info("in thread", thread=name)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = memory_exporter.records()
    assert len(records) == 8
    for record in records:
        assert record.log_record.trace_id == seen[_attrs(record)["thread"]]


@pytest.mark.parametrize(
    ("method", "number", "text"),
    [
        ("debug", SeverityNumber.DEBUG, "DEBUG"),
        ("info", SeverityNumber.INFO, "INFO"),
        ("warning", SeverityNumber.WARN, "WARN"),
        ("error", SeverityNumber.ERROR, "ERROR"),
        ("critical", SeverityNumber.FATAL, "FATAL"),
    ],
)
def test_severity_mapping(
    memory_exporter: MemoryExporter, method: str, number: SeverityNumber, text: str
) -> None:
    configure_logging(exporters=[memory_exporter.name], level="DEBUG")
    getattr(log, method)("event")
    [record] = memory_exporter.records()
    assert (record.log_record.severity_number, record.log_record.severity_text) == (number, text)


def test_exception_attributes(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("lookup failed", key="missing")
    try:
        raise ValueError("bad")
    except ValueError as exc:
        log.error("explicit", exc_info=exc)
    first, second = memory_exporter.records()
    attrs = _attrs(first)
    assert first.log_record.severity_number == SeverityNumber.ERROR
    assert attrs["exception.type"] == "KeyError"
    assert attrs["exception.message"] == "missing"
    assert "Traceback (most recent call last)" in attrs["exception.stacktrace"]
    assert 'raise KeyError("missing")' in attrs["exception.stacktrace"]
    assert attrs["key"] == "missing"
    assert _attrs(second)["exception.type"] == "ValueError"


class Color(enum.Enum):
    RED = "red"


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_awkward_values_are_coerced_never_dropped(
    memory_exporter: MemoryExporter, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    recursive: dict[str, Any] = {"a": 1}
    recursive["self"] = recursive
    looped: list[Any] = [1]
    looped.append(looped)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    values: dict[str, Any] = {
        "when": when,
        "day": dt.date(2026, 1, 2),
        "ident": ident,
        "price": decimal.Decimal("19.99"),
        "raw": b"\x00\xffbytes",
        "tags": {"b", "a"},
        "frozen": frozenset({3, 1}),
        "path": pathlib.Path("/var/log/app.log"),
        "obj": Opaque(),
        "broken": BrokenRepr(),
        "nested": {"list": [1, {"deep": dt.timedelta(seconds=90)}], 3: "int key"},
        "recursive": recursive,
        "looped": looped,
        "color": Color.RED,
        "nan": float("nan"),
        "huge": 2**80,
        "none": None,
        "tuple": (1, "two"),
        "error": ValueError("as a value"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log.info("awkward", **values)
        [record] = memory_exporter.records()
    attrs = _attrs(record)
    assert set(values) <= set(attrs)
    assert all(attrs[key] is not None for key in values if key != "none")
    assert attrs["when"] == "2026-01-02T03:04:05+00:00"
    assert attrs["day"] == "2026-01-02"
    assert attrs["ident"] == str(ident)
    assert attrs["price"] == "19.99"
    assert attrs["raw"] == b"\x00\xffbytes"
    assert list(attrs["tags"]) == ["a", "b"]
    assert list(attrs["frozen"]) == [1, 3]
    assert attrs["path"] == "/var/log/app.log"
    assert attrs["obj"] == "<Opaque thing>"
    assert "BrokenRepr" in attrs["broken"]
    assert attrs["nested"]["list"][1] == {"deep": 90.0}
    assert attrs["nested"]["3"] == "int key"
    assert attrs["recursive"]["self"] == "<recursion>"
    assert list(attrs["looped"])[1] == "<recursion>"
    assert attrs["color"] == "red"
    assert attrs["nan"] == "nan"
    assert attrs["huge"] == str(2**80)
    assert list(attrs["tuple"]) == [1, "two"]
    assert attrs["error"] == "ValueError: as a value"
    # no SDK warning about invalid attributes anywhere
    captured = capfd.readouterr()
    assert "Invalid type" not in captured.err and "dropped" not in captured.err


def test_values_are_snapshotted_at_call_time(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    items = [1, 2]
    log.info("snapshot", items=items)
    items.append(3)
    [record] = memory_exporter.records()
    assert list(_attrs(record)["items"]) == [1, 2]


def test_level_gate_and_reconfiguration(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name], level="WARNING")
    early = get_logger("early")
    log.info("dropped")
    early.warning("kept")
    configure_logging(exporters=[memory_exporter.name], level="DEBUG")
    early.debug("now visible")  # a logger created before the change follows it
    bodies = [r.log_record.body for r in memory_exporter.records()]
    assert "dropped" not in bodies
    assert "kept" in bodies and "now visible" in bodies


def test_per_logger_levels(memory_exporter: MemoryExporter) -> None:
    configure_logging(
        exporters=[memory_exporter.name], logger_levels={"noisy": "ERROR", "chatty.db": "DEBUG"}
    )
    get_logger("noisy.child").warning("hidden")
    get_logger("noisy").error("shown")
    get_logger("chatty.db.pool").debug("debug shown")
    logging.getLogger("noisy").warning("hidden too")
    bodies = sorted(r.log_record.body for r in memory_exporter.records())
    assert bodies == ["debug shown", "shown"]


def test_bound_context_and_contextvars(memory_exporter: MemoryExporter) -> None:
    from structlog.contextvars import bound_contextvars

    configure_logging(exporters=[memory_exporter.name])
    billing = get_logger("billing", region="eu").bind(tenant="acme")
    with bound_contextvars(request_id="r-1"):
        billing.info("invoice", amount=3)
    billing.unbind("tenant").info("after")
    first, second = memory_exporter.records()
    assert _attrs(first) == {"request_id": "r-1", "region": "eu", "tenant": "acme", "amount": 3}
    assert _attrs(second) == {"region": "eu"}
    assert first.instrumentation_scope.name == "billing"


def test_printf_style_and_log_method(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    log.info("%s paid %d", "alice", 3)
    log.log(logging.WARNING, "by number")
    log.log("error", "by name")
    log.info("%d broken", "x")  # bad args never raise
    bodies = [r.log_record.body for r in memory_exporter.records()]
    assert bodies[:3] == ["alice paid 3", "by number", "by name"]
    assert bodies[3].startswith("%d broken")


def test_async_methods(memory_exporter: MemoryExporter) -> None:
    import asyncio

    configure_logging(exporters=[memory_exporter.name])
    asyncio.run(log.ainfo("async hello", n=1))
    [record] = memory_exporter.records()
    assert record.log_record.body == "async hello"


def test_structlog_get_logger_uses_the_pipeline(memory_exporter: MemoryExporter) -> None:
    import structlog

    configure_logging(exporters=[memory_exporter.name])
    structlog.get_logger("plain.structlog").info("via structlog", k=1)
    [record] = memory_exporter.records()
    assert record.instrumentation_scope.name == "plain.structlog"
    assert _attrs(record) == {"k": 1}


def test_get_logger_defaults_to_module_name() -> None:
    assert get_logger().name == __name__


def test_stats_account_for_every_record(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    for i in range(50):
        log.info("counted", i=i)
    fapilog.force_flush(10)
    figures = fapilog.stats()
    assert figures["emitted"] == 50
    assert figures["exported"] == 50
    assert figures["dropped"] == 0
    assert figures["exporters"][memory_exporter.name]["exported"] == 50


def test_current_span_trace_context_processor() -> None:
    from fapilog.processors import add_trace_context

    tracer = TracerProvider().get_tracer("t")
    assert add_trace_context(None, "info", {}) == {}
    with tracer.start_as_current_span("s") as span:
        event = add_trace_context(None, "info", {})
    ctx = span.get_span_context()
    assert event == {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
    }
    assert trace.get_current_span().get_span_context().is_valid is False


REFUSING_PROCESSOR = """
import json, sys
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
import fapilog
from fapilog.pipeline.accounting import unbalanced

class Refusing(LogRecordProcessor):
    # an application's processor that raises on the records marked for it
    def __init__(self, mark):
        self.mark = mark
    def on_emit(self, log_record):
        if (log_record.log_record.attributes or {}).get("refuse") == self.mark:
            raise ValueError("refused by " + self.mark)
    def shutdown(self):
        pass
    def force_flush(self, timeout_millis=30000):
        return True

provider = LoggerProvider()
if where == "ahead":  # on the application's provider before fapilog attaches to it
    provider.add_log_record_processor(Refusing("ahead"))
set_logger_provider(provider)
fapilog.configure_logging(exporters=["stdout"])
if where == "after":  # added once fapilog's Router is on the provider
    provider.add_log_record_processor(Refusing("after"))
for i in range(10):
    fapilog.log.info("event", i=i, refuse=where if i % 3 == 0 else "none")
flushed = fapilog.force_flush(10)
figures = fapilog.stats()
result = {"flushed": flushed, "stdout": figures["exporters"]["stdout"],
          "unbalanced": unbalanced(figures)}
print("RESULT", json.dumps(result), file=sys.stderr)
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["ahead", "after"])
def test_a_log_record_processor_that_raises_is_accounted_exactly(
    subprocess_env: dict[str, str], where: str
) -> None:
    """An application's LogRecordProcessor on the provider fapilog emits through raises on
    4 records of 10. Ahead of fapilog's Router, those never reach the exporters: counted
    as dropped (`emit_error`), exactly. After it, fapilog's exporters already have them:
    delivered, and not counted as dropped as well. Either way `stats()` adds up."""
    status, out, err = run_python(f"where = {where!r}\n" + REFUSING_PROCESSOR, subprocess_env)
    assert status == 0, err
    [line] = [line for line in err.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    figures = result["stdout"]
    written = sorted(json.loads(line)["i"] for line in out.splitlines())
    refused = [0, 3, 6, 9]
    if where == "ahead":
        assert written == [i for i in range(10) if i not in refused]
        assert figures["dropped_by_reason"] == {"intake_emit_error": 4}, figures
        assert (figures["emitted"], figures["exported"], figures["dropped"]) == (10, 6, 4)
    else:
        assert written == list(range(10))
        assert figures["dropped_by_reason"] == {}, figures
        assert (figures["emitted"], figures["exported"], figures["dropped"]) == (10, 10, 0)
    assert result["flushed"] is True
    assert result["unbalanced"] == {}

"""The per-event fast paths are equivalent to the generic ones they replace: `make_record`
and `readable` build the same objects as the OTel constructors, `BatchQueue.put_many` applies
the same policy and counting as separate `put` calls, a Router inside `collect_batch` queues
every record once and in order, the JSON line spliced with the resource's bytes is the
line rendered from the whole dict, and `BoundLogger._emit` makes the calls structlog's
`_proxy_to_logger` makes."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from fapilog import BoundLogger
from fapilog._levels import ERROR_SEVERITY, WARN_SEVERITY
from fapilog.capture.record import Sink
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.render import JsonRenderer
from fapilog.otel import logs as _otel_logs
from fapilog.otel.logs import (
    LogRecord,
    ReadWriteLogRecord,
    SeverityNumber,
    make_record,
    readable,
)
from fapilog.pipeline.queue import BatchQueue
from fapilog.pipeline.router import Router, collect_batch
from fapilog.settings import QueueSettings

INFO, WARN, ERROR = 9, WARN_SEVERITY, ERROR_SEVERITY
Item = tuple[int, str]

_SPAN = trace.NonRecordingSpan(
    trace.SpanContext(0xABC, 0x12, is_remote=False, trace_flags=trace.TraceFlags(1))
)
_CONTEXTS = [None, Context(), trace.set_span_in_context(_SPAN), Context({"other": 1})]


def test_the_fast_paths_are_active_for_the_installed_otel() -> None:
    assert _otel_logs._FAST_RECORD
    assert _otel_logs._FAST_READABLE


@pytest.mark.parametrize("context", _CONTEXTS)
def test_make_record_equals_the_log_record_constructor(context: Context | None) -> None:
    fields: dict[str, Any] = {
        "timestamp": 1_764_160_000_123_456_789,
        "severity_number": SeverityNumber.WARN,
        "severity_text": "WARNING",
        "body": "paid",
        "attributes": {"order_id": 7},
    }
    fast = make_record(context=context, **fields)
    generic = LogRecord(
        observed_timestamp=fields["timestamp"], context=context or Context(), **fields
    )
    assert type(fast) is LogRecord
    assert vars(fast).keys() == vars(generic).keys()
    for name, value in vars(generic).items():
        if name != "context":  # an empty context is the worker's own, equally empty
            assert getattr(fast, name) == value, name
    assert fast.context == (context or {})
    assert fast.trace_id == (0xABC if context is _CONTEXTS[2] else 0)


def test_readable_equals_the_dataclass_constructor() -> None:
    record = make_record(
        timestamp=1, context=None, severity_number=SeverityNumber.INFO,
        severity_text="INFO", body="x", attributes={},
    )  # fmt: skip
    writable = ReadWriteLogRecord.__new__(ReadWriteLogRecord)
    writable.log_record = record
    writable.resource = Resource.create({"service.name": "svc"})
    writable.instrumentation_scope = InstrumentationScope("lib")
    writable.limits = None  # type: ignore[assignment]
    view = readable(writable)
    assert type(view) is ReadableLogRecord
    assert view == ReadableLogRecord(
        log_record=record, resource=writable.resource,
        instrumentation_scope=writable.instrumentation_scope, limits=None,
    )  # fmt: skip
    with pytest.raises(AttributeError):  # still frozen
        view.resource = Resource.get_empty()  # type: ignore[misc]


# -- put_many ------------------------------------------------------------------------------


class _Held:
    """A consumer holding the worker on its first batch until released."""

    def __init__(self) -> None:
        self.taken = threading.Event()
        self.opened = threading.Event()
        self.delivered: list[Item] = []

    def __call__(self, batch: list[Item]) -> None:
        self.taken.set()
        self.opened.wait(30)
        self.delivered.extend(batch)


def _held_queue(**options: Any) -> tuple[BatchQueue[Item], _Held]:
    held = _Held()
    settings = QueueSettings(**{"max_size": 5, "batch_size": 100, "max_delay": 0, **options})
    queue: BatchQueue[Item] = BatchQueue("t", held, lambda item: item[0], settings)
    queue.put((INFO, "blocker"))
    assert held.taken.wait(10)
    queue._random = random.Random(42)
    return queue, held


@pytest.mark.parametrize(
    "options",
    [
        {"overflow": "drop_oldest"},
        {"overflow": "drop_newest"},
        {"overflow": "block", "block_timeout": 0.01},
        {"overflow": "sample", "high_water": 0.4, "sample_ratio": 0.5},
    ],
)
def test_put_many_is_the_same_as_separate_puts(options: dict[str, Any]) -> None:
    # the held batch is older than export_timeout at once: put_many hands on without
    # waiting for room (see BatchQueue.put_many), as separate puts do
    options = {**options, "export_timeout": 0.1}
    levels = (INFO, WARN, ERROR, INFO, INFO, ERROR, WARN, INFO, ERROR, INFO, INFO, WARN)
    items = [(level, f"r{n}") for n, level in enumerate(levels)]
    outcomes = []
    for many in (False, True):
        queue, held = _held_queue(**options)
        try:
            if many:
                queue.put_many(items)
            else:
                for item in items:
                    queue.put(item)
            figures = (queue.offered, queue.accepted, dict(queue.dropped), list(queue._queue))
        finally:
            held.opened.set()
            assert queue.shutdown(10)
        assert queue.offered == queue.delivered + queue.total_dropped()
        outcomes.append((figures, held.delivered))
    assert outcomes[0] == outcomes[1]


# -- Router collecting a batch -------------------------------------------------------------


class _Target:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def put(self, record: ReadableLogRecord) -> None:
        self.calls.append(("put", [record.log_record.body]))

    def put_many(self, records: list[ReadableLogRecord], *upstream: Any) -> None:
        self.calls.append(("put_many", [record.log_record.body for record in records]))


def _writable(body: str) -> ReadWriteLogRecord:
    writable = ReadWriteLogRecord.__new__(ReadWriteLogRecord)
    writable.log_record = make_record(
        timestamp=1, context=None, severity_number=SeverityNumber.INFO,
        severity_text="INFO", body=body, attributes={},
    )  # fmt: skip
    writable.resource = Resource.get_empty()
    writable.instrumentation_scope = InstrumentationScope("lib")
    writable.limits = None  # type: ignore[assignment]
    return writable


def test_router_collects_a_batch_in_order_and_follows_a_target_swap() -> None:
    router = Router()
    first, second = _Target(), _Target()
    router.targets = (first,)  # type: ignore[assignment]
    with collect_batch():
        router.on_emit(_writable("a"))
        router.on_emit(_writable("b"))
        router.targets = (first, second)  # type: ignore[assignment]  # a reconfiguration
        router.on_emit(_writable("c"))
        assert first.calls == []  # nothing is queued before the batch ends
    assert first.calls == [("put_many", ["a", "b"]), ("put_many", ["c"])]
    assert second.calls == [("put_many", ["c"])]
    router.on_emit(_writable("d"))  # outside a batch: one put per record
    assert first.calls[-1] == ("put", ["d"])


def test_router_collects_only_on_the_batching_thread() -> None:
    router = Router()
    target = _Target()
    router.targets = (target,)  # type: ignore[assignment]
    with collect_batch():
        other = threading.Thread(target=router.on_emit, args=(_writable("other"),))
        other.start()
        other.join(10)
        router.on_emit(_writable("mine"))
    assert target.calls == [("put", ["other"]), ("put_many", ["mine"])]


# -- the JSON line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        {"user_id": 1, "ip": "10.0.0.1", "ok": True},
        {"service.name": "mine", "message": "m", "timestamp": 3, "x": [1, {"b": b"\xff"}]},
        {"huge": 2**70, "text": "ü€"},
        {},
    ],
)
@pytest.mark.parametrize(
    "resource", [Resource.create({"service.name": "svc", "k": ("a", "b")}), Resource.get_empty()]
)
def test_spliced_json_line_equals_the_whole_dict_rendered(
    attributes: dict[str, Any], resource: Resource
) -> None:
    import json

    import orjson

    from fapilog.exporters.render import _json_default

    record = make_record(
        timestamp=1_764_160_000_123_456_789, context=_CONTEXTS[2],
        severity_number=SeverityNumber.INFO, severity_text="INFO", body="hello",
        attributes=dict(attributes),
    )  # fmt: skip
    view = ReadableLogRecord(
        log_record=record, resource=resource, instrumentation_scope=InstrumentationScope("lg")
    )
    renderer = JsonRenderer()
    line = renderer.as_dict(view)
    if "huge" in line:  # beyond 64 bits: written as its decimal string
        line["huge"] = str(line["huge"])
    expected = orjson.dumps(line, default=_json_default)
    assert renderer.render(view) == expected
    assert renderer.render_line(view) == expected + b"\n"
    assert json.loads(expected)["message"] == "hello"


class _Recorder:
    """A wrapped logger that records every call made on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kw: Any) -> str:
            self.calls.append((name, args, kw))
            return f"returned by {name}"

        return method


def _final(result: str) -> Any:
    def processor(logger: Any, method_name: str, event_dict: dict[str, Any]) -> Any:
        if result == "drop":
            raise structlog.DropEvent
        if result == "str":
            return repr(sorted(event_dict.items()))
        if result == "bytes":
            return repr(sorted(event_dict.items())).encode()
        if result == "dict":
            return dict(event_dict)
        if result == "tuple":
            return ((method_name, len(event_dict)), {"seen": sorted(event_dict)})
        return 42  # not a valid result

    return processor


@pytest.mark.parametrize("result", ["drop", "str", "bytes", "dict", "tuple", "invalid"])
def test_bound_logger_emit_equals_structlogs_proxy(result: str) -> None:
    """`BoundLogger._emit` (the level methods' path) makes the same calls on the wrapped
    logger, with the same return value, as structlog's own `_proxy_to_logger`; where
    structlog raises (a final processor returning something invalid), it returns None."""

    def seen_by(log: Any, via_structlog: bool) -> Any:
        recorder = _Recorder()
        log._logger = recorder
        try:
            if via_structlog:
                out = structlog.BoundLoggerBase._proxy_to_logger(
                    log, "warning", "paid", order=7, event_id="e"
                )
            else:
                out = log._emit("warning", "paid", {"order": 7, "event_id": "e"})
        except ValueError as exc:
            out = ("ValueError", str(exc))
        return out, recorder.calls

    processors = [structlog.processors.add_log_level, _final(result)]
    ours = BoundLogger(Sink("x"), processors, {"bound": 1, "order": 0})
    theirs = BoundLogger(Sink("x"), processors, {"bound": 1, "order": 0})
    if result == "invalid":
        assert seen_by(theirs, True)[0][0] == "ValueError"
        assert seen_by(ours, False) == (None, [])  # never raises into the caller
        return
    assert seen_by(ours, False) == seen_by(theirs, True)

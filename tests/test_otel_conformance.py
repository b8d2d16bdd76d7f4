"""Every exported record checked field by field against the OpenTelemetry logs data model
and semantic conventions, at a real OTLP receiver, for each way an application logs:
fapilog's logger, structlog and stdlib `logging`.

What the specification asks of each field (https://opentelemetry.io/docs/specs/otel/logs/
data-model/ and the exception and telemetry semantic conventions):

- ``Timestamp``: when the event occurred (a stdlib record: its ``created``);
  ``ObservedTimestamp``: when it was observed (fapilog's handler, or the worker's emit),
  never before it;
- ``SeverityNumber`` in its range (TRACE 1-4 ... FATAL 21-24) and one ``SeverityText``
  per level, the data model's short name (fapilog's documented choice: WARN, FATAL);
- ``TraceId``, ``SpanId`` and ``TraceFlags`` from the active span, not repeated among
  the attributes;
- ``Body``: the message, or a map kept as a map;
- ``EventName`` from ``event.name`` (not left as an attribute);
- ``Attributes``: AnyValues (bytes as bytes), ``exception.*`` as OpenTelemetry's logging
  handler writes them; nothing the logging instrumentation adds for text formats;
- the Resource: ``telemetry.sdk.*`` and ``telemetry.distro.*`` (fapilog is the
  distribution), not the deprecated ``telemetry.auto.version``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import fapilog
from conftest import TRACE_ID, in_span, run_python
from fapilog import configure_logging, get_logger
from peers.otlp_receiver import LogEntry, OtlpReceiver

# The short name of each severity range (the data model's "displaying severity")
_SHORT = {1: "TRACE", 5: "DEBUG", 9: "INFO", 13: "WARN", 17: "ERROR", 21: "FATAL"}
_JSON_LEVEL = {"TRACE": "trace", "DEBUG": "debug", "INFO": "info", "WARN": "warning",
               "ERROR": "error", "FATAL": "critical"}  # fmt: skip
# Fields the logging instrumentation adds to every stdlib record for text formats
_CORRELATION = {"otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName"}
PATHS = ["fapilog", "structlog", "stdlib"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _short_name(severity_number: int) -> str:
    return _SHORT[(severity_number - 1) // 4 * 4 + 1]


def _log_through(path: str) -> Callable[..., None]:
    """A function logging ``(level, message, **fields)`` the way `path` logs."""
    if path == "stdlib":
        stdlib = logging.getLogger("conf.stdlib")
        stdlib.setLevel(1)

        def log_stdlib(level: str, message: Any, **fields: Any) -> None:
            method = getattr(stdlib, level)
            method(message, extra=fields)

        return log_stdlib
    logger: Any = (
        get_logger("conf.fapilog") if path == "fapilog" else structlog.get_logger("conf.structlog")
    )

    def log_structured(level: str, message: Any, **fields: Any) -> None:
        getattr(logger, level)(message, **fields)

    return log_structured


def _emit_all(path: str) -> None:
    emit = _log_through(path)
    emit("info", "conf-info", path=path, count=7, ratio=0.5, ok=True, tags=["a", "b"],
         blob=b"\x00\xff", **{"event.name": "conf.ordered"})  # fmt: skip
    emit("warning", "conf-warn", path=path)
    emit("critical", "conf-crit", path=path)
    emit("info", {"order": 7, "items": ["x"]}, path=path)
    try:
        {}["k"]
    except KeyError:
        emit("exception", "conf-exc", path=path)
    if path == "stdlib":
        logging.addLevelName(5, "TRACE")  # (as uvicorn and many applications name it)
        logging.getLogger("conf.stdlib").log(5, "conf-trace", extra={"path": path})
        # a level stdlib has no name for ("Level 7")
        logging.getLogger("conf.stdlib").log(7, "conf-unnamed", extra={"path": path})


def _check_record(entry: LogEntry, since: int, until: int) -> None:
    """The fields every record must have right, whatever it says."""
    # Timestamp and ObservedTimestamp
    assert since <= entry.timestamp <= until, entry
    assert entry.timestamp < entry.observed_timestamp <= until, entry
    # Severity: in a range, with that range's one text
    assert 1 <= entry.severity_number <= 24, entry
    if not entry.severity_text.startswith("Level "):  # (stdlib's name for an unnamed level)
        assert entry.severity_text == _short_name(entry.severity_number), entry
    # trace context: the active span's, in the record's own fields only
    assert (entry.trace_id, entry.span_id) == (TRACE_ID, "00f067aa0ba902b7"), entry
    assert entry.flags & 0xFF == 1, entry  # sampled
    assert not {"trace_id", "span_id", "trace_flags"} & set(entry.attributes), entry
    assert not _CORRELATION & set(entry.attributes), entry
    assert "event.name" not in entry.attributes, entry
    assert entry.dropped_attributes_count == 0, entry
    assert entry.scope, entry
    # the Resource
    resource = entry.resource
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    assert resource["telemetry.sdk.language"] == "python"
    assert resource["telemetry.distro.name"] == "fapilog"
    assert resource["telemetry.distro.version"] == fapilog.__version__
    assert "telemetry.auto.version" not in resource
    assert resource["service.name"] == "conformance"
    # no attribute repeats the resource
    assert not set(resource) & set(entry.attributes), entry


@pytest.mark.parametrize("path", PATHS)
def test_each_record_conforms_field_by_field(
    receiver: OtlpReceiver, tmp_path: Path, path: str
) -> None:
    file = tmp_path / "conf.log"
    configure_logging(
        exporters=["otlp", "file"],
        level="DEBUG",
        service_name="conformance",
        otlp={"endpoint": receiver.endpoint("http/protobuf"), "protocol": "http/protobuf"},
        file={"path": str(file)},
    )
    since = time.time_ns()
    in_span(lambda: _emit_all(path))
    assert fapilog.force_flush(10)
    until = time.time_ns()
    expected = 7 if path == "stdlib" else 5
    got = receiver.wait_for_logs(
        lambda logs: sum(e.attributes.get("path") == path for e in logs) >= expected
    )
    entries = [e for e in got if e.attributes.get("path") == path]
    assert len(entries) == expected
    for entry in entries:
        _check_record(entry, since, until)
    by_body = {str(e.body): e for e in entries}

    info = by_body["conf-info"]
    assert (info.severity_number, info.severity_text) == (9, "INFO")
    assert info.event_name == "conf.ordered"
    assert info.body_kind == "string_value"
    assert info.attributes == {
        "path": path, "count": 7, "ratio": 0.5, "ok": True, "tags": ["a", "b"],
        "blob": b"\x00\xff",
    }  # fmt: skip
    assert (by_body["conf-warn"].severity_number, by_body["conf-warn"].severity_text) == (
        13,
        "WARN",
    )
    assert (by_body["conf-crit"].severity_number, by_body["conf-crit"].severity_text) == (
        21,
        "FATAL",
    )
    [mapped] = [e for e in entries if e.body_kind == "kvlist_value"]
    assert mapped.body == {"order": 7, "items": ["x"]}
    failed = by_body["conf-exc"]
    assert (failed.severity_number, failed.severity_text) == (17, "ERROR")
    assert failed.attributes["exception.type"] == "KeyError"
    assert failed.attributes["exception.message"] == "k"  # (not "'k'": str(KeyError) quotes)
    assert failed.attributes["exception.stacktrace"].startswith("Traceback (most recent")
    if path == "stdlib":
        traced = by_body["conf-trace"]
        assert (traced.severity_number, traced.severity_text) == (1, "TRACE")
        unnamed = by_body["conf-unnamed"]
        assert (unnamed.severity_number, unnamed.severity_text) == (3, "Level 7")

    # the JSON line of the same records: the same facts, its own level names
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    lines = [line for line in lines if line.get("path") == path]
    assert len(lines) == expected
    for line in lines:
        entry = by_body[str(line["message"])] if isinstance(line["message"], str) else mapped
        if entry.body == "conf-unnamed":  # (no name: the line keeps stdlib's own)
            assert line["level"] == "level 7"
        else:
            assert line["level"] == _JSON_LEVEL[entry.severity_text]
        assert line["trace_id"] == TRACE_ID
    [info_line] = [line for line in lines if line["message"] == "conf-info"]
    assert info_line["event.name"] == "conf.ordered"


def test_stdlib_timestamp_is_the_records_creation(receiver: OtlpReceiver, tmp_path: Path) -> None:
    created: list[int] = []

    class Created(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            created.append(int(record.created * 1e9))
            return True

    configure_logging(
        exporters=["otlp"],
        service_name="conformance",
        otlp={"endpoint": receiver.endpoint("http/protobuf"), "protocol": "http/protobuf"},
    )
    stdlib = logging.getLogger("conf.created")
    stdlib.addFilter(Created())
    stdlib.warning("conf-created", extra={"path": "created"})
    assert fapilog.force_flush(10)
    [entry] = [
        e
        for e in receiver.wait_for_logs(
            lambda logs: any(e.attributes.get("path") == "created" for e in logs)
        )
        if e.attributes.get("path") == "created"
    ]
    assert entry.timestamp == created[0]
    assert entry.observed_timestamp > entry.timestamp


_LIMITS_SCRIPT = """
import json, sys
import fapilog
from fapilog import configure_logging, get_logger
configure_logging(exporters=["otlp", "file"], service_name="conformance",
                  otlp={"endpoint": sys.argv[1], "protocol": "http/protobuf"},
                  file={"path": sys.argv[2]})
log = get_logger("conf.limits")
log.info("limited", a=1, b="x" * 100, c=3, d=4, e=["y" * 20, "z"], f="0123456789abc")
try:
    raise ValueError("v" * 50)
except ValueError:
    log.exception("failed", g=1, h=2, i=3)
assert fapilog.shutdown(10)
"""


@pytest.mark.parametrize("scope", ["OTEL_LOGRECORD_ATTRIBUTE", "OTEL_ATTRIBUTE"])
def test_attribute_limits_hold_on_otlp_and_in_the_json_line(
    receiver: OtlpReceiver, tmp_path: Path, subprocess_env: dict[str, str], scope: str
) -> None:
    """The log record limits, or the general ones they fall back to."""
    file = tmp_path / "limits.log"
    env = dict(subprocess_env)
    env[f"{scope}_COUNT_LIMIT"] = "2"
    env[f"{scope}_VALUE_LENGTH_LIMIT"] = "10"
    endpoint = receiver.endpoint("http/protobuf")
    code, _out, err = run_python(
        _LIMITS_SCRIPT.replace("sys.argv[1]", repr(endpoint)).replace(
            "sys.argv[2]", repr(str(file))
        ),
        env,
    )
    assert code == 0, err
    assert "truncating" not in err and "is full" not in err  # (no warning per value cut)
    got = receiver.wait_for_logs(
        lambda logs: sum(e.body in ("limited", "failed") for e in logs) >= 2
    )
    entries = {e.body: e for e in got if e.body in ("limited", "failed")}
    lines = {line["message"]: line for line in map(json.loads, file.read_text().splitlines())}
    for message, dropped in (("limited", 4), ("failed", 4)):
        entry, line = entries[message], lines[message]
        assert len(entry.attributes) == 2, entry
        assert entry.dropped_attributes_count == dropped
        assert line["fapilog.dropped_attributes"] == dropped
        shown = {k: v for k, v in line.items() if k in entry.attributes}
        assert shown == entry.attributes  # the same two, cut the same way, in both
        for value in entry.attributes.values():
            for text in value if isinstance(value, list) else [value]:
                assert not isinstance(text, str) or len(text) <= 10
    # the last two set stay (as the SDK keeps them): the exception's own, cut at 10
    assert entries["limited"].attributes == {"e": ["y" * 10, "z"], "f": "0123456789"}
    assert set(entries["failed"].attributes) == {"exception.message", "exception.stacktrace"}
    assert entries["failed"].attributes["exception.message"] == "v" * 10


def test_without_limits_fapilogs_defaults_apply(
    receiver: OtlpReceiver, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """No OTEL_* limit: up to 1024 attributes and no length limit (fapilog's documented
    defaults): 1,030 attributes keep 1,024; a 5,000-character value stays whole."""
    file = tmp_path / "defaults.log"
    script = f"""
import fapilog
from fapilog import configure_logging, get_logger
configure_logging(exporters=["otlp", "file"], service_name="conformance",
                  otlp={{"endpoint": {receiver.endpoint("http/protobuf")!r},
                         "protocol": "http/protobuf"}},
                  file={{"path": {str(file)!r}}})
fields = {{f"k{{n}}": n for n in range(1029)}}
get_logger("conf.defaults").info("many", long="w" * 5000, **fields)
assert fapilog.shutdown(10)
"""
    code, _out, err = run_python(script, subprocess_env)
    assert code == 0, err
    [entry] = [
        e
        for e in receiver.wait_for_logs(lambda logs: any(e.body == "many" for e in logs))
        if e.body == "many"
    ]
    assert len(entry.attributes) == 1024
    assert entry.dropped_attributes_count == 6
    [line] = [json.loads(text) for text in file.read_text().splitlines()]
    assert line["fapilog.dropped_attributes"] == 6


_CORRELATION_SCRIPT = """
import logging
import sys
import fapilog
from opentelemetry import trace
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from fapilog import configure_logging
LoggingInstrumentor().instrument()  # (its LoggingHandler on the root logger: taken off)
configure_logging(exporters=["otlp", "stdout"], service_name="conformance",
                  otlp={"endpoint": ENDPOINT, "protocol": "http/protobuf"})
trace.set_tracer_provider(TracerProvider())
with trace.get_tracer("t").start_as_current_span("s"):
    logging.getLogger("conf.correlation").warning("correlated")
assert fapilog.shutdown(10)
"""


def test_log_correlation_fields_are_not_repeated_as_attributes(
    receiver: OtlpReceiver, subprocess_env: dict[str, str]
) -> None:
    env = dict(subprocess_env)
    env["OTEL_PYTHON_LOG_CORRELATION"] = "true"
    script = _CORRELATION_SCRIPT.replace("ENDPOINT", repr(receiver.endpoint("http/protobuf")))
    code, out, err = run_python(script, env)
    assert code == 0, err
    [entry] = [
        e
        for e in receiver.wait_for_logs(lambda logs: any(e.body == "correlated" for e in logs))
        if e.body == "correlated"
    ]
    assert len(entry.trace_id) == 32 and entry.trace_id != "0" * 32
    assert not _CORRELATION & set(entry.attributes), entry.attributes
    [line] = [json.loads(text) for text in out.splitlines() if "correlated" in text]
    assert not _CORRELATION & set(line), line
    assert line["trace_id"] == entry.trace_id


class _Declined(Exception):
    def __str__(self) -> str:
        return "declined by the bank"


@pytest.mark.parametrize(
    "error",
    [KeyError("k"), OSError(2, "No such file"), ValueError(), _Declined(), ValueError("a", "b")],
    ids=["keyerror", "oserror", "no-arguments", "own-str", "two-arguments"],
)
def test_exception_fields_as_opentelemetrys_handler_writes_them(error: Exception) -> None:
    """``exception.message`` as the SDK's LoggingHandler writes it for the same exception
    (present or absent alike); ``exception.type`` is the semantic conventions' qualified
    name, which for a builtin or a class of the main script is the bare name the handler
    writes."""
    import warnings

    from opentelemetry.sdk._logs import LoggingHandler

    from fapilog.otel.semconv import exception_attributes

    try:
        raise error
    except Exception:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = LoggingHandler._get_attributes(record)
    ours = exception_attributes(error)
    assert ours.get("exception.message") == theirs.get("exception.message")
    assert ("exception.message" in ours) == ("exception.message" in theirs)
    expected_type = theirs["exception.type"]
    if type(error).__module__ not in ("builtins", "__main__"):
        expected_type = f"{type(error).__module__}.{type(error).__qualname__}"
    assert ours["exception.type"] == expected_type


def test_the_resource_follows_the_otel_resource_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPERIMENTAL_RESOURCE_DETECTORS
    shape the Resource of fapilog's records, next to fapilog's own distribution attributes."""
    from fapilog.otel.resource import build_resource
    from fapilog.settings import LoggingSettings

    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-otel")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,service.version=9.9")
    monkeypatch.setenv("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "otel,os")
    attributes = build_resource(LoggingSettings()).attributes
    assert attributes["service.name"] == "from-otel"
    assert (attributes["team"], attributes["service.version"]) == ("payments", "9.9")
    assert attributes["os.type"]  # (the os detector's)
    assert attributes["telemetry.distro.name"] == "fapilog"

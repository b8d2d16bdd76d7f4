"""A poison value costs only itself: an integer too long to print, or beyond 64 bits, nested
or not, logged through fapilog or handed to the pipeline by other OpenTelemetry code, never
fails its batch and never raises into the caller; integers beyond signed 64 bits arrive as
decimal strings in the JSON line and over OTLP alike. Real pipeline, real files, the real
Loki and OTLP receivers."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from opentelemetry.sdk.resources import Resource

import fapilog
from conftest import ROOT
from fapilog import configure_logging, get_logger, log
from fapilog._state import STATE
from fapilog.capture.coerce import coerce_value, int_text
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.file import FileExporter
from fapilog.exporters.loki import LokiExporter
from fapilog.exporters.stdout import ConsoleExporter, StdoutJsonExporter
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import FileSettings, LokiSettings
from peers.loki_receiver import LokiReceiver
from peers.otlp_receiver import OtlpReceiver

POISON = 10**5000 - 1  # 5,000 digits: more than Python's int-to-string limit (4,300)
MARKER = "<int: 5000 digits>"
BIG = 2**70  # beyond 64 bits, printable
FAST_LOKI = {"min_backoff": 0.02, "max_backoff": 0.2, "batch_wait": 0.05}
RESOURCE = Resource.create({"service.name": "foreign"})
SCHEMA = json.loads((ROOT / "docs" / "json-line.schema.json").read_text())


@pytest.fixture(autouse=True)
def _int_limit_untouched() -> Any:
    limit = sys.get_int_max_str_digits()
    yield
    assert sys.get_int_max_str_digits() == limit  # fapilog never changes it


def file_lines(directory: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(directory.glob("*.log")):
        lines.extend(json.loads(line) for line in path.read_text().splitlines())
    return lines


def foreign(seq: int, **attributes: Any) -> ReadableLogRecord:
    """A record as other OpenTelemetry code hands it to the pipeline: not through
    fapilog's capture, so its values are not coerced."""
    record = make_record(
        timestamp=time.time_ns(), context=None, severity_number=SeverityNumber.INFO,
        severity_text="INFO", body="foreign", attributes={"seq": seq, **attributes},
    )  # fmt: skip
    return ReadableLogRecord(log_record=record, resource=RESOURCE)


# -- the burst: 200 records, one poison value in the middle ---------------------------------


@pytest.mark.parametrize("source", ["fapilog", "opentelemetry"])
def test_a_poison_int_in_a_burst_of_200_costs_only_itself(
    loki: LokiReceiver, tmp_path: Path, source: str
) -> None:
    """Logged with `log.info()` (coerced on the caller's thread) or emitted by other
    OpenTelemetry code on fapilog's provider (rendered as it is): 200 lines in the file and
    200 at the Loki receiver, the poison value a marker, nothing dropped."""
    configure_logging(
        exporters=["file", "loki"],
        file={"path": str(tmp_path / "app.log")},
        loki={"url": loki.url, **FAST_LOKI},
    )
    otel_logger = STATE.pipeline.provider.get_logger("foreign")
    burst = get_logger("burst")
    for seq in range(200):
        value = POISON if seq == 100 else seq
        if source == "fapilog":
            burst.info("event", seq=seq, value=value)
        else:
            otel_logger.emit(foreign(seq, value=value).log_record)
    assert fapilog.force_flush(30)

    lines = file_lines(tmp_path)
    assert sorted(line["seq"] for line in lines) == list(range(200))
    (poisoned,) = [line for line in lines if line["seq"] == 100]
    assert poisoned["value"] == MARKER
    jsonschema.validate(poisoned, SCHEMA)
    entries = [entry.json() for entry in loki.entries()]
    assert sorted(entry["seq"] for entry in entries) == list(range(200))
    assert [entry["value"] for entry in entries if entry["seq"] == 100] == [MARKER]
    stats = fapilog.stats()
    assert stats["dropped"] == 0
    assert stats["exporters"]["file"]["exported"] == stats["exporters"]["loki"]["exported"]


def test_each_exporter_renders_per_record(tmp_path: Path, loki: LokiReceiver) -> None:
    """The exporters themselves, handed one batch with foreign poison records (an int too
    long to print, at top level and nested; a body too long to print): every record is
    written, the poison values as markers."""
    batch = [foreign(seq) for seq in range(200)]
    batch[50] = foreign(50, value=POISON)
    batch[100] = foreign(100, nested={"list": [1, POISON, BIG]})
    batch[150] = foreign(150)
    batch[150].log_record.body = POISON

    file_exporter = FileExporter(FileSettings(path=str(tmp_path / "direct.log")))
    assert file_exporter.export(batch).name == "SUCCESS"
    file_exporter.shutdown()
    lines = file_lines(tmp_path)
    assert [line["seq"] for line in lines] == list(range(200))
    assert lines[50]["value"] == MARKER
    assert lines[100]["nested"] == {"list": [1, MARKER, str(BIG)]}
    assert lines[150]["message"] == "<int: 5000 digits>"

    loki_exporter = LokiExporter(LokiSettings(url=loki.url, **FAST_LOKI))
    try:
        assert loki_exporter.export(batch).name == "SUCCESS"
    finally:
        loki_exporter.shutdown()
    assert sorted(entry.json()["seq"] for entry in loki.entries()) == list(range(200))

    stream = io.StringIO()
    assert StdoutJsonExporter(stream).export(batch).name == "SUCCESS"
    assert [json.loads(line)["seq"] for line in stream.getvalue().splitlines()] == list(range(200))

    console = io.StringIO()
    assert ConsoleExporter(console, colors=False).export(batch).name == "SUCCESS"
    shown = console.getvalue().splitlines()
    assert len(shown) == 200
    assert MARKER in shown[50] and MARKER in shown[100] and str(BIG) in shown[100]


def test_a_record_that_cannot_be_rendered_becomes_a_line_saying_so() -> None:
    """A foreign record whose own fields are of the wrong type (no value to coerce, the
    record itself): a line of the core keys with `fapilog.error`, its neighbours intact."""
    batch = [foreign(seq) for seq in range(3)]
    batch[1].log_record.severity_text = 7  # type: ignore[assignment]
    stream = io.StringIO()
    assert StdoutJsonExporter(stream).export(batch).name == "SUCCESS"
    first, broken, last = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["seq"], last["seq"]) == (0, 2)
    assert broken["message"] == "foreign"
    assert broken["fapilog.error"] == "record could not be rendered: AttributeError"
    jsonschema.validate(broken, SCHEMA)


# -- never raises into the caller ----------------------------------------------------------


def test_nested_poison_ints_return_normally(tmp_path: Path) -> None:
    configure_logging(exporters=["file"], file={"path": str(tmp_path / "app.log")})
    assert log.info("x", v=[POISON]) is None
    assert log.info("y", v={"k": (POISON, -POISON)}, s={POISON, 1}, key={POISON: 1}) is None
    assert log.info(POISON) is None  # the message itself
    assert log.info("%d items", POISON) is None  # %-formatting it fails: logged as is
    assert fapilog.force_flush(10)
    x, y, message, formatted = file_lines(tmp_path)
    assert x["v"] == [MARKER]
    assert y["v"] == {"k": [MARKER, MARKER]}
    assert y["s"] == [1, MARKER]
    assert y["key"] == {MARKER: 1}
    assert message["message"] == MARKER
    assert formatted["message"] == f"%d items ({MARKER},)"
    assert formatted["fapilog.error"] == "message could not be formatted: ValueError"


# -- beyond 64 bits: strings everywhere ------------------------------------------------------


def test_an_int_beyond_64_bits_is_a_string_over_otlp_and_in_the_json_line(
    tmp_path: Path,
) -> None:
    with OtlpReceiver() as receiver:
        configure_logging(
            exporters=["otlp", "file"],
            file={"path": str(tmp_path / "app.log")},
            otlp={"endpoint": receiver.endpoint("grpc"), "protocol": "grpc"},
        )
        # only ints: the caller's fast path, which checks each int's range
        log.info("top", v=BIG, negative=-BIG, edge=2**63 - 1, low=-(2**63), above=2**63)
        log.info("nested", nested=[BIG, {"n": BIG}])
        assert fapilog.force_flush(10)
        received = receiver.wait_for_logs(lambda got: {"top", "nested"} <= {e.body for e in got})
    top = {
        "v": str(BIG), "negative": str(-BIG), "edge": 2**63 - 1, "low": -(2**63),
        "above": str(2**63),
    }  # fmt: skip
    nested = {"nested": [str(BIG), {"n": str(BIG)}]}
    by_body = {entry.body: entry.attributes for entry in received}
    assert by_body == {"top": top, "nested": nested}  # none dropped on the way
    lines = {line["message"]: line for line in file_lines(tmp_path)}
    assert {key: lines["top"][key] for key in top} == top
    assert lines["nested"]["nested"] == nested["nested"]
    stats = fapilog.stats()["exporters"]
    assert stats["otlp"]["exported"] == stats["file"]["exported"] == 2


# -- the marker ----------------------------------------------------------------------------


def test_int_text_counts_digits_without_printing() -> None:
    limit = sys.get_int_max_str_digits()
    assert int_text(10 ** (limit - 1)) == str(10 ** (limit - 1))  # `limit` digits: printed
    assert int_text(10**limit) == f"<int: {limit + 1} digits>"
    assert int_text(-(10**limit)) == f"<int: {limit + 1} digits>"
    for digits in (4301, 5000, 12345):
        assert int_text(10**digits - 1) == f"<int: {digits} digits>"
        assert int_text(10 ** (digits - 1)) == f"<int: {digits} digits>"
    assert coerce_value(True) is True and coerce_value(2**63 - 1) == 2**63 - 1
    assert coerce_value(-(2**63) - 1) == str(-(2**63) - 1)

"""The disk spool in one process, against the strict Loki receiver and real files: records the
sink cannot take go to disk and are replayed in order with their original timestamps; a
refused batch is never spooled; the cap, the age limit, torn records, the directories, the
alert and the accounting. Processes, crashes and workers: tests/test_spool_processes.py."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import fapilog
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import json_line
from fapilog.otel.codec import Tables, decode, encode
from fapilog.otel.logs import LogRecord, ReadableLogRecord, SeverityNumber
from fapilog.pipeline.accounting import unbalanced
from fapilog.pipeline.spool import Spool, default_base, destination_dir
from fapilog.settings import SpoolSettings
from peers.loki_receiver import LokiReceiver

FAST = {"min_backoff": 0.02, "max_backoff": 0.2, "max_retries": 2, "batch_wait": 0.05}


def configure(receiver: LokiReceiver, spool: dict[str, Any] | None = None, **loki: Any) -> None:
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="api",
        loki={"url": receiver.url, **FAST, **loki},
        spool=spool or {},
        # the tests log in tight loops: an intake that holds the burst (a slow run, under
        # coverage, must not shed at the intake what the spool is there to keep)
        queue={"max_size": 25_000},
    )


def figures() -> dict[str, Any]:
    found: dict[str, Any] = fapilog.stats()["exporters"]["loki"]
    return found


def seqs(receiver: LokiReceiver) -> list[int]:
    """The test's records the receiver stored (not fapilog's own config-changed events)."""
    lines = [json.loads(entry.line) for entry in receiver.entries()]
    return [line["seq"] for line in lines if "seq" in line]


def wait_until_settled(logged: int) -> None:
    """Until every record logged so far is on disk or counted as dropped."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = figures()
        if found["spooled"] + found["dropped"] + found["exported"] >= logged:
            return
        time.sleep(0.01)  # the spool catching up is what is observed
    raise AssertionError(f"not settled: {figures()}")


def gone(base: Path) -> bool:
    """Whether the spool's files are gone: the last acknowledgement (just after the receiver
    stored the entries, or the drop was counted) deletes them."""
    deadline = time.monotonic() + 10
    while spool_files(base) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not spool_files(base)


def spool_files(base: Path) -> list[Path]:
    return sorted(base.rglob("*.seg"))


def disk_bytes(base: Path) -> int:
    total = 0
    for path in spool_files(base):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # removed meanwhile (delivered, or the oldest evicted)
            pass
    return total


def test_records_logged_during_an_outage_arrive_in_order_once_loki_is_back(
    loki: LokiReceiver,
) -> None:
    loki.down()
    configure(loki)
    log = fapilog.get_logger("outage")
    stamps = []
    for seq in range(3000):
        stamps.append(time.time_ns())
        log.info("e", seq=seq)
    deadline = time.monotonic() + 10
    while figures()["spooled"] < 3000 and time.monotonic() < deadline:
        time.sleep(0.01)  # the spool filling is what is observed
    assert figures()["spooled"] == 3000 and figures()["exported"] == 0
    assert figures()["spool"]["written"] >= 3000
    loki.up()
    assert fapilog.force_flush(30)
    assert seqs(loki) == list(range(3000))  # all, once, in order
    entries = loki.entries()
    for seq in (0, 1500, 2999):  # the original timestamps, not the replay's
        assert abs(entries[seq].timestamp - stamps[seq]) < 50_000_000
    found = figures()
    assert found["exported"] == 3000 and found["spooled"] == 0 and found["dropped"] == 0
    assert found["spool"]["replayed"] >= 2000  # (the batch in flight may get through)
    assert unbalanced(fapilog.stats()) == {}


def test_acknowledged_records_leave_the_disk_at_once(loki: LokiReceiver, tmp_path: Path) -> None:
    loki.down()
    configure(loki, spool={"dir": str(tmp_path)})
    for seq in range(200):
        fapilog.get_logger("x").info("e", seq=seq)
    deadline = time.monotonic() + 10
    while figures()["spooled"] < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert spool_files(tmp_path)
    loki.up()
    assert fapilog.force_flush(30)
    assert seqs(loki) == list(range(200))
    assert spool_files(tmp_path) == []  # nothing delivered rests on disk
    directory = Path(figures()["spool"]["directory"])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_spool_files_are_private(loki: LokiReceiver, tmp_path: Path) -> None:
    loki.down()
    configure(loki, spool={"dir": str(tmp_path)})
    fapilog.get_logger("x").info("secret-ish", seq=0)
    deadline = time.monotonic() + 10
    while not spool_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    (segment,) = spool_files(tmp_path)
    assert stat.S_IMODE(segment.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(segment.parent.stat().st_mode) == 0o700


def test_a_batch_loki_refuses_for_good_is_never_spooled(loki: LokiReceiver) -> None:
    loki.fail(403, body="forbidden")
    configure(loki)
    for seq in range(10):
        fapilog.get_logger("x").info("e", seq=seq)
    assert fapilog.force_flush(10)
    found = figures()
    assert found["spool"]["written"] == 0 and found["spooled"] == 0
    assert found["dropped_by_reason"] == {"ingester_error": 10}


def test_a_batch_that_runs_out_of_retries_is_spooled_not_dropped(loki: LokiReceiver) -> None:
    loki.fail(503, times=3)  # one push and its 2 retries fail; the replay succeeds
    configure(loki)
    for seq in range(10):
        fapilog.get_logger("x").info("e", seq=seq)
    assert fapilog.force_flush(20)
    assert seqs(loki) == list(range(10))
    assert figures()["dropped"] == 0 and figures()["spool"]["written"] >= 10


def test_with_the_spool_off_an_outage_drops_as_before(loki: LokiReceiver) -> None:
    loki.fail(503)
    configure(loki, spool={"enabled": False})
    for seq in range(10):
        fapilog.get_logger("x").info("e", seq=seq)
    assert fapilog.force_flush(20)
    found = figures()
    assert "spool" not in found and found["spooled"] == 0
    assert found["dropped_by_reason"] == {"ingester_error": 10}


def test_the_cap_holds_on_disk_and_drops_are_counted(loki: LokiReceiver, tmp_path: Path) -> None:
    """Cap 1 MiB, 20 MiB logged during an outage."""
    loki.down()
    configure(loki, spool={"dir": str(tmp_path), "max_bytes": 1024 * 1024})
    log = fapilog.get_logger("big")
    padding = "x" * 1000
    peak = 0
    for seq in range(20_000):  # about 20 MiB of spooled records
        log.info("e", seq=seq, padding=padding)
        if seq % 1000 == 999:  # measured once the spool has settled what was logged
            wait_until_settled(seq + 1)
            peak = max(peak, disk_bytes(tmp_path))
    assert peak <= 1024 * 1024
    found = figures()
    assert found["dropped_by_reason"].get("spool_full", 0) > 15_000
    assert found["spool"]["bytes"] <= 1024 * 1024
    loki.up()
    assert fapilog.force_flush(30)
    arrived = seqs(loki)
    assert arrived == sorted(arrived) and arrived[-1] == 19_999  # the newest kept, in order
    assert unbalanced(fapilog.stats()) == {}


def test_the_alert_fires_past_80_percent_of_the_cap(loki: LokiReceiver, tmp_path: Path) -> None:
    alerts: list[dict[str, Any]] = []
    loki.down()
    fapilog.configure_logging(
        exporters=["loki"],
        loki={"url": loki.url, **FAST},
        spool={"dir": str(tmp_path), "max_bytes": 256 * 1024},
        on_alert=alerts.append,
    )
    log = fapilog.get_logger("fill")

    def log_and_wait(first: int, count: int) -> None:
        for seq in range(first, first + count):
            log.info("e", seq=seq, padding="y" * 500)
        deadline = time.monotonic() + 10
        while figures()["spooled"] < first + count and time.monotonic() < deadline:
            time.sleep(0.01)  # the records reaching the disk is what is observed

    log_and_wait(0, 100)
    per_record = figures()["spool"]["bytes"] / 100
    below = int(0.7 * 256 * 1024 / per_record) - 100
    log_and_wait(100, below)
    assert figures()["spool"]["bytes"] < 0.8 * 256 * 1024
    assert not [a for a in alerts if a["alert"] == "spool_filling"]
    log_and_wait(100 + below, int(0.15 * 256 * 1024 / per_record))
    assert figures()["spool"]["bytes"] > 0.8 * 256 * 1024
    deadline = time.monotonic() + 10
    while not [a for a in alerts if a["alert"] == "spool_filling"] and time.monotonic() < deadline:
        time.sleep(0.01)  # alerts are delivered by the monitor thread
    (alert,) = [a for a in alerts if a["alert"] == "spool_filling"]
    assert alert["exporter"] == "loki" and alert["spool_max_bytes"] == 256 * 1024
    assert alert["spool_bytes"] > 0.8 * 256 * 1024


def _leave_a_spool(receiver: LokiReceiver, base: Path, count: int) -> list[Path]:
    """A process's worth of records left on disk: configured with Loki down, shut down."""
    receiver.down()
    configure(receiver, spool={"dir": str(base)})
    for seq in range(count):
        fapilog.get_logger("left").info("e", seq=seq)
    assert fapilog.shutdown(5) is False or True  # what it could not deliver went to disk
    files = spool_files(base)
    assert files
    return files


def test_a_torn_last_record_is_skipped_and_counted_and_the_rest_replayed(
    loki: LokiReceiver, tmp_path: Path
) -> None:
    (segment,) = _leave_a_spool(loki, tmp_path, 10)
    with segment.open("r+b") as file:  # the writer died inside its last write
        file.truncate(segment.stat().st_size - 7)
    loki.up()
    configure(loki, spool={"dir": str(tmp_path)})
    assert fapilog.force_flush(10)
    deadline = time.monotonic() + 10
    while len(loki.entries()) < 9 and time.monotonic() < deadline:
        time.sleep(0.01)  # the adopted segment is replayed by the worker
    assert seqs(loki) == list(range(9))
    found = figures()
    assert found["adopted"] == 10 and found["spool"]["torn"] == 1
    assert found["dropped_by_reason"].get("spool_torn") == 1
    assert gone(tmp_path)


def test_records_older_than_max_age_are_dropped_at_replay(
    loki: LokiReceiver, tmp_path: Path
) -> None:
    _leave_a_spool(loki, tmp_path, 10)
    time.sleep(0.6)  # the records' age is what is tested
    loki.up()
    configure(loki, spool={"dir": str(tmp_path), "max_age": "0.5s"})
    deadline = time.monotonic() + 10
    while figures()["dropped_by_reason"].get("too_old", 0) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert figures()["dropped_by_reason"] == {"too_old": 10}
    assert loki.entries() == []
    assert gone(tmp_path)


def test_a_replayed_spool_goes_to_its_own_destination_only(
    loki: LokiReceiver, tmp_path: Path
) -> None:
    """Another service, or another tenant, on the same spool directory replays nothing of
    this one's records."""
    _leave_a_spool(loki, tmp_path, 5)
    loki.up()
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="other",
        loki={"url": loki.url, **FAST},
        spool={"dir": str(tmp_path)},
    )
    assert fapilog.force_flush(5)
    assert figures()["adopted"] == 0 and seqs(loki) == []
    configure(loki, spool={"dir": str(tmp_path)}, tenant_id="team-b")
    assert fapilog.force_flush(5)
    assert figures()["adopted"] == 0 and seqs(loki) == []
    configure(loki, spool={"dir": str(tmp_path)})  # the same service and destination
    deadline = time.monotonic() + 10
    while len(seqs(loki)) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seqs(loki) == list(range(5))
    replayed = {
        key for key, entries in loki.streams().items() if any("seq" in e.json() for e in entries)
    }
    assert {dict(key)["service_name"] for key in replayed} == {"api"}


def test_an_unwritable_default_directory_falls_back_to_memory_with_one_line(
    loki: LokiReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))  # no directory can be made under it
    configure(loki)
    fapilog.get_logger("x").info("works", seq=0)
    assert fapilog.force_flush(10)
    assert seqs(loki) == [0]
    assert "spool" not in figures()
    diagnostics = [
        line for line in capfd.readouterr().err.splitlines() if "spool-default-dir" in line
    ]
    assert len(diagnostics) == 1
    assert "FAPILOG_SPOOL__DIR" in diagnostics[0]


def test_an_unwritable_explicit_directory_is_a_configuration_error(
    loki: LokiReceiver, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError) as raised:
        configure(loki, spool={"dir": str(blocker / "spool")})
    assert "FAPILOG_SPOOL__DIR" in str(raised.value)


def test_the_default_directory_follows_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_base() == str(tmp_path / "fapilog" / "spool")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_base() == os.path.expanduser("~/.local/state/fapilog/spool")


def test_destinations_get_distinct_directories() -> None:
    base = "/spool"
    one = destination_dir(base, "loki", "api", "http://a:3100 tenant=")
    assert one.startswith("/spool/loki-api-")
    assert one != destination_dir(base, "loki", "api", "http://a:3100 tenant=b")
    assert one != destination_dir(base, "loki", "web", "http://a:3100 tenant=")
    assert one != destination_dir(base, "otlp", "api", "http://a:3100 tenant=")


def test_settings_read_durations_and_refuse_nonsense() -> None:
    assert SpoolSettings(max_age="12h").max_age == 12 * 3600
    assert SpoolSettings(max_age="7d").max_age == 7 * 86400
    assert SpoolSettings(max_age=90).max_age == 90
    with pytest.raises(ValueError, match="duration"):
        SpoolSettings(max_age="soon")
    with pytest.raises(ConfigurationError, match="FAPILOG_SPOOL__MAX_BYTES"):
        fapilog.LoggingSettings(spool={"max_bytes": 10})


def _record(**fields: Any) -> ReadableLogRecord:
    record = LogRecord(
        timestamp=fields.get("timestamp", 1_700_000_000_123_456_789),
        observed_timestamp=1_700_000_000_223_456_789,
        severity_text="WARNING",
        severity_number=SeverityNumber.WARN,
        body=fields.get("body", "hello"),
        attributes=fields.get("attributes", {}),
        event_name=fields.get("event_name"),
    )
    record.trace_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736
    record.span_id = 0x00F067AA0BA902B7
    return ReadableLogRecord(
        log_record=record,
        resource=Resource({"service.name": "api", "service.version": "1.2"}),
        instrumentation_scope=InstrumentationScope("orders", "0.1"),
    )


def _round_trip(original: ReadableLogRecord) -> tuple[ReadableLogRecord, bytes, Tables]:
    """`original` encoded and decoded again: the record, its frame's payload, the tables."""
    out: list[bytes] = []
    encode(original, Tables(), out)
    tables = Tables()
    for frame in out[:-1]:
        tables.learn(frame[:1], frame[1:])
    return decode(out[-1][1:], tables), out[-1][1:], tables


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"attributes": {"n": 3, "f": 1.5, "ok": True, "tags": ["a", "b"], "raw": b"\x00\xff"}},
        {"body": {"nested": {"list": [1, "two", b"3"]}, "none": None}},
        {"event_name": "order.placed", "attributes": {"key": "value"}},
        {"body": "ünïcødé ✓", "timestamp": 1},
    ],
)
def test_a_record_survives_the_round_trip_through_disk(fields: dict[str, Any]) -> None:
    original = _record(**fields)
    restored, _, _ = _round_trip(original)
    a, b = original.log_record, restored.log_record
    for name in (
        "timestamp", "observed_timestamp", "trace_id", "span_id", "severity_text",
        "severity_number", "body", "event_name",
    ):  # fmt: skip
        assert getattr(a, name) == getattr(b, name), name
    assert int(a.trace_flags or 0) == int(b.trace_flags or 0)
    assert dict(a.attributes or {}) == dict(b.attributes or {})
    assert dict(restored.resource.attributes) == dict(original.resource.attributes)
    assert restored.instrumentation_scope == original.instrumentation_scope
    assert json_line(restored) == json_line(original)


def test_the_dropped_attributes_count_survives_the_disk() -> None:
    """A record the attribute limits cut keeps its count through the spool (OTLP's
    dropped_attributes_count, the JSON line's fapilog.dropped_attributes); a frame written
    without the count (an older segment) reads as none dropped."""
    original = _record(attributes={"e": 5, "f": "0123456789"})
    counted = BoundedAttributes(attributes=original.log_record.attributes, immutable=False)
    counted.dropped = 4
    original.log_record.attributes = counted
    restored, frame, tables = _round_trip(original)
    assert restored.dropped_attributes == 4
    assert dict(restored.log_record.attributes or {}) == {"e": 5, "f": "0123456789"}
    assert json_line(restored) == json_line(original)
    assert json_line(restored)["fapilog.dropped_attributes"] == 4
    older = orjson.dumps(orjson.loads(frame)[:-1])
    assert decode(older, tables).dropped_attributes == 0


def test_two_spools_of_one_process_never_share_a_segment(tmp_path: Path) -> None:
    """An open segment is locked: a second spool on the same directory (a reconfiguration)
    takes it over only once the first has closed."""
    settings = SpoolSettings(dir=str(tmp_path))
    first = Spool(str(tmp_path), settings, "loki")
    marks, _ = first.write([_record(body=f"r{n}", timestamp=time.time_ns()) for n in range(3)])
    assert sum(mark[2] for mark in marks) == 3
    second = Spool(str(tmp_path), settings, "loki")
    assert second.adopt_orphans() == (0, 0)
    first.close()  # hands its segment over to the other spool of this process
    assert second.pending == 3 and second.adopted == 3
    replay = second.read(10)
    assert replay is not None and [r.log_record.body for r in replay.records] == ["r0", "r1", "r2"]
    second.complete(replay, 3)
    assert second.pending == 0 and spool_files(tmp_path) == []
    second.close()


def test_what_rests_on_disk_is_redacted(loki: LokiReceiver, tmp_path: Path) -> None:
    loki.down()
    configure(loki, spool={"dir": str(tmp_path)})
    fapilog.get_logger("x").info("login", seq=0, password="hunter2-secret", user="ann")
    deadline = time.monotonic() + 10
    while figures()["spooled"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    (segment,) = spool_files(tmp_path)
    content = segment.read_bytes()
    assert b"ann" in content  # the record is there
    assert b"hunter2-secret" not in content  # its secret is not


def test_the_spool_figures_are_metrics_too(loki: LokiReceiver) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    fapilog.register_metrics(MeterProvider(metric_readers=[reader]))
    loki.down()
    configure(loki)
    for seq in range(50):
        fapilog.get_logger("x").info("e", seq=seq)
    deadline = time.monotonic() + 10
    while figures()["spooled"] < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == "fapilog"
        for metric in scope.metrics
    }
    (records,) = points["fapilog.spool.records"]
    (size,) = points["fapilog.spool.bytes"]
    assert records.attributes == {"exporter": "loki"} and records.value == 50
    assert size.value == figures()["spool"]["bytes"] > 0


def test_a_custom_exporter_opts_in_to_the_spool(tmp_path: Path) -> None:
    """`register_exporter(..., spool=True)`: a custom network exporter's failed batches are
    spooled and replayed to it, keyed by its `spool_destination`."""
    from fapilog.exporters import (
        LogRecordExporter,
        LogRecordExportResult,
        register_exporter,
        unregister_exporter,
    )

    class Flaky(LogRecordExporter):
        def __init__(self) -> None:
            self.up = False
            self.received: list[int] = []
            self.spool_destination = "https://collector.example/ingest"

        def export(self, batch: Any) -> LogRecordExportResult:
            if not self.up:
                return LogRecordExportResult.FAILURE
            self.received += [dict(r.log_record.attributes)["seq"] for r in batch]
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    sink = Flaky()
    register_exporter("flaky_net", lambda settings: sink, spool=True)
    try:
        fapilog.configure_logging(exporters=["flaky_net"], spool={"dir": str(tmp_path)})
        for seq in range(20):
            fapilog.get_logger("x").info("e", seq=seq)
        deadline = time.monotonic() + 10
        while fapilog.stats()["exporters"]["flaky_net"]["spooled"] < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [path.parent.name.split("-")[0] for path in spool_files(tmp_path)] == ["flaky_net"]
        sink.up = True
        assert fapilog.force_flush(20)
        assert sink.received == list(range(20))
    finally:
        fapilog.shutdown(5)
        unregister_exporter("flaky_net")


def test_a_batch_taken_just_before_the_queue_engages_is_copied_to_disk(tmp_path: Path) -> None:
    """The worker has taken a batch from the queue but not begun to export it when the queue
    fills up and engages the spool: that batch is copied to disk with the rest, so that a
    crash while its export hangs loses none of it."""
    import threading

    from fapilog.pipeline.spooling import SpoolingQueue
    from fapilog.settings import QueueSettings

    taken, go, answer = threading.Event(), threading.Event(), threading.Event()

    class LateWorker(SpoolingQueue):
        def _process(self, batch: list[ReadableLogRecord]) -> None:
            taken.set()
            go.wait(10)  # (a busy machine: the worker thread not scheduled for a while)
            super()._process(batch)

    def export(batch: list[ReadableLogRecord]) -> None:
        answer.wait(10)  # a sink that does not answer

    spool = Spool(str(tmp_path), SpoolSettings(dir=str(tmp_path)), "loki")
    queue = LateWorker(
        "loki", export, lambda record: 9, QueueSettings(max_size=4, batch_size=4),
        spool=spool, max_delay=0,
    )  # fmt: skip
    try:
        first = [_record(body=f"r{n}") for n in range(4)]
        queue.put_many(first)
        assert taken.wait(10)  # the worker holds r0..r3, the queue is empty
        queue.put_many([_record(body=f"r{n}") for n in range(4, 9)])  # full: engaged
        assert spool.written == 9  # the batch taken (a copy) and the five behind it
    finally:
        go.set()
        answer.set()
        queue.shutdown(5)


def test_text_that_is_not_utf8_goes_through_the_spool(loki: LokiReceiver, tmp_path: Path) -> None:
    """Lone surrogates (what ``decode(errors="surrogateescape")`` leaves) in a record, its
    keys and the service name: spooled and delivered, escaped as every exporter writes them."""
    loki.down()
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="api\udcff",
        loki={"url": loki.url, **FAST},
        spool={"dir": str(tmp_path)},
    )
    fapilog.get_logger("x").info("body \udcff", seq=0, note="\ud800", **{"k\udcfe": "v"})
    wait_until_settled(1)
    assert figures()["spooled"] == 1 and figures()["dropped"] == 0
    loki.up()
    assert fapilog.force_flush(20)
    (line,) = [json.loads(entry.line) for entry in loki.entries() if "seq" in entry.line]
    assert line["message"] == "body \\udcff" and line["note"] == "\\ud800"
    assert line["k\\udcfe"] == "v"

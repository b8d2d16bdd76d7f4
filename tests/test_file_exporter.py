"""The rotating file exporter in one process: rotation by size and time, retention, gzip,
permissions, the stdout schema, and recovery from deleted/moved files and a full disk."""

from __future__ import annotations

import gzip
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import fapilog
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import ReadableLogRecord, register_exporter, unregister_exporter
from fapilog.exporters.file import FileExporter, backups
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import FileSettings


def all_files(path: Path) -> list[Path]:
    """The rotated files (oldest first), then the current file."""
    return [*backups(path), path] if path.exists() else backups(path)


def read_lines(files: list[Path]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for file in files:
        data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
        assert not data or data.endswith(b"\n"), f"{file} ends in a partial line"
        lines.extend(json.loads(raw) for raw in data.splitlines())
    return lines


def records(count: int, start: int = 0, message: str = "event") -> list[ReadableLogRecord]:
    resource = Resource.create({"service.name": "files"})
    scope = InstrumentationScope("test")
    now = time.time_ns()
    return [
        ReadableLogRecord(
            log_record=make_record(
                timestamp=now + index,
                context=None,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=message,
                attributes={"seq": start + index},
            ),
            resource=resource,
            instrumentation_scope=scope,
        )
        for index in range(count)
    ]


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_200k_events_with_1mb_rotation_are_complete_and_exact(tmp_path: Path) -> None:
    """Rotation by size: 200,000 events, 1 MB limit: every file complete and under the limit,
    every line valid JSON, exactly 200,000 lines, each event once."""
    path = tmp_path / "logs" / "app.log"
    fapilog.configure_logging(
        exporters=["file"],
        file={"path": str(path), "max_bytes": 1_000_000, "backup_count": 1000},
        queue={"max_size": 250_000},
    )
    log = fapilog.get_logger("bulk")
    total = 200_000
    for seq in range(total):
        log.info("e", seq=seq)
    assert fapilog.force_flush(120)

    files = all_files(path)
    assert len(files) > 20  # it really rotated, many times
    for file in files:
        assert file.stat().st_size <= 1_000_000
    lines = read_lines(files)
    assert len(lines) == total
    assert sorted(line["seq"] for line in lines) == list(range(total))
    figures = fapilog.stats()["exporters"]["file"]
    assert figures["exported"] == total
    assert figures["dropped"] == 0


def test_retention_keeps_backup_count_newest_files(tmp_path: Path) -> None:
    """Retention: with backup_count=3 exactly 3 rotated files remain, and
    they hold the newest events, without a gap up to the last one."""
    path = tmp_path / "app.log"
    fapilog.configure_logging(
        exporters=["file"],
        file={"path": str(path), "max_bytes": 20_000, "backup_count": 3},
        queue={"max_size": 10_000},
    )
    log = fapilog.get_logger("retention")
    for seq in range(3000):
        log.info("e", seq=seq)
    assert fapilog.force_flush(30)
    kept = backups(path)
    assert len(kept) == 3
    seqs = sorted(line["seq"] for line in read_lines([*kept, path]))
    assert seqs == list(range(seqs[0], 3000))
    assert seqs[0] > 0  # older files were deleted


def test_lines_have_the_stdout_schema(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.log"
    fapilog.configure_logging(
        exporters=["stdout", "file"], json_console=True, file={"path": str(path)}
    )
    fapilog.get_logger("schema").warning("paid", order_id=7, amount=1.5)
    assert fapilog.force_flush(10)
    stdout_line = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    (file_line,) = read_lines([path])
    assert file_line == stdout_line
    assert file_line["message"] == "paid"
    assert file_line["order_id"] == 7
    assert file_line["level"] == "warning"


def test_directory_is_created_and_file_not_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "app.log"
    fapilog.configure_logging(exporters=["file"], file={"path": str(path)})
    fapilog.get_logger("x").info("hello")
    assert fapilog.force_flush(10)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # every directory fapilog created, not only the last one, is closed to others
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o007 == 0, directory


def test_mode_from_the_environment_is_octal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "app.log"
    monkeypatch.setenv("FAPILOG_EXPORTERS", "file")
    monkeypatch.setenv("FAPILOG_FILE__PATH", str(path))
    monkeypatch.setenv("FAPILOG_FILE__MODE", "0600")
    settings = fapilog.configure_logging()
    assert settings.file.mode == 0o600
    fapilog.get_logger("x").info("hello")
    assert fapilog.force_flush(10)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_directory_as_path_fails_at_configure_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"FAPILOG_FILE__PATH.*is a directory"):
        fapilog.configure_logging(exporters=["file"], file={"path": str(tmp_path)})


def test_writes_happen_on_the_exporters_worker_thread(tmp_path: Path) -> None:
    threads: list[int] = []

    class Probe(FileExporter):
        def export(self, batch: Any) -> Any:
            threads.append(threading.get_ident())
            return super().export(batch)

    register_exporter("file_probe", lambda s: Probe(s.file))
    try:
        fapilog.configure_logging(exporters=["file_probe"], file={"path": str(tmp_path / "a")})
        fapilog.get_logger("x").info("hello")
        assert fapilog.force_flush(10)
    finally:
        unregister_exporter("file_probe")
    assert threads
    assert threading.get_ident() not in threads
    assert read_lines([tmp_path / "a"])[0]["message"] == "hello"


def test_hourly_rotation_at_the_top_of_the_hour(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    start = 1_800_000_000 - 1_800_000_000 % 3600 + 3599  # hh:59:59 UTC
    clock = Clock(start)
    exporter = FileExporter(FileSettings(path=str(path), when="hourly", max_bytes=0), clock=clock)
    exporter.export(records(3))
    clock.now = start + 0.5
    exporter.export(records(2, start=3))
    assert backups(path) == []
    clock.now = start + 2  # next hour
    exporter.export(records(4, start=5))
    (rotated,) = backups(path)
    assert (
        rotated.name == f"app.log.{time.strftime('%Y%m%dT%H%M%S', time.gmtime(start + 2))}.000000"
    )
    assert [line["seq"] for line in read_lines([rotated])] == [0, 1, 2, 3, 4]
    assert [line["seq"] for line in read_lines([path])] == [5, 6, 7, 8]
    exporter.shutdown()


def test_daily_rotation_with_interval_and_local_time(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    day = 86400
    start = 1_800_000_000 - 1_800_000_000 % (2 * day) + 10  # just after a 2-day boundary
    clock = Clock(start)
    settings = FileSettings(path=str(path), when="daily", interval=2, utc=True, max_bytes=0)
    exporter = FileExporter(settings, clock=clock)
    exporter.export(records(1))
    clock.now = start + day  # next midnight: not a 2-day boundary
    exporter.export(records(1, start=1))
    assert backups(path) == []
    clock.now = start + 2 * day
    exporter.export(records(1, start=2))
    assert len(backups(path)) == 1
    exporter.shutdown()
    # midnight in local time works the same way (the container's zone is whatever it is)
    local = FileExporter(
        FileSettings(path=str(tmp_path / "l.log"), when="midnight", utc=False), clock=clock
    )
    local.export(records(1))
    clock.now += day + 1
    local.export(records(1))
    assert len(backups(tmp_path / "l.log")) == 1
    local.shutdown()


def test_a_stale_file_from_an_earlier_day_rotates_on_first_write(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b'{"message": "yesterday"}\n')
    two_days_ago = time.time() - 2 * 86400
    os.utime(path, (two_days_ago, two_days_ago))
    exporter = FileExporter(FileSettings(path=str(path), when="daily"))
    exporter.export(records(1))
    (rotated,) = backups(path)
    assert read_lines([rotated]) == [{"message": "yesterday"}]
    assert read_lines([path])[0]["seq"] == 0
    exporter.shutdown()


def test_rotated_files_are_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    exporter = FileExporter(
        FileSettings(path=str(path), max_bytes=5_000, backup_count=100, gzip=True)
    )
    for start in range(0, 600, 50):
        assert exporter.export(records(50, start=start)).name == "SUCCESS"
    rotated = backups(path)
    assert len(rotated) > 3
    assert all(file.name.endswith(".gz") for file in rotated)
    assert all(stat.S_IMODE(file.stat().st_mode) == 0o640 for file in rotated)
    assert not list(tmp_path.glob("*.tmp"))
    seqs = [line["seq"] for line in read_lines(all_files(path))]
    assert seqs == list(range(600))
    exporter.shutdown()


def test_retention_by_age_deletes_old_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    old = tmp_path / "app.log.20200101T000000.000000"
    recent = tmp_path / "app.log.20200102T000000.000000.gz"
    unrelated = tmp_path / "other.log.20200101T000000.000000"
    for file in (old, recent, unrelated):
        file.write_bytes(b"")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    os.utime(unrelated, (ten_days_ago, ten_days_ago))
    exporter = FileExporter(
        FileSettings(path=str(path), max_bytes=2_000, backup_count=50, max_age_days=7)
    )
    exporter.export(records(40))  # rotates at least once: retention runs
    assert not old.exists()
    assert recent.exists()
    assert unrelated.exists()
    exporter.shutdown()


def test_backup_count_zero_keeps_no_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=2_000, backup_count=0))
    exporter.export(records(100))
    assert backups(path) == []
    assert path.stat().st_size <= 2_000
    assert exporter.stats()["rotations"] > 0
    exporter.shutdown()


def test_a_file_moved_away_by_logrotate_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    fapilog.configure_logging(exporters=["file"], file={"path": str(path)})
    log = fapilog.get_logger("rotate")
    log.info("before", seq=0)
    assert fapilog.force_flush(10)
    path.rename(tmp_path / "app.log.1")  # what logrotate's `create` mode does
    log.info("after", seq=1)
    assert fapilog.force_flush(10)
    assert [line["seq"] for line in read_lines([tmp_path / "app.log.1"])] == [0]
    assert [line["seq"] for line in read_lines([path])] == [1]
    path.unlink()  # deleted outright
    log.info("again", seq=2)
    assert fapilog.force_flush(10)
    assert [line["seq"] for line in read_lines([path])] == [2]
    assert fapilog.stats()["exporters"]["file"]["dropped"] == 0


def test_disk_full_is_counted_reported_once_and_writing_resumes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full to simulate a full disk")
    path = tmp_path / "app.log"
    path.symlink_to("/dev/full")  # every write fails with ENOSPC
    fapilog.configure_logging(exporters=["file"], file={"path": str(path)})
    log = fapilog.get_logger("full")
    for batch in range(3):  # three separate batches, each failing
        log.info("lost", seq=batch)
        assert fapilog.force_flush(10)
    figures = fapilog.stats()["exporters"]["file"]
    assert figures["dropped"] == 3
    assert figures["exported"] == 0
    path.unlink()  # space again: the path is a regular file once more
    log.info("kept", seq=3)
    assert fapilog.force_flush(10)
    assert [line["seq"] for line in read_lines([path])] == [3]
    diagnostics = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    failures = [d for d in diagnostics if d.get("fapilog.diagnostic") == f"file:{path}"]
    assert len(failures) == 1
    assert "No space left on device" in failures[0]["message"]
    resumed = [d for d in diagnostics if d.get("fapilog.diagnostic") == f"file-resumed:{path}"]
    assert len(resumed) == 1
    assert "3 records were dropped" in resumed[0]["message"]


def test_per_process_mode_names_the_file_after_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    fapilog.configure_logging(
        exporters=["file"], file={"path": str(path), "multiprocess": "per_process"}
    )
    fapilog.get_logger("x").info("mine")
    assert fapilog.force_flush(10)
    own = tmp_path / f"app.{os.getpid()}.log"
    assert read_lines([own])[0]["message"] == "mine"
    assert not path.exists()
    assert not list(tmp_path.glob(".*.lock"))


def test_shutdown_exporter_refuses_and_repr_is_plain(tmp_path: Path) -> None:
    exporter = FileExporter(FileSettings(path=str(tmp_path / "x.log")))
    assert "x.log" in repr(exporter)
    assert exporter.export([]).name == "SUCCESS"
    assert exporter.force_flush()
    exporter.shutdown()
    assert exporter.export(records(1)).name == "FAILURE"

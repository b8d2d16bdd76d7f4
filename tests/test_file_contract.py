"""The file exporter's contract, in-process on real files: what a failed write counts and
says (and what it says when writing resumes), rotated files named so that they sort by age
even when many rotations fall in one microsecond, descriptors gone from under it, and how
it names itself."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource

from fapilog.exceptions import ConfigurationError
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters import file as file_module
from fapilog.exporters.contract import LogRecordExportResult
from fapilog.exporters.file import SPEC, FileExporter, backups
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import FileSettings, LoggingSettings
from queue_support import Listened

SUCCESS, FAILURE = LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE


def batch(start: int, count: int = 1) -> list[ReadableLogRecord]:
    return [
        ReadableLogRecord(
            log_record=make_record(
                timestamp=1_700_000_000_000_000_000,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=f"e{n}",
                attributes={"n": n},
                context=None,
            ),
            resource=Resource({"service.name": "api"}),
        )
        for n in range(start, start + count)
    ]


def numbers(path: Path) -> list[int]:
    return [json.loads(line)["n"] for line in path.read_text().splitlines()]


def test_a_failed_write_is_counted_said_once_and_writing_resumes_with_what_was_lost(
    tmp_path: Path, listened: Listened, capfd: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")
    path = blocker / "app.log"
    exporter = FileExporter(FileSettings(path=str(path)))
    assert exporter.export(batch(0, 3)) == FAILURE
    assert exporter.stats() == {"written": 0, "dropped": 3, "rotations": 0, "errors": 1}
    message, fields = listened.wait_for(f"file:{path}")
    assert message == (
        f"fapilog file exporter cannot write {path}: NotADirectoryError(20, 'Not a "
        "directory'); records are dropped (see fapilog.stats()) and every new batch retries"
    )
    assert fields == {"path": str(path), "errno": 20}
    said = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    assert [line["level"] for line in said if line["message"] == message] == ["error"]

    assert exporter.export(batch(3, 2)) == FAILURE
    assert exporter.stats() == {"written": 0, "dropped": 5, "rotations": 0, "errors": 2}

    blocker.unlink()
    assert exporter.export(batch(5)) == SUCCESS
    message, fields = listened.wait_for(f"file-resumed:{path}")
    assert message == (
        f"fapilog file exporter: writing to {path} resumed; 5 records were dropped meanwhile"
    )
    assert fields == {"path": str(path), "dropped": 5}
    assert exporter.export(batch(6)) == SUCCESS
    assert [r[0] for r in listened.reports].count(f"file-resumed:{path}") == 1
    assert exporter.stats() == {"written": 2, "dropped": 5, "rotations": 0, "errors": 2}
    assert numbers(path) == [5, 6]
    exporter.shutdown()


def test_an_empty_batch_writes_nothing_and_after_shutdown_exports_fail(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    exporter = FileExporter(FileSettings(path=str(path)))
    assert exporter.export([]) == SUCCESS
    assert not path.exists()
    exporter.shutdown()
    assert exporter.export(batch(0)) == FAILURE
    assert exporter.stats()["dropped"] == 0
    assert exporter.force_flush() is True


def test_rotations_in_one_microsecond_are_numbered_and_sort_by_age(tmp_path: Path) -> None:
    """Twelve rotations at the same instant (a frozen clock): each backup keeps its lines,
    none overwrites another, and `backups()` lists them oldest first (``-10`` after ``-9``)."""
    path = tmp_path / "app.log"
    frozen = 1_700_000_000.25
    exporter = FileExporter(
        FileSettings(path=str(path), max_bytes=1024, backup_count=100), clock=lambda: frozen
    )
    for n in range(13):
        assert exporter.export(batch(n * 10, 10)) == SUCCESS  # ~2 KiB: a rotation each
    exporter.shutdown()
    rotated = backups(path)
    stamp = "20231114T221320.250000"
    assert [p.name for p in rotated][:3] == [
        f"app.log.{stamp}",
        f"app.log.{stamp}-1",
        f"app.log.{stamp}-2",
    ]
    assert rotated[-1].name == f"app.log.{stamp}-{len(rotated) - 1}"
    everything = [n for p in rotated for n in numbers(p)] + numbers(path)
    assert everything == list(range(130))
    assert exporter.stats()["rotations"] == len(rotated)


def test_a_clock_gone_back_still_names_the_next_backup_after_the_last(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    now = [1_700_000_000.5]
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=1024), clock=lambda: now[0])
    exporter.export(batch(0, 10))
    exporter.export(batch(10, 10))
    now[0] -= 3600
    exporter.export(batch(20, 10))
    exporter.shutdown()
    rotated = backups(path)
    stamp = "app.log.20231114T221320.500000"
    assert [p.name for p in rotated] == [stamp] + [f"{stamp}-{n}" for n in range(1, len(rotated))]
    assert [n for p in rotated for n in numbers(p)] + numbers(path) == list(range(30))


def test_backups_are_only_the_rotated_files_of_that_path(tmp_path: Path) -> None:
    for name in (
        "app.log.20240101T000000.000001",
        "app.log.20240101T000000.000001-2.gz",
        "app.log.20240101T000000.000000",
        "app.log.20240101T000000.000001-10",
        "app.log.20240101T000000.000001.gz.tmp",
        "other.log.20240101T000000.000000",
        "app.log.2024",
    ):
        (tmp_path / name).write_text("")
    assert [p.name for p in backups(tmp_path / "app.log")] == [
        "app.log.20240101T000000.000000",
        "app.log.20240101T000000.000001",
        "app.log.20240101T000000.000001-2.gz",
        "app.log.20240101T000000.000001-10",
    ]
    assert backups(tmp_path / "missing" / "app.log") == []


def test_shutdown_never_raises_though_its_descriptors_are_gone(tmp_path: Path) -> None:
    exporter = FileExporter(FileSettings(path=str(tmp_path / "app.log")))
    assert exporter.export(batch(0)) == SUCCESS
    assert exporter._fd is not None and exporter._lock_fd is not None
    os.close(exporter._fd)
    os.close(exporter._lock_fd)
    exporter.shutdown()


@pytest.mark.parametrize("mode", ["lock", "per_process"])
def test_the_exporter_names_its_path_and_mode(tmp_path: Path, mode: Any) -> None:
    path = tmp_path / "app.log"
    exporter = FileExporter(FileSettings(path=str(path), multiprocess=mode))
    assert repr(exporter) == f"FileExporter(path={str(path)!r}, multiprocess={mode!r})"
    expected = path if mode == "lock" else tmp_path / f"app.{os.getpid()}.log"
    assert exporter.path == expected


class RenameFails:
    """`os` for the file exporter, whose rename fails while `failing` is set."""

    def __init__(self) -> None:
        self.failing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def rename(self, source: Any, target: Any) -> None:
        if self.failing:
            raise PermissionError(13, "Permission denied")
        os.rename(source, target)


def test_a_rotation_the_directory_refuses_keeps_writing_to_the_current_file_and_says_so(
    tmp_path: Path,
    listened: Listened,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_os = RenameFails()
    monkeypatch.setattr(file_module, "os", fake_os)
    path = tmp_path / "app.log"
    now = [1_700_000_000.0]
    exporter = FileExporter(
        FileSettings(path=str(path), when="hourly", max_bytes=0), clock=lambda: now[0]
    )
    assert exporter.export(batch(0, 5)) == SUCCESS
    now[0] += 3600  # the hourly rollover is due: the rename fails
    assert exporter.export(batch(5, 5)) == SUCCESS
    assert exporter.stats() == {"written": 10, "dropped": 0, "rotations": 0, "errors": 1}
    assert numbers(path) == list(range(10))
    message, fields = listened.wait_for(f"file-rotate:{path}")
    assert message == (
        f"fapilog file exporter cannot rotate {path}: PermissionError(13, 'Permission "
        "denied'); writing on to the current file"
    )
    assert fields == {"path": str(path)}
    said = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    assert [line["level"] for line in said if line["message"] == message] == ["error"]
    # the next rollover is an hour later, not at once and not never
    fake_os.failing = False
    now[0] += 1800
    assert exporter.export(batch(10)) == SUCCESS
    assert exporter.stats()["rotations"] == 0
    now[0] += 1800
    assert exporter.export(batch(11)) == SUCCESS
    assert exporter.stats()["rotations"] == 1
    exporter.shutdown()
    assert [n for p in backups(path) for n in numbers(p)] + numbers(path) == list(range(12))


def test_a_refused_size_rotation_is_tried_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "os", RenameFails())
    path = tmp_path / "app.log"
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=1024))
    assert exporter.export(batch(0, 20)) == SUCCESS  # about 4 KiB: over the size 3 times
    assert exporter.stats() == {"written": 20, "dropped": 0, "rotations": 0, "errors": 1}
    assert numbers(path) == list(range(20))
    exporter.shutdown()


def test_a_rotation_prunes_old_backups_and_stale_gzip_temporaries_only(tmp_path: Path) -> None:
    """Retention by age (`max_age_days`) and the half-written archives another process left
    (older than 10 minutes) go at a rotation; everything else stays."""
    path = tmp_path / "app.log"
    now = time.time()
    old = tmp_path / "app.log.20200101T000000.000000"
    young = tmp_path / "app.log.20200102T000000.000000"
    stale_tmp = tmp_path / "app.log.20200103T000000.000000.gz.tmp"
    fresh_tmp = tmp_path / "app.log.20200104T000000.000000.gz.tmp"
    others = [tmp_path / "other.log.x.gz.tmp", tmp_path / "app.logx.gz.tmp", tmp_path / "keep"]
    for item, age in [(old, 86400 * 2 + 1.5), (young, 86400 * 2 - 5), (stale_tmp, 660)]:
        item.write_text("")
        os.utime(item, (now - age, now - age))
    for item in [fresh_tmp, *others]:
        item.write_text("")
        os.utime(item, (now - 590, now - 590))
    os.utime(others[0], (now - 9999, now - 9999))
    os.utime(others[1], (now - 9999, now - 9999))
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=1024, max_age_days=2))
    assert exporter.export(batch(0, 10)) == SUCCESS  # one rotation
    exporter.shutdown()
    assert not old.exists() and not stale_tmp.exists()
    assert young.exists() and fresh_tmp.exists()
    assert all(item.exists() for item in others)


def test_a_path_the_exporter_cannot_use_fails_at_configure_time_naming_the_setting(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x")
    for path, problem in [
        (tmp_path, "it is a directory; give the path of a file, e.g. logs/app.log"),
        (blocker / "app.log", f"{blocker} is not a directory"),
    ]:
        with pytest.raises(ConfigurationError) as raised:
            SPEC.factory(LoggingSettings(file={"path": str(path)}))
        assert str(raised.value) == (
            f"FAPILOG_FILE__PATH (setting 'file.path'): {str(path)!r} is invalid: {problem}"
        )
    made = SPEC.factory(LoggingSettings(file={"path": str(tmp_path / "logs" / "app.log")}))
    assert isinstance(made, FileExporter)


@pytest.mark.parametrize(("mode", "directory_mode"), [(0o640, 0o750), (0o604, 0o705)])
def test_the_directories_it_creates_can_be_searched_wherever_the_file_can_be_read(
    tmp_path: Path, mode: int, directory_mode: int
) -> None:
    path = tmp_path / "a" / "b" / "app.log"
    previous = os.umask(0)
    try:
        exporter = FileExporter(FileSettings(path=str(path), mode=mode))
        assert exporter.export(batch(0)) == SUCCESS
        exporter.shutdown()
    finally:
        os.umask(previous)
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert directory.stat().st_mode & 0o7777 == directory_mode
    assert path.stat().st_mode & 0o7777 == mode

"""The file exporter's rotation contract at its edges, in-process on real files: the size
limit to the byte (a file is never rotated empty, nor cut before it is full), the rollover
instant and local midnight against UTC, a file emptied under it (copytruncate), the error
counts, the "resumed" report, and retention that meets files vanishing or not removable."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fapilog import _diag
from fapilog.exporters import file as file_module
from fapilog.exporters.contract import LogRecordExportResult
from fapilog.exporters.file import FileExporter, backups
from fapilog.settings import FileSettings
from fork_support import in_forked_child
from queue_support import Listened
from test_file_contract import RenameFails, batch, numbers
from test_file_exporter import Clock

SUCCESS, FAILURE = LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE
HOUR = 3600.0
START = 1_800_000_000.0 // HOUR * HOUR  # an hour's first second


def line_length() -> int:
    """The bytes of one line of `batch(n)` for a one-digit n (they are all alike)."""
    exporter = FileExporter(FileSettings(path="/nonexistent/app.log"))
    return len(exporter._renderer.render_line(batch(0)[0]))


def hourly(path: Path) -> tuple[FileExporter, Clock]:
    """An exporter rotating hourly (UTC) on a clock 10 s into the hour `START`."""
    clock = Clock(START + 10)
    return FileExporter(FileSettings(path=str(path), when="hourly", utc=True), clock=clock), clock


def files(path: Path) -> list[list[int]]:
    """The numbers in each file, the oldest backup first, the current file last."""
    return [numbers(backup) for backup in backups(path)] + [numbers(path)]


# -- size ----------------------------------------------------------------------------------------


def test_a_file_fills_to_max_bytes_exactly_and_the_next_line_starts_a_new_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=2 * line_length()))
    try:
        assert exporter.export(batch(0, 7)) == SUCCESS  # one batch, several files
        assert files(path) == [[0, 1], [2, 3], [4, 5], [6]]
        assert exporter.export(batch(7)) == SUCCESS
        assert exporter.export(batch(8)) == SUCCESS
        assert files(path) == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    finally:
        exporter.shutdown()
    assert exporter.stats()["rotations"] == 4


def test_a_line_longer_than_max_bytes_goes_alone_and_an_empty_file_is_never_rotated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=line_length() // 2))
    try:
        assert exporter.export(batch(0)) == SUCCESS
        assert files(path) == [[0]]
        assert exporter.export(batch(1, 2)) == SUCCESS
        assert files(path) == [[0], [1], [2]]
    finally:
        exporter.shutdown()


def test_a_file_holding_a_single_byte_is_rotated_before_a_line_that_does_not_fit(
    tmp_path: Path,
) -> None:
    """Whatever is in the file (a line cut by a crash, another writer's byte) counts."""
    path = tmp_path / "app.log"
    path.write_bytes(b"x")
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=line_length()))
    try:
        assert exporter.export(batch(0)) == SUCCESS
    finally:
        exporter.shutdown()
    assert [backup.read_bytes() for backup in backups(path)] == [b"x"]
    assert numbers(path) == [0]


def in_a_child_with_a_file_size_limit(size: int, work: Callable[[], dict[str, Any]]) -> Any:
    """Run `work` in a forked child whose files may not grow past `size` bytes (RLIMIT_FSIZE:
    a write past it is cut short, then fails with EFBIG, as a disk filling up does) and
    return what it returned. In a child, so that nothing else of the test process (its
    output, its log files) meets the limit."""

    def limited() -> dict[str, Any]:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
        return work()

    return in_forked_child(limited)


def test_a_group_cut_short_before_a_rotation_is_cut_back_to_where_it_began(
    tmp_path: Path,
) -> None:
    """The lines that fill the current file go out as one write before the file rotates;
    the disk fills in the middle of it: the file is cut back to what it held before, and
    the batch is counted as dropped."""
    path = tmp_path / "app.log"
    length = line_length()
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=3 * length))

    def fill_the_disk() -> dict[str, Any]:
        errors: list[Any] = []
        _diag.add_listener(lambda key, message, fields: errors.append([key, fields.get("errno")]))
        result = exporter.export(batch(1, 3))
        exporter.shutdown()
        return {"result": result.name, "stats": exporter.stats(), "errors": errors}

    try:
        assert exporter.export(batch(0)) == SUCCESS
        outcome = in_a_child_with_a_file_size_limit(length + length * 3 // 2, fill_the_disk)
    finally:
        exporter.shutdown()
    assert path.stat().st_size == length and numbers(path) == [0]
    assert outcome == {
        "result": "FAILURE",
        "stats": {"written": 1, "dropped": 3, "rotations": 0, "errors": 1},
        "errors": [[f"file:{path}", errno.EFBIG]],
    }


# -- time ----------------------------------------------------------------------------------------


def test_the_rollover_instant_itself_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    exporter, clock = hourly(path)
    try:
        assert exporter.export(batch(0)) == SUCCESS
        clock.now = START + HOUR - 0.001
        assert exporter.export(batch(1)) == SUCCESS
        clock.now = START + HOUR
        assert exporter.export(batch(2)) == SUCCESS
    finally:
        exporter.shutdown()
    assert files(path) == [[0, 1], [2]]


def test_a_file_emptied_under_it_at_a_rollover_is_not_rotated_and_the_next_one_holds(
    tmp_path: Path,
) -> None:
    """logrotate's copytruncate empties the file: the rollover then rotates nothing, and
    the file rotates at the following one. A single byte left is rotated."""
    path = tmp_path / "app.log"
    exporter, clock = hourly(path)
    try:
        assert exporter.export(batch(0)) == SUCCESS
        os.truncate(path, 0)
        clock.now = START + HOUR + 10
        assert exporter.export(batch(1)) == SUCCESS
        assert files(path) == [[1]]
        clock.now = START + 2 * HOUR + 10
        assert exporter.export(batch(2)) == SUCCESS
        assert files(path) == [[1], [2]]
        os.truncate(path, 1)
        clock.now = START + 3 * HOUR + 10
        assert exporter.export(batch(3)) == SUCCESS
    finally:
        exporter.shutdown()
    assert [backup.read_bytes()[:1] for backup in backups(path)] == [b"{", b"{"]
    assert backups(path)[-1].stat().st_size == 1
    assert numbers(path) == [3]


@pytest.fixture
def zone() -> Iterator[Any]:
    """Set the process's time zone (TZ, tzset) for a test, then put it back."""
    before = os.environ.get("TZ")

    def use(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield use
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def midnight_rollover(path: Path, moment: float, utc: bool) -> float | None:
    exporter = FileExporter(FileSettings(path=str(path), when="midnight", utc=utc))
    return exporter._rollover_after(moment)


@pytest.mark.parametrize(
    ("name", "moment", "local_midnight"),
    [
        # 2026-12-04 12:00 UTC: Kolkata is UTC+05:30, its next midnight is 18:30 UTC
        ("Asia/Kolkata", 1_796_385_600.0, 1_796_409_000.0),
        # 2026-12-04 20:00 UTC: already 01:30 on the 5th there, the next midnight a day on
        ("Asia/Kolkata", 1_796_414_400.0, 1_796_495_400.0),
        # 2026-07-04 12:00 UTC: Berlin is on summer time (UTC+2), whatever the season now
        ("Europe/Berlin", 1_783_166_400.0, 1_783_202_400.0),
        # 2026-07-04 12:00 UTC: New York on summer time (UTC-4)
        ("America/New_York", 1_783_166_400.0, 1_783_224_000.0),
    ],
)
def test_midnight_is_local_unless_utc_is_set(
    tmp_path: Path, zone: Any, name: str, moment: float, local_midnight: float
) -> None:
    zone(name)
    assert midnight_rollover(tmp_path / "app.log", moment, utc=False) == local_midnight
    assert time.localtime(local_midnight)[3:6] == (0, 0, 0)
    utc_midnight = (moment // 86400 + 1) * 86400
    assert midnight_rollover(tmp_path / "app.log", moment, utc=True) == utc_midnight


# -- what is counted and said ---------------------------------------------------------------------


def test_every_refused_rotation_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_module, "os", RenameFails())
    path = tmp_path / "app.log"
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=line_length()))
    try:
        for start in range(0, 6, 2):
            assert exporter.export(batch(start, 2)) == SUCCESS
    finally:
        exporter.shutdown()
    assert exporter.stats() == {"written": 6, "dropped": 0, "rotations": 0, "errors": 3}


def test_each_resumption_says_what_was_lost_since_the_last_one(
    tmp_path: Path, listened: Listened, capfd: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "logs"
    path = blocker / "app.log"
    exporter = FileExporter(FileSettings(path=str(path)))
    key = f"file-resumed:{path}"
    try:
        for lost, start in ((3, 0), (2, 10)):
            if blocker.is_dir():
                shutil.rmtree(blocker)
            blocker.write_text("in the way")
            for n in range(lost):
                assert exporter.export(batch(start + n)) == FAILURE
            blocker.unlink()
            _diag.reset()  # (each report is said at most once a minute)
            assert exporter.export(batch(start + lost)) == SUCCESS
            assert exporter.export(batch(start + lost + 1)) == SUCCESS  # nothing to say
            said = [fields["dropped"] for name, _, fields in listened.reports if name == key]
            assert said[-1] == lost
    finally:
        exporter.shutdown()
    assert said == [3, 2]
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    levels = [line["level"] for line in lines if line.get("fapilog.diagnostic") == key]
    assert levels == ["info", "info"]


# -- retention meeting odd files ------------------------------------------------------------------


def test_retention_passes_over_backups_that_vanish_or_cannot_be_removed(tmp_path: Path) -> None:
    """A backup another process removed meanwhile (here: a link to nothing, whose stat
    fails), one that cannot be removed (a directory), a half-written archive gone the same
    way: the rotation and the batch go on."""
    path = tmp_path / "app.log"
    old = time.time() - 30 * 86400
    (tmp_path / "app.log.20200101T000000.000000").symlink_to(tmp_path / "gone")
    stuck = tmp_path / "app.log.20200102T000000.000000"
    stuck.mkdir()
    os.utime(stuck, (old, old))
    (tmp_path / "app.log.20200103T000000.000000.gz.tmp").symlink_to(tmp_path / "gone")
    exporter = FileExporter(FileSettings(path=str(path), max_bytes=line_length(), max_age_days=1))
    try:
        assert exporter.export(batch(0, 2)) == SUCCESS
        assert exporter.export(batch(2)) == SUCCESS
    finally:
        exporter.shutdown()
    assert exporter.stats() == {"written": 3, "dropped": 0, "rotations": 2, "errors": 0}
    assert stuck.is_dir()
    assert [n for backup in backups(path) if backup.is_file() for n in numbers(backup)] == [0, 1]
    assert numbers(path) == [2]

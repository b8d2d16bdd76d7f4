"""The file exporter's contract for what it opens and creates, in-process on real files:
the configure-time check as a user the file system refuses (a directory it cannot create,
a file or lock file it cannot open, a directory it cannot create files in), the mode and
close-on-exec flag of what it creates, a file left from an earlier period, and the gzip
step (its archive, its temporary, a source gone or unreadable).

The suite runs as root on CI, where every open succeeds: `as_unprivileged` runs a call on
a thread whose file-system user is ``nobody`` (``setfsuid``/``setfsgid`` are per thread on
Linux, and root's file-system capabilities are dropped with them), so the process keeps its
own identity. Run as another user, it runs the call as that user, whom the modes used
here refuse as well."""

from __future__ import annotations

import ctypes
import fcntl
import gzip
import os
import shutil
import stat
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fapilog.exporters import file as file_module
from fapilog.exporters.contract import LogRecordExportResult
from fapilog.exporters.file import FileExporter, backups
from fapilog.settings import FileSettings
from queue_support import Listened
from test_file_contract import batch, numbers
from test_file_exporter import Clock

T = TypeVar("T")
NOBODY = 65534
_LIBC = ctypes.CDLL(None, use_errno=True)


def as_unprivileged(call: Callable[[], T]) -> T:
    """`call()` with the file system's permission checks applied (see the module
    docstring); its result, or what it raised."""
    outcome: list[T | BaseException] = []

    def run() -> None:
        try:
            if os.geteuid() == 0:
                _LIBC.setfsgid(NOBODY)
                _LIBC.setfsuid(NOBODY)
                assert _LIBC.setfsuid(-1) == NOBODY  # (-1: only asks)
            outcome.append(call())
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=run)  # its identity ends with it
    thread.start()
    thread.join(30)
    assert outcome, "the unprivileged call did not return"
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user can search (pytest's own temporary directory is private)."""
    directory = Path(tempfile.mkdtemp(prefix="fapilog-open-"))
    directory.chmod(0o755)
    yield directory
    for path in (directory, *directory.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(directory)


def unwritable(path: Path, **settings: object) -> str | None:
    exporter = FileExporter(FileSettings(path=str(path), **settings))  # type: ignore[arg-type]
    return as_unprivileged(exporter.unwritable)


def test_the_unprivileged_call_is_refused_where_the_process_is_not(shared: Path) -> None:
    closed = shared / "closed"
    closed.mkdir(mode=0o555)
    closed.chmod(0o555)
    with pytest.raises(PermissionError):
        as_unprivileged((closed / "probe").touch)
    (closed / "probe").touch()  # this thread: the process's own identity


# -- the check made at configure time ---------------------------------------------------------


def test_a_directory_it_cannot_create_files_in_is_refused_by_name(shared: Path) -> None:
    closed = shared / "closed"
    closed.mkdir()
    closed.chmod(0o555)
    for locking in ("lock", "per_process"):
        assert unwritable(closed / "app.log", multiprocess=locking) == (
            f"cannot create files in {closed}: Permission denied"
        )
    assert os.listdir(closed) == []
    closed.chmod(0o777)
    assert unwritable(closed / "app.log") is None
    assert os.listdir(closed) == []  # the probe is removed


def test_a_directory_it_cannot_create_is_refused_by_name(shared: Path) -> None:
    closed = shared / "closed"
    closed.mkdir()
    closed.chmod(0o555)
    target = closed / "logs" / "app.log"
    assert unwritable(target) == f"cannot create the directory {target.parent}: Permission denied"


def test_a_file_it_cannot_open_for_writing_is_refused_though_it_can_read_it(shared: Path) -> None:
    """The directory allows creating files: the existing file is what is checked, opened
    for appending as an export opens it."""
    target = shared / "app.log"
    target.write_text("earlier\n")
    target.chmod(0o444)
    shared.chmod(0o777)
    for locking in ("lock", "per_process"):
        path = target if locking == "lock" else shared / f"app.{os.getpid()}.log"
        if locking == "per_process":
            shutil.copy(target, path)
            path.chmod(0o444)
        assert unwritable(target, multiprocess=locking) == (
            f"cannot open {path} for writing: Permission denied"
        )
    target.chmod(0o666)
    assert unwritable(target) is None
    assert target.read_text() == "earlier\n"  # opened, never written nor truncated


def test_a_lock_file_it_cannot_open_is_refused_though_the_log_file_is_missing(shared: Path) -> None:
    lock = shared / ".app.log.lock"
    lock.touch()
    lock.chmod(0o444)
    shared.chmod(0o777)
    assert unwritable(shared / "app.log") == f"cannot open {lock} for writing: Permission denied"
    assert unwritable(shared / "app.log", multiprocess="per_process") is None  # no lock file
    lock.chmod(0o666)
    assert unwritable(shared / "app.log") is None


def test_files_it_can_open_pass_without_a_probe_file(shared: Path) -> None:
    """Both files exist and can be written: nothing is created, even where the directory
    would refuse it."""
    for name in ("app.log", ".app.log.lock"):
        (shared / name).touch()
        (shared / name).chmod(0o666)
    shared.chmod(0o555)
    assert unwritable(shared / "app.log") is None
    assert sorted(os.listdir(shared)) == [".app.log.lock", "app.log"]


def test_a_path_below_a_file_is_refused_by_the_file_in_the_way(shared: Path) -> None:
    blocker = shared / "logs"
    blocker.write_text("")
    assert unwritable(blocker / "deeper" / "app.log") == f"{blocker} is not a directory"


# -- what it creates ------------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    """A strict umask (the process-wide value), so that a mode not given explicitly shows."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.mark.parametrize("locking", ["lock", "per_process"])
def test_what_it_creates_has_the_configured_mode_whatever_the_umask(
    shared: Path, umask: None, locking: str
) -> None:
    target = shared / "a" / "b" / "app.log"
    exporter = FileExporter(FileSettings(path=str(target), mode=0o644, multiprocess=locking))  # type: ignore[arg-type]
    try:
        assert exporter.export(batch(0)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    written = exporter.path
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    for directory in (shared / "a", shared / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # searchable where readable
    assert numbers(written) == [0]


class RacingMkdir:
    """`os` for the file exporter, where another process creates each directory between
    the exporter's check and its own `mkdir` (which then finds it there)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def mkdir(path: Any, mode: int = 0o777) -> None:
        os.mkdir(path, 0o700)
        os.mkdir(path, mode)  # FileExistsError, as the exporter meets it


def test_directories_another_process_creates_meanwhile_are_taken_as_they_are(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "os", RacingMkdir())
    target = shared / "a" / "b" / "app.log"
    exporter = FileExporter(FileSettings(path=str(target), multiprocess="per_process"))
    try:
        assert exporter.export(batch(0)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert numbers(exporter.path) == [0]
    assert stat.S_IMODE((shared / "a").stat().st_mode) == 0o700  # not its to change


def test_an_existing_files_mode_is_left_as_it_is(shared: Path) -> None:
    target = shared / "app.log"
    target.write_text("")
    target.chmod(0o600)
    exporter = FileExporter(FileSettings(path=str(target), mode=0o644))
    try:
        assert exporter.export(batch(0)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("locking", ["lock", "per_process"])
def test_its_descriptors_are_not_inherited_by_child_processes(shared: Path, locking: str) -> None:
    exporter = FileExporter(FileSettings(path=str(shared / "app.log"), multiprocess=locking))  # type: ignore[arg-type]
    try:
        assert exporter.export(batch(0)) == LogRecordExportResult.SUCCESS
        held = [fd for fd in (exporter._fd, exporter._lock_fd) if fd is not None]
        assert len(held) == (2 if locking == "lock" else 1)
        for fd in held:
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        exporter.shutdown()


def test_a_file_left_from_an_earlier_day_rotates_at_the_first_write(shared: Path) -> None:
    """Even a file of one byte (a line cut by a crash); an empty one is just written."""
    day = 86400.0
    start = 1_800_000_000.0 // day * day + 3600  # 01:00 UTC
    for content, rotated in ((b"x", True), (b"", False)):
        directory = shared / ("old" if content else "empty")
        target = directory / "app.log"
        directory.mkdir()
        target.write_bytes(content)
        os.utime(target, (start - day, start - day))  # yesterday
        exporter = FileExporter(
            FileSettings(path=str(target), when="daily", utc=True), clock=Clock(start)
        )
        try:
            assert exporter.export(batch(0)) == LogRecordExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert [path.read_bytes() for path in backups(target)] == ([b"x"] if rotated else [])
        assert numbers(target) == [0]


# -- gzip ------------------------------------------------------------------------------------------


def rotated_with_gzip(directory: Path, **settings: object) -> FileExporter:
    exporter = FileExporter(
        FileSettings(path=str(directory / "app.log"), max_bytes=200, gzip=True, **settings)  # type: ignore[arg-type]
    )
    for start in range(0, 6, 2):
        assert exporter.export(batch(start, 2)) == LogRecordExportResult.SUCCESS
    return exporter


def test_a_rotated_file_is_archived_at_level_six_with_the_configured_mode(
    shared: Path, umask: None
) -> None:
    exporter = rotated_with_gzip(shared, mode=0o640)
    exporter.shutdown()
    archives = backups(shared / "app.log")
    assert archives and all(path.name.endswith(".gz") for path in archives)
    assert not [name for name in os.listdir(shared) if name.endswith(".tmp")]
    for archive in archives:
        assert stat.S_IMODE(archive.stat().st_mode) == 0o640
        raw = archive.read_bytes()
        assert raw[8] == 0  # gzip's "extra flags": 2 at level 9, 4 at level 1, else 0
        text = gzip.decompress(raw)
        # the deflate stream after gzip's header (10 bytes and the file name, NUL-ended)
        body = raw[raw.index(b"\0", 10) + 1 : -8]
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        assert body == compressor.compress(text) + compressor.flush()


class Interrupted(BaseException):
    """What a process killed while it compresses leaves (nothing after it runs)."""


def test_an_archive_cut_short_by_a_crash_is_a_temporary_that_a_later_rotation_removes(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfileobj", killed)
        with pytest.raises(Interrupted):
            rotated_with_gzip(shared)
    left = [name for name in os.listdir(shared) if name.endswith(".gz.tmp")]
    assert len(left) == 1 and left[0].startswith("app.log.")
    backup = left[0][: -len(".gz.tmp")]
    assert (shared / backup).exists()  # the source stays: nothing is lost
    old = time.time() - 3600
    os.utime(shared / left[0], (old, old))
    exporter = rotated_with_gzip(shared)
    exporter.shutdown()
    assert not [name for name in os.listdir(shared) if name.endswith(".tmp")]


def test_a_backup_pruned_before_it_is_archived_is_skipped_quietly(
    shared: Path, listened: Listened
) -> None:
    exporter = FileExporter(FileSettings(path=str(shared / "app.log"), gzip=True))
    gone = shared / "app.log.20260101T000000.000000"
    exporter._to_compress.append(gone)
    try:
        assert exporter.export(batch(0)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert sorted(os.listdir(shared)) == [".app.log.lock", "app.log"]
    assert not [report for report in listened.reports if report[0].startswith("file-gzip")]


def test_a_backup_that_cannot_be_archived_is_left_as_it_is_and_said(
    shared: Path, listened: Listened
) -> None:
    exporter = FileExporter(FileSettings(path=str(shared / "app.log"), gzip=True))
    odd = shared / "app.log.20260101T000000.000000"
    odd.mkdir()  # not a file: it cannot be read
    exporter._to_compress.append(odd)
    try:
        assert exporter.export(batch(0)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    message, fields = listened.wait_for(f"file-gzip:{odd}")
    assert message == (
        f"fapilog file exporter could not gzip {odd}: "
        f"IsADirectoryError(21, 'Is a directory'); left as is"
    )
    assert fields == {}
    assert odd.is_dir() and not (shared / f"{odd.name}.gz.tmp").exists()
    assert not (shared / f"{odd.name}.gz").exists()


def test_a_directory_it_can_write_in_but_not_list_still_rotates(shared: Path) -> None:
    """(A drop-box directory: write and search, no read.) Retention cannot see the backups
    there, so it keeps them all; nothing fails, and rotations within one microsecond (a
    clock standing still here) never write over an earlier backup it cannot see."""
    box = shared / "box"
    box.mkdir()
    box.chmod(0o333)
    exporter = FileExporter(
        FileSettings(path=str(box / "app.log"), max_bytes=200, backup_count=1, gzip=False),
        clock=Clock(1_800_000_000.0),
    )

    def write() -> list[LogRecordExportResult]:
        return [exporter.export(batch(start, 2)) for start in range(0, 8, 2)]

    try:
        assert as_unprivileged(write) == [LogRecordExportResult.SUCCESS] * 4
    finally:
        exporter.shutdown()
    figures = exporter.stats()
    assert (figures["written"], figures["dropped"], figures["errors"]) == (8, 0, 0)
    rotated = [box / name for name in os.listdir(box) if name.startswith("app.log.")]
    assert len(rotated) == figures["rotations"] > 1  # none pruned, none overwritten
    # named as backups, oldest first, for when the directory can be listed (root can)
    listed = backups(box / "app.log")
    assert sorted(listed) == sorted(rotated)
    assert [n for path in [*listed, box / "app.log"] for n in numbers(path)] == list(range(8))

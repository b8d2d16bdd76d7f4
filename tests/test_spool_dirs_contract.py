"""Where the spool lives and what becomes of the segments a spool leaves: the directories
(`default_base`, `destination_dir`: stable across versions), `open_spool`'s choice between a
spool, memory only and a configuration error; segments taken over from processes that are
gone (in name order, torn, empty, unreadable, abandoned ``.part`` files), handed over when a
spool closes, and replayed by the queue (`SpoolingQueue`) when the sink comes back or its own
backlog is delivered; a forked child's fresh spool. On real files."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from fapilog import _diag
from fapilog.exceptions import ConfigurationError
from fapilog.otel.codec import RECORD
from fapilog.pipeline.segments import SUFFIX, frame
from fapilog.pipeline.spool import Spool, default_base, destination_dir, open_spool
from fapilog.pipeline.spooling import SpoolingQueue
from fapilog.settings import SpoolSettings
from spool_support import (
    Sink,
    bodies,
    make,
    orphan_of,
    queue_for,
    rec,
    recs,
    settled,
    with_a_backlog,
)


@pytest.fixture
def diagnostics(capfd: Any) -> Any:
    """The diagnostics written to stderr so far, as parsed lines."""
    _diag.reset()

    def read() -> list[dict[str, Any]]:
        lines = capfd.readouterr().err.splitlines()
        return [json.loads(line) for line in lines if "fapilog.diagnostic" in line]

    return read


def test_the_default_base_is_under_an_absolute_xdg_state_home_else_the_home_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home" / ".local" / "state" / "fapilog" / "spool")
    monkeypatch.setenv("XDG_STATE_HOME", f"  {tmp_path}/state  ")
    assert default_base() == f"{tmp_path}/state/fapilog/spool"
    for ignored in ("relative/state", "   "):
        monkeypatch.setenv("XDG_STATE_HOME", ignored)
        assert default_base() == home
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_base() == home


def test_a_destinations_directory_name_never_changes_between_versions() -> None:
    """A later process (a newer fapilog) must find the directory an earlier one spooled to."""
    assert destination_dir("/b", "loki", "api", "http://a:3100 tenant=") == (
        "/b/loki-api-a246b43257321f91"
    )
    assert destination_dir("/b", "otlp", "my service/ü" + "x" * 50, "http://c") == (
        "/b/otlp-my_service_xxxxxxxxxxxxxxxxxxxxxxxxxxxxx-4a4d6679798bc6de"
    )
    assert destination_dir("/b", "loki", "", "d") == "/b/loki-service-2ddd3008789c3bc2"
    assert destination_dir("/b", "loki", "api\udcff", "d") == "/b/loki-api_-9f495a4d26d52c87"


def test_open_spool_with_an_explicit_directory_takes_over_what_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert open_spool(SpoolSettings(enabled=False), "loki", "api", "d") is None
    monkeypatch.setenv("HOME", str(tmp_path))
    directory = Path(destination_dir(str(tmp_path / "s"), "loki", "api", "d"))
    directory.mkdir(parents=True)
    writer = Spool(str(directory), SpoolSettings(), "loki")
    writer.write([rec(0)])
    writer.close()  # a process that is gone left a record
    spool = open_spool(SpoolSettings(dir="~/s"), "loki", "api", "d")
    assert spool is not None
    try:
        assert spool.directory == str(directory) and spool.adopted == 1 and spool.name == "loki"
        assert all(p.name.endswith(SUFFIX) for p in directory.iterdir())  # no probe left
    finally:
        spool.close()
    fresh = open_spool(SpoolSettings(dir="~/s"), "loki", "web", "d")
    assert fresh is not None and fresh.adopted == 0
    assert stat.S_IMODE(os.stat(fresh.directory).st_mode) == 0o700
    assert os.listdir(fresh.directory) == []
    fresh.close()
    monkeypatch.chdir(tmp_path)
    relative = open_spool(SpoolSettings(dir="s"), "loki", "api", "d")
    assert relative is not None and relative.directory == str(directory)
    relative.close()


def test_an_explicit_directory_that_cannot_be_written_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError) as raised:
        open_spool(SpoolSettings(dir=str(tmp_path / "file" / "s")), "loki", "api", "d")
    assert str(raised.value) == (
        f"FAPILOG_SPOOL__DIR (setting 'spool.dir'): '{tmp_path}/file/s' is invalid: the spool "
        "directory cannot be written: Not a directory (allowed: a writable directory (it is "
        "created if missing), or FAPILOG_SPOOL__ENABLED=false)"
    )


def test_the_writability_probe_is_made_in_the_spool_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "cwd").rmdir()  # (nothing can be made in the working directory)
    spool = open_spool(SpoolSettings(dir=str(tmp_path / "s")), "loki", "api", "d")
    assert spool is not None
    spool.close()


def test_a_default_directory_that_cannot_be_written_means_memory_only_and_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, diagnostics: Any
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "file"))
    assert open_spool(SpoolSettings(), "otlp", "api", "d") is None
    (line,) = diagnostics()
    assert line["fapilog.diagnostic"] == "spool-default-dir" and line["level"] == "warning"
    assert line["message"] == (
        f"fapilog: the default spool directory {tmp_path}/file/fapilog/spool cannot be written "
        "(Not a directory); exporter 'otlp' keeps undelivered records in memory only. Set "
        "FAPILOG_SPOOL__DIR to a writable directory (a volume) to keep them across outages "
        "and restarts, or FAPILOG_SPOOL__ENABLED=false to silence this."
    )


def write_orphan(directory: Path, name: str, frames: bytes, acked: int = 16) -> Path:
    path = directory / name
    path.write_bytes(b"FAPILOG1" + struct.pack("<Q", acked) + frames)
    return path


def test_orphaned_segments_are_taken_over_in_name_order_with_their_figures(
    spools: list[Spool], tmp_path: Path
) -> None:
    older = orphan_of(spools, tmp_path / "x", [rec(0), rec(1)])
    older = older.rename(tmp_path / "00000000000000000001-1-1.seg")
    (orphan_of(spools, tmp_path / "y", [rec(2)])).rename(tmp_path / "00000000000000000002-1-1.seg")
    (tmp_path / "0.txt").write_bytes(b"")  # (first in name order: not a segment)
    spool = make(spools, tmp_path)
    spool.write([rec(9)])  # this process's own segment, named now
    assert spool.disk_bytes() > spool.held_bytes() + older.stat().st_size
    assert spool.adopt_orphans() == (3, 0) and spool.adopt_orphans() == (0, 0)
    assert spool.stats()["adopted"] == 3 and spool.stats()["segments"] == 3
    assert spool.disk_bytes() == spool.held_bytes()  # no bytes it does not hold
    replay = spool.read(10)
    assert replay is not None and bodies(replay) == ["r0", "r1"]
    assert (tmp_path / "0.txt").exists()


def test_a_torn_orphan_is_taken_over_counted_and_reported(
    spools: list[Spool], tmp_path: Path, diagnostics: Any
) -> None:
    for n in (1, 2):  # two processes died inside a write
        path = orphan_of(spools, tmp_path / str(n), [rec(0), rec(1), rec(2)])
        with open(path, "r+b") as file:
            file.truncate(path.stat().st_size - 3)
        path.rename(tmp_path / f"{n}-1-1.seg")
    spool = make(spools, tmp_path)
    assert spool.adopt_orphans() == (6, 2) and spool.adopt_orphans() == (0, 0)
    assert spool.stats()["torn"] == 2 and spool.adopted == 6 and spool.pending == 4
    (line,) = diagnostics()
    assert line["fapilog.diagnostic"] == "spool-torn:loki" and line["level"] == "warning"
    assert line["message"] == (
        f"fapilog: 2 record(s) in the spool {tmp_path} were cut off when the process writing "
        "them died; skipped (dropped: spool_torn)"
    )


def test_empty_orphans_and_abandoned_part_files_are_removed(
    spools: list[Spool], tmp_path: Path
) -> None:
    write_orphan(tmp_path, "1-1-1.seg", b"")  # nothing in it
    (tmp_path / "1-1-1.txt").write_bytes(b"")  # not a segment: left alone
    write_orphan(tmp_path, "1-1-2.seg", frame(RECORD + b"[]"), acked=16 + 11)  # all acked
    (tmp_path / "1-1-3.part").write_bytes(b"FAPIL")  # its creator died before the rename
    live = tmp_path / "1-1-4.part"
    live.write_bytes(b"")
    fd = os.open(live, os.O_RDWR)  # a live process creating a segment
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        spool = make(spools, tmp_path)
        assert spool.adopt_orphans() == (0, 0)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["1-1-1.txt", "1-1-4.part"]
    finally:
        os.close(fd)
    assert spool._segments == []


def test_an_orphan_that_cannot_be_read_is_reported_and_left(
    spools: list[Spool], tmp_path: Path, diagnostics: Any
) -> None:
    (tmp_path / "d").mkdir()
    fifo = tmp_path / "d" / "1-1-1.seg"
    orphan_of(spools, tmp_path / "x", [rec(0)]).rename(tmp_path / "d" / "1-1-2.seg")
    os.mkfifo(fifo)  # opens and locks, but cannot be read at an offset
    spool = make(spools, tmp_path / "d")
    assert spool.adopt_orphans() == (1, 0) and spool.pending == 1  # the next one is taken
    (line,) = diagnostics()
    assert line["fapilog.diagnostic"] == "spool-adopt:loki" and line["level"] == "error"
    assert line["message"] == (
        f"fapilog could not read the spool segment {fifo}: [Errno 29] Illegal seek"
    )
    assert fifo.exists()
    shutil.rmtree(tmp_path / "d")
    assert spool.adopt_orphans() == (0, 0)  # the directory gone: nothing to take over


def test_closing_leaves_pending_records_for_another_spool_of_the_process(
    spools: list[Spool], tmp_path: Path
) -> None:
    first = make(spools, tmp_path)
    marks, _ = first.write([rec(0), rec(1)])
    second = make(spools, tmp_path)
    closed = make(spools, tmp_path)
    closed.close()
    woken: list[bool] = []
    second.wake = lambda: woken.append(True)
    closed.wake = lambda: woken.append(False)
    assert second.adopt_orphans() == (0, 0)
    make(spools, tmp_path).close()  # nothing to hand over: no one woken
    elsewhere = make(spools, tmp_path / "e")  # another destination: not concerned
    orphan_of(spools, tmp_path / "x", [rec(5)]).rename(tmp_path / "e" / "1-1-1.seg")
    first.close()
    assert elsewhere.adopted == 0
    assert first.pending == 2 and first.stats()["segments"] == 0
    assert marks[0][0].fd == -1 and second.adopted == 2 and woken == [True]
    third = make(spools, tmp_path)
    second.close()  # adopted by the third, which has no worker to wake
    assert third.adopted == 2


def test_a_forked_child_starts_with_an_empty_spool_and_the_parent_keeps_its_own(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path)
    spool.write([rec(0)])
    pid = os.fork()
    if pid == 0:  # the child: nothing written, nothing held, a lock of its own
        code = 1
        try:
            fresh = spool.stats()["written"] == spool.pending == 0 and spool._segments == []
            code = 0 if fresh and spool.adopt_orphans() == (0, 0) else 1
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert spool.pending == 1 and spool.read(5) is not None  # the parent's segment, still held


def test_segments_handed_over_by_a_closing_spool_are_replayed_at_once(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink = Sink()
    spool = make(spools, tmp_path)
    queue = queue_for(queues, spool, sink)
    assert spool.wake == queue._wake
    other = make(spools, tmp_path)  # (a reconfiguration's old spool)
    other.write(recs(0, 1))
    other.close()
    assert settled(queue, lambda: queue.delivered == 2) and sink.got == ["r0", "r1"]


def test_segments_left_by_dead_processes_are_taken_over_when_the_sink_is_back(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink, spool, queue = with_a_backlog(spools, queues, tmp_path, 0)
    orphan = orphan_of(spools, tmp_path / "x", [*recs(5, 6), rec(7, timestamp=1)])
    with open(orphan, "ab") as file:
        file.write(frame(RECORD + b"[]") * 2)  # whole, but not records
    orphan.rename(tmp_path / "00000000000000000001-1-1.seg")  # a crashed process's segment
    sink.up = True
    assert queue.flush(5)
    assert settled(queue, lambda: queue.dropped == {"too_old": 1, "spool_unreadable": 2})
    assert sink.got == ["r0", "r5", "r6"] and spool.adopted == 5


def a_process_dies(spools: list[Spool], tmp_path: Path) -> None:
    """A process that spooled r50 and r51 dies: its segment, older than the queue's own."""
    orphan = orphan_of(spools, tmp_path / "x", recs(50, 51))
    orphan.rename(tmp_path / "00000000000000000001-1-1.seg")


def test_once_its_own_backlog_is_delivered_the_queue_takes_over_what_dead_processes_left(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    sink, _, queue = with_a_backlog(spools, queues, tmp_path, *range(15))  # 2 replays
    sink.up, sink.hold = True, "r14"
    sink.release.clear()
    queue.flush(0.01)
    assert sink.started.wait(10)  # the second batch, the sink back: the first delivered
    a_process_dies(spools, tmp_path)
    sink.release.set()
    assert settled(queue, lambda: queue.delivered == 17)
    assert sink.got == [f"r{n}" for n in (*range(15), 50, 51)]


def test_once_the_sink_is_back_the_queue_takes_over_what_dead_processes_left_meanwhile(
    spools: list[Spool], queues: list[SpoolingQueue], tmp_path: Path
) -> None:
    """(Without waiting for its own backlog: the older segments go first.)"""
    sink, _, queue = with_a_backlog(spools, queues, tmp_path, *range(15))  # 2 replays
    a_process_dies(spools, tmp_path)
    sink.up = True
    assert queue.flush(5)
    assert settled(queue, lambda: queue.delivered == 17)
    assert sink.got == [f"r{n}" for n in (*range(10), 50, 51, *range(10, 15))]

"""The spool's segment files (`fapilog.pipeline.segments`), driven directly on real files: the
byte layout a later process reads back (header, frames), appends and their failure on a full
disk, acknowledgement, ownership by lock, adoption of a dead writer's segment (its pending
records, its tables, a torn last frame, a segment deleted or moved meanwhile) and the scan
that stops at the first damaged frame. The directories: tests/test_spool_dirs_contract.py."""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import stat
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fapilog.otel.codec import RECORD, RESOURCE, SCOPE
from fapilog.pipeline import segments
from fapilog.pipeline.segments import (
    HEADER,
    MAX_FRAME,
    SUFFIX,
    Segment,
    adopt,
    create,
    frame,
    make_private_dir,
    scan_frames,
)


def header(acked: int) -> bytes:
    return b"FAPILOG1" + struct.pack("<Q", acked)


def resource_frame(number: int, service: str) -> bytes:
    return frame(RESOURCE + b'[%d,{"service.name":"%s"},""]' % (number, service.encode()))


def scope_frame(number: int, name: str) -> bytes:
    return frame(SCOPE + b'[%d,"%s","1.0",""]' % (number, name.encode()))


def record_frame(n: int) -> bytes:
    return frame(RECORD + b"record-%d" % n)


def lock_is_free(path: Path) -> bool:
    """Whether another open file description can take the segment's lock now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture
def opened() -> Iterator[list[Segment]]:
    """Segments a test opened: closed at its end (their locks released)."""
    found: list[Segment] = []
    yield found
    for segment in found:
        segment.close()


def test_a_frame_is_its_length_its_crc_then_the_payload() -> None:
    payload = RECORD + b"hello"
    framed = frame(payload)
    assert framed[:4] == struct.pack("<I", len(payload))
    assert framed[4:8] == struct.pack("<I", zlib.crc32(payload))
    assert framed[8:] == payload


def test_the_private_directory_is_0700_and_may_exist_already(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    make_private_dir(str(target))
    make_private_dir(str(target))  # already there: fine
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_a_new_segment_is_locked_private_and_starts_with_its_header(
    tmp_path: Path, opened: list[Segment]
) -> None:
    segment = create(str(tmp_path), "0001-42-1")
    opened.append(segment)
    path = tmp_path / ("0001-42-1" + SUFFIX)
    assert segment.path == str(path) and segment.name == "0001-42-1.seg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001-42-1.seg"]  # no .part left
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == header(HEADER)
    assert (segment.end, segment.acked, segment.read_at, segment.pending) == (16, 16, 16, 0)
    assert segment.writing and segment.own and segment.torn == 0 and segment.size() == 16
    assert not lock_is_free(path)
    assert adopt(str(path)) is None  # its writer is alive


def test_a_segment_that_cannot_be_made_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_file_limit: int
) -> None:
    """Its .part file is made in the segment's directory (whatever the working directory
    holds); a header that cannot be written whole is a full disk."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "taken.part").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "cwd")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / ("taken" + SUFFIX)).mkdir()  # the final name is a directory
    with pytest.raises(IsADirectoryError):
        create(str(spool), "taken")
    assert sorted(p.name for p in spool.iterdir()) == ["taken" + SUFFIX]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))
    try:
        with pytest.raises(OSError) as raised:
            create(str(spool), "full")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.ENOSPC and raised.value.strerror == "no space left on device"
    assert sorted(p.name for p in spool.iterdir()) == ["taken" + SUFFIX]


def test_closing_a_segment_releases_its_lock_and_keeps_the_file(
    tmp_path: Path, opened: list[Segment]
) -> None:
    segment = create(str(tmp_path), "s")
    segment.close()
    segment.close()  # twice: harmless
    assert segment.fd < 0
    path = tmp_path / "s.seg"
    assert path.exists() and lock_is_free(path)


def test_removing_a_segment_deletes_it_and_closes_it(tmp_path: Path, opened: list[Segment]) -> None:
    segment = create(str(tmp_path), "s")
    os.unlink(segment.path)  # already gone: removing it again is harmless
    segment.remove()
    assert segment.fd < 0 and list(tmp_path.iterdir()) == []
    other = create(str(tmp_path), "t")
    other.remove()
    assert other.fd < 0 and list(tmp_path.iterdir()) == []


def test_appends_go_at_the_end_and_count_pending_records(
    tmp_path: Path, opened: list[Segment]
) -> None:
    segment = create(str(tmp_path), "s")
    opened.append(segment)
    first = record_frame(0) + record_frame(1)
    segment.append(first, 2)
    segment.append(record_frame(2), 1)
    assert segment.end == 16 + len(first) + len(record_frame(2)) == segment.size()
    assert segment.pending == 3
    assert Path(segment.path).read_bytes() == header(16) + first + record_frame(2)


def test_acknowledging_rewrites_the_header_and_moves_the_read_position(
    tmp_path: Path, opened: list[Segment]
) -> None:
    segment = create(str(tmp_path), "s")
    opened.append(segment)
    segment.append(record_frame(0) + record_frame(1) + record_frame(2), 3)
    after_two = 16 + 2 * len(record_frame(0))
    segment.acknowledge(after_two, 2)
    assert Path(segment.path).read_bytes()[:16] == header(after_two)
    assert (segment.acked, segment.pending, segment.read_at) == (after_two, 1, after_two)
    segment.read_at = segment.end  # read further than acknowledged: stays there
    segment.acknowledge(segment.end - len(record_frame(0)), 0)
    assert segment.read_at == segment.end and segment.pending == 1
    segment.acknowledge(segment.end, 1)
    assert (segment.acked, segment.pending, segment.read_at) == (segment.end, 0, segment.end)


def test_a_segment_is_done_once_everything_written_to_it_is_acknowledged(
    tmp_path: Path, opened: list[Segment]
) -> None:
    segment = create(str(tmp_path), "s")
    opened.append(segment)
    assert not segment.done()  # new and still written to: not done while empty
    segment.append(record_frame(0), 1)
    assert not segment.done()
    segment.acknowledge(segment.end, 1)
    assert segment.done()  # written to, but fully acknowledged: done
    empty = create(str(tmp_path), "t")
    opened.append(empty)
    empty.writing = False
    assert empty.done()  # empty and no longer written to
    half = create(str(tmp_path), "u")
    opened.append(half)
    half.append(record_frame(0) + record_frame(1), 2)
    half.writing = False
    half.acknowledge(16 + len(record_frame(0)), 1)
    assert not half.done()


@pytest.fixture
def small_file_limit() -> Iterator[int]:
    """A file size limit (RLIMIT_FSIZE) just past a new segment's header: a write beyond it
    is cut short, as on a full disk (SIGXFSZ ignored meanwhile)."""
    limit = 100
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_a_write_cut_short_by_a_full_disk_is_undone_and_raised(
    tmp_path: Path, opened: list[Segment], small_file_limit: int
) -> None:
    segment = create(str(tmp_path), "s")
    opened.append(segment)
    segment.append(record_frame(0), 1)
    end = segment.end
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (small_file_limit, hard))
    try:
        with pytest.raises(OSError) as raised:
            segment.append(frame(RECORD + b"x" * 200), 1)  # part of it fits
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.strerror == "no space left on device (a partial write)"
    assert (segment.end, segment.pending) == (end, 1)
    assert os.path.getsize(segment.path) == end  # cut back to the last whole frame
    segment.append(record_frame(1), 1)  # and the next write goes on from there
    assert Path(segment.path).read_bytes() == header(16) + record_frame(0) + record_frame(1)


def test_a_write_that_fails_outright_is_raised_and_leaves_the_segment_as_it_was(
    tmp_path: Path, opened: list[Segment], small_file_limit: int
) -> None:
    segment = create(str(tmp_path), "s")
    opened.append(segment)
    segment.append(b"z" * (small_file_limit - 16), 0)
    end = segment.end
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (small_file_limit, hard))
    try:
        with pytest.raises(OSError) as raised:
            segment.append(record_frame(0), 1)  # nothing fits
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.EFBIG
    assert (segment.end, segment.pending) == (end, 0)
    assert os.path.getsize(segment.path) == end


def write_segment(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def test_adopting_a_dead_writers_segment_counts_what_was_not_acknowledged(
    tmp_path: Path, opened: list[Segment]
) -> None:
    """Records before the acknowledged offset are settled; the tables of every resource and
    scope frame are learned, even before that offset (later records name them)."""
    body = resource_frame(0, "api") + scope_frame(0, "orders") + record_frame(0)
    acked = 16 + len(body)
    rest = record_frame(1) + resource_frame(1, "other") + record_frame(2)
    path = write_segment(tmp_path / "1-1-1.seg", header(acked) + body + rest)
    segment = adopt(path)
    assert segment is not None
    opened.append(segment)
    assert (segment.end, segment.acked, segment.read_at) == (acked + len(rest), acked, acked)
    assert segment.pending == 2 and segment.torn == 0
    assert not segment.writing and not segment.own
    assert [r.attributes["service.name"] for r in segment.tables.resources] == ["api", "other"]
    assert [s.name for s in segment.tables.scopes if s is not None] == ["orders"]
    assert not lock_is_free(Path(path))  # now this process holds it


def test_an_adopted_segment_ends_at_its_torn_last_frame(
    tmp_path: Path, opened: list[Segment]
) -> None:
    whole = record_frame(0) + record_frame(1)
    torn = record_frame(2)[:-3]
    path = write_segment(tmp_path / "s.seg", header(16) + whole + torn)
    segment = adopt(path)
    assert segment is not None
    opened.append(segment)
    assert (segment.end, segment.pending, segment.torn) == (16 + len(whole), 2, 1)


def test_an_acknowledged_offset_out_of_range_is_brought_within_the_segment(
    tmp_path: Path, opened: list[Segment]
) -> None:
    body = record_frame(0)
    beyond = adopt(write_segment(tmp_path / "a.seg", header(10_000) + body))
    before = adopt(write_segment(tmp_path / "b.seg", header(3) + body))
    assert beyond is not None and before is not None
    opened += [beyond, before]
    assert (beyond.acked, beyond.read_at, beyond.pending) == (16 + len(body),) * 2 + (0,)
    assert (before.acked, before.read_at, before.pending) == (16, 16, 1)
    empty = adopt(write_segment(tmp_path / "c.seg", header(16)))  # a header alone
    assert empty is not None
    opened.append(empty)
    assert (empty.end, empty.acked, empty.pending, empty.torn) == (16, 16, 0, 0)


class Racing:
    """`fcntl` for `segments`, whose lock lets another process act first (`act`), as when
    the adopter waits for the lock of a segment its holder replays and deletes."""

    LOCK_EX, LOCK_NB = fcntl.LOCK_EX, fcntl.LOCK_NB

    def __init__(self, act: Any) -> None:
        self.act = act

    def flock(self, fd: int, operation: int) -> None:
        self.act()
        fcntl.flock(fd, operation)


@pytest.mark.parametrize("replaced", [False, True])
def test_a_segment_deleted_or_moved_before_its_lock_is_taken_is_not_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replaced: bool
) -> None:
    path = tmp_path / "s.seg"
    write_segment(path, header(16) + record_frame(0))
    moved = tmp_path / "moved"

    def act() -> None:
        path.rename(moved)  # (still linked: not deleted)
        if replaced:
            write_segment(path, header(16) + record_frame(1))

    monkeypatch.setattr(segments, "fcntl", Racing(act))
    assert adopt(str(path)) is None
    monkeypatch.setattr(segments, "fcntl", Racing(moved.unlink))
    assert adopt(str(moved)) is None  # deleted


@pytest.mark.parametrize("content", [b"", b"FAPIL", b"FAPILOG1\x10\x00"])
def test_a_segment_created_but_never_written_is_removed(tmp_path: Path, content: bytes) -> None:
    path = write_segment(tmp_path / "s.seg", content)
    assert adopt(path) is None
    assert not os.path.exists(path)


@pytest.mark.parametrize("content", [b"NOTOURS", b"NOTOURS!" + bytes(8) + record_frame(0)])
def test_a_file_that_is_not_a_segment_is_left_alone(tmp_path: Path, content: bytes) -> None:
    path = write_segment(tmp_path / "s.seg", content)
    assert adopt(path) is None
    assert Path(path).read_bytes() == content and lock_is_free(Path(path))


def test_a_missing_segment_is_not_adopted(tmp_path: Path) -> None:
    assert adopt(str(tmp_path / "gone.seg")) is None


def scan(path: Path, start: int = 16, stop: int | None = None) -> list[tuple]:
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.path.getsize(path) if stop is None else stop
        return list(scan_frames(fd, start, end))
    finally:
        os.close(fd)


def test_the_scan_yields_each_frame_with_its_kind_payload_and_offsets(tmp_path: Path) -> None:
    frames = [resource_frame(0, "api"), record_frame(7)]
    path = tmp_path / "s.seg"
    path.write_bytes(header(16) + b"".join(frames))
    second = 16 + len(frames[0])
    assert scan(path) == [
        (16, RESOURCE, b'[0,{"service.name":"api"},""]', second),
        (second, RECORD, b"record-7", second + len(frames[1])),
    ]
    assert scan(path, start=second) == [(second, RECORD, b"record-7", second + len(frames[1]))]
    assert scan(path, stop=second) == [(16, RESOURCE, b'[0,{"service.name":"api"},""]', second)]
    short = second + len(frames[1]) - 1  # a frame past the stop offset is not read
    assert scan(path, stop=short)[1] == (second, None, b"", short)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda f: f[:5], id="length cut off"),
        pytest.param(lambda f: f[:-1], id="payload cut off"),
        pytest.param(lambda f: f[:-1] + b"?", id="crc mismatch"),
        pytest.param(lambda f: struct.pack("<II", 0, 0) + f[8:], id="zero length"),
        pytest.param(lambda f: struct.pack("<II", MAX_FRAME + 1, 0) + f[8:], id="too long"),
    ],
)
def test_the_scan_ends_at_a_damaged_frame(tmp_path: Path, damage: object) -> None:
    good = record_frame(0)
    path = tmp_path / "s.seg"
    path.write_bytes(header(16) + good + damage(record_frame(1)))  # type: ignore[operator]
    size = path.stat().st_size
    assert scan(path) == [
        (16, RECORD, b"record-0", 16 + len(good)),
        (16 + len(good), None, b"", size),
    ]


def test_the_scan_stops_where_the_file_ends_before_the_stop_offset(tmp_path: Path) -> None:
    path = tmp_path / "s.seg"
    path.write_bytes(header(16) + record_frame(0))
    found = scan(path, stop=path.stat().st_size + 100)
    assert found[0][1] == RECORD and found[-1][1] is None and len(found) == 2


def test_frames_larger_than_one_read_are_scanned_whole(tmp_path: Path) -> None:
    """Frames that straddle the reads of the scan (a megabyte each) come back intact."""
    big = [frame(RECORD + bytes([n]) * (segments._READ_CHUNK - 5 + n)) for n in range(3)]
    path = tmp_path / "s.seg"
    path.write_bytes(header(16) + b"".join(big))
    found = scan(path)
    assert [len(payload) for _, _, payload, _ in found] == [len(f) - 9 for f in big]
    assert [payload[:1] for _, _, payload, _ in found] == [b"\x00", b"\x01", b"\x02"]
    assert found[-1][3] == path.stat().st_size
    path.write_bytes(header(16) + frame(RECORD + bytes(segments._READ_CHUNK - 8)))
    ((_, kind, payload, after),) = scan(path)  # its last byte: one byte past the first read
    assert (kind, len(payload), after) == (RECORD, segments._READ_CHUNK - 8, 16 + 2**20 + 1)


def test_a_frame_of_the_largest_size_is_read_whole(tmp_path: Path) -> None:
    payload = RECORD + bytes(MAX_FRAME - 1)
    path = tmp_path / "s.seg"
    with open(path, "wb") as out:
        out.write(header(16) + struct.pack("<II", MAX_FRAME, zlib.crc32(payload)) + RECORD)
        out.truncate(16 + 8 + MAX_FRAME)  # the zeros after the kind byte: a sparse file
    ((offset, kind, data, after),) = scan(path)
    assert (offset, kind, len(data), after) == (16, RECORD, MAX_FRAME - 1, 16 + 8 + MAX_FRAME)

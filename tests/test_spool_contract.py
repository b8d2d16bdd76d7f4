"""One destination's disk spool (`fapilog.pipeline.spool.Spool`), driven directly on real files
without an exporter: how writes fill segments under the cap (and what is removed, counted,
reported), the replay (order, limits, age, damaged records) and the acknowledgements that
settle records. Its directories, `open_spool`, and the segments other spools and processes
left: tests/test_spool_dirs_contract.py; the queue in front of it:
tests/test_spooling_contract.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from fapilog import _diag
from fapilog.otel.codec import RECORD
from fapilog.pipeline import spool as spool_module
from fapilog.pipeline.segments import frame
from fapilog.pipeline.spool import Spool
from spool_support import KIB, NOW, bodies, make, orphan_of, rec, seg_files, sized


class Clock:
    """The spool's wall clock (`time.time_ns`, for segment names and ages), set by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def time_ns(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(spool_module, "time", fake)
    return fake


@pytest.fixture
def diagnostics(capfd: Any) -> Any:
    """The diagnostics written to stderr since the last look, as parsed lines (each look
    starts the rate limit afresh)."""
    _diag.reset()

    def read() -> list[dict[str, Any]]:
        lines = capfd.readouterr().err.splitlines()
        _diag.reset()
        return [json.loads(line) for line in lines if "fapilog.diagnostic" in line]

    return read


def on_disk_ack(segment: Any) -> int:
    with open(segment.path, "rb") as file:
        return int(struct.unpack("<Q", file.read(16)[8:])[0])


def test_segments_hold_a_sixteenth_of_the_cap_between_64_kib_and_16_mib(
    spools: list[Spool], tmp_path: Path
) -> None:
    caps = [(64 * KIB, 64 * KIB), (2048 * KIB, 128 * KIB), (1_600_015, 100_000), (2**30, 2**24)]
    for cap, size in caps:
        assert make(spools, tmp_path / str(cap), max_bytes=cap).segment_bytes == size
    assert make(spools, tmp_path / "age", max_age=1.5).max_age_ns == 1_500_000_000


def test_a_segment_takes_writes_until_it_reaches_its_size_then_the_next_one_is_named(
    spools: list[Spool], tmp_path: Path, clock: Clock
) -> None:
    """Segments are named by creation time, pid and serial (names sort by age)."""
    spool = make(spools, tmp_path, max_bytes=1024 * KIB)  # 64 KiB segments
    spool.write([sized(0, 64 * KIB - 16 - 1)])
    spool.write([rec(1)])  # one byte short of the size: still this segment
    assert len(spool._segments) == 1
    other = make(spools, tmp_path / "b", max_bytes=1024 * KIB)
    other.write([sized(0, 64 * KIB - 16)])
    other.write([rec(1)])  # at the size: a new segment
    assert len(other._segments) == 2 and other._segments[0].end == 64 * KIB
    first, second = seg_files(tmp_path / "b")
    pid = os.getpid()
    assert re.fullmatch(rf"{NOW + 2:020d}-{pid}-1\.seg", first)
    assert re.fullmatch(rf"{NOW + 3:020d}-{pid}-2\.seg", second)


def test_stats_give_the_spools_figures(spools: list[Spool], tmp_path: Path) -> None:
    spool = make(spools, tmp_path, max_bytes=1024 * KIB)
    assert spool.stats()["bytes"] == 0 and spool.stats()["segments"] == 0
    spool.write([rec(0), rec(1), rec(2)])
    (path,) = seg_files(tmp_path)
    size = (tmp_path / path).stat().st_size
    assert spool.stats() == {
        "directory": str(tmp_path), "pending": 3, "bytes": size, "max_bytes": 1024 * KIB,
        "segments": 1, "written": 3, "replayed": 0, "adopted": 0, "torn": 0, "write_errors": 0,
    }  # fmt: skip
    replay = spool.read(2)
    assert replay is not None and spool.complete(replay, 2) == 0
    assert spool.stats()["replayed"] == 2 and spool.stats()["pending"] == 1
    assert spool.own_pending() == 1 and spool.has_unread()


def test_a_write_returns_where_each_part_went(spools: list[Spool], tmp_path: Path) -> None:
    """A spilled queue is written in parts of about 256 KiB, each a mark (segment, offset
    after it, records): what the queue settles once the batch is accounted for."""
    spool = make(spools, tmp_path, max_bytes=64 * 2**20)
    marks, evicted = spool.write([rec(n, size=100 * KIB) for n in range(7)])
    assert evicted == 0 and [count for _, _, count in marks] == [3, 3, 1]
    (segment,) = spool._segments
    assert all(mark[0] is segment for mark in marks)
    assert marks[0][1] < marks[1][1] < marks[2][1] == segment.end == segment.size()
    assert spool.written == 7 and segment.pending == 7
    exact = make(spools, tmp_path / "b", max_bytes=64 * 2**20)
    marks, _ = exact.write([sized(0, 256 * KIB), rec(1)])  # the first part: 256 KiB exactly
    assert [count for _, _, count in marks] == [1, 1]
    marks, _ = exact.write([sized(2, 256 * KIB - 1, first=False), rec(3)])  # a byte short
    assert [count for _, _, count in marks] == [2]


def test_a_closed_spool_takes_and_gives_nothing(spools: list[Spool], tmp_path: Path) -> None:
    spool = make(spools, tmp_path)
    spool.write([rec(0), rec(1)])
    spool.close()
    spool.close()
    assert spool.write([rec(2)]) == ([], 0) and spool.written == 2
    assert spool.read(10) is None and spool.adopt_orphans() == (0, 0)
    assert spool.pending == 2 and spool.stats()["pending"] == 2  # left for a later process
    assert len(seg_files(tmp_path)) == 1


def test_the_cap_removes_this_process_oldest_segments_and_counts_their_records(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path, max_bytes=128 * KIB)  # 64 KiB segments
    first = spool.write([rec(0, size=30 * KIB)])[0]
    second = spool.write([rec(n, size=30 * KIB) for n in (1, 2)])[0]  # the same segment
    assert spool.settle(first) == 0 and spool.settled_own == 1
    marks, evicted = spool.write([rec(n, size=30 * KIB) for n in (3, 4)])
    assert evicted == 2 and sum(m[2] for m in marks) == 2  # the first segment's other two
    assert spool.disk_bytes() <= 128 * KIB and len(spool._segments) == 1
    assert len(seg_files(tmp_path)) == 1
    assert spool.settled_own == 3 and spool.pending == spool.own_pending() == 2
    assert spool.settle(second + marks) == 2  # removed meanwhile: counted as dropped then
    assert spool.settled_own == 5 and spool.pending == 0


def test_the_cap_removes_segments_taken_over_too_part_after_part(
    spools: list[Spool], tmp_path: Path
) -> None:
    orphan = orphan_of(spools, tmp_path / "x", [rec(0, size=300 * KIB)])
    orphan.rename(tmp_path / "00000000000000000001-1-1.seg")
    spool = make(spools, tmp_path, max_bytes=1024 * KIB)
    assert spool.adopt_orphans() == (1, 0)
    copies = spool.write([rec(1, size=300 * KIB)])[0] + spool.write([rec(2, size=300 * KIB)])[0]
    marks, evicted = spool.write([rec(n, size=300 * KIB) for n in (3, 4, 5)])  # three parts
    assert evicted == 3 and [m[2] for m in marks] == [1, 1, 1]
    assert spool.settled_own == 2  # the record taken over was not this process's
    assert spool.settle(copies) == 2  # both removed meanwhile


def test_records_fit_up_to_the_cap_exactly_and_no_further(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path, max_bytes=64 * KIB)
    assert spool.write([rec(0, size=70 * KIB)]) == ([], 0)
    assert spool.written == 0 and spool.pending == 0 and spool.write_errors == 0
    spool.close()  # (its empty segment goes)
    assert seg_files(tmp_path) == []
    exact = make(spools, tmp_path, max_bytes=64 * KIB)
    marks, _ = exact.write([sized(1, 64 * KIB - 16)])
    assert sum(m[2] for m in marks) == 1 and exact.disk_bytes() == 64 * KIB


def test_a_write_that_fails_is_counted_and_reported_never_raised(
    spools: list[Spool], tmp_path: Path, diagnostics: Any
) -> None:
    spool = make(spools, tmp_path / "d")
    (tmp_path / "d").rmdir()  # a volume gone
    assert spool.write([rec(0)]) == ([], 0) and spool.write([rec(1)]) == ([], 0)
    assert spool.stats()["write_errors"] == 2 and spool.written == 0
    (line,) = diagnostics()  # once a minute
    assert line["fapilog.diagnostic"] == "spool-write:loki" and line["level"] == "error"
    assert line["message"].startswith(
        f"fapilog could not write to the spool {tmp_path}/d: FileNotFoundError("
    )


def test_settling_a_copy_acknowledges_it_and_removes_a_finished_segment(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path)
    one, _ = spool.write([rec(0)])
    two, _ = spool.write([rec(1), rec(2)])
    (segment,) = spool._segments
    assert spool.settle(one) == 0
    assert on_disk_ack(segment) == one[0][1] and segment.pending == 2
    assert spool.settled_own == 1 and seg_files(tmp_path) != []
    assert spool.settle(two) == 0
    assert spool.settled_own == 3 and seg_files(tmp_path) == [] and spool._segments == []
    spool.write([rec(3)])  # a new segment
    assert len(seg_files(tmp_path)) == 1 and spool._writing is spool._segments[0]


def test_settling_never_moves_the_acknowledgement_back(spools: list[Spool], tmp_path: Path) -> None:
    spool = make(spools, tmp_path)
    marks = [spool.write([rec(n)])[0] for n in range(3)]
    replay = spool.read(2)
    assert replay is not None and bodies(replay) == ["r0", "r1"]
    spool.complete(replay, 2)
    (segment,) = spool._segments
    assert spool.settle(marks[0]) == 0  # a copy settled late: already replayed past it
    assert on_disk_ack(segment) == segment.acked == marks[1][0][1]


def test_an_acknowledgement_that_cannot_be_written_is_reported_and_the_records_settled(
    spools: list[Spool], tmp_path: Path, diagnostics: Any
) -> None:
    """This process reads none of the settled records again."""
    spool = make(spools, tmp_path)
    spool.write([rec(0)])
    marks, _ = spool.write([rec(1)])
    replay = spool.read(1)
    assert replay is not None and bodies(replay) == ["r0"]
    segment = spool._segments[0]
    real, segment.fd = segment.fd, os.open(segment.path, os.O_RDONLY)  # writes fail: EBADF
    lines = []
    try:
        assert spool.complete(replay, 1) == 0
        lines += diagnostics()
        assert spool.settle(marks) == 0  # (reported again: once a minute, per spool)
        lines += diagnostics()
        assert spool.read(5) is None
    finally:
        os.close(real)
    assert spool.settled_own == 2 and spool.replayed == 1 and spool.pending == 0
    assert len(lines) == 2 and lines[0] == {**lines[1], "timestamp": lines[0]["timestamp"]}
    assert lines[0]["fapilog.diagnostic"] == "spool-ack:loki" and lines[0]["level"] == "error"
    assert lines[0]["message"] == (
        f"fapilog could not update the spool {tmp_path}: [Errno 9] Bad file descriptor "
        "(records already delivered may be sent again by a later process)"
    )


def test_the_bytes_of_segments_this_process_does_not_hold_count_toward_the_cap(
    spools: list[Spool], tmp_path: Path
) -> None:
    (tmp_path / "0-1-1.seg").write_bytes(b"x" * 1000)  # other processes' segments
    (tmp_path / "0-2-1.seg").write_bytes(b"x" * 500)
    (tmp_path / "notes.txt").write_bytes(b"x" * 300)  # not a segment
    spool = make(spools, tmp_path)
    spool.write([rec(0)])
    assert spool.disk_bytes() == spool.held_bytes() + 1500
    assert spool.held_bytes() == spool._segments[0].end


def test_a_replay_reads_the_oldest_segment_first_at_most_limit_records(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path, max_bytes=1024 * KIB)  # 64 KiB segments
    n = 5
    for i in range(n):  # four in the first segment, the fifth in the second
        spool.write([rec(i, size=20 * KIB)])
    assert len(spool._segments) == 2
    first = spool.read(2)
    assert first is not None and bodies(first) == ["r0", "r1"] and first.count == 2
    assert first.start == 16 and first.stop == spool._segments[0].read_at
    rest = spool.read(100)
    assert rest is not None and rest.segment is spool._segments[0]
    assert bodies(rest) == [f"r{i}" for i in range(2, n - 1)]
    last = spool.read(100)
    assert last is not None and last.segment is spool._segments[1] and bodies(last) == [f"r{n - 1}"]
    assert spool.read(100) is None and not spool.has_unread()


def test_records_older_than_max_age_are_left_out_of_a_replay_and_counted(
    spools: list[Spool], tmp_path: Path, clock: Clock
) -> None:
    spool = make(spools, tmp_path, max_age=1.0)
    oldest = NOW + 2 - 1_000_000_000  # the clock's reading at the replay, less max_age
    spool.write([
        rec(0, timestamp=oldest - 1), rec(1, timestamp=oldest), rec(2, timestamp=None,
        observed=oldest - 1), rec(3, timestamp=None, observed=oldest),
    ])  # fmt: skip
    replay = spool.read(10)
    assert replay is not None and replay.count == 4 and replay.too_old == 2
    assert bodies(replay) == ["r1", "r3"]


def test_a_record_that_cannot_be_decoded_is_counted_not_replayed(
    spools: list[Spool], tmp_path: Path
) -> None:
    path = orphan_of(spools, tmp_path, [rec(0)])
    with open(path, "ab") as file:
        file.write(frame(RECORD + b"[1,2]") * 2)  # whole frames, not records
    spool = make(spools, tmp_path)
    assert spool.adopt_orphans() == (3, 0)
    replay = spool.read(10)
    assert replay is not None and replay.count == 3 and replay.unreadable == 2
    assert bodies(replay) == ["r0"]


def test_a_segment_damaged_on_disk_ends_where_the_damage_begins(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path)
    marks = [spool.write([rec(n)])[0] for n in range(3)]
    segment = spool._segments[0]
    os.pwrite(segment.fd, b"\xff", marks[1][0][1] - 1)  # the second record's last byte
    replay = spool.read(10)
    assert replay is not None and bodies(replay) == ["r0"] and replay.count == 1
    assert segment.end == replay.stop == marks[0][0][1] and not spool.has_unread()
    other = make(spools, tmp_path / "b")
    other.write([rec(0)])
    os.pwrite(other._segments[0].fd, b"\xff", 16 + 8)  # its first frame
    replay = other.read(10)
    assert replay is not None and (replay.count, replay.stop, other._segments[0].end) == (0, 16, 16)


def test_completing_a_replay_acknowledges_it_and_removes_a_finished_segment(
    spools: list[Spool], tmp_path: Path
) -> None:
    path = orphan_of(spools, tmp_path, [rec(0), rec(1), rec(2)])
    spool = make(spools, tmp_path)
    assert spool.adopt_orphans() == (3, 0)
    assert spool.pending == 3 and spool.own_pending() == 0
    replay = spool.read(2)
    assert replay is not None and spool.complete(replay, 1) == 0
    (segment,) = spool._segments
    assert on_disk_ack(segment) == replay.stop and segment.pending == 1
    assert spool.replayed == 1 and spool.settled_own == 0  # not this process's own records
    last = spool.read(2)
    assert last is not None and spool.complete(last, 1) == 0
    assert not path.exists() and spool._segments == [] and spool.replayed == 2


def test_completing_a_replay_whose_segment_was_removed_returns_its_count(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path, max_bytes=128 * KIB)
    spool.write([rec(n, size=30 * KIB) for n in range(3)])
    replay = spool.read(2)
    assert replay is not None
    spool.write([rec(n, size=30 * KIB) for n in (3, 4)])  # the first segment goes
    assert spool.complete(replay, 2) == 2 and spool.replayed == 2


def test_a_batch_given_back_is_read_again_from_what_is_not_acknowledged(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path)
    marks = [spool.write([rec(n)])[0] for n in range(4)]
    first = spool.read(1)
    second = spool.read(1)
    assert first is not None and second is not None
    spool.give_back(first)
    spool.give_back(second)  # (already rewound further: stays there)
    again = spool.read(1)
    assert again is not None and bodies(again) == ["r0"] and again.start == 16
    spool.give_back(again)
    spool.settle(marks[0] + marks[1])  # meanwhile delivered from memory
    spool.give_back(again)  # nothing to rewind: read_at is already at the start
    replay = spool.read(10)
    assert replay is not None and bodies(replay) == ["r2", "r3"]


def test_one_write_that_needs_two_segments_removed_counts_both(
    spools: list[Spool], tmp_path: Path
) -> None:
    spool = make(spools, tmp_path, max_bytes=256 * KIB)  # 64 KiB segments
    for n in range(4):  # two segments of two records each
        spool.write([rec(n, size=60 * KIB)])
    assert len(spool._segments) == 2
    marks, evicted = spool.write([rec(4, size=200 * KIB)])
    assert evicted == 4 and sum(m[2] for m in marks) == 1
    assert spool.settled_own == 4 and len(spool._segments) == 1


def test_taking_over_goes_on_past_an_orphan_with_nothing_left(
    spools: list[Spool], tmp_path: Path
) -> None:
    """A process that died after its segment's records were all settled, before it removed
    the file: that one is removed, and the orphans after it are taken over all the same."""
    writer = make(spools, tmp_path / "a")
    ((segment, stop, count),) = writer.write([rec(0)])[0]
    segment.acknowledge(stop, count)
    shutil.copy(segment.path, tmp_path / "00000000000000000001-1-1.seg")
    writer.close()
    orphan_of(spools, tmp_path / "b", [rec(1), rec(2)]).rename(
        tmp_path / "00000000000000000002-1-1.seg"
    )
    spool = make(spools, tmp_path)
    assert spool.adopt_orphans() == (2, 0)
    assert seg_files(tmp_path) == ["00000000000000000002-1-1.seg"]
    replay = spool.read(10)
    assert replay is not None and bodies(replay) == ["r1", "r2"]

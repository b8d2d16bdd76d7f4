"""The disk spool behind a network exporter: records it cannot deliver now wait on disk, in
order, and are replayed once the sink accepts them again, by this process or, after an exit
or a crash, by the next process of the same service (docs/delivery.md).

`Spool` is one destination's directory (`destination_dir`: keyed by service name, exporter,
endpoint and tenant, so a replay never sends one service's records under another's name or
to another sink). This process writes its own segments (`fapilog.pipeline.segments`) and
adopts those of processes that are gone. The exporter's `BatchQueue` drives it: it writes
what it cannot keep or deliver (`write`), and its worker replays (`read`, then `complete` or
`give_back`).

Bounds: `max_bytes` on disk per destination (this process's segments and the others' it can
see); beyond it this process's oldest segments go, their records counted as dropped
(``spool_full``). Records older than `max_age` are dropped at replay (``too_old``).

Thread safety: one lock guards the files and figures. The queue calls `write` with its own
lock held and `read`/`complete`/`give_back` without it; the spool never takes the queue's
lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fapilog import _diag
from fapilog.otel.codec import RECORD, decode, encode
from fapilog.otel.logs import ReadableLogRecord
from fapilog.pipeline.segments import (
    PART,
    SUFFIX,
    Segment,
    adopt,
    create,
    frame,
    make_private_dir,
    scan_frames,
)
from fapilog.settings import SpoolSettings
from fapilog.settings._errors import setting_error

__all__ = ["Mark", "Replay", "Spool", "default_base", "destination_dir", "open_spool"]

Mark = tuple[Segment, int, int]  # records written: their segment, the offset after them, count

_NOT_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
# the most bytes one write() carries (a spilled queue is written in parts of this size)
_WRITE_CHUNK = 256 * 1024


def default_base() -> str:
    """``$XDG_STATE_HOME/fapilog/spool``, else ``~/.local/state/fapilog/spool``."""
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    if not state or not os.path.isabs(state):
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "fapilog", "spool")


def destination_dir(base: str, exporter: str, service: str, destination: str) -> str:
    """The directory of one destination: readable names, and a hash of everything that
    tells destinations apart (exporter, service, endpoint and tenant)."""
    key = "\0".join((exporter, service, destination))
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    slug = _NOT_SLUG.sub("_", service)[:40] or "service"
    return os.path.join(base, f"{exporter}-{slug}-{digest[:16]}")


@dataclass
class Replay:
    """A batch read from one segment: `records` to export (those not too old), `count`
    records in all between `start` and `stop`, `too_old` left out as older than max_age."""

    segment: Segment
    start: int
    stop: int
    count: int
    records: list[ReadableLogRecord] = field(default_factory=list)
    too_old: int = 0
    unreadable: int = 0


class Spool:
    """One destination's spool for this process (see the module docstring)."""

    def __init__(self, directory: str, settings: SpoolSettings, name: str) -> None:
        self.directory = directory
        self.name = name
        self.max_bytes = settings.max_bytes
        self.max_age_ns = int(settings.max_age * 1e9)
        self.segment_bytes = max(64 * 1024, min(16 * 1024 * 1024, self.max_bytes // 16))
        self._lock = threading.Lock()
        self.wake: Callable[[], None] | None = None  # tells the replaying worker to look
        self._fresh()
        _SPOOLS.add(self)

    def _fresh(self) -> None:
        self._segments: list[Segment] = []  # oldest first (names sort by creation time)
        self._writing: Segment | None = None
        self._serial = 0
        self._others = 0  # bytes of segments in the directory this process does not hold
        self.closed = False
        self.left = 0  # records left on disk when closed
        self.written = 0  # records written
        self.settled_own = 0  # of those, records delivered or dropped since (acknowledged)
        self.replayed = 0  # records delivered from disk
        self.adopted = 0  # records taken over from processes that are gone
        self.torn = 0  # of those, records cut off by a crash (dropped: spool_torn)
        self.write_errors = 0

    # -- figures -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records on disk this process holds, not yet delivered or dropped (once closed:
        those it left on disk for a later process)."""
        if self.closed:
            return self.left
        return sum(segment.pending for segment in self._segments)

    def held_bytes(self) -> int:
        return sum(segment.end for segment in self._segments)

    def disk_bytes(self) -> int:
        """Bytes on disk in the destination's directory, as last seen."""
        return self.held_bytes() + self._others

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "directory": self.directory,
                "pending": self.pending,
                "bytes": self.disk_bytes(),
                "max_bytes": self.max_bytes,
                "segments": len(self._segments),
                "written": self.written,
                "replayed": self.replayed,
                "adopted": self.adopted,
                "torn": self.torn,
                "write_errors": self.write_errors,
            }

    # -- writing -----------------------------------------------------------------------

    def write(self, records: Sequence[ReadableLogRecord]) -> tuple[list[Mark], int]:
        """Append `records` in order. Returns (where they were written: a prefix of them,
        records of the oldest segments removed to make room). What is not written found
        no room (the cap, with nothing older left to remove) or the disk failed."""
        with self._lock:
            marks: list[Mark] = []
            if self.closed:
                return marks, 0
            written = evicted = 0
            total = len(records)
            while written < total:
                try:
                    segment = self._segment_for_writing()
                    data, count = self._encode(segment, records, written)
                    made, evicted_now = self._room_for(len(data))
                    evicted += evicted_now
                    if not made:
                        break
                    segment.append(data, count)
                    marks.append((segment, segment.end, count))
                except Exception as exc:  # a full disk, or a bug: never raise to the queue
                    self.write_errors += 1
                    _diag.report(
                        f"spool-write:{self.name}",
                        f"fapilog could not write to the spool {self.directory}: {exc!r}",
                        level="error",
                    )
                    break
                written += count
            self.written += written
            return marks, evicted

    def settle(self, marks: list[Mark]) -> int:
        """Records written as a copy of a batch in flight were delivered or accounted for:
        acknowledge them (they are the oldest unacknowledged records of their segments).
        Returns how many of them had been removed meanwhile to make room (and counted as
        dropped then: the batch's own outcome counts them instead)."""
        gone = 0
        with self._lock:
            for segment, stop, count in marks:
                if segment.fd < 0:  # removed meanwhile (to make room)
                    gone += count
                    continue
                try:
                    segment.acknowledge(max(stop, segment.acked), count)
                except OSError as exc:
                    self._ack_failed(exc)
                self.settled_own += count
                if segment.done():
                    self._forget(segment, remove=True)
        return gone

    def own_pending(self) -> int:
        """Records this process wrote that are not settled yet."""
        return sum(segment.pending for segment in self._segments if segment.own)

    def has_unread(self) -> bool:
        """Whether a replay has something to read."""
        with self._lock:
            return any(segment.read_at < segment.end for segment in self._segments)

    def _segment_for_writing(self) -> Segment:
        segment = self._writing
        if segment is not None and segment.end < self.segment_bytes:
            return segment
        if segment is not None:  # (were it done, it would have gone when it was settled)
            segment.writing = False
        self._serial += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._serial}"
        segment = create(self.directory, name)
        self._segments.append(segment)
        self._writing = segment
        self._measure_others()
        return segment

    def _encode(
        self, segment: Segment, records: Sequence[ReadableLogRecord], start: int
    ) -> tuple[bytes, int]:
        """Frames for records[start:], up to about `_WRITE_CHUNK` bytes (at least one)."""
        out: list[bytes] = []
        size = 0
        count = 0
        for record in records[start:]:
            parts: list[bytes] = []
            encode(record, segment.tables, parts)
            for part in parts:
                framed = frame(part)
                out.append(framed)
                size += len(framed)
            count += 1
            if size >= _WRITE_CHUNK:
                break
        return b"".join(out), count

    def _room_for(self, size: int) -> tuple[bool, int]:
        """Remove this process's oldest segments (not the one being written) until `size`
        more bytes fit under the cap. Returns (whether they fit, records removed)."""
        evicted = 0
        while self.disk_bytes() + size > self.max_bytes:
            oldest = next((s for s in self._segments if s is not self._writing), None)
            if oldest is None:
                return False, evicted
            evicted += oldest.pending
            if oldest.own:
                self.settled_own += oldest.pending
            self._forget(oldest, remove=True)
        return True, evicted

    def _measure_others(self) -> None:
        """Bytes of the directory's segments this process does not hold."""
        held = {segment.name for segment in self._segments}
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(SUFFIX) and entry.name not in held:
                        try:
                            total += entry.stat().st_size
                        except OSError:
                            pass
        except OSError:
            pass
        self._others = total

    # -- replaying ---------------------------------------------------------------------

    def read(self, limit: int) -> Replay | None:
        """The next batch to replay (at most `limit` records, from the oldest segment with
        unread records), or None when there is none."""
        with self._lock:
            if self.closed:
                return None
            for segment in self._segments:
                if segment.read_at < segment.end:
                    return self._read(segment, limit)
            return None

    def _read(self, segment: Segment, limit: int) -> Replay:
        replay = Replay(segment, segment.read_at, segment.read_at, 0)
        oldest = time.time_ns() - self.max_age_ns
        tables = segment.tables
        for _, kind, payload, after in scan_frames(segment.fd, segment.read_at, segment.end):
            if kind is None:  # cannot happen below `end`; end the segment here
                segment.end = replay.stop
                break
            replay.stop = after
            if kind != RECORD:  # (the segment's tables: learned when written or adopted)
                continue
            replay.count += 1
            try:
                record = decode(payload, tables)
            except Exception:  # a damaged record (its CRC matched: written so)
                replay.unreadable += 1
            else:
                stamp = record.log_record.timestamp or record.log_record.observed_timestamp
                if stamp is not None and stamp < oldest:
                    replay.too_old += 1
                else:
                    replay.records.append(record)
            if replay.count >= limit:
                break
        segment.read_at = replay.stop
        return replay

    def complete(self, replay: Replay, delivered: int) -> int:
        """The batch is settled (delivered, dropped, or written again): acknowledge it.
        Returns how many of its records had been removed meanwhile with their segment, to
        make room (and counted as dropped then: the batch's own outcome counts them
        instead)."""
        with self._lock:
            self.replayed += delivered
            segment = replay.segment
            if segment.fd < 0:  # removed meanwhile (evicted to make room)
                return replay.count
            try:
                segment.acknowledge(replay.stop, replay.count)
            except OSError as exc:
                self._ack_failed(exc)
            if segment.own:
                self.settled_own += replay.count
            if segment.done():
                self._forget(segment, remove=True)
            return 0

    def give_back(self, replay: Replay) -> None:
        """The batch was not delivered and will be tried again: read it again next time."""
        with self._lock:
            segment = replay.segment
            if segment.fd >= 0 and segment.read_at > replay.start:
                segment.read_at = max(segment.acked, replay.start)

    def _ack_failed(self, exc: OSError) -> None:
        _diag.report(
            f"spool-ack:{self.name}",
            f"fapilog could not update the spool {self.directory}: {exc} (records already "
            "delivered may be sent again by a later process)",
            level="error",
        )

    # -- other processes' segments ----------------------------------------------------

    def adopt_orphans(self) -> tuple[int, int]:
        """Take over the segments of processes that are gone (their lock is free). Returns
        (records taken over, torn records among them)."""
        with self._lock:
            if self.closed:
                return 0, 0
            held = {segment.name for segment in self._segments}
            try:
                with os.scandir(self.directory) as entries:
                    names = sorted(entry.name for entry in entries)
            except OSError:
                return 0, 0
            adopted = torn = 0
            for name in names:
                path = os.path.join(self.directory, name)
                if name.endswith(PART):
                    _remove_abandoned(path)
                if not name.endswith(SUFFIX) or name in held:
                    continue
                try:
                    segment = adopt(path)
                except OSError as exc:  # unreadable: left for another attempt
                    _diag.report(
                        f"spool-adopt:{self.name}",
                        f"fapilog could not read the spool segment {path}: {exc}",
                        level="error",
                    )
                    continue
                if segment is None:
                    continue
                adopted += segment.pending + segment.torn
                torn += segment.torn
                if segment.pending == 0:
                    segment.remove()
                    continue
                self._segments.append(segment)
            self._segments.sort(key=lambda segment: segment.name)
            self.adopted += adopted
            self.torn += torn
            self._measure_others()
        if torn:
            _diag.report(
                f"spool-torn:{self.name}",
                f"fapilog: {torn} record(s) in the spool {self.directory} were cut off when "
                "the process writing them died; skipped (dropped: spool_torn)",
                level="warning",
            )
        return adopted, torn

    # -- life --------------------------------------------------------------------------

    def _forget(self, segment: Segment, *, remove: bool) -> None:
        if segment in self._segments:
            self._segments.remove(segment)
        if segment is self._writing:
            self._writing = None
        if remove:
            segment.remove()
        else:
            segment.close()

    def close(self) -> None:
        """Release every segment (the lock goes with the fd); what is pending stays on disk
        for the next process. Other spools of this process on the same directory adopt it."""
        with self._lock:
            if self.closed:
                return
            self.left = self.pending
            self.closed = True
            for segment in list(self._segments):
                segment.writing = False
                self._forget(segment, remove=segment.done())
        for other in list(_SPOOLS):
            if other is not self and other.directory == self.directory and not other.closed:
                adopted, _ = other.adopt_orphans()
                if adopted and other.wake is not None:
                    other.wake()

    def _after_fork_in_child(self) -> None:
        """The parent keeps its segments (and their locks: closing the child's copies of
        the fds does not release them); the child starts with none."""
        for segment in self._segments:
            segment.close()
        self._lock = threading.Lock()
        self._fresh()


def _remove_abandoned(path: str) -> None:
    """A ``.part`` file whose creator died before renaming it (its lock is free)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_spool(
    settings: SpoolSettings, exporter: str, service: str, destination: str
) -> Spool | None:
    """The spool of one destination, or None (spool off; the default directory cannot be
    written, reported once). A directory set explicitly that cannot be written is a
    `ConfigurationError`."""
    if not settings.enabled:
        return None
    explicit = settings.dir is not None
    base = os.path.abspath(os.path.expanduser(settings.dir)) if settings.dir else default_base()
    directory = destination_dir(base, exporter, service, destination)
    problem = _writable(directory)
    if problem is None:
        spool = Spool(directory, settings, exporter)
        spool.adopt_orphans()
        return spool
    if explicit:
        raise setting_error(
            "spool.dir",
            f"the spool directory cannot be written: {problem}",
            value=settings.dir,
            allowed="a writable directory (it is created if missing), or "
            "FAPILOG_SPOOL__ENABLED=false",
        )
    _diag.report(
        "spool-default-dir",
        f"fapilog: the default spool directory {base} cannot be written ({problem}); "
        f"exporter {exporter!r} keeps undelivered records in memory only. Set "
        "FAPILOG_SPOOL__DIR to a writable directory (a volume) to keep them across outages "
        "and restarts, or FAPILOG_SPOOL__ENABLED=false to silence this.",
        level="warning",
    )
    return None


def _writable(directory: str) -> str | None:
    """Why `directory` cannot hold a spool (created 0700 if missing), or None."""
    try:
        make_private_dir(directory)
        probe = os.path.join(directory, f".probe-{os.getpid()}-{threading.get_ident()}")
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:  # (makedirs raises if `directory` is there but no directory)
        return os.strerror(exc.errno) if exc.errno else str(exc)
    return None


_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for spool in list(_SPOOLS):
        spool._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)

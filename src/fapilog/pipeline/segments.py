"""The spool's files: append-only segments of framed records, each held by one process
under an advisory lock (see docs/delivery.md for the guarantees they carry).

A segment is ``<created ns>-<pid>-<n>.seg`` in the destination's directory::

    header   8 bytes magic "FAPILOG1", 8 bytes acknowledged offset (little endian)
    frames   4 bytes payload length, 4 bytes CRC-32 of the payload, the payload
             (a kind byte and its data: `fapilog.otel.codec`)

- **Appends** are single ``pwrite()`` calls of whole frames at the segment's end (never
  ``O_APPEND``, under which Linux's ``pwrite`` ignores its offset): once a write returns,
  the frames are in the kernel's page cache and survive the process
  being killed (SIGKILL, the OOM killer). A machine crash may lose what the kernel had not
  written to the device yet.
- **Acknowledgement** rewrites the header's offset (one 8-byte ``pwrite``): everything before
  it was delivered (or dropped and counted), so a replay starts there. Only a batch in flight
  when the process died is sent twice.
- **A torn last frame** (the process died inside a write, or the disk filled) fails its length
  or CRC check: it is skipped and counted, and the segment ends there.
- **Ownership** is an exclusive ``flock()`` held for as long as the process uses the segment.
  A segment is created under a ``.part`` name, locked, then renamed, so no other process can
  take a segment while it is being created. The kernel releases the lock when its holder
  dies: a segment whose lock can be taken belongs to a dead process and is adopted by the
  first live process that takes it (`adopt`). After taking the lock, the adopter checks that
  the path still names the file it locked (a segment fully replayed is deleted while locked).
- Directories are created 0700 and files 0600.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from fapilog.otel.codec import RECORD, Tables

__all__ = [
    "HEADER",
    "SUFFIX",
    "Segment",
    "adopt",
    "create",
    "frame",
    "make_private_dir",
    "scan_frames",
]

MAGIC = b"FAPILOG1"
HEADER = 16
SUFFIX = ".seg"
PART = ".part"
_FRAME = struct.Struct("<II")
_ACK = struct.Struct("<Q")
_READ_CHUNK = 1024 * 1024
# a frame longer than this is garbage (a torn length): no single record is that large
MAX_FRAME = 64 * 1024 * 1024


def frame(payload: bytes) -> bytes:
    """One frame: length, CRC-32 and `payload` (kind byte included)."""
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def make_private_dir(path: str) -> None:
    """Create `path` (and its parents) if missing; the directories fapilog creates are 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)


@dataclass
class Segment:
    """One open segment, its fd holding the lock. `end` is the offset after the last whole
    frame, `acked` the acknowledged offset, `read_at` where the next read starts (at or
    after `acked`), `pending` the records between `acked` and `end`."""

    path: str
    fd: int
    end: int
    acked: int
    pending: int = 0
    read_at: int = 0
    tables: Tables = field(default_factory=Tables)
    writing: bool = False
    own: bool = False  # created by this process (not adopted)
    torn: int = 0

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def append(self, data: bytes, records: int) -> None:
        """Append whole frames (one write). On failure the file is cut back to its last
        whole frame and the OSError raised."""
        try:
            written = os.pwrite(self.fd, data, self.end)
            if written != len(data):  # a partial write: the disk is full
                raise OSError(errno.ENOSPC, "no space left on device (a partial write)")
        except OSError:
            try:
                os.ftruncate(self.fd, self.end)
            except OSError:
                pass
            raise
        self.end += len(data)
        self.pending += records

    def acknowledge(self, offset: int, records: int) -> None:
        """Everything before `offset` is settled: record it in the header. The segment's
        figures move on even if the header cannot be written (the OSError is raised): this
        process does not read those records again."""
        self.acked = offset
        self.pending -= records
        self.read_at = max(self.read_at, offset)
        os.pwrite(self.fd, _ACK.pack(offset), len(MAGIC))

    def done(self) -> bool:
        """Fully acknowledged: nothing in it is needed any more (a segment still being
        written to is deleted too, and the next write starts a new one)."""
        return self.acked >= self.end > HEADER or (not self.writing and self.acked >= self.end)

    def size(self) -> int:
        return self.end

    def remove(self) -> None:
        """Delete the file (still locked, so no other process can adopt it) and close it."""
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        """Close the fd, which releases the lock (the file stays for a later process)."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def create(directory: str, name: str) -> Segment:
    """A new segment for this process to write, locked before it becomes visible."""
    final = os.path.join(directory, name + SUFFIX)
    temporary = os.path.join(directory, name + PART)
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        header = MAGIC + _ACK.pack(HEADER)
        if os.pwrite(fd, header, 0) != HEADER:
            raise OSError(errno.ENOSPC, "no space left on device")
        os.rename(temporary, final)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return Segment(final, fd, HEADER, HEADER, read_at=HEADER, writing=True, own=True)


def adopt(path: str) -> Segment | None:
    """Take over the segment at `path` if its writer is gone (its lock is free), reading
    its tables and counting its pending records; None if another process holds it, it was
    deleted meanwhile, or it is not a segment. A segment whose header is incomplete is
    removed."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    try:
        status = os.fstat(fd)
        if status.st_nlink == 0 or os.stat(path).st_ino != status.st_ino:
            os.close(fd)  # replayed and deleted by the process that held it
            return None
    except OSError:
        os.close(fd)
        return None
    header = os.pread(fd, HEADER, 0)
    if len(header) < HEADER or not header.startswith(MAGIC):
        segment = Segment(path, fd, 0, 0)
        if MAGIC.startswith(header[: len(MAGIC)]):  # (a header cut short)
            segment.remove()  # created and never written: nothing in it
        else:
            segment.close()  # not ours: leave it alone
        return None
    acked = _ACK.unpack_from(header, len(MAGIC))[0]
    segment = Segment(path, fd, HEADER, max(HEADER, acked))
    for offset, kind, payload, after in scan_frames(fd, HEADER, status.st_size):
        if kind is None:  # torn: the segment ends here
            segment.torn = 1
            break
        if kind == RECORD:
            if offset >= segment.acked:
                segment.pending += 1
        else:
            segment.tables.learn(kind, payload)
        segment.end = after
    segment.acked = min(segment.acked, segment.end)
    segment.read_at = segment.acked
    return segment


def scan_frames(fd: int, start: int, stop: int) -> Iterator[tuple[int, bytes | None, bytes, int]]:
    """The frames between offsets `start` and `stop`: (offset, kind, payload without the
    kind byte, offset after). A frame cut off or failing its CRC is yielded once with kind
    None, and ends the scan."""
    buffer = b""
    base = start  # the file offset of buffer[0]
    position = start
    while position < stop:
        local = position - base
        if len(buffer) - local < _FRAME.size:
            buffer = _refill(fd, buffer[local:], position, need=_FRAME.size, stop=stop)
            base, local = position, 0
            if len(buffer) < _FRAME.size:
                yield position, None, b"", stop
                return
        length, crc = _FRAME.unpack_from(buffer, local)
        if length == 0 or length > MAX_FRAME:
            yield position, None, b"", stop
            return
        need = _FRAME.size + length
        if len(buffer) - local < need:
            buffer = _refill(fd, buffer[local:], position, need=need, stop=stop)
            base, local = position, 0
            if len(buffer) < need:
                yield position, None, b"", stop
                return
        payload = buffer[local + _FRAME.size : local + need]
        if zlib.crc32(payload) != crc:
            yield position, None, b"", stop
            return
        after = position + need
        yield position, payload[:1], payload[1:], after
        position = after


def _refill(fd: int, kept: bytes, position: int, *, need: int, stop: int) -> bytes:
    """The bytes from `position` on: `kept` (already read) and at least `need` bytes in all
    (if the file has them before `stop`)."""
    want = max(need - len(kept), _READ_CHUNK)
    offset = position + len(kept)
    want = min(want, max(0, stop - offset))
    chunks = [kept]
    while want > 0:
        data = os.pread(fd, want, offset)
        if not data:
            break
        chunks.append(data)
        offset += len(data)
        want -= len(data)
    return b"".join(chunks)

"""Reading log lines for `fapilog pretty`: whole files (``.gz`` backups too), standard input,
and a growing file followed across rotation, as ``tail -F`` does.

A followed file is read to its end, then polled. When its path names another file (the log
was rotated: renamed, and a new one created) the rest of the old file is read first, then
the new file from its start; when it shrinks (truncated in place) it is read again from its
start. So each line written is shown once, whatever the rotation.
"""

from __future__ import annotations

import gzip
import os
import stat
import time
from collections.abc import Iterator
from typing import IO, Any, cast

__all__ = ["Follower", "follow", "is_regular", "open_log", "read_lines"]

POLL_SECONDS = 0.1  # how often a followed file is looked at when nothing new came


CHUNK = 1024 * 1024  # the most read from a file at once: a large log is shown as it is read


def _text(data: bytes) -> str:
    """A line's text; bytes that are not UTF-8 kept as surrogate escapes, so that a line that
    is not JSON is written back exactly as it was read."""
    return data.decode("utf-8", "surrogateescape").rstrip("\r")


def read_lines(stream: IO[bytes]) -> Iterator[str]:
    """The lines of a binary stream, without their newlines."""
    for data in stream:
        yield _text(data.rstrip(b"\n"))


def open_log(path: str) -> IO[bytes]:
    """A log file for reading; a ``.gz`` backup decompressed."""
    if path.endswith(".gz"):
        return cast("IO[bytes]", gzip.open(path, "rb"))
    return open(path, "rb")


def is_regular(path: str) -> bool:
    """Whether `path` is a regular file (a pipe or a terminal cannot be followed)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # (not there yet: it will be a file)


class Follower:
    """The new lines of one file, polled (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self.behind = False  # the last poll stopped at CHUNK bytes: more is there now

    def _open(self) -> bool:
        try:
            file = open(self.path, "rb")  # noqa: SIM115  # (kept open between polls)
        except OSError:
            return False
        status = os.fstat(file.fileno())
        self._file, self._identity = file, (status.st_dev, status.st_ino)
        return True

    def _read(self) -> list[str]:
        """The complete lines of the next CHUNK bytes at most (sets `behind`)."""
        assert self._file is not None
        data = self._file.read(CHUNK)
        self.behind = len(data) == CHUNK
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [_text(line) for line in complete]

    def _read_rest(self) -> list[str]:
        lines = self._read()
        while self.behind:
            lines += self._read()
        return lines

    def poll(self) -> list[str]:
        """The lines completed since the last poll (at most CHUNK bytes of them)."""
        if self._file is None and not self._open():
            return []
        lines = self._read()
        if self.behind:
            return lines  # rotation is looked for once caught up
        try:
            status = os.stat(self.path)
        except OSError:
            return lines  # rotated, the new file not there yet: the old one may still grow
        if (status.st_dev, status.st_ino) != self._identity:
            lines += self._read_rest()  # what was written to the old file before it moved
            if self._partial:  # its last line, unfinished: it will not be
                lines.append(_text(self._partial))
                self._partial = b""
            self.close()
            if self._open():
                lines += self._read()
        elif status.st_size < self._file.tell():  # type: ignore[union-attr]  # (opened above)
            self._file.seek(0)  # type: ignore[union-attr]
            self._partial = b""
            lines += self._read()
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def skip_to_last(self, count: int) -> list[str]:
        """Open the file and return its last `count` lines (the rest is not shown), read
        backwards from its end."""
        if not self._open():
            return []
        file = self._file
        assert file is not None
        end = file.seek(0, os.SEEK_END)
        start, data = end, b""
        while start > 0 and data.count(b"\n") <= count:
            step = min(CHUNK, start)
            start -= step
            file.seek(start)
            data = file.read(step) + data
        file.seek(end)
        *complete, self._partial = data.split(b"\n")
        if start > 0:
            complete = complete[1:]  # (the first piece is the end of an earlier line)
        return [_text(line) for line in complete[-count:]] if count > 0 else []


def follow(paths: list[str], last: int | None, stop: Any = None) -> Iterator[list[str]]:
    """Batches of new lines of `paths`, for ever (or until `stop()` is true): first each
    file's lines (all, or the `last` ones), then what is appended, across rotation."""
    followers = [Follower(path) for path in paths]
    if last is not None:
        for follower in followers:
            yield follower.skip_to_last(last)
    while stop is None or not stop():
        batch: list[str] = []
        for follower in followers:
            batch += follower.poll()
        if batch:
            yield batch
        if not any(follower.behind for follower in followers) and not batch:
            time.sleep(POLL_SECONDS)

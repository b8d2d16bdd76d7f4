"""The rotating file exporter: JSON lines (the stdout schema) in a file, rotated by size
and time, with retention by count and age, optional gzip, and recovery from errors.

Several processes on one path (uvicorn/gunicorn workers): in the default ``lock`` mode every
batch is written with one ``write()`` to a file opened with ``O_APPEND``, while holding an
exclusive advisory lock (``flock``) on a companion lock file (``.app.log.lock``). Rotation
happens under the same lock, and before each write a process compares the inode at the path
with the one it has open: when another process (or logrotate) rotated, moved or deleted the
file, it reopens the path. So lines never interleave, no line is split across files and no
line is lost. ``per_process`` mode gives each process its own ``app.<pid>.log`` instead.

Errors (permission denied, disk full, a vanished directory) never reach the application:
the batch is counted as dropped (``fapilog.stats()``), the failure is reported once
(rate-limited) on stderr, and every following batch tries again, so writing resumes as soon
as the cause is gone. A short write is truncated back, so a full disk never leaves half a
line. All of it runs on the exporter's worker thread, never on the caller's.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fapilog import _diag
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.render import JsonRenderer
from fapilog.exporters.spec import ExporterSpec
from fapilog.settings import FileSettings, LoggingSettings
from fapilog.settings._errors import setting_error

try:
    import fcntl

    _HAS_FLOCK = True
except ImportError:  # pragma: no cover - Windows: no flock, one file per process
    _HAS_FLOCK = False

__all__ = [
    "FileExporter",
    "SPEC",
    "backups",
]

_STAMP = "%Y%m%dT%H%M%S"
_UNITS = {"hourly": 3600, "daily": 86400, "midnight": 86400}
_STALE_TMP_SECONDS = 600.0


def _backup_pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(name) + r"\.(\d{8}T\d{6}\.\d{6})(?:-(\d+))?(\.gz)?$")


def backups(path: str | os.PathLike[str]) -> list[Path]:
    """The rotated files of `path`, oldest first (``app.log.<UTC time>[-n][.gz]``)."""
    return [item[2] for item in _backup_entries(Path(path))]


def _backup_entries(target: Path) -> list[tuple[str, int, Path]]:
    pattern = _backup_pattern(target.name)
    found: list[tuple[str, int, Path]] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match:
            found.append((match.group(1), int(match.group(2) or 0), Path(entry.path)))
    found.sort(key=lambda item: (item[0], item[1]))
    return found


def _dir_mode(mode: int) -> int:
    """A directory mode matching a file mode: search permission wherever read is given."""
    return mode | ((mode & 0o444) >> 2) | 0o700


def _make_dirs(directory: Path, mode: int) -> None:
    """`os.makedirs` giving every directory it creates `mode` exactly, whatever the umask
    (`os.makedirs` gives the mode to the last one only, less the umask). Existing
    directories are left alone."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, mode)
        except FileExistsError:  # created meanwhile (another process)
            continue
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


class FileExporter(LogRecordExporter):
    """Writes each batch as JSON lines to a rotating file (see the module docstring).

    `clock` (seconds since the epoch) decides time rotation and names rotated files; tests
    pass their own to cross rotation boundaries without waiting.
    """

    def __init__(self, settings: FileSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._renderer = JsonRenderer()
        self._base = Path(os.path.abspath(os.path.expanduser(settings.path)))
        self._mode = settings.mode
        self._locking: bool = settings.multiprocess == "lock" and _HAS_FLOCK
        self._per_process: bool = not self._locking
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._lock_fd: int | None = None
        self._pid = os.getpid()
        self._next_rollover: float | None = None
        # reentrant: where no worker thread can start (interpreter shutdown), exports run on
        # the logging thread, and a signal handler's drain may interrupt one
        self._guard = threading.RLock()
        self._closed = False
        self._gap = 0
        self._to_compress: list[Path] = []
        self.written = 0
        self.dropped = 0
        self.rotations = 0
        self.errors = 0

    def __repr__(self) -> str:
        mode = self._settings.multiprocess
        return f"FileExporter(path={str(self._base)!r}, multiprocess={mode!r})"

    # -- the exporter contract -----------------------------------------------------------

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if not batch:
            return LogRecordExportResult.SUCCESS
        render = self._renderer.render_line
        lines = [render(readable) for readable in batch]  # per record, never raises
        with self._guard:
            if self._closed:
                return LogRecordExportResult.FAILURE
            try:
                self._write(lines)
            except OSError as exc:
                self._failed(exc, len(lines))
                return LogRecordExportResult.FAILURE
            finally:
                self._compress_pending()
            self.written += len(lines)
            if self._gap:
                _diag.report(
                    f"file-resumed:{self.path}",
                    f"fapilog file exporter: writing to {self.path} resumed; "
                    f"{self._gap} records were dropped meanwhile",
                    level="info",
                    path=str(self.path),
                    dropped=self._gap,
                )
                self._gap = 0
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is written with os.write: nothing is buffered here

    def shutdown(self) -> None:
        with self._guard:
            self._closed = True
            self._close_file()
            self._close_lock()

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "rotations": self.rotations,
            "errors": self.errors,
        }

    @property
    def path(self) -> Path:
        """The file written now (``app.<pid>.log`` in per-process mode)."""
        if not self._per_process:
            return self._base
        base = self._base
        return base.with_name(f"{base.stem}.{os.getpid()}{base.suffix}")

    def unwritable(self) -> str | None:
        """Why this exporter could not write, or None (checked at configure time, so that a
        path no process of this user can write fails then, not record by record): the
        directory is created as the first export would create it, and what an export opens
        is opened for writing (the file and the lock file when they exist, else a probe file
        is created in the directory and removed)."""
        target = self.path
        directory = target.parent
        blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            return f"{blocker} is not a directory"
        try:
            _make_dirs(directory, _dir_mode(self._mode))
        except OSError as exc:
            return f"cannot create the directory {directory}: {exc.strerror or exc}"
        opened = [(target, os.O_WRONLY | os.O_APPEND)]
        if self._locking:
            opened.append((target.with_name(f".{target.name}.lock"), os.O_RDWR))
        missing = False
        for path, flags in opened:
            if not path.exists():
                missing = True
            elif path.is_file():  # (a device or a pipe, /dev/stdout: judged when written)
                try:
                    os.close(os.open(path, flags | getattr(os, "O_CLOEXEC", 0)))
                except OSError as exc:
                    return f"cannot open {path} for writing: {exc.strerror or exc}"
        if missing:
            try:
                fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
            except OSError as exc:
                return f"cannot create files in {directory}: {exc.strerror or exc}"
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
        return None

    # -- writing -------------------------------------------------------------------------

    def _write(self, lines: list[bytes]) -> None:
        if self._pid != os.getpid():  # forked: the lock fd's description is the parent's
            self._forget_fds()
        max_bytes = self._settings.max_bytes
        with self._locked():
            self._ensure_open()
            now = self._clock()
            rotation_ok = True
            if self._next_rollover is not None and now >= self._next_rollover:
                if self._size() > 0:
                    rotation_ok = self._rotate(now)
                else:
                    self._next_rollover = self._rollover_after(now)
            size = self._size()
            group: list[bytes] = []
            group_bytes = 0
            for line in lines:
                used = size + group_bytes
                if max_bytes and rotation_ok and used > 0 and used + len(line) > max_bytes:
                    if group:
                        self._write_all(b"".join(group), size)
                        size += group_bytes
                        group, group_bytes = [], 0
                    rotation_ok = self._rotate(now)
                    size = self._size()
                group.append(line)
                group_bytes += len(line)
            if group:
                self._write_all(b"".join(group), size)

    def _write_all(self, data: bytes, start: int) -> None:
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError:
            # disk full after a partial write: cut back to the last complete line
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size > start:
                    os.ftruncate(fd, start)
            raise

    def _size(self) -> int:
        assert self._fd is not None
        return os.fstat(self._fd).st_size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._locking:
            yield
            return
        if self._lock_fd is None:
            base = self._base
            _make_dirs(base.parent, _dir_mode(self._mode))
            lock_path = base.with_name(f".{base.name}.lock")
            self._lock_fd = os.open(
                lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), self._mode
            )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _ensure_open(self) -> None:
        """Open the path, or reopen it when the file there is not the one we hold (rotated by
        another process, moved by logrotate, deleted)."""
        path = self.path
        if self._fd is not None:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == self._inode:
                    return
            except FileNotFoundError:
                pass
            self._close_file()
        self._open(path)

    def _open(self, path: Path) -> None:
        _make_dirs(path.parent, _dir_mode(self._mode))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags | os.O_EXCL, self._mode)
            created = True
        except FileExistsError:
            fd = os.open(path, flags, self._mode)
            created = False
        if created:
            with contextlib.suppress(OSError):
                os.fchmod(fd, self._mode)  # the configured mode, whatever the umask
        st = os.fstat(fd)
        self._fd = fd
        self._inode = (st.st_dev, st.st_ino)
        self._pid = os.getpid()
        now = self._clock()
        # a file left from an earlier period (a restart the next day) rotates on first write
        started = min(now, st.st_mtime) if st.st_size > 0 else now
        self._next_rollover = self._rollover_after(started)

    def _rollover_after(self, moment: float) -> float | None:
        unit = _UNITS.get(self._settings.when)
        if unit is None:
            return None
        span = unit * self._settings.interval
        offset = 0 if self._settings.utc else time.localtime(moment).tm_gmtoff
        return (math.floor((moment + offset) / span) + 1) * span - offset

    def _rotate(self, now: float) -> bool:
        """Rename the current file to ``<name>.<UTC time>`` and start a new one. Called under
        the lock with the current file open. Returns False (and keeps appending to the
        current file, losing nothing) when the directory does not allow it."""
        path = self.path
        moment = max(now, self._clock())
        stamp = time.strftime(_STAMP, time.gmtime(moment))
        stamp += f".{int(moment * 1e6) % 1_000_000:06d}"
        counter = 0
        existing = _backup_entries(path)
        if existing and (stamp, 0) <= existing[-1][:2]:
            # same microsecond, or the clock went back: names must still sort by age
            stamp, counter = existing[-1][0], existing[-1][1] + 1
        suffix = f"{stamp}-{counter}" if counter else stamp
        backup = path.with_name(f"{path.name}.{suffix}")
        while os.path.lexists(backup):  # a directory it cannot list hides its backups
            counter += 1
            backup = path.with_name(f"{path.name}.{stamp}-{counter}")
        try:
            os.rename(path, backup)
        except OSError as exc:
            self.errors += 1
            _diag.report(
                f"file-rotate:{path}",
                f"fapilog file exporter cannot rotate {path}: {exc!r}; "
                "writing on to the current file",
                level="error",
                path=str(path),
            )
            self._next_rollover = self._rollover_after(now)
            return False
        self._close_file()
        self.rotations += 1
        if self._settings.gzip:
            self._to_compress.append(backup)
        self._open(path)
        self._prune()
        return True

    def _prune(self) -> None:
        """Retention: keep the newest `backup_count` rotated files, none older than
        `max_age_days`. Runs under the lock."""
        files = backups(self.path)
        keep = self._settings.backup_count
        doomed = files[: max(0, len(files) - keep)]
        max_age = self._settings.max_age_days * 86400
        if max_age:
            limit = time.time() - max_age
            for candidate in files[len(doomed) :]:
                with contextlib.suppress(OSError):
                    if candidate.stat().st_mtime < limit:
                        doomed.append(candidate)
        for candidate in doomed:
            with contextlib.suppress(OSError):
                candidate.unlink()
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        prefix = self.path.name + "."
        limit = time.time() - _STALE_TMP_SECONDS
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                if entry.name.startswith(prefix) and entry.name.endswith(".gz.tmp"):
                    with contextlib.suppress(OSError):
                        if entry.stat().st_mtime < limit:
                            os.unlink(entry.path)

    def _compress_pending(self) -> None:
        """gzip the files rotated by this batch, outside the lock (other processes keep
        writing meanwhile). A half-written archive never carries the final name."""
        while self._to_compress:
            source = self._to_compress.pop(0)
            target = source.with_name(source.name + ".gz")
            temporary = source.with_name(source.name + ".gz.tmp")
            try:
                with open(source, "rb") as src, gzip.open(temporary, "wb", compresslevel=6) as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
                os.chmod(temporary, self._mode)
                os.replace(temporary, target)
                os.unlink(source)
            except FileNotFoundError:  # pruned by retention meanwhile
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                _diag.report(
                    f"file-gzip:{source}",
                    f"fapilog file exporter could not gzip {source}: {exc!r}; left as is",
                )

    # -- failures and cleanup ------------------------------------------------------------

    def _failed(self, exc: OSError, count: int) -> None:
        self.dropped += count
        self.errors += 1
        self._gap += count
        self._close_file()  # reopen on the next batch
        _diag.report(
            f"file:{self.path}",
            f"fapilog file exporter cannot write {self.path}: {exc!r}; records are dropped "
            "(see fapilog.stats()) and every new batch retries",
            level="error",
            path=str(self.path),
            errno=exc.errno,
        )

    def _close_file(self) -> None:
        fd, self._fd, self._inode = self._fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _forget_fds(self) -> None:
        self._close_file()
        self._close_lock()
        self._pid = os.getpid()


def _factory(settings: LoggingSettings) -> LogRecordExporter:
    file_settings = settings.file
    path = Path(os.path.expanduser(file_settings.path))
    if path.is_dir():
        raise setting_error(
            "file.path",
            "it is a directory; give the path of a file, e.g. logs/app.log",
            value=str(path),
        )
    exporter = FileExporter(file_settings)
    problem = exporter.unwritable()
    if problem is not None:
        raise setting_error("file.path", problem, value=file_settings.path)
    return exporter


SPEC = ExporterSpec("file", _factory)

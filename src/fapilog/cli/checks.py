"""`fapilog check`: each configured exporter exercised for real, within one time bound.

- ``loki`` and ``otlp``: one marked record sent (`fapilog.cli.probes`);
- ``file``: a scratch file written, rotated (renamed to ``.1``) and removed in the log's
  directory, with the file mode configured; the live log is never touched;
- ``stdout``: nothing to reach (passes); a custom exporter: not checked (passes, said so).

The probes run side by side on daemon threads; one that has not answered when ``--timeout``
runs out fails with "no answer within N s" (a DNS lookup, for one, cannot be cut short), and
the command still ends on time.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fapilog.cli.probes import Probe, probe_loki, probe_otlp
from fapilog.exceptions import ConfigurationError
from fapilog.settings import LoggingSettings

__all__ = ["CHECKED", "Outcome", "run_checks"]

CHECKED = ("file", "loki", "otlp")  # the exporters a check exercises


class Outcome:
    """One exporter's line of the report."""

    def __init__(self, exporter: str, probe: Probe | None, note: str | None = None) -> None:
        self.exporter = exporter
        self.probe = probe
        self.note = note  # an exporter not checked (stdout, a custom one): why

    @property
    def passed(self) -> bool:
        return self.probe is None or self.probe.accepted

    def as_json(self) -> dict[str, Any]:
        probe = self.probe
        if probe is None:
            return {"exporter": self.exporter, "passed": True, "checked": False, "note": self.note}
        return {
            "exporter": self.exporter,
            "passed": self.passed,
            "checked": True,
            "target": probe.target,
            "reachable": probe.reachable,
            "authenticated": probe.authenticated,
            "accepted": probe.accepted,
            "latency_ms": None if probe.latency_ms is None else round(probe.latency_ms, 1),
            "error": probe.error,
            "fix": probe.fix,
            **probe.details,
        }


def probe_file(settings: LoggingSettings, seconds: float) -> Probe:
    """Write, rotate and remove a scratch file next to the configured log file."""
    live = Path(settings.file.path).expanduser()
    directory = live.parent
    probe = Probe(str(live))
    scratch = directory / f".fapilog-check-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
    rotated = scratch.with_name(scratch.name + ".1")
    started = time.perf_counter()
    if live.is_dir():
        probe.error = f"{live} is a directory"
        probe.fix = "FAPILOG_FILE__PATH names the log file itself, e.g. logs/app.log"
        return probe
    # the directories the check creates, removed afterwards (the exporter makes them itself)
    created = [parent for parent in (directory, *directory.parents) if not parent.exists()]
    step = "create the directory"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.reachable = True
        step = "write a file in it"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        descriptor = os.open(scratch, flags, settings.file.mode)
        try:
            os.write(descriptor, b'{"message":"fapilog connectivity check"}\n')
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        probe.authenticated = True
        step = "rotate it (rename)"
        os.replace(scratch, rotated)
        step = "remove it"
        rotated.unlink()
        probe.accepted = True
    except OSError as exc:
        probe.error = f"could not {step} in {directory}: {exc.strerror or exc}"
        probe.fix = _file_fix(exc, directory)
    finally:
        probe.latency_ms = (time.perf_counter() - started) * 1000
        for leftover in (scratch, rotated):
            try:
                leftover.unlink()
            except OSError:
                pass
        for made in created:  # (deepest first)
            try:
                made.rmdir()
            except OSError:
                break
    return probe


def _file_fix(exc: OSError, directory: Path) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"the user running this (uid {os.getuid()}) may not write in {directory}: grant it, "
            "or set FAPILOG_FILE__PATH to a writable place"
        )
    if exc.errno == errno.EROFS:
        return f"{directory} is on a read-only file system: set FAPILOG_FILE__PATH elsewhere"
    if exc.errno == errno.ENOSPC:
        return f"the disk holding {directory} is full: free space or move FAPILOG_FILE__PATH"
    if exc.errno in (errno.ENOTDIR, errno.ENOENT):
        return f"part of {directory} is not a directory: check FAPILOG_FILE__PATH"
    return "check FAPILOG_FILE__PATH and the directory's permissions"


_PROBES: dict[str, Callable[[LoggingSettings, float], Probe]] = {
    "file": probe_file,
    "loki": probe_loki,
    "otlp": probe_otlp,
}


def run_checks(settings: LoggingSettings, timeout: float) -> list[Outcome]:
    """Every configured exporter's outcome, in the configured order, within `timeout`
    seconds. Raises `ConfigurationError` when an exporter's settings are invalid."""
    deadline = time.monotonic() + timeout
    results: dict[str, Probe | BaseException] = {}
    done = threading.Condition()
    threads: list[threading.Thread] = []

    def run(name: str) -> None:
        try:
            result: Probe | BaseException = _PROBES[name](settings, max(0.1, timeout * 0.9))
        except BaseException as exc:  # reported by the caller's thread
            result = exc
        with done:
            results[name] = result
            done.notify_all()

    for name in settings.exporters:
        if name in _PROBES:
            thread = threading.Thread(
                target=run, args=(name,), name=f"fapilog-check-{name}", daemon=True
            )
            threads.append(thread)
            thread.start()
    with done:
        while len(results) < len(threads):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done.wait(left)
        finished = dict(results)
    outcomes: list[Outcome] = []
    for name in settings.exporters:
        if name == "stdout":
            outcomes.append(
                Outcome(name, None, "writes to this process's standard output: nothing to reach")
            )
            continue
        if name not in _PROBES:
            outcomes.append(Outcome(name, None, "a custom exporter: not checked"))
            continue
        result = finished.get(name)
        if isinstance(result, ConfigurationError):
            raise result
        if isinstance(result, BaseException):
            probe = Probe("", error=f"the check failed: {type(result).__name__}: {result}")
        elif result is None:
            probe = Probe(
                "",
                error=f"no answer within {timeout:g} s (--timeout)",
                fix="a host name slow to resolve, or a server that accepts and never answers",
            )
        else:
            probe = result
        outcomes.append(Outcome(name, probe))
    return outcomes

"""The development console: `ConsoleExporter`, written on the calling thread.

Each record is written during its log call (`write_capture`, called by the chain's last
processor, `fapilog.pipeline.direct.DirectBridge`), so the console shows records in call
order with what the application prints. The record then travels the pipeline like any
other; the exporter's queue only counts it (exported, or dropped with the reason its write
failed: ``broken_pipe``, ``write_error``), from the mark the write left on the record's
OpenTelemetry context. A record that reaches the queue unmarked is written from there
(`FAPILOG_CONSOLE__SYNCHRONOUS=false`, or one the chain did not see).

Writes never raise into the application and never wait on the frame a signal interrupted:

- one lock orders the writes of different threads; a thread marks itself busy *before*
  taking it, so a signal handler that logs on a thread that is inside a write (taking the
  lock, writing, flushing) does not take it again: its line goes to a pending list that the
  outer write empties right after its own line;
- a write that lands inside the application's own write to the same stream (a signal
  handler logging in the middle of a `print()`: the stream refuses a reentrant call) is
  pending too, and written by the next write, flush or export;
- on the main thread (where signal handlers run), the lock is waited for at most 0.1 s:
  another thread that holds it can be waiting for the stream's own lock, which the main
  thread holds in the `print()` a handler interrupted; the line is then pending too;
- a closed or broken stream is reported once on stderr and its records counted as dropped.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from fapilog import _diag, _levels
from fapilog.capture.coerce import safe_str
from fapilog.capture.record import Pending
from fapilog.exporters.console_format import ConsoleLine, Palette, Shown, colors_wanted
from fapilog.exporters.console_traceback import TracebackRenderer
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.render import JsonRenderer, console_text, level_name
from fapilog.otel.trace import span_context_of
from fapilog.settings.console import ConsoleSettings

if TYPE_CHECKING:
    from fapilog.capture.redaction import Redactor

__all__ = ["ConsoleExporter", "write_all"]

_MAIN_THREAD_WAIT = 0.1  # seconds: see `ConsoleExporter._take_lock`
_CHUNK = 64 * 1024  # records written from the queue go out in chunks of about this size
_EXCEPTION_KEYS = frozenset({"exception.type", "exception.message", "exception.stacktrace"})
_SKIP = frozenset({"event", "exc_info"})
_SKIP_IDS = _SKIP | {"trace_id", "span_id"}
_NO_SKIP: frozenset[str] = frozenset()
_PIPE_WIDTH = 100  # the width of a traceback when the stream is not a terminal
_new_tuple = tuple.__new__
_EMPTY = otel_context.Context()


class _Outcome:
    """What became of one record's write (the value of the exporter's context mark)."""

    __slots__ = ("done", "reason")

    def __init__(self, reason: str | None, done: bool = True) -> None:
        self.reason = reason  # None: written; else why not (a drop reason)
        self.done = done  # False: pending (see the module docstring)


_WRITTEN = _Outcome(None)
_FAILED = {reason: _Outcome(reason) for reason in ("broken_pipe", "write_error")}


def write_all(stream: IO[Any] | None, data: bytes, name: str) -> str | None:
    """Write `data` to `stream` (default: the current sys.stdout) after what the
    application wrote to it, all of it. Returns None when written, else why not:
    ``broken_pipe`` (the reader went away: the stream's fd then points at /dev/null, so that
    nothing raises again) or ``write_error`` (a closed stream, EIO, ENOSPC), reported once
    on stderr. A stream refusing a reentrant call (``RuntimeError``) raises: see
    `ConsoleExporter`.

    A binary layer without a buffer (``PYTHONUNBUFFERED``: stdout's is the raw file) may
    write part of `data` when a signal interrupts the write: the rest follows."""
    target = stream if stream is not None else sys.stdout
    if target is None:
        return "write_error"
    try:
        buffer = getattr(target, "buffer", None)
        if buffer is None:
            target.write(data.decode("utf-8", "replace"))
            target.flush()
            return None
        target.flush()  # what the application wrote through the same stream goes first
        if isinstance(buffer, io.BufferedIOBase):
            buffer.write(data)
        else:
            view = memoryview(data)
            while view:
                written = buffer.write(view)
                if not written:  # a non-blocking stream that is full
                    raise BlockingIOError("stdout would block")
                view = view[written:]
        buffer.flush()
        return None
    except BrokenPipeError:
        try:  # the recipe in Python's signal docs
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, target.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        _diag.report(f"stream:{name}", f"fapilog {name} exporter: broken pipe, output stops")
        return "broken_pipe"
    except (ValueError, OSError) as exc:  # closed file, EIO, ENOSPC, a full non-blocking pipe
        _diag.report(f"stream:{name}", f"fapilog {name} exporter cannot write: {exc!r}")
        return "write_error"


class _Busy(threading.local):
    def __init__(self) -> None:
        self.on = False


def _width(stream: IO[Any] | None, colors: bool) -> int:
    if colors:
        try:
            fileno = stream.fileno() if stream is not None else 1
            return os.get_terminal_size(fileno).columns
        except (AttributeError, ValueError, OSError):
            return shutil.get_terminal_size((_PIPE_WIDTH, 24)).columns
    return _PIPE_WIDTH


class ConsoleExporter(LogRecordExporter):
    """Pretty console lines for development (see the module docstring and
    docs/exporters.md): coloured on a terminal, aligned, the request event as one line,
    tracebacks by rich with framework frames folded."""

    name = "console"

    def __init__(
        self,
        stream: IO[Any] | None = None,
        colors: bool | None = None,
        *,
        settings: ConsoleSettings | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._stream = stream  # None: sys.stdout at write time (capture, redirection)
        settings = settings if settings is not None else ConsoleSettings()
        target = stream if stream is not None else sys.stdout
        self.colors = colors_wanted(target) if colors is None else colors
        self.synchronous = settings.synchronous
        names = redactor.redact_text if redactor is not None else None
        self._line = ConsoleLine(Palette(self.colors), names)
        self._tracebacks = TracebackRenderer(
            colors=self.colors,
            width=_width(target, self.colors),
            collapse=settings.collapse,
            show_locals=settings.locals,
            redactor=redactor,
        )
        self._json = JsonRenderer()
        # the mark a write leaves on a record's context: this exporter's own key
        self._key = otel_context.create_key(f"fapilog-console-{id(self):x}")
        self._closed = False
        self._broken = False
        self._reset_locks()
        # the exporter contract's extras (fapilog.exporters.contract)
        self.last_export_dropped: int | None = None
        self.last_export_reason: str | None = None
        self.export_progress = 0
        _EXPORTERS.add(self)

    def _reset_locks(self) -> None:
        self._lock = threading.Lock()
        self._busy = _Busy()
        self._pending: deque[tuple[bytes, _Outcome]] = deque()

    # -- rendering -----------------------------------------------------------------------

    def _render_capture(self, pending: Pending, exception: BaseException | None) -> str:
        event = pending.event
        span = span_context_of(pending.context)
        valid = span.is_valid
        stack = event.get("exception.stacktrace")
        shows_traceback = exception is not None or (type(stack) is str and bool(stack))
        skip = _SKIP_IDS if valid else _SKIP
        if shows_traceback:
            skip = skip | _EXCEPTION_KEYS
        shown = Shown(
            pending.timestamp,
            _levels.text_of(pending.severity_text, pending.severity),
            pending.logger,
            event.get("event"),
            event,
            skip,
            span.trace_id if valid else 0,
            span.span_id if valid else 0,
        )
        line = self._line.render(shown)
        if exception is not None:
            block = self._tracebacks.from_exception(exception)
        elif shows_traceback:
            block = self._tracebacks.from_text(str(stack))
        else:
            return line + "\n"
        return "\n".join([line, *block]) + "\n"

    def render(self, readable: ReadableLogRecord) -> str:
        """The console text of a record (its line, and its traceback's block), without the
        final newline; never raises (a record the console cannot show is shown as its JSON
        line, escaped)."""
        try:
            record = readable.log_record
            attributes = record.attributes or {}
            stack = attributes.get("exception.stacktrace")
            scope = readable.instrumentation_scope
            shown = Shown(
                record.timestamp or record.observed_timestamp or 0,
                level_name(record),
                scope.name if scope is not None else "",
                record.body,
                attributes,
                _EXCEPTION_KEYS if stack else _NO_SKIP,
                record.trace_id or 0,
                record.span_id or 0,
            )
            line = self._line.render(shown)
            if not stack:
                return line
            return "\n".join([line, *self._tracebacks.from_text(safe_str(stack))])
        except Exception:
            return console_text(self._json.render(readable).decode("utf-8", "replace"))

    # -- on the calling thread -------------------------------------------------------------

    def write_capture(self, pending: Pending, exception: BaseException | None) -> Pending:
        """Write a captured event now (on the calling thread) and return the capture with
        this write's mark on its context (see `fapilog.pipeline.direct`)."""
        if self._closed or not self.synchronous:
            return pending
        try:
            data = self._render_capture(pending, exception).encode("utf-8", "replace")
        except Exception:  # unmarked: written from the queue, as a record
            return pending
        outcome = self._write(data)
        context = otel_context.set_value(self._key, outcome, pending.context)
        return _new_tuple(type(pending), (*pending[:5], context, *pending[6:]))  # (Released stays)

    def write_foreign(self, record: ReadableLogRecord) -> None:
        """Write a record other code emitted on this thread now, and mark it."""
        if self._closed or not self.synchronous:
            return
        data = (self.render(record) + "\n").encode("utf-8", "replace")
        outcome = self._write(data)
        log_record = record.log_record
        context = getattr(log_record, "context", None) or _EMPTY
        log_record.context = otel_context.set_value(self._key, outcome, context)

    # -- writing -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> _Outcome:
        """Write `data`, or leave it pending (see the module docstring). Never raises."""
        if self._broken:
            return _FAILED["broken_pipe"]
        busy = self._busy
        if busy.on:  # a signal handler on a thread that is inside a write
            return self._defer(data)
        busy.on = True
        try:
            if not self._take_lock():
                return self._defer(data)
            try:
                outcome = self._put(data)
                if self._pending:
                    self._drain_locked()
            finally:
                self._lock.release()
        finally:
            busy.on = False
        if self._pending:  # a line left pending after the drain above
            self._drain()
        return outcome

    def _take_lock(self) -> bool:
        """Take the console's lock; on the main thread, give up after a short wait. Another
        thread holding it can be waiting inside the stream for the stream's own lock, held
        by the main thread in the `print()` a signal handler interrupted: a handler that
        logs must not wait for that thread (its line is left pending instead)."""
        if threading.current_thread() is threading.main_thread():
            return self._lock.acquire(timeout=_MAIN_THREAD_WAIT)
        return self._lock.acquire()

    def _defer(self, data: bytes) -> _Outcome:
        outcome = _Outcome(None, done=False)
        self._pending.append((data, outcome))
        return outcome

    def _put(self, data: bytes) -> _Outcome:
        """Write under the lock: the outcome, or a pending one when the stream refuses a
        reentrant call (this thread was inside the application's own write to it)."""
        try:
            failed = write_all(self._stream, data, self.name)
        except RuntimeError:  # "reentrant call inside <_io.BufferedWriter ...>"
            return self._defer(data)
        except Exception:  # a stream of another kind, failing its own way
            failed = "write_error"
        if failed is None:
            return _WRITTEN
        if failed == "broken_pipe":
            self._broken = True
        return _FAILED.get(failed) or _Outcome(failed)

    def _drain_locked(self) -> bool:
        """Write what is pending (the lock held); False when the stream refused again."""
        pending = self._pending
        while pending:
            data, outcome = pending.popleft()
            if self._broken:
                outcome.reason, outcome.done = "broken_pipe", True
                continue
            try:
                failed = write_all(self._stream, data, self.name)
            except RuntimeError:  # still inside that write: later
                pending.appendleft((data, outcome))
                return False
            except Exception:
                failed = "write_error"
            if failed == "broken_pipe":
                self._broken = True
            outcome.reason, outcome.done = failed, True
        return True

    def _drain(self) -> None:
        """Write what is pending, unless this thread is inside a write already."""
        busy = self._busy
        while self._pending and not busy.on:
            busy.on = True
            try:
                if not self._take_lock():
                    return  # the holder, or the next write, flush or export writes it
                try:
                    emptied = self._drain_locked()
                finally:
                    self._lock.release()
            finally:
                busy.on = False
            if not emptied:
                return  # the next write, flush or export tries again

    # -- from the queue ----------------------------------------------------------------------

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Count the records written on their threads (by their marks); write the others."""
        self.export_progress = 0
        self.last_export_dropped = None
        self.last_export_reason = None
        if self._closed:
            return LogRecordExportResult.FAILURE
        key = self._key
        delivered = lost = 0
        reason: str | None = None

        def tally(outcome: _Outcome, count: int) -> None:
            nonlocal delivered, lost, reason
            if outcome.done and outcome.reason is None:
                delivered += count
                self.export_progress = delivered
            else:
                lost += count
                reason = outcome.reason or "write_error"

        chunk: list[bytes] = []
        size = 0
        chunked = 0
        for readable in batch:
            context = getattr(readable.log_record, "context", None)
            outcome = context.get(key) if context else None
            if outcome is None:  # not written on its thread: written now
                line = (self.render(readable) + "\n").encode("utf-8", "replace")
                chunk.append(line)
                size += len(line)
                chunked += 1
                if size < _CHUNK:
                    continue
                outcome, count = self._write(b"".join(chunk)), chunked
                chunk, size, chunked = [], 0, 0
            else:
                count = 1
                if not isinstance(outcome, _Outcome):
                    outcome = _FAILED["write_error"]
                elif not outcome.done:  # pending on its thread: written now
                    self._drain()
            tally(outcome, count)
        if chunk:
            tally(self._write(b"".join(chunk)), chunked)
        if lost:
            self.last_export_dropped = lost
            self.last_export_reason = reason
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain()
        return not self._pending

    def shutdown(self) -> None:
        self._drain()
        self._closed = True

    def _after_fork_in_child(self) -> None:
        """The parent writes what it had pending; a lock another thread held stays held."""
        self._reset_locks()


_EXPORTERS: weakref.WeakSet[ConsoleExporter] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for exporter in list(_EXPORTERS):
        exporter._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)

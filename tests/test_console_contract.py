"""The console exporter's contract, in-process: what `write_all` does with each kind of
stream (text only, buffered, raw with short writes, closed, a reader gone away), the mark a
write leaves on a record, the pending lines of a reentrant or waiting write and who writes
them, and what an export counts, chunks and reports lost. On recording streams, real pipes
and real threads; the signal and process cases are in test_console_order."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import struct
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from fapilog import _diag
from fapilog.capture.record import Pending, Released
from fapilog.capture.redaction import Redactor
from fapilog.exporters import ReadableLogRecord
from fapilog.exporters import console as console_module
from fapilog.exporters.console import _CHUNK, ConsoleExporter, _Outcome, write_all
from fapilog.exporters.contract import LogRecordExportResult
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings.console import ConsoleSettings

NS = 1_700_000_000_000_000_000  # 22:13:20 UTC
STACK = 'Traceback (most recent call last):\n  File "job.py", line 3, in run\nValueError: bad'
Hook = Callable[[bytes], None]


class Buffer:
    """A binary layer that records each write whole; `hook` runs before each (it may
    raise). Not an io.BufferedIOBase: `write_all` loops on its counts."""

    def __init__(self, hook: Hook | None = None, counts: list[int | None] | None = None):
        self.writes: list[bytes] = []
        self.flushes = 0
        self.hook = hook
        self.counts = counts  # what each write returns, in turn (then the whole length)

    def write(self, data: bytes) -> int | None:
        if self.hook is not None:
            self.hook(bytes(data))
        if self.counts:
            count = self.counts.pop(0)
            self.writes.append(bytes(data[: count or 0]))
            return count
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        self.flushes += 1

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


class Stream:
    """A text stream over a `Buffer`; `events` tells its flushes and the buffer's writes
    apart, in order."""

    def __init__(self, buffer: Buffer | None = None) -> None:
        self.buffer = buffer if buffer is not None else Buffer()
        self.events: list[str] = []
        hook = self.buffer.hook

        def record(data: bytes) -> None:
            self.events.append("write")
            if hook is not None:
                hook(data)

        self.buffer.hook = record

    def write(self, text: str) -> int:  # pragma: no cover - write_all uses the buffer
        raise AssertionError("the text layer is not written when there is a buffer")

    def flush(self) -> None:
        self.events.append("flush")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")

    @property
    def text(self) -> str:
        return self.buffer.data.decode()


class Refuses:
    """A buffer hook refusing each write as a reentrant call while `on`."""

    def __init__(self) -> None:
        self.on = True

    def __call__(self, data: bytes) -> None:
        if self.on:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")


class TextOnly:
    """A text stream without a binary layer (a StringIO-like test stream)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


class Unrenderable:
    """A console line that cannot be rendered (a bug, or a value nothing can show)."""

    def render(self, shown: Any) -> str:
        raise TypeError("cannot")


@pytest.fixture
def reports() -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def listen(key: str, message: str, fields: dict[str, Any]) -> None:
        if key.startswith("stream:"):
            seen.append((key, message))

    _diag.reset()
    _diag.add_listener(listen)
    yield seen
    _diag.remove_listener(listen)
    _diag.reset()


def pending(
    event: str = "hi", context: otel_context.Context | None = None, **fields: Any
) -> Pending:
    return Pending(
        NS,
        SeverityNumber.INFO,
        "INFO",
        "app",
        {"event": event, **fields},
        context if context is not None else otel_context.Context(),
        None,
        0,
    )


def record(body: Any = "hi", *, context: Any = None, **attributes: Any) -> ReadableLogRecord:
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=NS,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body=body,
            attributes=attributes,
            context=context,
        ),
        resource=Resource.create({}),
        instrumentation_scope=InstrumentationScope("lib"),
    )


def in_span(
    trace_id: int = 0xABCDEF01 << 96, span_id: int = 0x1234_5678_9ABC_DEF0
) -> otel_context.Context:
    span = trace.NonRecordingSpan(trace.SpanContext(trace_id, span_id, False, trace.TraceFlags(1)))
    return trace.set_span_in_context(span, otel_context.Context())


def mark(exporter: ConsoleExporter, capture: Pending) -> _Outcome:
    outcome = capture.context.get(exporter._key)
    assert isinstance(outcome, _Outcome)
    return outcome


def marked(exporter: ConsoleExporter, readable: ReadableLogRecord) -> _Outcome:
    context = readable.log_record.context
    assert context is not None
    outcome = context.get(exporter._key)
    assert isinstance(outcome, _Outcome)
    return outcome


# -- write_all -------------------------------------------------------------------------------


def test_what_the_application_wrote_through_the_text_layer_goes_out_first() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8")
    stream.write("print\n")  # still in the text layer's buffer
    assert write_all(stream, b"record\n", "console") is None
    assert raw.getvalue() == b"print\nrecord\n"  # and flushed through the binary layer


def test_the_buffer_is_flushed_after_the_write() -> None:
    stream = Stream()
    assert write_all(stream, b"one\n", "console") is None
    assert stream.events == ["flush", "write"]
    assert stream.buffer.flushes == 1
    assert stream.text == "one\n"


def test_a_stream_without_a_binary_layer_gets_the_text_with_bad_bytes_replaced() -> None:
    stream = TextOnly()
    assert write_all(stream, b"caf\xc3\xa9 \xff\n", "console") is None  # type: ignore[arg-type]
    assert stream.parts == ["caf\u00e9 \ufffd\n"]
    assert stream.flushes == 1


def test_no_stream_means_the_current_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Stream()
    monkeypatch.setattr(sys, "stdout", stream)
    assert write_all(None, b"now\n", "console") is None
    assert stream.text == "now\n"


def test_no_stdout_at_all_is_a_write_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    assert write_all(None, b"lost\n", "console") == "write_error"


def test_short_writes_on_a_raw_layer_are_followed_by_the_rest() -> None:
    buffer = Buffer(counts=[3, 1, 2])
    assert write_all(Stream(buffer), b"abcdefghij", "console") is None
    assert buffer.writes == [b"abc", b"d", b"ef", b"ghij"]
    assert buffer.flushes == 1


def test_a_full_non_blocking_raw_layer_is_a_write_error(reports: list[tuple[str, str]]) -> None:
    for count in (0, None):  # 0: nothing written; None: it would block
        _diag.reset()
        buffer = Buffer(counts=[2, count])
        assert write_all(Stream(buffer), b"abcdef", "console") == "write_error"
        assert buffer.writes == [b"ab", b""]
        assert buffer.flushes == 0
    assert [key for key, _ in reports] == ["stream:console", "stream:console"]
    assert reports[0][1] == (
        "fapilog console exporter cannot write: BlockingIOError('stdout would block')"
    )


def test_a_buffered_layer_is_written_once() -> None:
    raw = io.BytesIO()
    buffered = io.BufferedWriter(raw, buffer_size=4)  # smaller than the data
    stream = io.TextIOWrapper(buffered, encoding="utf-8")
    assert write_all(stream, b"a longer line\n", "console") is None
    assert raw.getvalue() == b"a longer line\n"


def test_a_closed_stream_is_a_write_error_reported_once_by_name(
    reports: list[tuple[str, str]],
) -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stream.close()
    assert write_all(stream, b"x\n", "pretty") == "write_error"
    assert write_all(stream, b"y\n", "pretty") == "write_error"
    assert len(reports) == 1
    key, message = reports[0]
    assert key == "stream:pretty"
    assert message.startswith("fapilog pretty exporter cannot write: ValueError(")


def test_an_os_error_is_a_write_error(reports: list[tuple[str, str]]) -> None:
    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    assert write_all(Stream(Buffer(full)), b"x\n", "console") == "write_error"
    assert reports == [
        (
            "stream:console",
            "fapilog console exporter cannot write: OSError(28, 'No space left on device')",
        )
    ]


def test_a_reader_gone_away_points_the_stream_at_dev_null(reports: list[tuple[str, str]]) -> None:
    read, write = os.pipe()
    os.close(read)
    stream = open(write, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        assert write_all(stream, b"x\n", "console") == "broken_pipe"
        assert os.path.realpath(f"/proc/self/fd/{stream.fileno()}") == os.devnull
        assert reports == [
            ("stream:console", "fapilog console exporter: broken pipe, output stops")
        ]
        assert write_all(stream, b"y\n", "console") is None  # nothing raises again
    finally:
        stream.close()


def test_a_broken_pipe_on_a_stream_without_a_descriptor_is_still_reported(
    reports: list[tuple[str, str]],
) -> None:
    def gone(data: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    assert write_all(Stream(Buffer(gone)), b"x\n", "console") == "broken_pipe"
    assert reports == [("stream:console", "fapilog console exporter: broken pipe, output stops")]


def test_a_stream_refusing_a_reentrant_call_raises_to_the_exporter() -> None:
    def inside(data: bytes) -> None:
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")

    with pytest.raises(RuntimeError):
        write_all(Stream(Buffer(inside)), b"x\n", "console")


# -- what the exporter is made with ------------------------------------------------------------


def test_colours_follow_the_stream_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert ConsoleExporter(Stream()).colors is False
    assert ConsoleExporter(Stream(), colors=True).colors is True
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert ConsoleExporter(Stream()).colors is True
    assert ConsoleExporter(Stream(), colors=False).colors is False
    monkeypatch.setattr(sys, "stdout", Stream())
    assert ConsoleExporter().colors is True  # no stream: judged on sys.stdout


def test_the_traceback_width_is_the_terminals_else_a_fixed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "77")
    # (the block is indented by 4 columns)
    assert ConsoleExporter(Stream(), colors=False)._tracebacks._width == 96
    # colours on a stream without a descriptor: the size the environment gives
    assert ConsoleExporter(Stream(), colors=True)._tracebacks._width == 73
    leader, follower = os.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 123, 0, 0))
        with open(follower, "w", closefd=False) as terminal:
            assert ConsoleExporter(terminal, colors=True)._tracebacks._width == 119
            assert ConsoleExporter(terminal, colors=False)._tracebacks._width == 96
        monkeypatch.setattr(sys, "stdout", None)
        monkeypatch.setattr(os, "get_terminal_size", lambda fd=1: os.terminal_size((fd + 200, 9)))
        assert ConsoleExporter(None, colors=True)._tracebacks._width == 197  # fd 1
    finally:
        os.close(leader)
        os.close(follower)


def test_the_settings_reach_the_traceback_renderer() -> None:
    exporter = ConsoleExporter(
        Stream(), colors=False, settings=ConsoleSettings(locals=True, collapse=[])
    )
    assert exporter._tracebacks._locals is True
    assert not exporter._tracebacks._framework
    assert ConsoleExporter(Stream(), colors=False)._tracebacks._locals is False
    assert ConsoleExporter(Stream(), colors=False)._tracebacks._framework
    assert exporter.synchronous is True
    assert (
        ConsoleExporter(Stream(), settings=ConsoleSettings(synchronous=False)).synchronous is False
    )


# -- rendering -----------------------------------------------------------------------------------


def test_a_capture_in_a_span_shows_its_ids_once_and_not_the_events_own() -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    line = exporter._render_capture(pending(k=1, trace_id="mine", span_id="mine"), None)
    assert line.endswith(" k=1 trace_id=mine span_id=mine\n")
    assert line.startswith("22:13:20.000 [info    ] app hi")
    spanned = exporter._render_capture(pending(context=in_span(), k=1, trace_id="mine"), None)
    assert spanned.endswith(" k=1 trace_id=abcdef01 span_id=12345678\n")
    assert "mine" not in spanned
    assert "exc_info" not in exporter._render_capture(pending(exc_info=True), None)


def test_a_capture_with_a_stack_as_text_shows_it_as_a_block_and_not_its_keys() -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    text = exporter._render_capture(
        pending(
            **{
                "exception.stacktrace": STACK,
                "exception.type": "ValueError",
                "exception.message": "bad",
                "k": 2,
            }
        ),
        None,
    )
    first, *block = text.rstrip("\n").split("\n")
    assert first.endswith(" k=2")
    assert "exception." not in first
    assert (
        block[0].startswith("    ╭")
        and "in run:3" in block[1]
        and block[-1] == "    ValueError: bad"
    )
    for stack in ("", 7):  # no traceback: the keys stay on the line
        shown = exporter._render_capture(
            pending(**{"exception.stacktrace": stack, "exception.type": "E"}), None
        )
        assert shown.count("\n") == 1 and "exception.type=E" in shown


def test_a_captured_exception_is_shown_from_its_frames() -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    try:
        raise KeyError("gone")
    except KeyError as exc:
        error = exc
    text = exporter._render_capture(
        pending(**{"exception.type": "KeyError", "exception.stacktrace": "ignored"}), error
    )
    first, *block = text.rstrip("\n").split("\n")
    assert "exception." not in first
    assert any("test_a_captured_exception_is_shown_from_its_frames" in row for row in block)
    assert block[-1] == "    KeyError: 'gone'" and "ignored" not in text


def test_a_foreign_record_is_shown_with_its_scope_and_its_stack() -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    plain = exporter.render(record("job done", n=3))
    assert plain == f"22:13:20.000 [warning ] lib job done{' ' * 33}n=3"
    stacked = exporter.render(
        record("failed", **{"exception.stacktrace": STACK, "exception.type": "ValueError"})
    )
    first, *block = stacked.split("\n")
    assert first.rstrip() == "22:13:20.000 [warning ] lib failed"
    assert block[-1] == "    ValueError: bad"
    readable = record("no scope", n=1)
    readable = ReadableLogRecord(log_record=readable.log_record, resource=readable.resource)
    readable.log_record.timestamp = None
    readable.log_record.observed_timestamp = NS + 1_000_000
    assert exporter.render(readable).startswith("22:13:20.001 [warning ]  no scope")


def test_a_foreign_records_exception_keys_stay_on_its_line_without_a_stack() -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    shown = exporter.render(
        record("x", **{"exception.type": "ValueError", "exception.message": "m"})
    )
    assert shown.endswith(" exception.type=ValueError exception.message=m")


def test_a_foreign_record_without_a_context_attribute_is_written_and_marked() -> None:
    """(A LogRecord of an SDK release before records carried their context.)"""
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    readable = record("old sdk")
    with contextlib.suppress(AttributeError):  # (releases whose records have none)
        del readable.log_record.context
    exporter.write_foreign(readable)
    assert "old sdk" in stream.text
    assert marked(exporter, readable) is console_module._WRITTEN


def test_a_foreign_record_in_a_span_shows_its_ids() -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    shown = exporter.render(record("x", context=in_span()))
    assert shown.endswith(" trace_id=abcdef01 span_id=12345678")


def test_logger_names_are_redacted_by_the_consoles_redactor() -> None:
    exporter = ConsoleExporter(
        Stream(), colors=False, redactor=Redactor(patterns=[r"tok_[a-z0-9]+"])
    )
    line = exporter._render_capture(pending("x")._replace(logger="app.tok_abc123"), None)
    assert " app.[REDACTED] x" in line and "tok_abc123" not in line


def test_colours_asked_for_reach_the_tracebacks_too() -> None:
    """(On a stream that is not a terminal, where rich left to itself would not colour.)"""
    exporter = ConsoleExporter(Stream(), colors=True)
    try:
        raise ValueError("v")
    except ValueError as exc:
        text = exporter._render_capture(pending("failed"), exc)
    block = text.split("\n", 1)[1]
    assert "ValueError" in block and "\x1b[" in block


def test_a_new_console_exporter_has_exported_nothing_and_lost_nothing() -> None:
    """The exporter contract's extras before any export."""
    exporter = ConsoleExporter(Stream(), colors=False)
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (None, None)
    assert exporter.export_progress == 0 and type(exporter.export_progress) is int


def test_a_capture_shows_its_own_level_name() -> None:
    """(A stdlib level of the application's own, at INFO's severity.)"""
    exporter = ConsoleExporter(Stream(), colors=False)
    notice = pending("x")._replace(severity_text="NOTICE")
    assert " [notice  ] app x" in exporter._render_capture(notice, None)


def test_a_capture_in_an_invalid_span_context_shows_no_ids() -> None:
    """A trace id without a span id is not a span: no ids are shown for it."""
    exporter = ConsoleExporter(Stream(), colors=False)
    line = exporter._render_capture(pending("x", context=in_span(span_id=0)), None)
    assert "trace_id" not in line and "span_id" not in line


def test_a_foreign_record_with_a_trace_id_and_no_span_id_shows_no_span() -> None:
    """(Another library's record may carry a trace id alone.)"""
    exporter = ConsoleExporter(Stream(), colors=False)
    for no_span in (None, 0):
        readable = record("x", context=in_span())
        readable.log_record.span_id = no_span
        assert exporter.render(readable).endswith(" trace_id=abcdef01"), no_span


def test_a_record_the_console_cannot_show_is_its_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = ConsoleExporter(Stream(), colors=False)

    monkeypatch.setattr(exporter, "_line", Unrenderable())
    shown = exporter.render(record("odd\nbody", n=1))
    assert shown.startswith("{") and shown.endswith("}") and "\n" not in shown
    assert '"message":"odd\\nbody","logger":"lib","n":1' in shown


# -- written on the calling thread --------------------------------------------------------------


def test_a_capture_is_written_at_once_and_marked_written() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    capture = pending(k=1)
    marked_capture = exporter.write_capture(capture, None)
    assert stream.text == exporter._render_capture(capture, None)
    assert type(marked_capture) is Pending
    assert marked_capture[:5] == capture[:5] and marked_capture[6:] == capture[6:]
    assert mark(exporter, marked_capture) is console_module._WRITTEN
    assert capture.context.get(exporter._key) is None  # the caller's context is not changed
    released = exporter.write_capture(Released(*pending()), None)
    assert type(released) is Released  # a released capture stays released


def test_the_mark_is_this_exporters_own() -> None:
    first = ConsoleExporter(Stream(), colors=False)
    second = ConsoleExporter(Stream(), colors=False)
    capture = second.write_capture(first.write_capture(pending(), None), None)
    assert mark(first, capture) is mark(second, capture) is console_module._WRITTEN
    assert first._key != second._key


def test_a_queued_or_closed_console_leaves_captures_to_the_queue() -> None:
    stream = Stream()
    queued = ConsoleExporter(stream, colors=False, settings=ConsoleSettings(synchronous=False))
    capture = pending()
    assert queued.write_capture(capture, None) is capture
    readable = record()
    queued.write_foreign(readable)
    assert readable.log_record.context == {}
    closed = ConsoleExporter(stream, colors=False)
    closed.shutdown()
    assert closed.write_capture(capture, None) is capture
    closed.write_foreign(readable)
    assert readable.log_record.context == {}
    assert stream.text == ""


def test_a_capture_that_cannot_be_rendered_is_left_unmarked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)

    monkeypatch.setattr(exporter, "_line", Unrenderable())
    capture = pending()
    assert exporter.write_capture(capture, None) is capture
    assert stream.text == ""
    # from the queue it is then written as its JSON line, and counted
    assert exporter.export([record("late")]) is LogRecordExportResult.SUCCESS
    assert stream.text.startswith("{") and stream.text.endswith("}\n")


def test_a_foreign_record_is_written_at_once_and_marked_on_its_context() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    readable = record("other", n=1)
    exporter.write_foreign(readable)
    assert stream.text == exporter.render(readable) + "\n"
    assert marked(exporter, readable) is console_module._WRITTEN
    spanned = record("other", context=in_span())
    exporter.write_foreign(spanned)
    context = spanned.log_record.context
    assert context is not None
    assert trace.get_current_span(context).get_span_context().span_id == 0x1234_5678_9ABC_DEF0


def test_a_failed_write_is_marked_with_its_reason(reports: list[tuple[str, str]]) -> None:
    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    exporter = ConsoleExporter(Stream(Buffer(full)), colors=False)
    outcome = mark(exporter, exporter.write_capture(pending(), None))
    assert (outcome.reason, outcome.done) == ("write_error", True)
    # (reported under the exporter's own name, from the caller's thread)
    assert reports == [
        (
            "stream:console",
            "fapilog console exporter cannot write: OSError(28, 'No space left on device')",
        )
    ]
    odd = ConsoleExporter(
        Stream(Buffer(lambda data: (_ for _ in ()).throw(LookupError("odd")))), colors=False
    )
    outcome = mark(odd, odd.write_capture(pending(), None))
    assert (outcome.reason, outcome.done) == ("write_error", True)


def test_after_a_broken_pipe_nothing_is_written_again(reports: list[tuple[str, str]]) -> None:
    calls: list[bytes] = []

    def gone(data: bytes) -> None:
        calls.append(data)
        raise BrokenPipeError(32, "Broken pipe")

    exporter = ConsoleExporter(Stream(Buffer(gone)), colors=False)
    first = mark(exporter, exporter.write_capture(pending("one"), None))
    second = mark(exporter, exporter.write_capture(pending("two"), None))
    assert first is second is console_module._FAILED["broken_pipe"]
    assert len(calls) == 1
    assert exporter.export([record("three")]) is LogRecordExportResult.FAILURE
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (1, "broken_pipe")
    assert len(calls) == 1


# -- pending lines -----------------------------------------------------------------------------


def test_a_write_inside_a_write_on_the_same_thread_follows_it() -> None:
    """A signal handler that logs while its thread is inside a write: its line waits for
    the outer line, then goes out in the same write."""
    exporter: ConsoleExporter
    inner: list[_Outcome] = []

    def interrupt(data: bytes) -> None:
        if not inner:
            inner.append(mark(exporter, exporter.write_capture(pending("inner"), None)))
            assert not inner[0].done

    stream = Stream(Buffer(interrupt))
    exporter = ConsoleExporter(stream, colors=False)
    outer = mark(exporter, exporter.write_capture(pending("outer"), None))
    assert outer is console_module._WRITTEN
    assert [line.split(" app ")[1].split()[0] for line in stream.text.splitlines()] == [
        "outer",
        "inner",
    ]
    assert (inner[0].done, inner[0].reason) == (True, None)
    assert not exporter._pending


def test_a_write_inside_a_drain_on_another_thread_is_left_pending_and_follows() -> None:
    """A line logged from inside the stream's write while pending lines are written (a
    stream that logs; not the main thread, where the lock is never waited for long): it is
    left pending, never waited for, and goes out after them."""
    exporter: ConsoleExporter
    refuse = Refuses()
    inner: list[_Outcome] = []

    def hook(data: bytes) -> None:
        refuse(data)
        if not inner:
            inner.append(mark(exporter, exporter.write_capture(pending("inner"), None)))

    stream = Stream(Buffer(hook))
    exporter = ConsoleExporter(stream, colors=False)
    first = mark(exporter, exporter.write_capture(pending("first"), None))
    assert not first.done and len(exporter._pending) == 1  # refused: pending
    refuse.on = False
    flushed: list[bool] = []
    drain = threading.Thread(target=lambda: flushed.append(exporter.force_flush()), daemon=True)
    drain.start()
    drain.join(10)
    assert flushed == [True], "the drain waited for its own lock"
    assert [line.split(" app ")[1].split()[0] for line in stream.text.splitlines()] == [
        "first",
        "inner",
    ]
    assert (first.done, inner[0].done) == (True, True) and not exporter._pending


def test_a_write_the_stream_refuses_as_reentrant_is_written_by_the_next_one() -> None:
    refuse = Refuses()
    stream = Stream(Buffer(refuse))
    exporter = ConsoleExporter(stream, colors=False)
    first = mark(exporter, exporter.write_capture(pending("first"), None))
    second = mark(exporter, exporter.write_capture(pending("second"), None))
    assert not first.done and not second.done and first.reason is None
    assert stream.text == "" and len(exporter._pending) == 2
    assert exporter.force_flush() is False  # still refused: kept, in order
    assert len(exporter._pending) == 2
    refuse.on = False
    third = mark(exporter, exporter.write_capture(pending("third"), None))
    assert [line.split(" app ")[1].split()[0] for line in stream.text.splitlines()] == [
        "third",
        "first",
        "second",
    ]
    assert all(outcome.done and outcome.reason is None for outcome in (first, second, third))


def test_pending_lines_are_written_by_a_flush_and_by_shutdown() -> None:
    refuse = Refuses()
    stream = Stream(Buffer(refuse))
    exporter = ConsoleExporter(stream, colors=False)
    first = mark(exporter, exporter.write_capture(pending("first"), None))
    refuse.on = False
    assert exporter.force_flush() is True
    assert first.done and stream.text.count("\n") == 1
    refuse.on = True
    exporter.write_capture(pending("second"), None)
    refuse.on = False
    exporter.shutdown()
    assert stream.text.count("\n") == 2 and not exporter._pending
    assert exporter.force_flush() is True


def test_a_pending_line_whose_write_fails_gets_the_failures_reason(
    reports: list[tuple[str, str]],
) -> None:
    behaviour = ["reentrant"]

    def hook(data: bytes) -> None:
        if behaviour[0] == "reentrant":
            raise RuntimeError("reentrant call")
        if behaviour[0] == "odd":
            raise LookupError("odd")
        if behaviour[0] == "gone":
            raise BrokenPipeError(32, "Broken pipe")
        if behaviour[0] == "full":
            raise OSError(28, "No space left on device")

    exporter = ConsoleExporter(Stream(Buffer(hook)), colors=False)
    odd = mark(exporter, exporter.write_capture(pending("odd"), None))
    behaviour[0] = "odd"
    exporter.force_flush()
    assert (odd.done, odd.reason) == (True, "write_error")
    behaviour[0] = "reentrant"
    full = mark(exporter, exporter.write_capture(pending("full"), None))
    behaviour[0] = "full"
    exporter.force_flush()
    assert (full.done, full.reason) == (True, "write_error")
    assert reports == [
        (
            "stream:console",
            "fapilog console exporter cannot write: OSError(28, 'No space left on device')",
        )
    ]
    behaviour[0] = "reentrant"
    gone = mark(exporter, exporter.write_capture(pending("gone"), None))
    after = [mark(exporter, exporter.write_capture(pending("after"), None)) for _ in range(3)]
    behaviour[0] = "gone"
    assert exporter.force_flush() is True
    assert (gone.done, gone.reason) == (True, "broken_pipe")
    for outcome in after:  # not written after it
        assert (outcome.done, outcome.reason) == (True, "broken_pipe")
    assert exporter._broken


def test_a_pending_line_is_counted_by_the_export_that_writes_it() -> None:
    refuse = Refuses()
    stream = Stream(Buffer(refuse))
    exporter = ConsoleExporter(stream, colors=False)
    capture = exporter.write_capture(pending("late"), None)
    readable = record("late", context=capture.context)
    assert exporter.export([readable]) is LogRecordExportResult.FAILURE  # still refused
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (1, "write_error")
    refuse.on = False
    assert exporter.export([readable]) is LogRecordExportResult.SUCCESS
    assert exporter.export_progress == 1 and exporter.last_export_dropped is None
    assert stream.text.count("\n") == 1


def test_the_main_thread_waits_for_the_lock_a_short_while_only() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exporter._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:
        outcome = mark(exporter, exporter.write_capture(pending("main"), None))
        assert not outcome.done and stream.text == ""
        assert exporter.force_flush() is False  # the holder still has it
    finally:
        release.set()
        holder.join(10)
    assert exporter.force_flush() is True
    assert outcome.done and outcome.reason is None and "main" in stream.text


def test_another_thread_waits_for_the_lock_as_long_as_it_takes() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    outcomes: list[_Outcome] = []
    waiting = threading.Event()

    def write() -> None:
        waiting.set()
        outcomes.append(mark(exporter, exporter.write_capture(pending("worker"), None)))

    with exporter._lock:
        writer = threading.Thread(target=write)
        writer.start()
        assert waiting.wait(10)
        writer.join(console_module._MAIN_THREAD_WAIT * 3)  # longer than the main thread waits
        assert writer.is_alive() and not outcomes
    writer.join(10)
    assert outcomes == [console_module._WRITTEN]
    assert "worker" in stream.text and not exporter._pending


def test_a_waiting_writer_writes_what_the_main_thread_left_pending() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    with exporter._lock:
        early = mark(exporter, exporter.write_capture(pending("early"), None))
        assert not early.done
    later = mark(exporter, exporter.write_capture(pending("later"), None))
    assert early.done and later.done
    assert [line.split(" app ")[1].split()[0] for line in stream.text.splitlines()] == [
        "later",
        "early",
    ]


def test_after_a_fork_the_child_has_its_own_free_lock_and_nothing_pending() -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    exporter._lock.acquire()  # another thread's, at the fork
    exporter._busy.on = True
    exporter._pending.append((b"parent's\n", _Outcome(None, done=False)))
    console_module._reinit_after_fork()
    assert exporter._lock.acquire(blocking=False)
    exporter._lock.release()
    assert not exporter._busy.on and not exporter._pending
    assert exporter in console_module._EXPORTERS


# -- from the queue ----------------------------------------------------------------------------


def test_an_export_counts_the_marks_and_writes_the_unmarked_records() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    written = exporter.write_capture(pending("on its thread"), None)
    batch = [record("on its thread", context=written.context), record("from the queue")]
    assert exporter.export(batch) is LogRecordExportResult.SUCCESS
    assert exporter.export_progress == 2
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (None, None)
    lines = stream.text.splitlines()
    assert len(lines) == 2 and lines[1] == exporter.render(batch[1])


def test_an_export_reports_what_was_lost_and_why(reports: list[tuple[str, str]]) -> None:
    exporter = ConsoleExporter(Stream(), colors=False)
    context = otel_context.set_value(exporter._key, _Outcome("broken_pipe"), otel_context.Context())
    odd = otel_context.set_value(exporter._key, "not an outcome", otel_context.Context())
    unknown = otel_context.set_value(exporter._key, _Outcome("odd_reason"), otel_context.Context())
    good = exporter.write_capture(pending(), None).context
    batch = [
        record("a", context=good),
        record("b", context=context),
        record("c", context=odd),
        record("d", context=good),
    ]
    assert exporter.export(batch) is LogRecordExportResult.FAILURE
    assert exporter.export_progress == 2
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (2, "write_error")
    assert exporter.export([record("e", context=unknown)]) is LogRecordExportResult.FAILURE
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (1, "odd_reason")
    assert exporter.export([record("f", context=context)]) is LogRecordExportResult.FAILURE
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (1, "broken_pipe")
    assert exporter.export([]) is LogRecordExportResult.SUCCESS
    assert (
        exporter.export_progress,
        exporter.last_export_dropped,
        exporter.last_export_reason,
    ) == (0, None, None)


def test_unmarked_records_go_out_in_chunks_of_about_64_kib() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    line = len(exporter.render(record("x" * 1000)).encode()) + 1
    per_chunk = -(-_CHUNK // line)  # the record that reaches 64 KiB closes its chunk
    count = per_chunk * 2 + 3
    assert (
        exporter.export([record("x" * 1000) for _ in range(count)]) is LogRecordExportResult.SUCCESS
    )
    assert [len(write) for write in stream.buffer.writes] == [
        per_chunk * line,
        per_chunk * line,
        3 * line,
    ]
    assert exporter.export_progress == count


def sized(exporter: ConsoleExporter, length: int) -> ReadableLogRecord:
    """A record whose console line, with its newline, is `length` bytes."""
    base = len(exporter.render(record(""))) + 1
    made = record("x" * (length - base))
    assert len(exporter.render(made)) + 1 == length
    return made


@pytest.mark.parametrize(
    ("length", "count", "chunks"),
    [
        (1024, 65, [64, 1]),  # 64 lines: exactly 64 KiB, the chunk is full
        (255, 516, [258, 258]),  # 257 lines: one byte short; each chunk counts from 0
    ],
)
def test_a_chunk_closes_at_64_kib_exactly(length: int, count: int, chunks: list[int]) -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    batch = [sized(exporter, length)] * count
    assert exporter.export(batch) is LogRecordExportResult.SUCCESS
    assert [len(write) // length for write in stream.buffer.writes] == chunks


def test_an_exported_record_without_a_context_is_written_from_the_queue() -> None:
    """(A LogRecord of an SDK release before records carried their context, or one
    whose context is None.)"""
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    bare, none = record("bare"), record("none")
    with contextlib.suppress(AttributeError):
        del bare.log_record.context
    none.log_record.context = None
    assert exporter.export([bare, none]) is LogRecordExportResult.SUCCESS
    assert exporter.export_progress == 2
    assert [line.split(" lib ")[1].split()[0] for line in stream.text.splitlines()] == [
        "bare",
        "none",
    ]


def test_a_failed_chunk_counts_its_records_lost_and_the_written_ones_delivered(
    reports: list[tuple[str, str]],
) -> None:
    fail = [False]

    def hook(data: bytes) -> None:
        if fail[0]:
            raise OSError(5, "Input/output error")
        fail[0] = True  # the second chunk fails

    exporter = ConsoleExporter(Stream(Buffer(hook)), colors=False)
    line = len(exporter.render(record("x" * 1000)).encode()) + 1
    per_chunk = -(-_CHUNK // line)
    assert (
        exporter.export([record("x" * 1000) for _ in range(per_chunk + 2)])
        is LogRecordExportResult.FAILURE
    )
    assert exporter.export_progress == per_chunk
    assert (exporter.last_export_dropped, exporter.last_export_reason) == (2, "write_error")


def test_an_export_after_shutdown_fails_and_writes_nothing() -> None:
    stream = Stream()
    exporter = ConsoleExporter(stream, colors=False)
    exporter.export_progress = 5
    exporter.last_export_dropped, exporter.last_export_reason = 1, "write_error"
    exporter.shutdown()
    assert exporter.export([record()]) is LogRecordExportResult.FAILURE
    assert (
        exporter.export_progress,
        exporter.last_export_dropped,
        exporter.last_export_reason,
    ) == (0, None, None)
    assert stream.text == ""

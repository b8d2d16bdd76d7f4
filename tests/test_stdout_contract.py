"""The stdout exporter's contract with the pipeline: a batch written in chunks of about
64 KiB, how many records of the export in progress are written already, and what is lost,
with its reason, when the stream fails or its reader has gone away. In-process, on
recording streams and a real pipe."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.console import ConsoleExporter
from fapilog.exporters.contract import LogRecordExportResult
from fapilog.exporters.stdout import (
    _CHUNK,
    StdoutJsonExporter,
    _StreamExporter,
    console_selected,
)
from fapilog.exporters.stdout import SPEC as STDOUT_SPEC
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import LoggingSettings
from queue_support import Listened

Write = Callable[[bytes], None]


class Stream:
    """A text stream over a binary buffer that keeps each write apart; `on_write` runs
    before each (it may raise)."""

    def __init__(self, on_write: Write | None = None) -> None:
        self.writes: list[bytes] = []
        self.on_write = on_write
        self.buffer = self

    def write(self, data: bytes) -> int:
        if self.on_write is not None:
            self.on_write(data)
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class Lines(_StreamExporter):
    """The stream exporter's chunking with lines given as they are."""

    name = "lines"

    def __init__(self, stream: Any, lines: list[bytes]) -> None:
        super().__init__(stream)
        self.lines = lines

    def _lines(self, batch: Sequence[ReadableLogRecord]) -> list[bytes]:
        return self.lines[: len(batch)]


def batch(count: int) -> list[ReadableLogRecord]:
    return [
        ReadableLogRecord(
            log_record=make_record(
                timestamp=1_700_000_000_000_000_000 + n,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=f"e{n}",
                attributes={"seq": n},
                context=None,
            ),
            resource=Resource.create({"service.name": "api"}),
        )
        for n in range(count)
    ]


def line(size: int) -> bytes:
    return b"x" * (size - 1) + b"\n"


def test_a_chunk_is_written_once_it_reaches_64_kib_and_the_rest_at_the_end() -> None:
    stream = Stream()
    half = line(_CHUNK // 2)
    exporter = Lines(stream, [half, half, half, line(10)])
    assert exporter.export(batch(4)) == LogRecordExportResult.SUCCESS
    assert stream.writes == [half + half, half + line(10)]
    assert exporter.export_progress == 4
    assert exporter.last_export_dropped is None
    assert exporter.last_export_reason is None


def test_lines_under_a_chunk_are_written_together_at_the_end() -> None:
    stream = Stream()
    exporter = Lines(stream, [line(_CHUNK // 2), line(_CHUNK // 2 - 1), line(5)])
    assert exporter.export(batch(3)) == LogRecordExportResult.SUCCESS
    assert [len(w) for w in stream.writes] == [_CHUNK - 1 + 5]


def test_the_progress_counts_the_records_of_every_chunk_written_so_far() -> None:
    seen: list[int] = []
    exporter: Lines

    def note(data: bytes) -> None:
        seen.append(exporter.export_progress)

    exporter = Lines(Stream(note), [line(_CHUNK)] * 3 + [line(7)])
    assert exporter.export(batch(4)) == LogRecordExportResult.SUCCESS
    assert seen == [0, 1, 2, 3]
    assert exporter.export_progress == 4


def test_an_empty_batch_writes_nothing_and_succeeds() -> None:
    stream = Stream()
    exporter = StdoutJsonExporter(stream)  # type: ignore[arg-type]
    assert exporter.export([]) == LogRecordExportResult.SUCCESS
    assert stream.writes == []
    assert exporter.export_progress == 0


def test_a_stream_failing_mid_batch_loses_only_the_records_not_yet_written(
    listened: Listened,
) -> None:
    calls = 0

    def second_fails(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")

    exporter = Lines(Stream(second_fails), [line(_CHUNK)] * 4)
    assert exporter.export(batch(4)) == LogRecordExportResult.FAILURE
    assert exporter.export_progress == 1
    assert exporter.last_export_dropped == 3
    assert exporter.last_export_reason == "write_error"
    message, _ = listened.wait_for("stream:lines")
    assert message.startswith("fapilog lines exporter cannot write: OSError(28,")
    # a write error is not the end: the next export writes again and starts clean
    assert exporter.export(batch(2)) == LogRecordExportResult.SUCCESS
    assert exporter.export_progress == 2
    assert exporter.last_export_dropped is None
    assert exporter.last_export_reason is None


def test_the_last_chunk_failing_loses_the_records_after_the_full_chunks(
    listened: Listened,
) -> None:
    def small_fails(data: bytes) -> None:
        if len(data) < _CHUNK:
            raise ValueError("I/O operation on closed file")

    exporter = Lines(Stream(small_fails), [line(_CHUNK), line(_CHUNK), line(3), line(3)])
    assert exporter.export(batch(4)) == LogRecordExportResult.FAILURE
    assert exporter.export_progress == 2
    assert exporter.last_export_dropped == 2
    assert exporter.last_export_reason == "write_error"
    message, _ = listened.wait_for("stream:lines")
    assert message.startswith("fapilog lines exporter cannot write: ValueError(")


def test_after_a_chunk_the_next_one_starts_empty() -> None:
    stream = Stream()
    half = line(_CHUNK // 2)
    exporter = Lines(stream, [line(_CHUNK), half, line(_CHUNK // 2 - 1), line(5)])
    assert exporter.export(batch(4)) == LogRecordExportResult.SUCCESS
    assert [len(w) for w in stream.writes] == [_CHUNK, _CHUNK - 1 + 5]


def test_a_new_exporter_has_written_nothing_and_lost_nothing() -> None:
    exporter = StdoutJsonExporter(Stream())  # type: ignore[arg-type]
    assert exporter.export_progress == 0
    assert exporter.last_export_dropped is None
    assert exporter.last_export_reason is None


def test_once_the_reader_is_gone_every_later_record_is_dropped_as_a_broken_pipe() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as stream:
        exporter = StdoutJsonExporter(stream)
        assert exporter.export(batch(3)) == LogRecordExportResult.FAILURE
        assert (exporter.last_export_dropped, exporter.last_export_reason) == (
            3,
            "broken_pipe",
        )
        # the descriptor now points at /dev/null, where a write would succeed: the
        # exporter still counts what follows as lost, not as exported into the void
        assert exporter.export(batch(5)) == LogRecordExportResult.FAILURE
        assert (exporter.last_export_dropped, exporter.last_export_reason) == (
            5,
            "broken_pipe",
        )
        assert exporter.export_progress == 0


def test_a_write_error_does_not_count_later_records_as_a_broken_pipe() -> None:
    failing = True

    def fail_once(data: bytes) -> None:
        if failing:
            raise OSError(5, "Input/output error")

    stream = Stream(fail_once)
    exporter = StdoutJsonExporter(stream)  # type: ignore[arg-type]
    assert exporter.export(batch(2)) == LogRecordExportResult.FAILURE
    assert exporter.last_export_reason == "write_error"
    failing = False
    assert exporter.export(batch(2)) == LogRecordExportResult.SUCCESS
    assert len(stream.writes) == 1


def test_after_shutdown_an_export_fails_and_writes_nothing() -> None:
    stream = Stream()
    exporter = StdoutJsonExporter(stream)  # type: ignore[arg-type]
    exporter.shutdown()
    assert exporter.export(batch(2)) == LogRecordExportResult.FAILURE
    assert stream.writes == []
    assert exporter.last_export_dropped is None
    assert exporter.force_flush() is True


def test_json_lines_go_to_the_stream_given_one_object_per_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    stream = Stream()
    exporter = StdoutJsonExporter(stream)  # type: ignore[arg-type]
    assert exporter.export(batch(2)) == LogRecordExportResult.SUCCESS
    assert stdout.getvalue() == ""
    (written,) = stream.writes
    lines = written.splitlines()
    assert len(lines) == 2
    assert b'"message":"e0"' in lines[0] and b'"message":"e1"' in lines[1]


def test_without_a_stream_the_exporter_writes_the_stdout_current_at_export_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = StdoutJsonExporter()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stdout", later)
    assert exporter.export(batch(1)) == LogRecordExportResult.SUCCESS
    assert '"message":"e0"' in later.getvalue()


@pytest.mark.parametrize(
    ("exporters", "json_console", "console"),
    [
        (["stdout"], True, False),
        (["stdout"], False, True),
        (["console"], True, True),
        (["file"], False, False),
        (["stdout", "console"], True, True),
    ],
)
def test_the_console_is_selected_by_its_exporter_or_by_stdout_not_in_json(
    exporters: list[str], json_console: bool, console: bool, tmp_path: Any
) -> None:
    settings = LoggingSettings(
        exporters=exporters, json_console=json_console, file={"path": str(tmp_path / "a.log")}
    )
    assert console_selected(settings) is console
    if exporters == ["stdout"]:
        made = STDOUT_SPEC.factory(settings)
        assert isinstance(made, ConsoleExporter if console else StdoutJsonExporter)


def scoped(name: str) -> ReadableLogRecord:
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=1_700_000_000_000_000_000,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body="connected",
            attributes={},
            context=None,
        ),
        resource=Resource.create({"service.name": "api"}),
        instrumentation_scope=InstrumentationScope(name),
    )


@pytest.mark.parametrize("redaction", [True, False])
def test_the_console_made_for_stdout_redacts_as_the_settings_say_and_takes_their_options(
    redaction: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    settings = LoggingSettings(
        exporters=["stdout"],
        json_console=False,
        redaction={"enabled": redaction},
        console={"synchronous": False},
    )
    exporter = STDOUT_SPEC.factory(settings)
    assert isinstance(exporter, ConsoleExporter)
    assert exporter.synchronous is False
    assert exporter.export([scoped("db postgres://u:hunter2@h/x")]) == (
        LogRecordExportResult.SUCCESS
    )
    assert "connected" in out.getvalue()
    assert ("hunter2" in out.getvalue()) is not redaction


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("terminal", "console"), [(True, True), (False, False)])
def test_on_a_terminal_stdout_is_the_console_unless_json_is_asked(
    terminal: bool, console: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdout", Terminal() if terminal else io.StringIO())
    settings = LoggingSettings(exporters=["stdout"], env="production")
    assert console_selected(settings) is console
    assert isinstance(
        STDOUT_SPEC.factory(settings), ConsoleExporter if console else StdoutJsonExporter
    )
    asked = LoggingSettings(exporters=["stdout"], env="production", json_console=True)
    assert console_selected(asked) is False
    assert isinstance(STDOUT_SPEC.factory(asked), StdoutJsonExporter)

"""`write_stream`, the stdout and console exporters' one way to write: what it writes where,
and what it says when it cannot (a closed stream, a reader gone away). In-process, on real
pipes and files."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from fapilog.exporters._stream import write_stream
from queue_support import Listened


class Recording(io.StringIO):
    """A text stream without a binary buffer that records its flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class WithBuffer:
    """A text stream over a binary buffer; `events` is the order of what happened."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.buffer = self._Buffer(self.events)

    def flush(self) -> None:
        self.events.append("text flush")

    class _Buffer:
        def __init__(self, events: list[str]) -> None:
            self.events = events
            self.data = b""

        def write(self, data: bytes) -> int:
            self.events.append("buffer write")
            self.data += data
            return len(data)

        def flush(self) -> None:
            self.events.append("buffer flush")


def test_the_stream_given_is_written_and_not_sys_stdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdout = Recording()
    monkeypatch.setattr(sys, "stdout", stdout)
    given = Recording()
    assert write_stream(given, b'{"a":1}\n', "stdout") is None
    assert given.getvalue() == '{"a":1}\n'
    assert stdout.getvalue() == ""


def test_without_a_stream_the_current_sys_stdout_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdout = Recording()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert write_stream(None, b"line\n", "stdout") is None
    assert stdout.getvalue() == "line\n"
    assert stdout.flushes == 1


def test_no_stdout_at_all_is_a_write_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    assert write_stream(None, b"line\n", "stdout") == "write_error"


def test_the_text_the_app_wrote_goes_out_before_the_bytes_and_both_are_flushed() -> None:
    stream = WithBuffer()
    assert write_stream(stream, b"\xe2\x9c\x93\n", "console") is None  # type: ignore[arg-type]
    assert stream.events == ["text flush", "buffer write", "buffer flush"]
    assert stream.buffer.data == b"\xe2\x9c\x93\n"  # the bytes as they are, not re-encoded


def test_a_text_only_stream_gets_utf8_text_with_bad_bytes_replaced() -> None:
    stream = Recording()
    assert write_stream(stream, "é ✓ ".encode() + b"\xff\n", "stdout") is None
    assert stream.getvalue() == "é ✓ \ufffd\n"
    assert stream.flushes == 1


def test_a_closed_stream_is_a_write_error_reported_under_the_exporters_name(
    listened: Listened,
) -> None:
    stream = Recording()
    stream.close()
    assert write_stream(stream, b"line\n", "closed-one") == "write_error"
    message, _ = listened.wait_for("stream:closed-one")
    assert message.startswith("fapilog closed-one exporter cannot write: ValueError('I/O ")


def test_a_full_disk_is_a_write_error(listened: Listened) -> None:
    full = open("/dev/full", "w")  # noqa: SIM115 - its close raises too: closed below
    try:
        assert write_stream(full, b"line\n", "full-one") == "write_error"
    finally:
        with contextlib.suppress(OSError):
            full.close()
    message, _ = listened.wait_for("stream:full-one")
    assert message.startswith("fapilog full-one exporter cannot write: OSError(28,")


def test_a_reader_gone_away_is_a_broken_pipe_and_the_stream_then_writes_to_devnull(
    listened: Listened,
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = open(write_end, "w", closefd=True)  # noqa: SIM115 - closed below
    try:
        assert write_stream(stream, b"line\n", "piped") == "broken_pipe"
        message, _ = listened.wait_for("stream:piped")
        assert message == "fapilog piped exporter: broken pipe, output stops"
        devnull = os.stat(os.devnull)
        now = os.fstat(stream.fileno())
        assert (now.st_dev, now.st_ino) == (devnull.st_dev, devnull.st_ino)
        # and writing again is quiet: the descriptor takes everything
        assert write_stream(stream, b"more\n", "piped") is None
    finally:
        stream.close()


def test_a_broken_pipe_on_a_stream_without_a_descriptor_still_reports_and_never_raises(
    listened: Listened,
) -> None:
    class Gone(io.StringIO):
        def write(self, text: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    assert write_stream(Gone(), b"line\n", "nofd") == "broken_pipe"
    listened.wait_for("stream:nofd")


def test_a_broken_pipe_leaves_no_descriptor_open(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = open(write_end, "w", closefd=True)  # noqa: SIM115 - closed below
    before = set(os.listdir("/proc/self/fd"))
    try:
        assert write_stream(stream, b"line\n", "fds") == "broken_pipe"
        assert set(os.listdir("/proc/self/fd")) == before
    finally:
        stream.close()

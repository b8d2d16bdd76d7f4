"""The pretty console shows text from the application and from clients escaped: control
characters, line breaks and terminal escape sequences become visible escapes, a record is
one line, and a traceback is an indented block under its record. Checked through the real
pipeline, and end to end with a FastAPI app under a real uvicorn (both HTTP parsers) that
receives a forged `User-Agent` on a raw socket."""

from __future__ import annotations

import io
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
from opentelemetry.sdk.resources import Resource

import fapilog
from fapilog import configure_logging, get_logger, log
from fapilog.exporters import ReadableLogRecord, unregister_exporter
from fapilog.exporters.console import ConsoleExporter
from fapilog.exporters.console_format import Palette
from fapilog.otel.logs import SeverityNumber, make_record

# every character a terminal or `str.splitlines` takes as a line break, escape sequences
# (7-bit ESC and the 8-bit CSI), the bidirectional override, a lone surrogate: the text
# each becomes on the console
UNSAFE = {
    "\n": "\\n",
    "\r": "\\r",
    "\r\n": "\\r\\n",
    "\t": "\\t",
    "\x0b": "\\x0b",
    "\x0c": "\\x0c",
    "\x1c": "\\x1c",
    "\x1d": "\\x1d",
    "\x1e": "\\x1e",
    "\x85": "\\x85",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
    "\x1b[2J\x1b[31m": "\\x1b[2J\\x1b[31m",
    "\x9b31m": "\\x9b31m",
    "\x07": "\\x07",
    "\x00": "\\x00",
    "\x7f": "\\x7f",
    "\u202e": "\\u202e",
    "\ud800": "\\ud800",
}
FAKE = "12:00:00.000 [critical ] forged line"
# the same without blanks (a value with blanks or quotes is shown quoted, as its repr)
TIGHT_FAKE = "12:00:00.000[critical]forged-line"
RECORD_START = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \[")


def console_output(capsys: pytest.CaptureFixture[str]) -> list[str]:
    fapilog.force_flush(5)
    out = capsys.readouterr().out
    assert out.endswith("\n")
    return out[:-1].split("\n")


def printable(line: str) -> bool:
    return line.isprintable() and not re.search(r"[\u2028\u2029\ud800-\udfff]", line)


@pytest.mark.parametrize("place", ["message", "logger", "key", "value", "nested", "int_key"])
@pytest.mark.parametrize(
    "unsafe", list(UNSAFE), ids=["U+" + "+".join(f"{ord(c):04X}" for c in k) for k in UNSAFE]
)
def test_every_unsafe_character_anywhere_renders_on_one_line_as_an_escape(
    capsys: pytest.CaptureFixture[str], place: str, unsafe: str
) -> None:
    configure_logging(exporters=["console"])
    text = f"before{unsafe}{TIGHT_FAKE}"
    shown = f"before{UNSAFE[unsafe]}{TIGHT_FAKE}"
    logger = get_logger(text if place == "logger" else "app")
    by_place: dict[str, dict[Any, Any]] = {  # the fields that carry it
        "message": {},
        "logger": {},
        "key": {text: 1},
        "value": {"ua": text},
        "nested": {"ua": {"list": [text]}},
        "int_key": {"ua": {7: text}},
    }
    logger.info(text if place == "message" else "plain", **by_place[place])
    (line,) = console_output(capsys)
    assert printable(line), line
    assert shown in line
    assert TIGHT_FAKE not in line.replace(shown, "")  # the fake is shown escaped only


def test_a_client_or_user_cannot_add_lines_with_plain_text_either(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Keys that some console renderers print on lines of their own (`stack`,
    `exception`) are fields like any other."""
    configure_logging(exporters=["console"])
    log.info("x", stack=FAKE, exception=FAKE)
    (line,) = console_output(capsys)
    assert f"stack='{FAKE}'" in line and f"exception='{FAKE}'" in line


def test_a_traceback_is_an_indented_block_that_nothing_in_it_can_leave(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(exporters=["console"])
    try:
        raise ValueError(f"bad input\n{FAKE}\x1b[2J\u2028{FAKE}\r{FAKE}")
    except ValueError:
        get_logger("api").exception("handler failed", path="/x\n")
    log.info("after")
    lines = console_output(capsys)
    starts = [line for line in lines if RECORD_START.match(line)]
    assert len(starts) == 2 and lines[0] == starts[0] and lines[-1] == starts[1]
    assert "handler failed" in lines[0] and "path='/x\\n'" in lines[0]
    block = lines[1:-1]
    assert "Traceback" in block[0]
    assert all(line.startswith("    ") and printable(line) for line in block), block
    text = "\n".join(line.strip(" │") for line in block)
    assert "ValueError: bad input\n" in text
    # the exception message's own line break is a line of the block; the rest is escaped
    # (and wrapped at blanks to the block's width, each part indented)
    rest = text[text.index("ValueError: bad input\n") + len("ValueError: bad input\n") :]
    shown = f"{FAKE}\\x1b[2J\\u2028{FAKE}\\r{FAKE}"
    assert re.sub(r"\s", "", rest) == shown.replace(" ", "")
    assert "exception.type" not in lines[0]  # the traceback shows type and message


def test_the_consoles_own_colours_still_reach_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    exporter = ConsoleExporter(stream=stream)
    fapilog.register_exporter("terminal", lambda settings: exporter)
    try:
        configure_logging(exporters=["terminal"])
        get_logger("svc\x1b[0m").error("red\x1b[32m alert", ua="\x1b]0;owned\x07")
        fapilog.force_flush(5)
    finally:
        unregister_exporter("terminal")
    out = stream.getvalue()
    assert "\x1b[1;31merror" in out  # the level's colour
    assert "red\\x1b[32m alert" in out and "svc\\x1b[0m" in out
    assert "ua\x1b[0m='\\x1b]0;owned\\x07'" in out
    # what is left once the console's own styles are taken out has no escape at all
    codes = {code for pair in Palette(True).codes.values() for code in pair if code}
    styles = re.compile("|".join(re.escape(code) for code in sorted(codes, key=len)[::-1]))
    assert "\x1b" not in styles.sub("", out)
    assert out.count("\n") == 1


def test_a_record_shown_as_its_json_line_is_escaped_too() -> None:
    """A foreign record the console cannot render (a level that is not text) is shown as
    its JSON line: JSON leaves C1 controls and U+2028 as they are, the console does not."""
    record = make_record(
        timestamp=time.time_ns(), context=None, severity_number=SeverityNumber.INFO,
        severity_text="INFO", body="foreign\x85\u2028\x9b2J", attributes={"seq": 1},
    )  # fmt: skip
    readable = ReadableLogRecord(log_record=record, resource=Resource.create({}))
    readable.log_record.severity_text = 7  # type: ignore[assignment]
    line = ConsoleExporter(colors=False).render(readable)
    assert line.startswith("{") and printable(line)
    assert "foreign\\u0085\\u2028\\x9b2J" in line  # (JSON escapes the line breaks)


def test_plain_text_is_returned_as_it_is() -> None:
    from fapilog.exporters.render import console_text

    text = "GET /items/42 \u00e9t\u00e9 \u4e2d\u6587 \U0001f600"
    assert console_text(text) is text
    assert console_text("a\u00a0b\u200dc") == "a\u00a0b\u200dc"  # printable or harmless
    assert console_text("C:\\path") == "C:\\path"


# -- end to end: a forged User-Agent at a real uvicorn -------------------------------------

APP = """
import sys
import uvicorn
from fastapi import FastAPI
from fapilog import configure_logging

app = FastAPI()
configure_logging(app=app, exporters=["console"])


@app.get("/echo/{{name}}")
async def echo(name: str) -> dict[str, str]:
    return {{"name": name}}


uvicorn.run(app, host="127.0.0.1", port=0, http={parser!r}, log_config=None)
"""
PORT = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
# What each parser lets through in a header value (checked byte by byte): h11 takes every
# byte but NUL, LF, CR, VT and FF (ESC and the other C0 controls, DEL, 0x80-0xFF); httptools
# rejects every C0 control but TAB and DEL, and takes 0x80-0xFF. A header value reaches
# the application as latin-1: the bytes 0x80-0x9F are the C1 controls (0x9B is the 8-bit
# CSI, 0x85 NEL a line break). The user agents have no blanks (no-break spaces look like
# them) nor quotes: text that a console could print as it is.
NBSP_FAKE = FAKE.replace(" ", "\xa0")
USER_AGENTS = {
    "h11": (
        b"curl/8.0\x1b[31mRED\x1b[0m\x1b]0;owned\x07\x1b[2J\x1b[H\x7f\x1c\x85"
        + NBSP_FAKE.encode("latin-1"),
        "'curl/8.0\\x1b[31mRED\\x1b[0m\\x1b]0;owned\\x07\\x1b[2J\\x1b[H\\x7f\\x1c\\x85"
        + FAKE.replace(" ", "\\xa0")
        + "'",
    ),
    "httptools": (
        b"curl/8.0\x9b31mRED\x9b0m\x9d0;owned\x9c\x85" + NBSP_FAKE.encode("latin-1"),
        "'curl/8.0\\x9b31mRED\\x9b0m\\x9d0;owned\\x9c\\x85" + FAKE.replace(" ", "\\xa0") + "'",
    ),
}
# a path that uvicorn percent-decodes into ESC, NEL and the 8-bit CSI (the request event's
# url.path; uvicorn's access line quotes it again)
FORGED_PATH = "/echo/x%1b%5b31mRED%c2%85%c2%9b2J"


class Output:
    """A child's stdout, read on a thread as lines ended by LF only (a raw CR or NEL that
    got through shows as what it is), each decoded as UTF-8."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._reader.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "backslashreplace"))
                self._changed.notify_all()

    def port(self, process: subprocess.Popen[bytes], timeout: float = 60) -> int:
        def found() -> int | None:
            for line in self.lines:
                match = PORT.search(line)
                if match:
                    return int(match.group(1))
            return None

        with self._changed:
            self._changed.wait_for(lambda: found() or process.poll() is not None, timeout)
        port = found()
        assert port is not None, "".join(self.lines)
        return port

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)


def raw_get(port: int, target: str, user_agent: bytes) -> bytes:
    """A request sent as bytes, as a client that ignores every rule would send it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"User-Agent: " + user_agent + b"\r\nConnection: close\r\n\r\n"
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


@pytest.mark.slow
@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_a_forged_user_agent_is_one_console_line_with_its_escapes_visible(
    subprocess_env: dict[str, str], tmp_path: Path, parser: str
) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP.format(parser=parser)))
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script)], env=subprocess_env, stdout=subprocess.PIPE, stderr=stderr
        )
    assert process.stdout is not None
    output = Output(process.stdout)
    try:
        port = output.port(process)
        sent, shown = USER_AGENTS[parser]
        first = raw_get(port, "/echo/plain", sent)
        second = raw_get(port, FORGED_PATH, b"curl/8.0")
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        output.join(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    errors = stderr_path.read_text("utf-8", "backslashreplace")
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 "), (
        first,
        second,
    )
    lines = [line.removesuffix("\n") for line in output.lines]
    assert lines and all(RECORD_START.match(line) for line in lines), lines  # one per record
    assert all(printable(line) for line in lines), [ascii(line) for line in lines]
    assert "\x1b" not in "".join(output.lines) + errors

    events = [line for line in lines if "] fapilog.request " in line]
    assert len(events) == 2, events
    assert f"user_agent.original={shown}" in events[0]
    assert "GET /echo/x\\x1b[31mRED\\x85\\x9b2J → 200 in " in events[1]  # the request line

"""The development console: the request event as one line, tracebacks with framework frames
folded and the endpoint's own frame shown, local variables redacted, aligned pairs,
shortened trace ids, colours only where they belong, and every record counted. The FastAPI
cases run a real uvicorn with FAPILOG_ENV=development and stdout a pipe."""

from __future__ import annotations

import io
import os
import pty
import re
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

import fapilog
from fapilog import LoggingSettings, configure_logging, get_logger, log
from fapilog._state import STATE
from fapilog.capture.logger import BoundLogger
from fapilog.capture.record import OTelBridge
from fapilog.exporters import register_exporter, unregister_exporter
from fapilog.exporters.console import ConsoleExporter
from fapilog.otel.logs import SeverityNumber, make_record
from test_fastapi_uvicorn import Server

RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \[(\w+) *\] (\S+) (.*)$")
ANSI = "\x1b"

APP = """
import uvicorn
from fastapi import FastAPI
from fapilog import configure_logging, get_logger

app = FastAPI()
configure_logging(app=app)


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    get_logger("shop").info("item looked up", item_id=item_id)
    return {"item_id": item_id}


@app.get("/boom")
def boom() -> None:
    password = "hun" + "ter2"
    raise ValueError("the endpoint failed")


uvicorn.run(app, host="127.0.0.1", port=0, log_config=None)
"""
RAISING_LINE = APP.split("\n").index('    raise ValueError("the endpoint failed")') + 1
# a frame's heading in rich's traceback, and a run of folded framework frames
FRAME = re.compile(r"│ (\S+\.py):(\d+) in (\S+)")
FOLDED = re.compile(r"… (\d+) framework frames? \(([^)]*)\) …")


def console_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    out = capsys.readouterr().out
    assert out.endswith("\n"), out
    return out[:-1].split("\n")


@pytest.fixture
def served(subprocess_env: dict[str, str], tmp_path: Path) -> Any:
    """The app under a real uvicorn, in development, stdout a pipe; yields the server and
    its port, and stops it (so that all of its output has been read) before asserting."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP))
    env = {**subprocess_env, "FAPILOG_ENV": "development"}
    server = Server([sys.executable, str(script)], env, cwd=tmp_path)
    try:
        yield server, server.port()
    finally:
        server.kill()


@pytest.mark.slow
def test_a_request_is_one_line_and_an_endpoint_error_shows_its_own_frame(served: Any) -> None:
    server, port = served
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        assert client.get("/items/7").status_code == 200
        assert client.get("/boom").status_code == 500
    assert server.stop() in (0, -signal.SIGTERM)  # (uvicorn re-raises SIGTERM)
    lines = server.stdout
    assert ANSI not in "".join(lines)  # a pipe: no colours
    # every line is a record, or an indented line of a traceback block
    assert all(RECORD.match(line) or line.startswith("    ") for line in lines), lines

    (request,) = [line for line in lines if "fapilog.request GET /items/7 " in line]
    match = re.search(
        r"\] fapilog\.request GET /items/7 → 200 in (\d+\.\d) ms +(\S+=\S+ .*)$", request
    )
    assert match, request
    assert float(match.group(1)) > 0
    pairs = match.group(2)
    assert "http.route=/items/{item_id}" in pairs and "request_id=" in pairs
    assert "url.path" not in pairs and "duration_ms" not in pairs  # they are the line itself
    looked_up = next(line for line in lines if "item looked up" in line)
    assert "item_id=7" in looked_up

    failed = next(index for index, line in enumerate(lines) if "GET /boom → 500 in " in line)
    assert RECORD.match(lines[failed]).group(1) == "error"  # type: ignore[union-attr]
    assert "request failed" in lines[failed]
    block = []
    for line in lines[failed + 1 :]:
        if not line.startswith("    "):
            break
        block.append(line)
    text = "\n".join(block)
    frames = FRAME.findall(text)
    folded = FOLDED.findall(text)
    assert len(folded) == 1, text
    assert int(folded[0][0]) >= 10 and "starlette" in folded[0][1] and "fastapi" in folded[0][1]
    assert len(frames) + len(folded) <= 8, text
    path, line, name = frames[-1]
    assert (Path(path).name, line, name) == ("app.py", str(RAISING_LINE), "boom"), frames
    # the raising line, marked
    assert re.search(rf"❱ +{RAISING_LINE} │ +raise ValueError\(\"the endpoint failed\"\)", text)
    assert block[-1].strip() == "ValueError: the endpoint failed"
    assert "hunter2" not in "".join(lines)  # locals are off by default: not shown at all


def _fails(password: str) -> None:
    token = "abc" + ".def"  # (the values are made here: the code shown has no secret)
    cart = {"items": 2, "card": {"password": password}}
    raise RuntimeError(f"checkout failed for {len(cart)} entries, {len(token)}")


def test_locals_on_request_are_redacted_like_every_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LoggingSettings(exporters=["console"], console={"locals": True}))
    try:
        _fails("hun" + "ter2")
    except RuntimeError:
        get_logger("shop").exception("checkout failed")
    lines = console_lines(capsys)
    text = "\n".join(lines)
    assert "─ locals ─" in text  # the panel of the frame's local variables
    assert re.search(r"│ +password = \[REDACTED\]", text), text
    assert re.search(r"│ +token = \[REDACTED\]", text), text
    assert "'card': {'password': '[REDACTED]'}" in text, text
    assert "hunter2" not in text and "abc.def" not in text


def test_a_redaction_change_alone_reaches_the_consoles_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The console redacts what it renders itself (an exception's message, locals): a new
    configuration that changes only redaction rebuilds it with the new rules."""
    configure_logging(exporters=["console"])
    configure_logging(exporters=["console"], redaction={"patterns": [r"tok_[a-z0-9]+"]})
    capsys.readouterr()
    try:
        raise ValueError("bad token tok_" + "abc123")  # (the source line is shown too)
    except ValueError:
        get_logger("shop").exception("rejected")
    text = "\n".join(console_lines(capsys))
    assert "ValueError" in text and "tok_abc123" not in text, text


def test_without_locals_no_local_value_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(exporters=["console"])
    try:
        _fails("hun" + "ter2")
    except RuntimeError:
        get_logger("shop").exception("checkout failed")
    text = "\n".join(console_lines(capsys))
    assert "─ locals ─" not in text and "'card': {" not in text  # (the code has ")
    assert "_fails" in text and "RuntimeError: checkout failed for 2 entries, 7" in text


def test_pairs_start_at_one_column_and_trace_ids_are_shortened(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(exporters=["console"])
    tracer = TracerProvider().get_tracer("test")
    get_logger("a").info("short", first=1)
    get_logger("a.much.longer.name").info("a bit longer", second=2)
    with tracer.start_as_current_span("work") as span:
        log.info("in a span", third=3)
        context = span.get_span_context()
    lines = console_lines(capsys)
    columns = {
        line.index(key) for line, key in zip(lines, ("first=", "second=", "third="), strict=True)
    }
    assert len(columns) == 1, lines
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    assert lines[2].endswith(f"third=3 trace_id={trace_id[:8]} span_id={span_id[:8]}"), lines[2]
    assert trace_id not in lines[2]


@pytest.mark.parametrize(
    ("environment", "coloured"),
    [({}, False), ({"FORCE_COLOR": "1"}, True), ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False)],
)
def test_colours_only_on_a_terminal_or_when_forced_and_never_with_no_color(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    coloured: bool,
) -> None:
    for name in ("FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    configure_logging(exporters=["console"])
    log.error("shown", n=1)
    (line,) = console_lines(capsys)
    assert (ANSI in line) is coloured
    assert "shown" in line and "n" in line


def test_a_terminal_gets_colours_by_status_class() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    register_exporter("terminal", lambda settings: ConsoleExporter(stream=stream))
    try:
        configure_logging(exporters=["terminal"])
        request = get_logger("fapilog.request")
        for status, level in ((200, "info"), (404, "warning"), (503, "error")):
            getattr(request, level)(
                "request completed",
                **{"http.request.method": "GET", "url.path": "/x", "duration_ms": 1.5},
                **{"http.response.status_code": status},
            )
    finally:
        unregister_exporter("terminal")
    ok, missing, broken = stream.getvalue().splitlines()
    assert "GET\x1b[0m /x → \x1b[32m200\x1b[0m in 1.5 ms" in ok  # 2xx green
    assert "→ \x1b[33m404\x1b[0m" in missing  # 4xx yellow
    assert "→ \x1b[1;31m503\x1b[0m" in broken  # 5xx red


def test_a_record_other_code_emits_on_this_thread_is_written_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(exporters=["console"])
    record = make_record(
        timestamp=time.time_ns(), context=None, severity_number=SeverityNumber.WARN,
        severity_text="WARN", body="from the logs API", attributes={"seq": 1},
    )  # fmt: skip
    STATE.pipeline.provider.get_logger("foreign").emit(record)  # type: ignore[union-attr]
    (line,) = capsys.readouterr().out.splitlines()  # no flush: written during emit()
    assert RECORD.match(line) and "[warning ] foreign from the logs API" in line
    assert line.endswith("seq=1")
    fapilog.force_flush(5)
    assert capsys.readouterr().out == ""  # counted from its queue, not written again
    figures = fapilog.stats()["exporters"]["console"]
    assert figures["exported"] == figures["emitted"] == 1


def test_a_record_the_chain_did_not_see_is_written_from_the_queue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A record `salvage` made after a processor of the application's own failed did not
    go through the console's processor: it is written from the console's queue."""

    def broken(logger: Any, method_name: str, event_dict: Any) -> Any:
        raise RuntimeError("processor bug")

    configure_logging(exporters=["console"])
    custom = structlog.wrap_logger(
        get_logger("custom")._logger, processors=[broken, OTelBridge()], wrapper_class=BoundLogger
    )
    custom.error("password=hunter2")
    fapilog.force_flush(5)
    (line,) = console_lines(capsys)
    assert "[error   ] custom <record could not be processed>" in line
    assert "fapilog.error='record could not be processed: RuntimeError'" in line
    figures = fapilog.stats()["exporters"]["console"]
    assert figures["exported"] == figures["emitted"] == 1


def test_queued_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(exporters=["console"], console={"synchronous": False}))
    for n in range(3):
        log.info("queued", n=n)
    fapilog.force_flush(5)
    lines = console_lines(capsys)
    assert [line.rsplit("n=", 1)[1] for line in lines] == ["0", "1", "2"]


class Unwritable(io.StringIO):
    """A stream that is closed for writing (EIO)."""

    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")

    def flush(self) -> None:
        raise OSError(5, "Input/output error")


def test_a_stream_that_cannot_be_written_never_raises_and_its_records_count_as_dropped(
    capfd: pytest.CaptureFixture[str],
) -> None:
    register_exporter("unwritable", lambda settings: ConsoleExporter(stream=Unwritable()))
    try:
        configure_logging(exporters=["unwritable"])
        for n in range(5):
            assert log.info("lost", n=n) is None
    finally:
        unregister_exporter("unwritable")
    fapilog.force_flush(5)
    figures = fapilog.stats()["exporters"]["unwritable"]
    assert figures["dropped_by_reason"] == {"write_error": 5}, figures
    assert figures["exported"] == 0 and figures["emitted"] == 5
    assert "cannot write" in capfd.readouterr().err  # reported once on stderr


def test_a_traceback_given_as_text_is_shown_as_rich_shows_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A record that carries its traceback as text only (one other OpenTelemetry code
    emits): its frames are read back from Python's format, chained exceptions included."""
    try:
        try:
            int("x")
        except ValueError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as exc:
        text = "".join(traceback.format_exception(exc))
    configure_logging(exporters=["console"])
    attributes = {"exception.type": "RuntimeError", "exception.stacktrace": text}
    record = make_record(
        timestamp=time.time_ns(), context=None, severity_number=SeverityNumber.ERROR,
        severity_text="ERROR", body="it failed", attributes=attributes,
    )  # fmt: skip
    STATE.pipeline.provider.get_logger("foreign").emit(record)  # type: ignore[union-attr]
    lines = console_lines(capsys)
    assert lines[0].endswith("[error   ] foreign it failed")  # the attributes are the block
    block = "\n".join(lines[1:])
    assert all(line.startswith("    ") for line in lines[1:])
    here = Path(__file__).name
    assert len(re.findall(rf"│ \S*{here}:\d+ in\b", block)) == 2  # (the name may wrap)
    assert "ValueError: invalid literal for int() with base 10: 'x'" in block
    assert "The above exception was the direct cause of the following exception" in block
    assert lines[-1].strip() == "RuntimeError: wrapped"
    assert block.index("ValueError") < block.index("RuntimeError: wrapped")


def test_on_a_terminal_the_console_is_the_default_and_coloured(
    subprocess_env: dict[str, str],
) -> None:
    """stdout a terminal (a pseudo-terminal here), no setting at all: the console, with
    the level's colour."""
    env = {k: v for k, v in subprocess_env.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm"
    code = "import fapilog; fapilog.log.warning('on a terminal', n=1)"
    primary, secondary = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=secondary, stderr=subprocess.PIPE
    )
    os.close(secondary)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end closed (the child is gone)
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(primary)
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    text = out.decode()
    assert "on a terminal" in text and not text.startswith("{")
    assert "\x1b[33mwarning" in text  # the level's colour (yellow)

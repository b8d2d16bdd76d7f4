"""``fapilog pretty``, the installed console script in subprocesses: fapilog's JSON lines
and other JSON lines as the development console shows them, filters, lines that are not
JSON passed through, and ``--follow`` across the file exporter's own rotation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import runs

FAPILOG = str(Path(sys.executable).parent / "fapilog")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def fapilog_line(message: str, level: str = "info", **fields: object) -> str:
    record = {
        "timestamp": "2026-12-02T10:28:41.794355Z",
        "level": level,
        "message": message,
        "logger": "app.orders",
        **fields,
        "service.name": "shop",
        "host.name": "vm",
        "process.pid": 42,
    }
    return json.dumps(record)


STACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/x.py", line 3, in f\n'
    "    1/0\n"
    "ZeroDivisionError: division by zero\n"
)
INPUT = "\n".join(
    [
        fapilog_line("order placed", order_id=7),
        fapilog_line("slow query", "warning", trace_id=TRACE, span_id="00f067aa0ba902b7"),
        "plain text: uvicorn's banner",
        json.dumps(
            {"time": 1764670000.5, "levelname": "ERROR", "name": "other", "msg": "from elsewhere"}
        ),
        "[1, 2]",
        fapilog_line(
            "boom",
            "error",
            **{
                "exception.type": "ZeroDivisionError",
                "exception.message": "division by zero",
                "exception.stacktrace": STACK,
            },
        ),
        '{"broken json',
    ]
)


def command(*args: str, stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAPILOG, *args], check=False, input=stdin, capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip


def pretty(*args: str, env: dict[str, str], stdin: str = INPUT) -> str:
    result = command("pretty", *args, stdin=stdin, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pretty_shows_json_lines_as_the_console_does_and_passes_the_rest(
    subprocess_env: dict[str, str],
) -> None:
    out = pretty("--no-color", env=subprocess_env).splitlines()
    assert "\x1b" not in "".join(out)
    assert out[0].endswith("order_id=7")
    assert "[info    ] app.orders order placed" in out[0]
    assert "service.name" not in out[0] and "process.pid" not in out[0]  # (the resource)
    assert "[warning ] app.orders slow query" in out[1]
    assert out[1].endswith("trace_id=4bf92f35 span_id=00f067aa")
    assert out[2] == "plain text: uvicorn's banner"
    assert "[error   ] other from elsewhere" in out[3]
    assert out[4] == "[1, 2]"
    assert "[error   ] app.orders boom" in out[5]
    block = out[6 : out.index('{"broken json')]
    assert any("ZeroDivisionError: division by zero" in line for line in block)
    assert all(line.startswith("    ") for line in block)  # the traceback's indented block
    assert out[-1] == '{"broken json'


def test_pretty_filters(subprocess_env: dict[str, str]) -> None:
    warnings = pretty("--no-color", "--level", "warning", env=subprocess_env)
    assert "order placed" not in warnings
    assert "slow query" in warnings and "from elsewhere" in warnings and "boom" in warnings
    assert "plain text" in warnings  # (not JSON: always shown)
    traced = pretty("--no-color", "--trace", TRACE[:8], env=subprocess_env)
    assert "slow query" in traced
    assert "order placed" not in traced and "boom" not in traced
    grepped = pretty("--no-color", "--grep", "order_id", env=subprocess_env)
    assert "order placed" in grepped and "slow query" not in grepped
    with_resource = pretty("--no-color", "--resource", env=subprocess_env)
    assert "service.name=shop" in with_resource


def test_pretty_colours_on_request_and_refuses_bad_filters(subprocess_env: dict[str, str]) -> None:
    assert "\x1b[" in pretty("--color", env=subprocess_env)
    env = {**subprocess_env, "NO_COLOR": "1"}
    assert "\x1b[" not in pretty(env=env)
    bad = subprocess.run(
        [FAPILOG, "pretty", "--grep", "("],
        check=False,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--grep" in bad.stderr
    bad_level = subprocess.run(
        [FAPILOG, "pretty", "--level", "loud"],
        check=False,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_level.returncode == 2 and "--level" in bad_level.stderr


def test_pretty_reads_files_and_gzip_backups(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    import gzip

    plain = tmp_path / "app.log"
    plain.write_text(fapilog_line("from the live file") + "\n")
    backup = tmp_path / "app.log.1.gz"
    backup.write_bytes(gzip.compress((fapilog_line("from a backup") + "\n").encode()))
    out = pretty("--no-color", str(backup), str(plain), stdin="", env=subprocess_env)
    assert out.index("from a backup") < out.index("from the live file")


# -- --follow across rotation ---------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import fapilog

    fapilog.configure_logging(
        exporters=["file"],
        file={"path": sys.argv[1], "max_bytes": 4000, "backup_count": 100, "gzip": True},
    )
    log = fapilog.get_logger("writer")
    number = 0
    for command in sys.stdin:
        for _ in range(int(command)):
            log.info("line", number=number, padding="x" * 120)
            number += 1
        fapilog.force_flush(10)
        print("written", number, flush=True)
    """
)


# exec the command with every signal unblocked and SIGINT at Python's default handler
CLEAN_SIGNALS = (
    "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); os.execv(sys.argv[1], sys.argv[1:])"
)


class Follower:
    """`fapilog pretty --follow` running, its output lines collected as they come."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        # started as from a shell: no signal blocked or ignored, whatever this test
        # process inherited or was left with (Ctrl-C must reach it as it reaches a user's)
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLEAN_SIGNALS, FAPILOG, "pretty", "--follow", "--no-color",
             str(path)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.lines) >= count, timeout)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # (Ctrl-C: a normal end, coverage saved)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                "fapilog pretty --follow did not end on SIGINT: "
                + "; ".join(line for line in status if line.startswith(("State", "Sig")))
            ) from None
        self._thread.join(10)


@pytest.mark.soak
@pytest.mark.parametrize("run_number", range(runs(1, 5)))
def test_pretty_follow_shows_every_line_once_across_rotation(
    tmp_path: Path, subprocess_env: dict[str, str], run_number: int
) -> None:
    path = tmp_path / "logs" / "app.log"
    follower = Follower(path, subprocess_env)  # started before the file exists
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=subprocess_env,
    )  # fmt: skip
    assert writer.stdin is not None and writer.stdout is not None
    total = 0
    try:
        # a first line, then bursts of ~2.5 KB against max_bytes 4000: the file rotates at
        # most once between two looks of the follower (see docs/cli.md for the limit)
        for burst in [1] + [5] * 16:
            writer.stdin.write(f"{burst}\n")
            writer.stdin.flush()
            total += burst
            assert writer.stdout.readline().split() == ["written", str(total)]
            assert follower.wait_for(total), f"{len(follower.lines)} of {total} shown"
        writer.stdin.close()
        assert writer.wait(30) == 0
    finally:
        follower.stop()
        if writer.poll() is None:
            writer.kill()
    rotated = sorted(p.name for p in path.parent.iterdir())
    assert len(rotated) > 3, rotated  # the file did rotate, several times
    numbers = [int(line.split("number=")[1].split()[0]) for line in follower.lines]
    assert numbers == list(range(total))  # every line, once, in order


def test_pretty_reports_a_file_it_cannot_read_and_goes_on(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    good = tmp_path / "app.log"
    good.write_text(fapilog_line("still shown") + "\n")
    broken = tmp_path / "app.log.1.gz"
    broken.write_bytes(b"not gzip at all")
    result = command(
        "pretty", "--no-color", str(tmp_path / "missing.log"), str(broken), str(good),
        stdin="", env=subprocess_env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "missing.log" in result.stderr and "app.log.1.gz" in result.stderr
    assert "Traceback" not in result.stderr
    assert "still shown" in result.stdout


def test_pretty_passes_odd_lines_through_byte_for_byte(subprocess_env: dict[str, str]) -> None:
    odd = b"\xff\xfe latin-1 caf\xe9 \x80\n"
    huge_time = json.dumps({"timestamp": 1e300, "message": "far future"}).encode() + b"\n"
    result = subprocess.run(
        [FAPILOG, "pretty", "--no-color"], input=odd + huge_time, capture_output=True,
        env=subprocess_env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split(b"\n")
    assert lines[0] + b"\n" == odd
    assert lines[1].startswith(b"--:--:--.---") and b"far future" in lines[1]

"""Shared fixtures: every test starts with an unconfigured fapilog and a clean environment."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# logfire (installed for tests/test_logfire.py) registers a pydantic plugin that every
# interpreter importing pydantic would load; the suite's many child processes skip it
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "logfire-plugin")
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util._once import Once

import fapilog.testing
from fapilog import LoggingSettings
from fapilog._state import STATE
from fapilog.integrations import tracing as _tracing
from fapilog.pipeline.accounting import unbalanced

ROOT = Path(__file__).resolve().parent.parent

# fapilog's pytest plugin, loaded here rather than through its `pytest11` entry point
# (disabled in pyproject's addopts): by now coverage has started, so its import is measured;
# and the fixtures that several test files share (tests/queue_support.py, spool_support.py,
# tls_support.py)
pytest_plugins = ["fapilog.pytest_plugin", "queue_support", "spool_support", "tls_support"]

# Skips a machine may legitimately cause: the reason, and why it is a fact of the machine
# rather than a missing tool. Any other skip fails the run (a test that quietly stops
# running is a hole), unless FAPILOG_STRICT_SKIPS=0 (on by default; CI sets it too).
EXPECTED_SKIPS = {
    "only one Python interpreter on this machine: nothing to switch between": "one Python",
    "no PID namespace here (unshare needs root or user namespaces)": "container policy",
    "fork() is POSIX only": "platform",
    "needs fork": "platform",
    "reads /proc": "platform",
}
STRICT_SKIPS = os.environ.get("FAPILOG_STRICT_SKIPS", "1") != "0"
_UNEXPECTED_SKIPS: list[tuple[str, str]] = []


def _note_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        reason = reason.removeprefix("Skipped: ")
        if reason not in EXPECTED_SKIPS:
            _UNEXPECTED_SKIPS.append((report.nodeid, reason))


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Text and bytes parameters name their test with printable ASCII only (anything else
    becomes ``_``): pytest would escape it with backslashes, and mutmut (`make mutate`)
    records such an id escaped once more, so that it no longer finds the test."""
    if isinstance(val, bytes):
        val = val.decode("latin-1")
    if isinstance(val, str) and not (val.isascii() and val.isprintable() and "\\" not in val):
        return "".join(c if c.isascii() and c.isprintable() and c != "\\" else "_" for c in val)
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module skipped whole (`pytest.importorskip` at its top)."""
    _note_skip(report)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _UNEXPECTED_SKIPS and STRICT_SKIPS:
        terminalreporter.section("unexpected skips (FAPILOG_STRICT_SKIPS=0 allows them)")
        for nodeid, reason in _UNEXPECTED_SKIPS:
            terminalreporter.write_line(f"{nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _UNEXPECTED_SKIPS and STRICT_SKIPS and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _documented_drop_reasons() -> frozenset[str]:
    """The reasons in docs/pipeline.md's drop-reason table."""
    text = (ROOT / "docs" / "pipeline.md").read_text()
    table = text.split("### Drop reasons", 1)[1].split("\n\n", 2)[1]
    reasons = frozenset(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M))
    assert "queue_full" in reasons and "shutdown_timeout" in reasons, "the table moved?"
    return reasons


DROP_REASONS = _documented_drop_reasons()


def undocumented_reasons(figures: dict[str, Any]) -> set[str]:
    """Drop reasons in a `stats()` result that docs/pipeline.md does not list."""
    seen = set(figures["intake"]["dropped_by_reason"])
    for exporter in figures["exporters"].values():
        seen.update(reason.removeprefix("intake_") for reason in exporter["dropped_by_reason"])
    return seen - DROP_REASONS


@pytest.fixture(autouse=True)
def _clean_fapilog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts unconfigured, with no FAPILOG_/OTEL_ variables and a spool
    directory of its own (the default one, under $XDG_STATE_HOME: a test never replays
    another's records); and after every test that configured fapilog, its figures add up
    once the pipeline is quiet."""
    for key in list(os.environ):
        if key.startswith(("FAPILOG_", "OTEL_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    # (an earlier test put a configuration back after the reset that ended it)
    assert STATE.pipeline is None and STATE.bridge is None, "fapilog configured before the test"
    yield
    if STATE.pipeline is not None:
        if not STATE.shut_down:
            fapilog.force_flush(10)
        figures = fapilog.stats()
        try:
            assert unbalanced(figures) == {}, figures
            assert undocumented_reasons(figures) == set(), figures
        finally:
            fapilog.testing.reset()
    else:
        fapilog.testing.reset()


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child interpreters: this venv, no FAPILOG_/OTEL_ leftovers,
    coverage collection when the parent runs under coverage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAPILOG_", "OTEL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COVERAGE_PROCESS_START", str(ROOT / "pyproject.toml"))
    # a child started in another directory (cwd=tmp_path) writes its data here all the same
    env.setdefault("COVERAGE_FILE", str(ROOT / ".coverage"))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests" / "support"), env.get("PYTHONPATH", "")]
    )
    return env


def untraced(env: dict[str, str]) -> dict[str, str]:
    """`env` without coverage collection in the child."""
    return {k: v for k, v in env.items() if k != "COVERAGE_PROCESS_START"}


@pytest.fixture
def timed_env(subprocess_env: dict[str, str]) -> dict[str, str]:
    """`subprocess_env` without coverage collection, for tests that time a child's exit:
    coverage writing its data as each process ends is not fapilog's time."""
    return untraced(subprocess_env)


PYTHON = sys.executable


# read once, at import: each test starts with the FAPILOG_ variables cleared
SOAK = bool(os.environ.get("FAPILOG_SOAK"))


def runs(quick: int, soak: int) -> int:
    """How many times a repeated scenario runs: `quick` in `make test`, `soak` in
    `make soak` (FAPILOG_SOAK=1)."""
    return soak if SOAK else quick


class MemoryExporter:
    """A registered exporter name backed by the SDK's InMemoryLogRecordExporter."""

    def __init__(self, name: str) -> None:
        from fapilog.otel.logs import InMemoryLogRecordExporter

        self.name = name
        self.exporter = InMemoryLogRecordExporter()

    def records(self) -> list[object]:
        import fapilog

        fapilog.force_flush(10)
        return list(self.exporter.get_finished_logs())


@pytest.fixture
def memory_exporter() -> Iterator[MemoryExporter]:
    """`exporters=[memory_exporter.name]` routes records into memory (the real pipeline:
    bridge, router, batching processor)."""
    import uuid

    from fapilog.exporters import (
        LogRecordExporter,
        LogRecordExportResult,
        register_exporter,
        unregister_exporter,
    )

    holder = MemoryExporter(f"memory_{uuid.uuid4().hex[:8]}")

    class Forwarding(LogRecordExporter):
        """A fresh exporter per configuration, all feeding the one in-memory store."""

        def export(self, batch: Any) -> LogRecordExportResult:
            return holder.exporter.export(batch)

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    register_exporter(holder.name, lambda settings: Forwarding())
    yield holder
    unregister_exporter(holder.name)


def run_python(
    code: str, env: dict[str, str], *, timeout: float = 60, stdin: str | None = None
) -> tuple[int, str, str]:
    """Run `code` in a fresh interpreter; returns (exit code, stdout, stderr)."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def exporter_named() -> Iterator[Any]:
    """Register a given exporter instance under a fresh name: `name = exporter_named(exp)`."""
    import uuid

    from fapilog.exporters import register_exporter, unregister_exporter

    names: list[str] = []

    def register(exporter: Any) -> str:
        name = f"exp_{uuid.uuid4().hex[:8]}"
        register_exporter(name, lambda settings: exporter)
        names.append(name)
        return name

    yield register
    for name in names:
        unregister_exporter(name)


_MUTMUT_NAME = re.compile(r"x(?:\u01c1\w+\u01c1|_)(\w+?)__mutmut_(?:orig|\d+)")


def function_name(code: Any) -> str:
    """The name of the function `code` belongs to, as written in the source, also under
    `make mutate` (mutmut renames each mutated function: `_run` of `BatchQueue` runs as
    ``x\u01c1BatchQueue\u01c1_run__mutmut_orig``), so that tests that look at a thread's stack
    keep working there."""
    found = _MUTMUT_NAME.fullmatch(code.co_name)
    return found.group(1) if found else str(code.co_name)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sigterm_mid_load(
    server: Any,
    port: int,
    *,
    requests_per_client: int,
    min_ok: int = 200,
    wait: float = 30,
    ready: Callable[[], bool] | None = None,
) -> str:
    """Wait for the server on `port` to answer (and for `ready()`, if given: say every
    worker process has started), load `/work/<n>` from 4 client threads, send SIGTERM once
    `min_ok` requests succeeded, and return the server's stderr. The server is always gone
    afterwards (killed if it did not exit)."""
    import signal
    import threading
    import time

    import httpx

    ok = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            n = 0
            while not stop.is_set() and n < requests_per_client:  # bounded
                n += 1
                try:
                    if client.get(f"/work/{n}").status_code == 200:
                        ok[0] += 1
                except httpx.HTTPError:
                    if server.poll() is not None:
                        return

    err = ""
    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.poll() is None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/work/0", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        while ready is not None and not ready() and time.monotonic() < deadline:
            if server.poll() is not None:
                break
            time.sleep(0.05)
        for worker in workers:
            worker.start()
        while ok[0] < min_ok and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)  # mid-load
        _, err = server.communicate(timeout=wait)
    finally:
        stop.set()
        for worker in workers:
            if worker.is_alive():
                worker.join(10)
        if server.poll() is None:
            server.kill()
            server.wait()
    return str(err or "")


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung collector)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def loki() -> Iterator[Any]:
    """A strict Loki-compatible receiver on 127.0.0.1 (tests/peers/loki_receiver.py)."""
    from peers.loki_receiver import LokiReceiver

    with LokiReceiver() as receiver:
        yield receiver
        # deliver what the test left (httpx's own request logs, ...) while Loki still runs
        receiver.clear_failures()
        receiver.slow(0)
        receiver.up()
        fapilog.shutdown(5)


def loki_exporter() -> Any:
    """The running LokiExporter of the configured pipeline."""
    from fapilog.exporters.loki import LokiExporter

    (processor,) = [p for p in STATE.pipeline.processors if p.name == "loki"]
    assert isinstance(processor.exporter, LokiExporter)
    return processor.exporter


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def in_span(func: Any) -> str:
    """Run `func` inside a sampled span of trace `TRACE_ID` (span 00f067aa0ba902b7);
    returns the trace id as the JSON line writes it."""
    context = SpanContext(
        trace_id=int(TRACE_ID, 16),
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(1),
    )
    with trace.use_span(NonRecordingSpan(context)):
        func()
    return TRACE_ID


# ------------------------------------------------------ FastAPI tracing (test_fastapi_*.py)

MODES = ["native", "instrumentation"]


@pytest.fixture(params=MODES)
def tracing_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each way of creating server spans (FAPILOG_REQUEST__TRACING)."""
    mode: str = request.param
    monkeypatch.setenv("FAPILOG_REQUEST__TRACING", mode)
    return mode


@pytest.fixture
def trace_globals() -> Iterator[None]:
    """Unset OTel's global TracerProvider for the test (it can be set once per process),
    and forget the one fapilog created; both are restored afterwards."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, STATE.tracer_provider)
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    STATE.tracer_provider = None
    try:
        yield
    finally:
        # (providers stay alive: FastAPIInstrumentor's BackgroundTask patch keeps the
        # tracer of the first app it instrumented, whichever test that was)
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, owned = saved
        STATE.tracer_provider = owned


@pytest.fixture
def spans(trace_globals: None) -> InMemorySpanExporter:
    """The spans of the TracerProvider fapilog creates for this test."""
    provider = _tracing.ensure_tracer_provider(LoggingSettings())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter

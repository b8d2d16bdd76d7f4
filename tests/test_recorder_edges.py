"""The flight recorder at its edges: stdlib loggers' own levels, container values against
the byte bound, a record too big for the bound, a block left in another context, records
arriving after the end, the gate back where it was after a block, a recorder of another
request, the console's order, configuration order, and run-time changes in a row."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fapilog
from conftest import run_python
from fapilog import configure_logging, get_logger
from fapilog.capture.logger import sink_for
from fapilog.capture.recorder import TOTALS, Recorder
from sampling_support import lines, make_app, serve, steps_in


def file_config(tmp_path: Path, **settings: Any) -> Path:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, **settings)
    return path


def test_a_stdlib_loggers_own_level_is_honoured_with_and_without_the_recorder(
    tmp_path: Path,
) -> None:
    stdlib = logging.getLogger("mylib.sql")
    stdlib.setLevel(logging.DEBUG)
    try:
        path = file_config(tmp_path)
        stdlib.debug("plain configuration")
        assert [line["message"] for line in lines(path)] == ["plain configuration"]
        path = file_config(tmp_path, request={"buffer": {"enabled": True}})
        stdlib.debug("outside a recorder")

        def job() -> None:
            with fapilog.flight_recorder():
                stdlib.debug("held, then released")
                raise KeyError("x")

        with pytest.raises(KeyError):
            job()
        with fapilog.flight_recorder():
            stdlib.debug("held, then discarded")
        messages = [line["message"] for line in lines(path)]
        assert messages[-2:] == ["outside a recorder", "held, then released"]
        assert "held, then discarded" not in messages
        # fapilog never lowered stdlib's levels for the recorder
        assert logging.getLogger().level == logging.INFO
    finally:
        stdlib.setLevel(logging.NOTSET)


def test_container_values_count_against_the_byte_bound(tmp_path: Path) -> None:
    import tracemalloc

    file_config(tmp_path, request={"buffer": {"max_bytes": 262_144}})
    log = get_logger("bulk")
    tracemalloc.start()
    try:
        with fapilog.flight_recorder() as recorder:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(200):
                log.debug(
                    "rows", n=n, ids=list(range(1000)), attrs={f"k{i}": i for i in range(200)}
                )
            held = tracemalloc.get_traced_memory()[0] - before
            assert recorder.size <= 262_144
            assert held <= 262_144 * 1.5 + 64 * 1024, held
    finally:
        tracemalloc.stop()


def test_a_record_too_big_for_the_bound_does_not_push_the_others_out(tmp_path: Path) -> None:
    path = file_config(tmp_path, request={"buffer": {"max_bytes": 4096}})
    log = get_logger("job")

    def job() -> None:
        with fapilog.flight_recorder():
            for n in range(3):
                log.debug("small", n=n)
            log.debug("huge", blob="x" * 5000)
            raise KeyError("x")

    with pytest.raises(KeyError):
        job()
    assert [line["message"] for line in lines(path)] == ["small"] * 3
    assert fapilog.stats()["recorder"]["overflowed"] == 1


def test_a_block_left_in_another_context_raises_nothing_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    file_config(tmp_path)
    block = fapilog.flight_recorder()
    block.__enter__()
    get_logger("job").debug("held")
    contextvars.copy_context().run(block.__exit__, None, None, None)
    assert TOTALS.held == 0 and TOTALS.discarded == 1


def test_records_arriving_after_the_end_are_counted_not_held(tmp_path: Path) -> None:
    file_config(tmp_path, request={"buffer": {"enabled": True}})
    recorder = Recorder(10)
    recorder.discard()
    pending = fapilog.capture.record.capture(sink_for("late"), "debug", {"event": "late"})
    threads = [threading.Thread(target=recorder.hold, args=(pending,)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert TOTALS.held == 0 and TOTALS.held_bytes == 0
    assert TOTALS.discarded == 20 and TOTALS.captured == 20


def test_the_gate_is_back_where_it_was_once_the_last_block_ends(tmp_path: Path) -> None:
    file_config(tmp_path, level="WARNING")
    sink = sink_for("svc")
    assert sink.min_level == 30
    with fapilog.flight_recorder():
        assert sink.min_level == 10
        with fapilog.flight_recorder(level="info"):
            assert sink.min_level == 10
        assert sink.min_level == 10
    assert sink.min_level == 30
    assert type(fapilog._state.STATE.chain[-1]).__name__ == "DirectBridge"


def test_a_request_does_not_log_into_a_recorder_it_did_not_start(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    app = make_app(steps=2)
    configure_logging(
        app=app,
        exporters=["file"],
        file={"path": str(path)},
        request={"follow_trace_sampling": True},  # recorders for requests, none for this one
    )

    def job() -> None:
        with fapilog.flight_recorder():
            serve(app, ["/ok?tag=request"])
            raise KeyError("the job fails")

    with pytest.raises(KeyError):
        job()
    assert steps_in(lines(path)) == []  # neither exported nor released with the job's


def test_before_configuration_a_block_and_set_level_configure_first(
    subprocess_env: dict[str, str],
) -> None:
    code = (
        "import fapilog\n"
        "log = fapilog.get_logger('job')\n"
        "try:\n"
        "    with fapilog.flight_recorder():\n"
        "        log.debug('held')\n"
        "        raise KeyError('x')\n"
        "except KeyError:\n"
        "    pass\n"
        "fapilog.set_level('warning')\n"
        "log.info('hidden')\n"
        "log.warning('shown')\n"
        "fapilog.shutdown()\n"
    )
    rc, out, err = run_python(code, subprocess_env)
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in records] == ["held", "fapilog.level.changed", "shown"]
    assert records[1]["level.from"] == "INFO" and records[1]["level.to"] == "WARNING"


def test_the_synchronous_console_shows_released_lines_before_the_request_event(
    subprocess_env: dict[str, str],
) -> None:
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from sampling_support import make_app, serve\n"
        "import fapilog\n"
        "app = make_app(steps=2)\n"
        "fapilog.configure_logging(app=app, json_console=False, "
        "request={'buffer': {'enabled': True}})\n"
        "serve(app, ['/fail?tag=x'])\n"
        "fapilog.shutdown()\n"
    )
    rc, out, err = run_python(code, {**subprocess_env, "NO_COLOR": "1"})
    assert rc == 0, err
    shown = [line for line in out.splitlines() if " step " in line or "fapilog.request" in line]
    assert len(shown) == 3 and "fapilog.request" in shown[-1], out


def test_a_change_in_a_row_expires_back_to_the_level_before_the_first(tmp_path: Path) -> None:
    path = file_config(tmp_path)
    fapilog.set_level("debug", logger="app", ttl=30)
    fapilog.set_level("warning", logger="app", ttl=0.2)
    deadline = time.monotonic() + 10
    waiting = threading.Event()
    while fapilog.lifecycle.levels.current_levels()["changes"] and time.monotonic() < deadline:
        waiting.wait(0.05)
    assert fapilog.lifecycle.levels.current_levels()["loggers"] == {}
    reasons = [line["level.reason"] for line in lines(path)]
    assert reasons == ["set", "set", "expired"]
    assert sink_for("app").min_level == 20


def test_a_fold_window_over_an_hour_is_refused() -> None:
    with pytest.raises(fapilog.ConfigurationError, match="FAPILOG_FOLD_REPEATS"):
        configure_logging(fold_repeats=1e12)


def test_the_debug_header_is_never_logged_in_clear(tmp_path: Path) -> None:
    token = "a-debug-token-of-some-length"
    path = tmp_path / "app.log"
    app = make_app(steps=1)
    configure_logging(
        app=app,
        exporters=["file"],
        file={"path": str(path)},
        admin={"token": token},
        request={"headers": ["x-fapilog-debug"]},
    )
    serve(app, ["/ok?tag=a"], headers={"X-Fapilog-Debug": token})
    text = path.read_text() if path.exists() else ""
    fapilog.force_flush()
    text = path.read_text()
    assert token not in text and "http.request.header.x-fapilog-debug" in text


def test_a_released_record_is_redacted_as_a_directly_exported_one(tmp_path: Path) -> None:
    """The same values, held then released, and exported as logged: the same line."""
    from structlog.contextvars import bind_contextvars, clear_contextvars

    path = file_config(tmp_path)
    log = get_logger("svc")
    values: dict[str, Any] = {
        "password": "hunter2",
        "headers": {"authorization": "Bearer abc.def", "accept": "x"},
        "pairs": {"password": "hunter2"}.items(),
        "url": "https://user:pw@example.com/x",
        "n": 7,
        "items": [1, "token=abc123"],
    }
    bind_contextvars(session_secret="s3cr3t-value", tenant="acme")
    try:
        log.warning("direct", **values)

        def job() -> None:
            with fapilog.flight_recorder():
                log.debug("held", **values)
                raise KeyError("x")

        with pytest.raises(KeyError):
            job()
    finally:
        clear_contextvars()
    direct, released = lines(path)
    for line in (direct, released):
        line.pop("timestamp"), line.pop("level"), line.pop("message")
    assert released == direct
    assert "hunter2" not in path.read_text() and "abc.def" not in path.read_text()


def test_contextvar_values_count_against_the_byte_bound(tmp_path: Path) -> None:
    from structlog.contextvars import bind_contextvars, clear_contextvars

    file_config(tmp_path, request={"buffer": {"max_bytes": 262_144}})
    log = get_logger("job")
    try:
        with fapilog.flight_recorder() as recorder:
            for n in range(50):
                bind_contextvars(payload="x" * 100_000 + str(n))
                log.debug("step", n=n)
            assert recorder.size <= 262_144
            assert len(recorder.records) == 2  # two of about 100 kB fit
    finally:
        clear_contextvars()


def test_a_warning_below_its_loggers_level_is_held_not_exported(tmp_path: Path) -> None:
    path = file_config(tmp_path, logger_levels={"noisy": "ERROR"})
    log = get_logger("noisy")
    with fapilog.flight_recorder() as recorder:
        log.warning("w", exc_info=True)
        log.warning("w2")
        assert not recorder.alarm
    assert lines(path) == []


def test_a_ttl_expiry_gives_a_stdlib_logger_its_own_level_back(tmp_path: Path) -> None:
    file_config(tmp_path)
    stdlib = logging.getLogger("noisy.lib")
    stdlib.setLevel(logging.ERROR)
    try:
        fapilog.set_level("debug", "noisy.lib", ttl=0.2)
        assert stdlib.level == logging.DEBUG
        deadline = time.monotonic() + 10
        waiting = threading.Event()
        while stdlib.level == logging.DEBUG and time.monotonic() < deadline:
            waiting.wait(0.05)
        assert stdlib.level == logging.ERROR
    finally:
        stdlib.setLevel(logging.NOTSET)


def test_capture_logs_sees_what_a_recorder_would_hold() -> None:
    from fapilog.testing import capture_logs

    configure_logging()
    with capture_logs() as captured, fapilog.flight_recorder():
        get_logger("svc").debug("seen by the test")
    assert [entry["message"] for entry in captured] == ["seen by the test"]

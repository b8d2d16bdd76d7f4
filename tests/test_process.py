"""Real interpreters: what users see on stdout, delivery at exit, env-driven behaviour."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, run_python

pytestmark = pytest.mark.slow


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_one_liner_prints_exactly_one_json_line(subprocess_env: dict[str, str]) -> None:
    # `python -c "..." | cat`: stdout is a pipe, not a terminal -> JSON
    code = (
        "from fapilog import configure_logging, log; configure_logging(); "
        "log.info('hello', user_id=42)"
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["message"] == "hello"
    assert line["user_id"] == 42
    assert line["level"] == "info"
    assert line["logger"] == "app"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]
    assert "service.name" in line
    assert err == ""


def test_ten_thousand_events_then_immediate_exit(subprocess_env: dict[str, str]) -> None:
    # the script calls nothing after logging; atexit drains the pipeline
    code = textwrap.dedent(
        """
        from fapilog import configure_logging, log
        configure_logging(queue={"max_size": 20000})
        for i in range(10_000):
            log.info("event", i=i)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    seen = [line["i"] for line in _json_lines(out)]
    assert sorted(seen) == list(range(10_000))


def test_exit_with_default_queue_loses_nothing_when_blocking(
    subprocess_env: dict[str, str],
) -> None:
    # with the default queue size the `block` policy makes the burst wait instead of dropping
    code = textwrap.dedent(
        """
        import fapilog
        from fapilog import configure_logging, log
        configure_logging(queue={"overflow": "block", "block_timeout": 5})
        for i in range(10_000):
            log.info("event", i=i)
        """
    )
    status, out, err = run_python(code, subprocess_env)
    assert status == 0, err
    assert len(_json_lines(out)) == 10_000


def test_level_from_env(subprocess_env: dict[str, str]) -> None:
    # FAPILOG_LEVEL alone sets the level, for fapilog's loggers and stdlib ones
    env = {**subprocess_env, "FAPILOG_LEVEL": "WARNING"}
    code = (
        "import logging; from fapilog import configure_logging, log; configure_logging(); "
        "log.info('quiet'); log.warning('loud'); logging.getLogger('lib').info('quiet too')"
    )
    status, out, err = run_python(code, env)
    assert status == 0, err
    assert [line["message"] for line in _json_lines(out)] == ["loud"]


def test_invalid_level_fails_naming_variable(subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "FAPILOG_LEVEL": "LOUD"}
    status, out, err = run_python("from fapilog import configure_logging; configure_logging()", env)
    assert status != 0
    assert "ConfigurationError" in err
    assert "FAPILOG_LEVEL" in err and "'LOUD'" in err
    for allowed in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        assert allowed in err
    assert out == ""


def test_logging_without_configure_autoconfigures(subprocess_env: dict[str, str]) -> None:
    status, out, err = run_python(
        "from fapilog import log; log.info('zero config', n=1)", subprocess_env
    )
    assert status == 0, err
    [line] = _json_lines(out)
    assert (line["message"], line["n"]) == ("zero config", 1)


def test_autoconfigure_with_bad_env_reports_and_uses_defaults(
    subprocess_env: dict[str, str],
) -> None:
    env = {**subprocess_env, "FAPILOG_LEVEL": "LOUD"}
    status, out, err = run_python("from fapilog import log; log.info('still works')", env)
    assert status == 0, err
    assert [line["message"] for line in _json_lines(out)] == ["still works"]
    assert "FAPILOG_LEVEL" in err


def test_otel_sdk_disabled_keeps_the_app_working(subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "OTEL_SDK_DISABLED": "true"}
    code = (
        "from fapilog import configure_logging, log; configure_logging(); "
        "log.info('still here'); print('app ok', flush=True)"
    )
    status, out, err = run_python(code, env)
    assert status == 0, err
    assert "app ok" in out
    assert any(line.startswith("{") and "still here" in line for line in out.splitlines())


def test_broken_pipe_never_raises(subprocess_env: dict[str, str]) -> None:
    # `app | head -1`: the reader goes away; the app must finish normally and quietly
    code = textwrap.dedent(
        """
        import sys
        from fapilog import configure_logging, log, force_flush
        configure_logging()
        import json
        from fapilog import stats
        for i in range(2000):
            log.info("line", i=i)
            if i % 100 == 0:
                force_flush(5)
        force_flush(5)
        sys.stderr.write("figures " + json.dumps(stats()["exporters"]["stdout"]) + "\\n")
        sys.stderr.write("finished\\n")
        """
    )
    producer = subprocess.Popen(
        [sys.executable, "-c", code],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert producer.stdout is not None and producer.stderr is not None
        first = producer.stdout.readline()
        assert json.loads(first)["message"] == "line"
        producer.stdout.close()  # the reader is gone
        err = producer.stderr.read().decode()
        status = producer.wait(timeout=60)
    finally:
        producer.kill()
        producer.wait()
    assert status == 0, err
    assert "finished" in err
    assert "Traceback" not in err
    assert "broken pipe" in err.lower()  # reported once by fapilog's diagnostics
    assert err.lower().count("broken pipe") == 1
    # records after the reader left are lost, and counted as such, not as exported
    figures = json.loads(err.split("figures ", 1)[1].splitlines()[0])
    assert figures["dropped_by_reason"].get("broken_pipe", 0) > 1000, figures
    assert figures["exported"] < 1000, figures
    assert figures["exported"] + figures["dropped"] == 2000, figures


def test_stalled_reader_counts_written_chunks_as_exported(
    subprocess_env: dict[str, str],
) -> None:
    # the reader of stdout stops reading (but keeps the pipe open): at the shutdown deadline
    # the chunks written before the stall count as exported, only the rest as dropped
    code = textwrap.dedent(
        """
        import json, os, sys
        import fapilog
        from fapilog import configure_logging, log
        configure_logging()
        for i in range(2000):
            log.info("line", i=i, pad="x" * 1000)
        fapilog.shutdown(1.0)
        sys.stderr.write("figures " + json.dumps(fapilog.stats()["exporters"]["stdout"]) + "\\n")
        sys.stderr.flush()
        os._exit(0)  # the interpreter's own exit would flush the stuck stdout
        """
    )
    producer = subprocess.Popen(
        [sys.executable, "-c", code],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert producer.stdout is not None and producer.stderr is not None
        assert json.loads(producer.stdout.readline())["message"] == "line"  # then stall
        err = producer.stderr.read().decode()
        status = producer.wait(timeout=60)
    finally:
        producer.kill()
        producer.wait()
    assert status == 0, err
    figures = json.loads(err.split("figures ", 1)[1].splitlines()[0])
    assert figures["exported"] > 0, figures  # the chunks the pipe took before it filled
    assert figures["dropped_by_reason"].get("shutdown_timeout", 0) > 0, figures
    assert figures["exported"] + figures["dropped"] == 2000, figures
    assert figures["in_flight"] == 0 and figures["queued"] == 0, figures


def test_closed_stdout_never_raises(subprocess_env: dict[str, str]) -> None:
    code = textwrap.dedent(
        """
        import sys
        from fapilog import configure_logging, log, force_flush
        configure_logging()
        sys.stdout.close()
        log.info("into the void")
        force_flush(5)
        sys.stderr.write("survived\\n")
        """
    )
    status, _out, err = run_python(code, subprocess_env)
    assert status == 0, err
    assert "survived" in err and "Traceback" not in err


def test_demo_prints_json_when_piped(subprocess_env: dict[str, str]) -> None:
    # the demo script's output when piped
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = _json_lines(proc.stdout)
    assert len(lines) >= 5
    for line in lines:
        assert {"timestamp", "level", "message", "logger", "service.name"} <= set(line)
    by_message = {line["message"]: line for line in lines}
    assert by_message["demo started"]["user_id"] == 42
    assert by_message["invoice created"]["tenant"] == "acme"
    assert by_message["lookup failed"]["exception.type"] == "KeyError"
    assert by_message["stdlib logger from a library"]["retries"] == 3


def test_sigterm_drains_before_dying(subprocess_env: dict[str, str]) -> None:
    code = textwrap.dedent(
        """
        import sys, time
        from fapilog import configure_logging, log
        configure_logging(queue={"max_size": 10000})
        for i in range(5000):
            log.info("before term", i=i)
        sys.stderr.write("ready\\n"); sys.stderr.flush()
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "ready"
        proc.terminate()
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -15  # still dies by the signal, as process managers expect
    assert sorted(line["i"] for line in _json_lines(out)) == list(range(5000))

"""multiprocessing under every start method: whatever a child logged is delivered before
it ends, or counted as dropped; the file gets every line.

Children end with `os._exit()` (fork, forkserver) or after multiprocessing's exit
finalizers (spawn), skipping or preceding `atexit`; fapilog's drain is one of those
finalizers in every child that logs. Real processes; repeated (`runs()`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import runs, untraced

POOL = textwrap.dedent(
    """
    import multiprocessing, os, sys
    import fapilog

    # read again by spawn and forkserver children, which import this module afresh
    os.environ["FAPILOG_EXPORTERS"] = "file"
    os.environ["FAPILOG_FILE__PATH"] = sys.argv[3]
    fapilog.configure_logging()


    def task(number):
        log = fapilog.get_logger("task")
        for i in range(RECORDS):
            log.info("record", task=number, i=i)
        return number


    RECORDS = int(sys.argv[4])

    if __name__ == "__main__":
        method, ending, tasks = sys.argv[1], sys.argv[2], int(sys.argv[5])
        context = multiprocessing.get_context(method)
        if ending == "close":
            pool = context.Pool(2)
            assert pool.map(task, range(tasks)) == list(range(tasks))
            pool.close()
            pool.join()
        elif ending == "with":  # the with statement ends the pool with terminate()
            with context.Pool(2) as pool:
                assert pool.map(task, range(tasks)) == list(range(tasks))
        else:  # a ProcessPoolExecutor
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(2, mp_context=context) as executor:
                assert list(executor.map(task, range(tasks))) == list(range(tasks))
        fapilog.force_flush(10)
    """
)

METHODS = ["fork", "spawn", "forkserver"]


def _pool_run(
    tmp_path: Path, env: dict[str, str], method: str, ending: str, *, tasks: int, records: int
) -> None:
    script = tmp_path / "pool_app.py"
    script.write_text(POOL)
    path = tmp_path / f"{method}-{ending}.log"
    path.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, str(script), method, ending, str(path), str(records), str(tasks)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    seen = {(line["task"], line["i"]) for line in lines if line.get("message") == "record"}
    assert len(seen) == tasks * records, (method, ending, len(seen), proc.stderr[-2000:])


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("ending", ["close", "with"])
@pytest.mark.parametrize("method", METHODS)
def test_a_pool_delivers_every_record_of_every_task(
    tmp_path: Path, subprocess_env: dict[str, str], method: str, ending: str
) -> None:
    """Pool(2), 4 tasks of 200 records, ended by close()/join() or by the with statement
    (terminate()): 800 of 800, every time.

    Ended by terminate(), the children run without coverage. Coverage's tracer holds a
    lock of its own while it records lines run for the first time, as most lines at exit
    are; a SIGTERM handler that interrupts the main thread there drains while every other
    thread that runs a new line waits for that lock, fapilog's workers included. The drain
    then meets its deadline and says so (the records are lost): the measurement's doing,
    not the pool's."""
    env = untraced(subprocess_env) if ending == "with" else subprocess_env
    for _ in range(runs(quick=1, soak=20)):
        _pool_run(tmp_path, env, method, ending, tasks=4, records=200)


@pytest.mark.slow
@pytest.mark.soak
def test_a_process_pool_executor_on_forkserver_delivers_everything(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    for _ in range(runs(quick=1, soak=3)):
        _pool_run(tmp_path, subprocess_env, "forkserver", "executor", tasks=100, records=50)


UNIMPORTED_PARENT = textwrap.dedent(
    """
    import multiprocessing, sys

    def child(path):
        import fapilog  # the parent never imported fapilog

        fapilog.configure_logging(exporters=["file"], file={"path": path})
        log = fapilog.get_logger("child")
        for i in range(3000):
            log.info("record", i=i)

    if __name__ == "__main__":
        process = multiprocessing.get_context("fork").Process(target=child, args=(sys.argv[1],))
        process.start()
        process.join()
        assert process.exitcode == 0, process.exitcode
        assert "fapilog" not in sys.modules
    """
)


@pytest.mark.slow
def test_a_fork_child_that_configures_fapilog_itself_delivers_everything(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    script = tmp_path / "unimported.py"
    script.write_text(UNIMPORTED_PARENT)
    path = tmp_path / "child.log"
    proc = subprocess.run(
        [sys.executable, str(script), str(path)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    numbers = [json.loads(line)["i"] for line in path.read_text().splitlines()]
    assert numbers == list(range(3000))


LAST_WORDS = textwrap.dedent(
    """
    import multiprocessing, sys
    from multiprocessing import util

    import fapilog

    def child(path):
        fapilog.configure_logging(exporters=["file"], file={"path": path})
        log = fapilog.get_logger("child")
        # the application's own exit finalizer (priority >= 0) logs as the child ends
        util.Finalize(None, log.info, args=("last words",), exitpriority=0)
        log.info("working")

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[2])
        process = context.Process(target=child, args=(sys.argv[1],))
        process.start()
        process.join()
        assert process.exitcode == 0, process.exitcode
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_the_drain_runs_after_the_applications_own_exit_finalizers(
    tmp_path: Path, subprocess_env: dict[str, str], method: str
) -> None:
    """A child ends after multiprocessing's exit finalizers: fapilog's drain comes after the
    application's (priority >= 0), so what they log is delivered. From Python 3.13 those
    finalizers run as an atexit handler of the child, and fapilog's own atexit drain (the
    child configured fapilog, so registered it later: it would run first) leaves them the
    exit; it used to drain first, and lose the last words."""
    script = tmp_path / "last_words.py"
    script.write_text(LAST_WORDS)
    path = tmp_path / "child.log"
    proc = subprocess.run(
        [sys.executable, str(script), str(path), method],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # (the child's own logger only: under coverage, Python 3.13 may add a captured warning)
    messages = [record["message"] for record in records if record["logger"] == "child"]
    assert messages == ["working", "last words"]

"""Fork safety: after os.fork() the child's pipeline works, and the records the parent had
queued at fork time are delivered once (by the parent), never duplicated by the child."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_python

pytestmark = pytest.mark.slow

FORKING = """
import os, sys, json, fapilog
path = sys.argv[1] if len(sys.argv) > 1 else os.environ["LOG_PATH"]
# a long max_delay keeps the parent's records queued at the moment of the fork
fapilog.configure_logging(exporters=["file"], file={"path": path}, capture_stdlib=False,
                          queue={"max_delay": 30})
log = fapilog.get_logger("forked")
for i in range(300):
    log.info("before fork", i=i)
from fapilog._state import STATE
STATE.bridge.flush(10)  # handed over to the exporter queue, not written
queued = fapilog.stats()["queued"]
pid = os.fork()
if pid == 0:
    for i in range(200):
        log.info("child", i=i)
    log.warning("child done", stats=json.dumps(fapilog.stats()))
    sys.exit(0)  # a normal exit: atexit drains the child's own records
for i in range(100):
    log.info("parent after fork", i=i)
_, status = os.waitpid(pid, 0)
print(json.dumps({"queued_at_fork": queued, "child_status": status, "parent_pid": os.getpid(),
                  "child_pid": pid}))
"""


def test_forked_child_logs_and_nothing_is_lost_or_duplicated(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """A child forked while the parent's records were still queued logs through its own
    pipeline; the records queued at fork time are written once (by the parent), never twice."""
    log_path = tmp_path / "app.log"
    env = dict(subprocess_env, LOG_PATH=str(log_path))
    code, out, err = run_python(textwrap.dedent(FORKING), env, timeout=120)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["child_status"] == 0
    assert report["queued_at_fork"] >= 300  # the parent's records were still queued
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    by_message = Counter(line["message"] for line in lines)
    assert by_message["before fork"] == 300  # once, not twice
    assert by_message["child"] == 200
    assert by_message["parent after fork"] == 100
    assert by_message["child done"] == 1
    child_stats = json.loads(
        next(line for line in lines if line["message"] == "child done")["stats"]
    )
    assert child_stats["emitted"] == 200  # the child counts only its own records so far
    for message in ("before fork", "child", "parent after fork"):
        assert sorted(line["i"] for line in lines if line["message"] == message) == list(
            range(by_message[message])
        )
    # every record carries the pid of the process that logged it: the child's own (its
    # Resource is refreshed at the fork), the parent's for what it queued before the fork
    logged_by = {
        "before fork": report["parent_pid"],
        "parent after fork": report["parent_pid"],
        "child": report["child_pid"],
        "child done": report["child_pid"],
    }
    for line in lines:
        assert line["process.pid"] == logged_by[line["message"]], line["message"]


MULTIPROCESSING = """
import json, multiprocessing, os, sys, fapilog
fapilog.configure_logging(exporters=["file"], file={"path": os.environ["LOG_PATH"]},
                          capture_stdlib=False, queue={"max_size": 100_000, "max_delay": 30})
log = fapilog.get_logger("mp")


def target(n):
    # no force_flush: the child ends with os._exit() right after returning
    for i in range(n):
        log.info("child", i=i, pid=os.getpid())


def square(x):
    log.info("pool task", x=x, pid=os.getpid())
    return x * x


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=target, args=(3000,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    with ctx.Pool(2) as pool:
        squares = pool.map(square, range(200))
        pool.close()
        pool.join()
    print(json.dumps({"exitcodes": [c.exitcode for c in children], "squares": sum(squares)}))
"""


def test_multiprocessing_children_drain_at_exit_without_force_flush(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """multiprocessing's fork children end with os._exit(): fapilog's drain runs as one of
    multiprocessing's exit finalizers. Process children and Pool workers (closed and
    joined) deliver every record, although the queues hold them for up to 30 s."""
    log_path = tmp_path / "app.log"
    env = dict(subprocess_env, LOG_PATH=str(log_path))
    code, out, err = run_python(textwrap.dedent(MULTIPROCESSING), env, timeout=120)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["exitcodes"] == [0, 0]
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    per_child = Counter(line["pid"] for line in lines if line["message"] == "child")
    assert sorted(per_child.values()) == [3000, 3000]
    tasks = sorted(line["x"] for line in lines if line["message"] == "pool task")
    assert tasks == list(range(200))
    # the Resource's process.pid is the child's own, in Process children and Pool workers
    wrong = [
        (line["pid"], line["process.pid"]) for line in lines if line["process.pid"] != line["pid"]
    ]
    assert not wrong, f"{len(wrong)} records with another process's pid, e.g. {wrong[0]}"

"""The file exporter across processes and under failures, end to end in subprocesses:
several processes on one path (plain interpreters and `uvicorn --workers 4`), a read-only
log directory while a real server keeps serving, rotation blocked by permissions."""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_python
from fapilog.exporters.file import backups

pytestmark = pytest.mark.slow

PYTHON = sys.executable


def unprivileged() -> list[str]:
    """A command prefix that makes file permissions apply to this test's children: as root,
    drop the capabilities that bypass them (root would write into a read-only directory)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def read_all(path: Path, max_bytes: int | None = None) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    files = [*backups(path), path] if path.exists() else backups(path)
    for file in files:
        data = file.read_bytes()
        if file.suffix == ".gz":
            data = gzip.decompress(data)
        if max_bytes:
            assert len(data) <= max_bytes, f"{file} is larger than max_bytes"
        assert not data or data.endswith(b"\n"), f"{file} ends in a partial line"
        for raw in data.splitlines():
            lines.append(json.loads(raw))  # a corrupted/interleaved line fails here
    return lines


def stop(process: subprocess.Popen[Any], timeout: float = 30) -> tuple[str, str]:
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out, err


def wait_until_serving(url: str, process: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.communicate()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling a server coming up, bounded by the deadline
    raise AssertionError("server did not come up")


def wait_for_lines(path: Path, message: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = read_all(path)
        except (FileNotFoundError, AssertionError, ValueError):
            # the writers rotate and append while this reads: a file renamed between the
            # listing and the read, a line half-written. Read again; the test's final
            # read_all, after the writers stopped, is the strict check.
            lines = []
        if sum(line["message"] == message for line in lines) >= count:
            return
        time.sleep(0.1)  # bounded poll of files written by other processes
    raise AssertionError(f"{count} x {message!r} did not show up in {path}")


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


WRITER = textwrap.dedent(
    """
    import os, sys
    import fapilog
    fapilog.configure_logging()
    log = fapilog.get_logger("writer")
    sys.stdin.readline()  # start together
    for seq in range(int(os.environ["COUNT"])):
        log.info("line", seq=seq, pid=os.getpid(), pad="x" * (seq % 50))
    """
)


def run_writers(env: dict[str, str], processes: int) -> None:
    """Start `processes` WRITER interpreters, let them go at once, wait for all of them."""
    started = [
        subprocess.Popen(
            [PYTHON, "-c", WRITER], env=env, stdin=subprocess.PIPE, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]  # fmt: skip
    try:
        for process in started:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in started:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()


def seqs_by_pid(lines: list[dict[str, Any]]) -> dict[int, list[int]]:
    by_pid: dict[int, list[int]] = {}
    for line in lines:
        by_pid.setdefault(line["pid"], []).append(line["seq"])
    return by_pid


def test_four_processes_share_one_path_without_corruption_or_loss(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """Four interpreters write and rotate one path at once (small max_bytes: constant
    contention on rotation): every line intact, every event exactly once."""
    path = tmp_path / "shared" / "app.log"
    env = {
        **subprocess_env,
        "COUNT": "4000",
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_FILE__MAX_BYTES": "60000",
        "FAPILOG_FILE__BACKUP_COUNT": "100000",
        "FAPILOG_QUEUE__MAX_SIZE": "10000",
        "FAPILOG_QUEUE__BATCH_SIZE": "64",
    }
    run_writers(env, 4)
    by_pid = seqs_by_pid(read_all(path, max_bytes=60000))
    assert len(by_pid) == 4
    for seqs in by_pid.values():
        assert sorted(seqs) == list(range(4000))
        assert seqs == sorted(seqs)  # each process's lines stay in order across files
    assert len(backups(path)) > 10


def test_processes_notice_each_others_rotation_with_gzip_on(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """Four interpreters rotate one path with gzip on: the process that rotated compresses
    the old file and removes it, so a process still appending to the old file (not noticing
    that another one rotated) would lose those lines. Retention is set so high that nothing
    is deleted (lines in a deleted file could not be counted): every line of every process
    is found exactly once, whole, across the live file and the .gz backups."""
    path = tmp_path / "shared" / "app.log"
    count = 2000
    env = {
        **subprocess_env,
        "COUNT": str(count),
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_FILE__MAX_BYTES": "20000",
        "FAPILOG_FILE__GZIP": "true",
        "FAPILOG_FILE__BACKUP_COUNT": "100000",
        "FAPILOG_QUEUE__MAX_SIZE": "10000",
        "FAPILOG_QUEUE__BATCH_SIZE": "64",
    }
    run_writers(env, 4)
    rotated = backups(path)
    assert len(rotated) > 20  # rotated many times, under contention
    assert all(file.suffix == ".gz" for file in rotated)  # every rotated file compressed
    assert not list(path.parent.glob("*.tmp"))  # no half-written archive left
    by_pid = seqs_by_pid(read_all(path, max_bytes=20000))  # parses: nothing torn
    assert len(by_pid) == 4
    for pid, seqs in by_pid.items():
        assert len(seqs) == count, f"process {pid}: {len(seqs)} lines for {count} records"
        assert sorted(seqs) == list(range(count)), pid  # none lost, none twice
        assert seqs == sorted(seqs), pid  # in order across files


def test_per_process_mode_gives_each_process_its_own_file(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    path = tmp_path / "app.log"
    env = {
        **subprocess_env,
        "COUNT": "500",
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_FILE__MULTIPROCESS": "per_process",
    }
    pids = []
    for _ in range(2):
        done = subprocess.run(
            [PYTHON, "-c", WRITER], env=env, input="go\n", text=True,
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    files = sorted(tmp_path.glob("app.*.log"))
    assert len(files) == 2
    for file in files:
        lines = read_all(file)
        pids.append(lines[0]["pid"])
        assert file.name == f"app.{lines[0]['pid']}.log"
        assert [line["seq"] for line in lines] == list(range(500))
    assert len(set(pids)) == 2


APP = textwrap.dedent(
    """
    import os, threading
    from contextlib import asynccontextmanager
    from fastapi import FastAPI
    import fapilog

    fapilog.configure_logging()
    log = fapilog.get_logger("app")

    def burst():
        for seq in range(int(os.environ.get("BURST", "0"))):
            log.info("burst", seq=seq, pid=os.getpid())
        log.info("burst-done", pid=os.getpid())

    @asynccontextmanager
    async def lifespan(app):
        if os.environ.get("BURST"):
            log.info("worker-up", pid=os.getpid())
            threading.Thread(target=burst).start()
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.get("/work/{req}/{count}")
    def work(req: int, count: int):
        for seq in range(count):
            log.info("work", req=req, seq=seq, pid=os.getpid())
        return {"pid": os.getpid()}

    @app.get("/flush")
    def flush():
        fapilog.force_flush(10)
        return fapilog.stats()["exporters"]["file"]
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "logapp.py").write_text(APP)
    return directory


def test_four_uvicorn_workers_on_one_path_lose_and_corrupt_nothing(
    tmp_path: Path, app_dir: Path, subprocess_env: dict[str, str]
) -> None:
    """`uvicorn --workers 4`, all configured with the same path, under load
    (a startup burst in every worker plus concurrent requests), with rotation."""
    path = tmp_path / "logs" / "app.log"
    burst = 3000
    env = {
        **subprocess_env,
        "PYTHONPATH": os.pathsep.join([str(app_dir), subprocess_env["PYTHONPATH"]]),
        "BURST": str(burst),
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_FILE__MAX_BYTES": "100000",
        "FAPILOG_FILE__BACKUP_COUNT": "100000",
        "FAPILOG_QUEUE__MAX_SIZE": "50000",
    }
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", "logapp:app", "--fd", str(sock.fileno()), "--workers", "4"],
        env=env, cwd=app_dir, pass_fds=(sock.fileno(),), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    sock.close()
    url = f"http://127.0.0.1:{port}"
    requests, per_request = 240, 20
    try:
        wait_until_serving(url, server)
        wait_for_lines(path, "worker-up", 4)  # all four accept connections now
        close = {"Connection": "close"}  # a new connection per request: spread over workers
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(12) as pool:
            responses = list(
                pool.map(lambda req: client.get(f"{url}/work/{req}/{per_request}",
                                                headers=close),
                         range(requests))
            )  # fmt: skip
        assert all(response.status_code == 200 for response in responses)
        serving_pids = {response.json()["pid"] for response in responses}
        wait_for_lines(path, "burst-done", 4)  # before stopping the server
    finally:
        _, err = stop(server)
    assert server.returncode == 0, err
    lines = read_all(path, max_bytes=100000)  # every line parses, no file over the limit
    bursts: dict[int, list[int]] = {}
    work = Counter()
    for line in lines:
        if line["message"] == "burst":
            bursts.setdefault(line["pid"], []).append(line["seq"])
        elif line["message"] == "work":
            work[(line["req"], line["seq"])] += 1
    assert len(bursts) == 4, "four workers wrote"
    for seqs in bursts.values():
        assert sorted(seqs) == list(range(burst))
    assert len(work) == requests * per_request
    assert set(work.values()) == {1}
    assert len(serving_pids) >= 2
    assert len(backups(path)) > 20


def test_read_only_log_directory_drops_counts_reports_once_and_recovers(
    tmp_path: Path, app_dir: Path, subprocess_env: dict[str, str]
) -> None:
    """logrotate moved the file away and the directory became read-only:
    the server keeps answering, the gap's records are counted as dropped, the failure is
    reported once on stderr, and logging resumes once the directory is writable again."""
    prefix = unprivileged()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    path = log_dir / "app.log"
    env = {
        **subprocess_env,
        "PYTHONPATH": os.pathsep.join([str(app_dir), subprocess_env["PYTHONPATH"]]),
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_LOGGER_LEVELS": "uvicorn.access=WARNING",  # only our records: exact counts
    }
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = subprocess.Popen(
        [*prefix, PYTHON, "-m", "uvicorn", "logapp:app", "--fd", str(sock.fileno()),
         "--log-level", "warning"],
        env=env, cwd=app_dir, pass_fds=(sock.fileno(),), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    sock.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, server)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/work/1/5").status_code == 200
            assert client.get("/flush").json()["exported"] >= 5
            path.rename(log_dir / "app.log.1")  # logrotate moved it ...
            log_dir.chmod(0o555)  # ... and the directory is read-only
            try:
                for req in range(2, 5):  # the gap: 3 x 7 records
                    assert client.get(f"/work/{req}/7").status_code == 200
                gap = client.get("/flush").json()
            finally:
                log_dir.chmod(0o755)
            assert client.get("/work/9/4").status_code == 200
            after = client.get("/flush").json()
    finally:
        log_dir.chmod(0o755)
        _, err = stop(server)
    assert gap["dropped"] == 21
    assert after["dropped"] == 21  # nothing more lost after recovery
    assert not path.with_name("app.log.1").read_text().count('"req":2')
    resumed = [line for line in read_all(path) if line["message"] == "work"]
    assert [(line["req"], line["seq"]) for line in resumed] == [(9, s) for s in range(4)]
    diagnostics = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    keys = Counter(d.get("fapilog.diagnostic") for d in diagnostics)
    assert keys[f"file:{path}"] == 1, err
    (failure,) = [d for d in diagnostics if d.get("fapilog.diagnostic") == f"file:{path}"]
    assert "Permission denied" in failure["message"]
    (resumed_note,) = [
        d for d in diagnostics if d.get("fapilog.diagnostic") == f"file-resumed:{path}"
    ]
    assert "21 records were dropped" in resumed_note["message"]


ROTATOR = textwrap.dedent(
    """
    import json, sys
    import fapilog
    fapilog.configure_logging()
    log = fapilog.get_logger("rot")
    seq = 0
    for phase in range(3):
        for _ in range(60):
            log.info("line", seq=seq)
            seq += 1
        fapilog.force_flush(10)
        print(json.dumps(fapilog.stats()["exporters"]["file"]), flush=True)
        sys.stdin.readline()
    """
)


def test_rotation_blocked_by_a_read_only_directory_loses_nothing(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """When rotation cannot rename (read-only directory) the exporter reports it once and
    keeps appending to the open file; rotation resumes when the directory is writable."""
    prefix = unprivileged()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    path = log_dir / "app.log"
    env = {
        **subprocess_env,
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_FILE__MAX_BYTES": "4000",
        "FAPILOG_FILE__BACKUP_COUNT": "1000",
        "FAPILOG_QUEUE__BATCH_SIZE": "20",
    }
    process = subprocess.Popen(
        [*prefix, PYTHON, "-c", ROTATOR], env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        json.loads(process.stdout.readline())
        rotated_before = len(backups(path))
        log_dir.chmod(0o555)
        try:
            process.stdin.write("next\n")
            process.stdin.flush()
            blocked = json.loads(process.stdout.readline())
            assert len(backups(path)) == rotated_before  # could not rotate
        finally:
            log_dir.chmod(0o755)
        process.stdin.write("next\n")
        process.stdin.flush()
        final = json.loads(process.stdout.readline())
        process.stdin.write("end\n")
        process.stdin.flush()
        _, err = process.communicate(timeout=30)
    finally:
        log_dir.chmod(0o755)
        if process.poll() is None:
            process.kill()
    assert blocked["dropped"] == 0
    assert final["dropped"] == 0
    assert len(backups(path)) > rotated_before  # rotation resumed
    assert sorted(line["seq"] for line in read_all(path)) == list(range(180))
    keys = Counter(
        json.loads(line).get("fapilog.diagnostic")
        for line in err.splitlines()
        if line.startswith("{")
    )
    assert keys[f"file-rotate:{path}"] == 1, err


FILLING = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    import fapilog
    # past RLIMIT_FSIZE a write() stores what fits and returns the short count; the next one
    # fails with EFBIG instead of killing the process with SIGXFSZ (CPython ignores it too)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    path = os.environ["LOG_PATH"]
    fapilog.configure_logging(exporters=["file"], file={"path": path}, capture_stdlib=False)
    log = fapilog.get_logger("fill")
    log.info("fits", seq=0)
    assert fapilog.force_flush(10)
    before = os.path.getsize(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    room = int(os.environ["ROOM"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (before + room, hard))  # the disk fills up
    for seq in range(1, 6):  # one batch each: five partial writes
        log.info("does not fit", seq=seq, pad="x" * room)
        assert fapilog.force_flush(10)
    full = {"size": os.path.getsize(path), "stats": fapilog.stats()["exporters"]["file"]}
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    log.info("fits again", seq=6)
    assert fapilog.force_flush(10)
    after = fapilog.stats()["exporters"]["file"]
    print(json.dumps({"before": before, "full": full, "after": after}))
    """
)


def test_a_partial_write_on_a_full_file_system_is_cut_back_to_the_last_whole_line(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """The file system fills up in the middle of a line (a real short write: RLIMIT_FSIZE,
    then EFBIG, as a disk filling up gives a short write, then ENOSPC): the bytes of the
    line that did get written are cut off again, so the file ends with the last whole line
    and the next line written starts on a line of its own. The records that did not fit are
    counted as dropped (export_failed), reported once, and the process goes on logging."""
    path = tmp_path / "app.log"
    room = 100  # bytes left: less than one line, so each line is written in part
    env = {**subprocess_env, "LOG_PATH": str(path), "ROOM": str(room)}
    code, out, err = run_python(FILLING, env, timeout=60)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["full"]["size"] == report["before"]  # the partial line was cut back
    assert report["full"]["stats"]["dropped_by_reason"] == {"export_failed": 5}
    assert report["full"]["stats"]["exported"] == 1
    assert report["after"]["exported"] == 2  # writing resumed once there was room
    assert report["after"]["dropped"] == 5
    lines = read_all(path)  # ends with a newline, every line parses: nothing torn
    assert [(line["message"], line["seq"]) for line in lines] == [("fits", 0), ("fits again", 6)]
    diagnostics = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failures = [d for d in diagnostics if d.get("fapilog.diagnostic") == f"file:{path}"]
    assert len(failures) == 1, err
    assert failures[0]["errno"] == errno.EFBIG
    resumed = [d for d in diagnostics if d.get("fapilog.diagnostic") == f"file-resumed:{path}"]
    assert len(resumed) == 1, err
    assert "5 records were dropped" in resumed[0]["message"]


FORKER = textwrap.dedent(
    """
    import os
    import fapilog
    fapilog.configure_logging()
    log = fapilog.get_logger("fork")
    log.info("before", who="parent", seq=0)
    fapilog.force_flush(10)
    pid = os.fork()
    who = "child" if pid == 0 else "parent"
    for seq in range(1, 2001):
        log.info("after", who=who, seq=seq)
    if pid == 0:
        fapilog.shutdown(10)
        os._exit(0)
    os.waitpid(pid, 0)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reopens_the_file_and_its_lock(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """gunicorn --preload style: configured, then forked. The child must not share the
    parent's lock (a lock inherited through fork would not exclude the parent)."""
    path = tmp_path / "app.log"
    env = {
        **subprocess_env,
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": str(path),
        "FAPILOG_FILE__MAX_BYTES": "30000",
        "FAPILOG_FILE__BACKUP_COUNT": "10000",
        "FAPILOG_QUEUE__MAX_SIZE": "5000",
        "FAPILOG_QUEUE__BATCH_SIZE": "32",
    }
    done = subprocess.run(
        [PYTHON, "-c", FORKER], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = read_all(path, max_bytes=30000)
    # Python 3.12+ warns that fork() in a multi-threaded process may deadlock the child (a
    # DeprecationWarning, shown for code in __main__): captured as a py.warnings line
    others = [line for line in lines if "who" not in line]
    assert all(line["logger"] == "py.warnings" for line in others), others
    lines = [line for line in lines if "who" in line]
    for who in ("parent", "child"):
        seqs = [line["seq"] for line in lines if line["who"] == who and line["seq"] > 0]
        assert sorted(seqs) == list(range(1, 2001)), who
    assert len({line["process.pid"] for line in lines}) == 2

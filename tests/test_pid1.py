"""A process that is PID 1 (a container's only process, run without an init) ignores a
signal at its default action, so fapilog's SIGTERM drain cannot end it by re-raising the
signal: it ends it with the shell's code for the signal instead (128 + 15). Run in a new PID
namespace (`unshare`, which needs root or user namespaces: skipped where it cannot)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import untraced

CHILD = """
import os, signal, sys, time
import fapilog
fapilog.configure_logging(exporters=["file"], file={{"path": {path!r}}})
assert os.getpid() == 1, os.getpid()
fapilog.log.info("before the signal")
os.kill(1, signal.SIGTERM)  # the handler runs at the next bytecode
time.sleep(20)
print("still running", flush=True)
"""


def _unshare() -> list[str] | None:
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    return [unshare, "--pid", "--fork", "--mount-proc"] if probe.returncode == 0 else None


def test_sigterm_ends_a_pid_1_process_after_the_drain(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = _unshare()
    if prefix is None:
        pytest.skip("no PID namespace here (unshare needs root or user namespaces)")
    path = tmp_path / "app.log"
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", CHILD.format(path=str(path))],
        env=untraced(subprocess_env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "still running" not in proc.stdout, proc.stderr
    assert proc.returncode == 128 + 15, (proc.returncode, proc.stderr)
    lines = [json.loads(line)["message"] for line in path.read_text().splitlines()]
    assert lines == ["before the signal"]

"""The Makefile rebuilds the venv when another interpreter made it, and only then.

Checked with `make -n` (a dry run prints the recipe lines it would run) against a venv
folder of the test's own: a stamp file and a `bin/python` link to one interpreter.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# the Makefile's own identity expression (PY_IDENTITY)
_IDENTITY = "import sys; print(sys.version.split()[0], sys.base_prefix)"


def _identity(python: str) -> str | None:
    try:
        found = subprocess.run(
            [python, "-c", _IDENTITY], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


def _two_interpreters() -> tuple[str, str]:
    """Two Python 3 interpreters of different identity: this suite's, and another one on
    PATH or under pyenv."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [getattr(sys, "_base_executable", sys.executable), sys.executable]
    candidates += [shutil.which(f"python3.{minor}") or "" for minor in range(8, 15)]
    candidates += sorted(glob.glob(f"{pyenv}/versions/3.*/bin/python"))
    seen: dict[str, str] = {}
    for python in candidates:
        identity = _identity(python) if python and os.access(python, os.X_OK) else None
        if identity is not None and identity not in seen:
            seen[identity] = python
        if len(seen) == 2:
            first, second = seen.values()
            return first, second
    pytest.skip("only one Python interpreter on this machine: nothing to switch between")


def _fake_venv(tmp_path: Path, python: str) -> Path:
    """A folder the Makefile takes for a built venv: the stamp, newer than pyproject.toml,
    and bin/python, a link to `python`."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(python)
    stamp = venv / ".installed"
    stamp.touch()
    newer = (ROOT / "pyproject.toml").stat().st_mtime + 3600
    os.utime(stamp, (newer, newer))
    return venv


def _dry_run(venv: Path, python: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    found = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "test", f"PYTHON={python}", f"VENV={venv}"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    return found.stdout.splitlines()


@pytest.fixture(scope="module")
def interpreters() -> tuple[str, str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return _two_interpreters()


def test_another_interpreter_recreates_the_venv(
    tmp_path: Path, interpreters: tuple[str, str]
) -> None:
    built_by, wanted = interpreters
    venv = _fake_venv(tmp_path, built_by)
    lines = _dry_run(venv, wanted)
    assert f"rm -rf {venv}" in lines
    assert f"{wanted} -m venv {venv}" in lines
    assert lines.index(f"rm -rf {venv}") < lines.index(f"{wanted} -m venv {venv}")
    # the dry run says why: both identities
    reason = next(line for line in lines if "recreating it" in line)
    assert _identity(built_by) in reason and _identity(wanted) in reason
    assert (venv / "bin" / "python").is_symlink()  # a dry run, nothing removed


def test_the_same_interpreter_keeps_the_venv(tmp_path: Path, interpreters: tuple[str, str]) -> None:
    built_by, _other = interpreters
    venv = _fake_venv(tmp_path, built_by)
    lines = _dry_run(venv, built_by)
    assert not any(line.startswith("rm -rf") for line in lines), lines
    assert not any("-m venv" in line for line in lines), lines
    assert f"{venv}/bin/python -m pytest" in "\n".join(lines)  # the suite still runs


def test_a_changed_pyproject_reinstalls_into_the_same_venv(
    tmp_path: Path, interpreters: tuple[str, str]
) -> None:
    built_by, _other = interpreters
    venv = _fake_venv(tmp_path, built_by)
    older = (ROOT / "pyproject.toml").stat().st_mtime - 3600
    os.utime(venv / ".installed", (older, older))
    lines = _dry_run(venv, built_by)
    assert f"{built_by} -m venv {venv}" in lines
    assert f"{venv}/bin/python -m pip install --quiet -e '.[dev]'" in lines
    assert not any(line.startswith("rm -rf") for line in lines), lines


def test_make_demo_writes_its_log_file_in_the_repository_where_git_ignores_it() -> None:
    spec = importlib.util.spec_from_file_location(
        "fastapi_demo", ROOT / "examples" / "fastapi_app" / "demo.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    log_file = Path(demo.LOG_FILE)
    assert log_file.is_relative_to(ROOT)
    relative = log_file.relative_to(ROOT).as_posix()
    assert relative in (ROOT / "README.md").read_text()  # README says where to find it
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert relative.split("/")[0] in ignored, relative

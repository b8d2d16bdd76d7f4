"""Installing fapilog installs this project.

The package index holds an earlier, unrelated project under the same name, so no
instruction may install the bare name from the index; and the wheel built from this
checkout, installed into a fresh venv, is the fapilog that gets imported there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import fapilog
from conftest import ROOT

# -- no install of the bare name from the index -------------------------------------------

_INSTALLER = re.compile(
    r"\b(?:pip3?(?:\.\d+)?\s+install|uv\s+pip\s+install|uv\s+add|poetry\s+add|pipx\s+install)\b"
)
# the name alone, with extras and/or a version specifier: what pip looks up on the index
_INDEX_NAME = re.compile(r"^fapilog(?:\[[\w,\s-]*\])?\s*(?:[<>=!~].*)?$", re.I)


def index_installs(line: str) -> list[str]:
    """The arguments of install commands in `line` that fetch fapilog from the index.

    `fapilog @ <url>` (a direct reference) and paths are fine: they name where the
    package comes from. A command ends at a backtick (inline code) or a comment."""
    found = []
    for match in _INSTALLER.finditer(line):
        rest = line[match.end() :].split("`", 1)[0]
        try:
            words = shlex.split(rest, comments=True)
        except ValueError:  # an unbalanced quote: split on spaces
            words = rest.split("#", 1)[0].split()
        for position, word in enumerate(words):
            following = words[position + 1] if position + 1 < len(words) else ""
            if word.startswith("-") or "@" in word or following.startswith("@"):
                continue
            if _INDEX_NAME.match(word.strip()):
                found.append(word)
    return found


def _texts() -> list[Path]:
    texts = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    texts += sorted((ROOT / "docs").rglob("*.md"))
    texts += sorted(
        path
        for path in (ROOT / "examples").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    return [path for path in texts if path.exists()]


@pytest.mark.parametrize(
    "line",
    [
        "pip install fapilog",
        "pip install fapilog            # Python 3.10+",
        "pip install 'fapilog[loki-protobuf]'      # adds cramjam (snappy)",
        "needs `pip install 'fapilog[loki-protobuf]'`) |",
        "python -m pip install -U fapilog==1.0.0",
        'pip3 install "fapilog>=1"',
        "uv add fapilog",
        "poetry add 'fapilog[loki-protobuf]'",
        "pip install uvicorn fapilog",
    ],
)
def test_an_install_from_the_index_is_found(line: str) -> None:
    assert index_installs(line) != []


@pytest.mark.parametrize(
    "line",
    [
        "pip install .",
        "pip install -e '.[dev]'",
        "pip install '.[loki-protobuf]'",
        "pip install dist/fapilog-1.0.0-py3-none-any.whl",
        'pip install "dist/fapilog-1.0.0-py3-none-any.whl[loki-protobuf]"',
        "pip install 'fapilog[loki-protobuf] @ file:///abs/path/to/dist/"
        "fapilog-1.0.0-py3-none-any.whl'",
        'pip install "fapilog @ git+https://git.example.org/team/fapilog.git@v1.0.0"',
        "pip install fapilog @ git+https://git.example.org/team/fapilog.git@v1.0.0",
        "pip install 'cramjam>=2.8,<3'",
        "Installing fapilog registers a pytest plugin",
        "With fapilog installed, run it under auto-instrumentation",
    ],
)
def test_an_install_of_this_project_is_not_flagged(line: str) -> None:
    assert index_installs(line) == []


def test_no_doc_or_example_installs_the_name_from_the_index() -> None:
    texts = _texts()
    assert ROOT / "docs" / "quickstart.md" in texts and ROOT / "README.md" in texts
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in texts
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if index_installs(line)
    ]
    assert found == [], (
        "these install the unrelated project of the same name from the index; install "
        "from a checkout, a built wheel or a git URL instead (docs/quickstart.md#install):\n"
        + "\n".join(found)
    )


def test_the_wheel_the_docs_name_is_this_version() -> None:
    named = {
        (path.relative_to(ROOT), version)
        for path in _texts()
        for version in re.findall(
            r"fapilog-(\d[\w.]*)-py3-none-any\.whl", path.read_text(encoding="utf-8")
        )
    }
    assert named, "the docs no longer name the built wheel?"
    assert {version for _path, version in named} == {fapilog.__version__}, named


# -- the built wheel, installed into a fresh venv -------------------------------------------

_CHILD = r"""
import importlib.metadata, json, sys
import fapilog
from fapilog import configure_logging, log

dist = importlib.metadata.distribution("fapilog")
direct = json.loads(dist.read_text("direct_url.json") or "{}")
facts = {
    "file": fapilog.__file__,
    "version": fapilog.__version__,
    "metadata_version": importlib.metadata.version("fapilog"),
    "dist_file": str(dist.locate_file("fapilog/__init__.py")),
    "editable": direct.get("dir_info", {}).get("editable", False),
    "sys_path": sys.path,
    "finders": [kind.__module__ + "." + kind.__qualname__
                for kind in (f if isinstance(f, type) else type(f) for f in sys.meta_path)],
}
with open(sys.argv[1], "w") as out:  # stdout is the log's
    json.dump(facts, out)
configure_logging(service_name="packaged")
log.info("installed from the wheel", n=1)
fapilog.shutdown()
"""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@pytest.mark.slow
def test_the_built_wheel_installs_and_imports_this_project(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name == f"fapilog-{fapilog.__version__}-py3-none-any.whl"

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    fresh_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    assert (fresh_site / "fapilog" / "__init__.py").is_file()

    # the dependencies come from this venv's site-packages, after the fresh venv's own (so
    # that the fresh install's metadata is the one found); a folder on PYTHONPATH is not a
    # site directory, so the editable install's .pth file there is never read
    dev_sites = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FAPILOG_", "OTEL_", "PYTHON", "COVERAGE_", "VIRTUAL_ENV"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(fresh_site), *dev_sites])
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    child = subprocess.run(
        [str(python), "-c", _CHILD, str(tmp_path / "facts.json")], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    facts = json.loads((tmp_path / "facts.json").read_text())

    assert Path(facts["file"]).is_relative_to(venv), facts["file"]
    assert Path(facts["dist_file"]).is_relative_to(venv), facts["dist_file"]
    assert facts["editable"] is False
    source = str(ROOT / "src")
    assert not any(entry.startswith(source) for entry in facts["sys_path"]), facts["sys_path"]
    assert not any("editable" in finder.lower() for finder in facts["finders"])
    assert facts["version"] == facts["metadata_version"] == fapilog.__version__
    assert _version(facts["version"]) >= (1, 0, 0)

    lines = child.stdout.splitlines()
    assert len(lines) == 1, child.stdout
    record = json.loads(lines[0])
    assert record["message"] == "installed from the wheel"
    assert record["n"] == 1 and record["service.name"] == "packaged"

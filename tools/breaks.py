"""`make breaks`: re-introduce each known bug and check that the suite catches it.

Each file in tools/breaks/ is one deliberate bug: a short header, then a `git diff` of
src/ that introduces it.

    Break: what the patch breaks
    Protects: the behaviour a user relies on
    Tests: the pytest node ids that must catch it
    Expect: how many of those tests must fail (2 for a guard that must not rest on one test)
    Python: (optional) the lowest Python version on which the bug can happen at all, as 3.13

The script copies the working tree (tracked and untracked files, as `git ls-files` lists
them) to a scratch folder, checks that the named tests pass there, then for each break
applies the patch, runs its tests and reverses the patch. A break is *caught* when at least
`Expect` of its tests fail (a run that times out counts as caught); *missed* otherwise;
*stale* when the patch no longer applies (the code moved: rewrite the patch against the new
code); *not applicable* when this Python is older than the break's `Python:` (the behaviour
it breaks exists only on later versions: run the script with one of them, e.g.
`make breaks PYTHON=python3.13 VENV=.venv-3.13`). The exit status is 0 only when every applicable
break is caught.

    python tools/breaks.py [id-prefix ...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from scratch import copy_working_tree

ROOT = Path(__file__).resolve().parent.parent
BREAKS = ROOT / "tools" / "breaks"
TIMEOUT = 600  # seconds for one break's tests; a hang counts as caught


@dataclass(frozen=True)
class Break:
    ident: str
    path: Path
    what: str
    protects: str
    tests: tuple[str, ...]
    expect: int
    python: tuple[int, ...] = ()

    def applies(self) -> bool:
        return sys.version_info[: len(self.python)] >= self.python


def load(path: Path) -> Break:
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("diff --git"):
            break
        key, sep, value = line.partition(":")
        if sep and key in {"Break", "Protects", "Tests", "Expect", "Python"}:
            header[key] = value.strip()
    missing = {"Break", "Protects", "Tests"} - set(header)
    if missing:
        sys.exit(f"breaks: {path.name}: header lacks {', '.join(sorted(missing))}")
    return Break(
        ident=path.stem,
        path=path,
        what=header["Break"],
        protects=header["Protects"],
        tests=tuple(header["Tests"].split()),
        expect=int(header.get("Expect", "1")),
        python=tuple(int(part) for part in header.get("Python", "").split(".") if part),
    )


def scratch_copy() -> Path:
    """The working tree as `git ls-files` sees it (uncommitted changes included)."""
    where = Path(tempfile.mkdtemp(prefix="fapilog-breaks-"))
    copy_working_tree(where)
    return where


def pytest(tree: Path, tests: tuple[str, ...], label: str) -> tuple[int, int, bool]:
    """Runs `tests` in the scratch tree: (failed, ran, timed out)."""
    report = tree / f".breaks-{label}.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), env.get("PYTHONPATH", "")])
    env["COVERAGE_PROCESS_START"] = ""  # no coverage in the children: only pass or fail counts
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", *tests]  # fmt: skip
    try:
        subprocess.run(command, cwd=tree, env=env, check=False, capture_output=True,
                       timeout=TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired:
        return len(tests), len(tests), True
    if not report.exists():
        return 0, 0, False
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    ran = int(suite.get("tests", 0)) - int(suite.get("skipped", 0))
    return failed, ran, False


def git_apply(tree: Path, patch: Path, *flags: str) -> bool:
    done = subprocess.run(["git", "apply", *flags, str(patch)], cwd=tree,
                          check=False, capture_output=True)  # fmt: skip
    return done.returncode == 0


def main(prefixes: list[str]) -> int:
    breaks = [load(path) for path in sorted(BREAKS.glob("*.patch"))]
    if prefixes:
        breaks = [each for each in breaks if each.ident.startswith(tuple(prefixes))]
    if not breaks:
        sys.exit("breaks: no break matches")
    this = ".".join(map(str, sys.version_info[:2]))
    for each in breaks:
        if not each.applies():
            version = ".".join(map(str, each.python))
            print(f"N/A     {each.ident}: cannot happen before Python {version} (this: {this})")
    breaks = [each for each in breaks if each.applies()]
    if not breaks:
        return 0
    tree = scratch_copy()
    try:
        every = tuple(dict.fromkeys(test for each in breaks for test in each.tests))
        failed, ran, _ = pytest(tree, every, "baseline")
        if failed or ran == 0:
            print(f"breaks: the tests do not pass on the unchanged code ({failed} of {ran} fail)")
            return 1
        print(f"baseline: the {ran} tests named by {len(breaks)} breaks pass unchanged\n")
        results = [run_one(tree, each) for each in breaks]
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    caught = sum(result == "caught" for result in results)
    print(f"\n{caught} of {len(results)} breaks caught (those applicable on Python {this})")
    return 0 if caught == len(results) else 1


def run_one(tree: Path, each: Break) -> str:
    if not git_apply(tree, each.path, "--check"):
        print(f"STALE   {each.ident}: the patch no longer applies; rewrite it for the new code")
        return "stale"
    git_apply(tree, each.path)
    started = time.monotonic()
    try:
        failed, ran, timed_out = pytest(tree, each.tests, each.ident)
    finally:
        if not git_apply(tree, each.path, "-R"):
            sys.exit(f"breaks: could not reverse {each.path.name}")
    seconds = time.monotonic() - started
    result = "caught" if timed_out or (ran and failed >= each.expect) else "missed"
    detail = "timed out" if timed_out else f"{failed} of {ran} tests failed, {each.expect} needed"
    print(f"{result.upper():7} {each.ident}: {detail} ({seconds:.0f} s)")
    print(f"        break: {each.what}\n        protects: {each.protects}")
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

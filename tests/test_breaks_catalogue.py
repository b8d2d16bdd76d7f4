"""The catalogue of `make breaks` (tools/breaks/) stays current: every patch applies to the
code as it is, names tests that exist, and says what it protects. (Whether the tests catch
each break is `make breaks`'s job: it runs them.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import breaks  # noqa: E402

PATCHES = sorted((ROOT / "tools" / "breaks").glob("*.patch"))


def test_the_catalogue_is_not_empty() -> None:
    assert len(PATCHES) >= 10


@pytest.mark.parametrize("path", PATCHES, ids=[path.stem for path in PATCHES])
def test_each_break_applies_to_the_current_code_and_names_real_tests(path: Path) -> None:
    each = breaks.load(path)
    assert each.what and each.protects and each.tests and each.expect >= 1
    assert each.expect <= len(each.tests)
    touched = re.findall(r"^diff --git a/(\S+) ", path.read_text(), flags=re.M)
    assert touched and all(name.startswith("src/fapilog/") for name in touched), touched
    check = subprocess.run(
        ["git", "apply", "--check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, (
        f"stale: rewrite {path.name} for the code as it is now\n{check.stderr}"
    )
    for test in each.tests:
        file, _, name = test.partition("::")
        source = ROOT / file
        assert source.is_file(), test
        function = name.split("::")[-1].split("[")[0]
        assert re.search(rf"^\s*(async )?def {re.escape(function)}\(", source.read_text(), re.M), (
            test
        )


def test_the_mutation_scratch_copy_has_the_working_tree_and_the_pytest_plugin(
    tmp_path: Path,
) -> None:
    """`make mutate`'s scratch copy: what `git ls-files` lists, and the plugin that maps the
    tests starting a child to every mutated function, importable from where `child_env`
    points the children (without it, mutmut cannot even start its test runs)."""
    import mutate

    mutate.make_scratch(tmp_path)
    assert (tmp_path / "src" / "fapilog" / "pipeline" / "queue.py").is_file()
    assert (tmp_path / "tests" / "conftest.py").is_file()
    env = mutate.child_env(tmp_path)
    found = subprocess.run(
        [sys.executable, "-c", "import fapilog_mutate_plugin"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr

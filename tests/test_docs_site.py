"""The documentation site: every page is in the nav, `mkdocs build --strict` succeeds, the API
reference is generated from the docstrings, and links that leave docs/ keep strict mode."""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import fapilog
from conftest import ROOT

DOCS = ROOT / "docs"


class _Loader(yaml.SafeLoader):
    """mkdocs.yml's own tags (`!!python/...`) are read as nothing: only the nav matters."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def _config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
    return loaded


def _nav_pages(entry: Any) -> list[str]:
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, list):
        return [page for item in entry for page in _nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in _nav_pages(value)]
    return []


def _mkdocs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_page_is_in_the_nav() -> None:
    nav = _nav_pages(_config()["nav"])
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert [page for page in pages if page not in nav] == []
    assert [page for page in nav if not (DOCS / page).is_file()] == []
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert nav[:2] == ["index.md", "quickstart.md"]


@pytest.mark.slow
def test_the_site_builds_strict_with_the_api_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = _mkdocs("build", "--strict", "-d", str(site), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "json-line.schema.json").is_file()
    assert (site / "benchmarks.png").is_file()
    assert not list(site.rglob("*.py")), "docs/*.py are not pages"

    page = (site / "reference" / "fapilog" / "index.html").read_text(encoding="utf-8")
    start = page.index('id="fapilog.configure_logging"')
    section = page[start : page.index("<h3", start + 1)]
    for name in inspect.signature(fapilog.configure_logging).parameters:
        assert f">{name}<" in section, f"configure_logging's parameter {name!r} is not rendered"
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", section)).split())
    summary = " ".join((inspect.getdoc(fapilog.configure_logging) or "").split("\n\n")[0].split())
    assert summary.replace("`", "").split(".")[0] in text

    for reference, names in {
        "fapilog": ("fapilog.get_logger", "fapilog.shutdown", "fapilog.register_exporter"),
        "testing": ("fapilog.testing.capture_logs", "fapilog.testing.InMemoryExporter"),
        "exporters": ("fapilog.exporters.contract.PartialLoss", "fapilog.exporters.ExporterSpec"),
        "settings": ("fapilog.settings.LoggingSettings", "fapilog.settings.QueueSettings"),
    }.items():
        rendered = (site / "reference" / reference / "index.html").read_text(encoding="utf-8")
        for name in names:
            assert f'id="{name}"' in rendered, (reference, name)


@pytest.mark.slow
def test_links_that_leave_docs_are_checked_too(tmp_path: Path) -> None:
    """A link to a file of the repository outside docs/ becomes its path as code on the site;
    one to a file that does not exist fails the strict build, as a broken page link does."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "demo.py").write_text("print('demo')\n")
    (tmp_path / "docs" / "other.md").write_text("# Other\n")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\nstrict: true\nvalidation:\n  anchors: warn\n"
        f"hooks:\n  - {DOCS / 'hooks.py'}\n"
        "markdown_extensions:\n  - toc\n  - pymdownx.highlight\n  - pymdownx.inlinehilite\n"
    )
    index = tmp_path / "docs" / "index.md"
    index.write_text(
        "# Home\n\n[`examples/demo.py`](../examples/demo.py), [the demo](../examples/demo.py), "
        "[other](other.md)\n"
    )
    built = _mkdocs("build", "-d", str(tmp_path / "site"), cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    rendered = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "<code>examples/demo.py</code>, <span>the demo (<code>examples/demo.py</code>)" in (
        rendered
    )

    for broken in ("../examples/missing.py", "missing.md", "other.md#missing"):
        index.write_text(f"# Home\n\n[broken]({broken})\n")
        failed = _mkdocs("build", "-d", str(tmp_path / "site"), cwd=tmp_path)
        assert failed.returncode != 0, broken
        assert broken in failed.stdout + failed.stderr

"""mkdocs hook: links from a page to a file of the repository outside docs/.

The pages link to the examples, the sources and the tests with relative paths
(``[examples/demo.py](../examples/demo.py)``), which work where the Markdown is read in the
repository. The site has no copy of those files, so on the site such a link becomes the
repository path as code: its text, followed by the path when the text is something else.
A link to a path that does not exist is left alone, so that `mkdocs build --strict` fails on
it as on any broken link between pages.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as etree
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from markdown import Extension, Markdown
from markdown.treeprocessors import Treeprocessor
from markdown.util import HTML_PLACEHOLDER_RE

_current: dict[str, Path] = {}
_TAG = re.compile(r"<[^>]+>")


class _RepositoryLinks(Treeprocessor):
    def run(self, root: etree.Element) -> None:
        page, docs, repository = (_current.get(key) for key in ("page", "docs", "repository"))
        if page is None or docs is None or repository is None:
            return
        for link in root.iter("a"):
            href = link.get("href", "")
            scheme, netloc, path, _query, _anchor = urlsplit(href)
            if scheme or netloc or not path or path.startswith("/"):
                continue
            target = (page.parent / unquote(path)).resolve()
            if target.is_relative_to(docs) or not target.is_relative_to(repository):
                continue
            if not target.exists():
                continue  # mkdocs reports it: a broken link
            _as_code(link, target.relative_to(repository).as_posix(), self._text(link))

    def _text(self, link: etree.Element) -> str:
        """The link's text as shown (inline code highlighted by pymdownx is stashed)."""
        stash = self.md.htmlStash.rawHtmlBlocks

        def unstash(match: re.Match[str]) -> str:
            index = int(match.group(1))
            raw = stash[index] if index < len(stash) else ""
            return html.unescape(_TAG.sub("", str(raw)))

        return str(HTML_PLACEHOLDER_RE.sub(unstash, "".join(link.itertext()))).strip()


def _as_code(link: etree.Element, shown: str, text: str) -> None:
    """The link `link` as its text, and the repository path `shown` as code."""
    link.attrib.clear()
    if text == shown:
        link.tag = "code"
        link.text = shown
        for child in list(link):
            link.remove(child)
        return
    link.tag = "span"
    code = etree.SubElement(link, "code")
    code.text = shown
    if len(link) > 1:
        previous = link[-2]
        previous.tail = (previous.tail or "") + " ("
    else:
        link.text = (link.text or "") + " ("
    code.tail = ")"


class _Extension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        # before mkdocs' own link check ("relpath", priority 0)
        md.treeprocessors.register(_RepositoryLinks(md), "fapilog_repository_links", 1)


def on_config(config: Any) -> Any:
    config.markdown_extensions.append(_Extension())
    _current["docs"] = docs = Path(config.docs_dir).resolve()
    _current["repository"] = docs.parent
    return config


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    _current["page"] = Path(page.file.abs_src_path).resolve()
    return markdown

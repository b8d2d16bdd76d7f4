"""Regenerate the settings table in docs/configuration.md from LoggingSettings (`make docs`)."""

from __future__ import annotations

import pathlib
import re

from fapilog.settings import reference_markdown

BEGIN = "<!-- BEGIN SETTINGS (generated) -->\n"
END = "<!-- END SETTINGS -->"


def main() -> None:
    page = pathlib.Path(__file__).with_name("configuration.md")
    text = page.read_text()
    pattern = re.escape(BEGIN) + ".*" + re.escape(END)
    block = BEGIN + reference_markdown() + END
    page.write_text(re.sub(pattern, lambda _match: block, text, flags=re.S))


if __name__ == "__main__":
    main()

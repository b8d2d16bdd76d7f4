"""Docs ship with the code: the settings reference and the JSON schema match reality."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

import fapilog
from conftest import ROOT
from fapilog import configure_logging, get_logger, log
from fapilog.settings import reference_markdown, settings_reference

DOCS = ROOT / "docs"


def test_configuration_reference_is_generated_from_the_code() -> None:
    text = (DOCS / "configuration.md").read_text()
    match = re.search(
        r"<!-- BEGIN SETTINGS \(generated\) -->\n(.*)<!-- END SETTINGS -->", text, re.S
    )
    assert match, "docs/configuration.md lost its generated block"
    assert match.group(1) == reference_markdown(), (
        "docs/configuration.md is stale: regenerate with `make docs`"
    )


def test_every_setting_and_env_variable_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for env, _kind, _default, description in settings_reference():
        assert env in text
        assert description


@pytest.mark.parametrize("page", ["quickstart.md", "configuration.md", "json-schema.md"])
def test_core_pages_exist(page: str) -> None:
    assert (DOCS / page).stat().st_size > 500


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).exists(), target


def test_real_lines_match_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    schema = json.loads((DOCS / "json-line.schema.json").read_text())
    configure_logging(service_name="schema-check", service_version="1.0")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s"):
        log.info("in span", n=1, nested={"a": [1, 2]})
    get_logger("other").warning("collides", level="mine", message="also mine")
    try:
        raise ValueError("x")
    except ValueError:
        log.exception("failed")
    fapilog.force_flush(5)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    for line in lines:
        jsonschema.validate(line, schema)
    assert lines[1]["level"] == "warning" and lines[1]["attr.level"] == "mine"
    assert lines[1]["message"] == "collides" and lines[1]["attr.message"] == "also mine"

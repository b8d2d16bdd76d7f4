"""Shared fixtures: every test starts with an unconfigured fapilog and a clean environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import fapilog._config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_fapilog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("FAPILOG_", "OTEL_")):
            monkeypatch.delenv(key)
    yield
    fapilog._config.reset()


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child interpreters: this venv, no FAPILOG_/OTEL_ leftovers,
    coverage collection when the parent runs under coverage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAPILOG_", "OTEL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COVERAGE_PROCESS_START", str(ROOT / "pyproject.toml"))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests" / "support"), env.get("PYTHONPATH", "")]
    )
    return env


PYTHON = sys.executable

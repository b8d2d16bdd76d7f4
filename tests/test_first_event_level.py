"""The very first event, logged before any `configure_logging()`, configures fapilog from
the environment and is then held to the configured level like every later one: a first
debug line is kept at FAPILOG_LEVEL=debug, a first info line is dropped at warning, and
FAPILOG_LOGGER_LEVELS applies to it too. Each case is a fresh interpreter: only a first
event in a process shows it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import fapilog
from fapilog import get_logger, log
{calls}
fapilog.force_flush()
"""


def _messages(env: dict[str, str], calls: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(calls=calls)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line)["message"] for line in proc.stdout.splitlines()]


@pytest.mark.parametrize(
    ("variables", "calls", "expected"),
    [
        (
            {"FAPILOG_LEVEL": "debug"},
            'log.debug("first")\nlog.debug("second")',
            ["first", "second"],
        ),
        ({"FAPILOG_LEVEL": "warning"}, 'log.info("first")\nlog.warning("second")', ["second"]),
        ({}, 'log.debug("first")\nlog.info("second")', ["second"]),
        (
            {"FAPILOG_LOGGER_LEVELS": "noisy=error"},
            'get_logger("noisy").warning("first")\nget_logger("calm").info("second")',
            ["second"],
        ),
    ],
    ids=["debug-keeps-a-first-debug", "warning-drops-a-first-info", "default-info", "per-logger"],
)
def test_the_first_event_is_held_to_the_configured_level(
    subprocess_env: dict[str, str], variables: dict[str, str], calls: str, expected: list[str]
) -> None:
    env = {**subprocess_env, "FAPILOG_EXPORTERS": "stdout", **variables}
    assert _messages(env, calls) == expected

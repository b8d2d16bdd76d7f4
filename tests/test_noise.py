"""Noise control (docs/sampling.md): per-logger rate limits and folding of identical
repeated records, both counted in ``stats()``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fapilog
from fapilog import configure_logging, get_logger


def messages(path: Path) -> list[dict[str, Any]]:
    fapilog.force_flush()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_rate_limit_lets_about_its_rate_through_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, rate_limits={"chatty": 10})
    log = get_logger("chatty.sub")
    other = get_logger("calm")
    started = time.monotonic()
    for n in range(1000):
        log.info("tick", n=n)
    elapsed = time.monotonic() - started
    other.info("untouched")
    found = messages(path)
    ticks = [line for line in found if line["message"] == "tick"]
    # a burst of `rate`, then `rate` a second
    assert 10 <= len(ticks) <= 10 + int(elapsed * 10) + 1
    assert [line["message"] for line in found if line["logger"] == "calm"] == ["untouched"]
    assert fapilog.stats()["rate_limited"] == {"chatty": 1000 - len(ticks)}


def test_the_first_record_after_a_limited_stretch_says_how_many_were_held_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, rate_limits={"x": 20})
    log = get_logger("x")
    for _ in range(30):
        log.info("burst")
    time.sleep(0.1)  # the scenario: the bucket refills (2 tokens in 0.1 s)
    log.info("later")
    found = messages(path)
    assert found[-1]["message"] == "later"
    assert found[-1]["fapilog.rate_limited"] == 30 - (len(found) - 1)


def test_a_bad_rate_is_a_clear_error() -> None:
    with pytest.raises(fapilog.ConfigurationError, match="positive"):
        configure_logging(rate_limits={"x": 0})


def test_500_identical_records_make_one_line_and_one_repeated_line(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, fold_repeats=10)
    log = get_logger("db")
    for _ in range(500):
        log.warning("connection refused", host="db1")
    log.info("different")
    found = messages(path)
    assert [line["message"] for line in found] == [
        "connection refused",
        found[1]["message"],
        "different",
    ]
    assert found[1]["message"].startswith("connection refused (repeated 499 times in ")
    assert found[1]["fapilog.repeated"] == 499 and found[1]["host"] == "db1"
    assert found[1]["level"] == "warning"
    assert fapilog.stats()["folded"] == 499


def test_records_that_differ_are_not_folded(tmp_path: Path) -> None:
    """Another value, another level, another logger: each ends the run; only identical
    consecutive records of one logger are folded."""
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, fold_repeats=10)
    log, other = get_logger("db"), get_logger("cache")
    for n in range(3):
        log.info("row", n=n)
    log.warning("row", n=2)  # the same fields at another level
    other.warning("row", n=2)  # another logger
    log.warning("row", n=2)  # the same as the one before it of this logger: folded
    found = messages(path)
    assert [(line["logger"], line["level"], line.get("n")) for line in found[:5]] == [
        ("db", "info", 0),
        ("db", "info", 1),
        ("db", "info", 2),
        ("db", "warning", 2),
        ("cache", "warning", 2),
    ]
    assert found[5]["message"].startswith("row (repeated 1 times")
    assert len(found) == 6 and fapilog.stats()["folded"] == 1


def test_a_run_is_summarised_when_its_window_ends_without_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, fold_repeats=0.2)
    log = get_logger("loop")
    for _ in range(5):
        log.info("same")
    done = threading.Event()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not done.is_set():
        fapilog.stats()
        if path.exists() and "repeated 4 times" in path.read_text():
            done.set()
        else:
            done.wait(0.05)
    assert done.is_set(), "the summary line never came out"

"""The Loki exporter's own figures (`stats()["exporters"]["loki"]["details"]`): each counter
adds exactly what it is given, per reason and per status, and the snapshot names them as the
docs do. In-process, with a clock the test sets."""

from __future__ import annotations

import types

import pytest

from fapilog.exporters import loki_figures
from fapilog.exporters.loki_figures import LokiFigures


def test_a_new_exporter_has_every_figure_at_zero_and_the_extra_keys_given() -> None:
    assert LokiFigures().snapshot(queue=3) == {
        "sent_entries": 0,
        "sent_bytes": 0,
        "sent_requests": 0,
        "encoded_bytes": 0,
        "retries": 0,
        "spooled_entries": 0,
        "unknown_outcome": 0,
        "dropped_entries": {},
        "dropped_bytes": {},
        "queue": 3,
        "requests": {},
        "request_duration_seconds": {},
    }


def test_sent_adds_entries_and_bytes_and_counts_a_request_only_with_its_body() -> None:
    figures = LokiFigures()
    figures.sent(3, 300, body=120)
    figures.sent(2, 50, body=40)
    figures.sent(4, 70)  # entries stored by a request counted elsewhere (a split batch)
    snapshot = figures.snapshot()
    assert snapshot["sent_entries"] == 9
    assert snapshot["sent_bytes"] == 420
    assert snapshot["sent_requests"] == 2
    assert snapshot["encoded_bytes"] == 160


def test_drops_add_up_per_reason_in_entries_and_bytes() -> None:
    figures = LokiFigures()
    figures.dropped("rejected", 2, 20)
    figures.dropped("too_large", 1, 5000)
    figures.dropped("rejected", 3, 30)
    snapshot = figures.snapshot()
    assert snapshot["dropped_entries"] == {"rejected": 5, "too_large": 1}
    assert snapshot["dropped_bytes"] == {"rejected": 50, "too_large": 5000}


def test_spooled_unknown_and_retries_add_up() -> None:
    figures = LokiFigures()
    figures.spooled(4)
    figures.spooled(6)
    figures.unknown(2)
    figures.unknown(5)
    figures.retried()
    figures.retried()
    snapshot = figures.snapshot()
    assert snapshot["spooled_entries"] == 10
    assert snapshot["unknown_outcome"] == 7
    assert snapshot["retries"] == 2


def test_a_snapshot_is_a_copy_later_counts_do_not_change() -> None:
    figures = LokiFigures()
    figures.dropped("rejected", 1, 1)
    snapshot = figures.snapshot()
    figures.dropped("rejected", 1, 1)
    assert snapshot["dropped_entries"] == {"rejected": 1}


def test_requests_are_counted_and_timed_per_status_to_the_microsecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(loki_figures, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    figures = LokiFigures()
    now[0] = 100.25
    figures.timed("204", 100.0)
    now[0] = 101.0000004
    figures.timed("204", 100.5)
    now[0] = 102.0
    figures.timed("error", 101.9)
    snapshot = figures.snapshot()
    assert snapshot["requests"] == {"204": 2, "error": 1}
    assert snapshot["request_duration_seconds"] == {
        "204": {"count": 2, "sum": 0.75, "max": 0.5},
        "error": {"count": 1, "sum": 0.1, "max": 0.1},
    }
    assert type(snapshot["request_duration_seconds"]["204"]["count"]) is int

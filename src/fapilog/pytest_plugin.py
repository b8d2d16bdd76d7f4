"""pytest plugin (registered through the `pytest11` entry point): the `fapilog_logs` and
`fapilog_exporter` fixtures.

def test_checkout(fapilog_logs):
    checkout(cart)
    assert fapilog_logs.by_level("error") == []
    assert "order placed" in fapilog_logs.messages()
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fapilog.testing import CapturedLogs, InMemoryExporter, capture_logs

__all__ = ["fapilog_exporter", "fapilog_logs"]


@pytest.fixture
def fapilog_logs() -> Iterator[CapturedLogs]:
    """The events logged during the test (see `fapilog.testing.capture_logs`)."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def fapilog_exporter() -> Iterator[InMemoryExporter]:
    """An in-memory exporter name for the test: ``configure_logging(exporters=[
    fapilog_exporter.name])``, then ``fapilog_exporter.lines()``."""
    with InMemoryExporter() as exporter:
        yield exporter

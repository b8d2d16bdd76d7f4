"""Helpers for testing code that logs with fapilog.

    from fapilog.testing import capture_logs

    def test_login():
        with capture_logs() as logs:
            login("alice")
        assert logs == [{"message": "user logged in", "level": "info", "logger": "app",
                         "user": "alice"}]

Events are captured after the whole processor chain (enrichment, redaction) and before
export, as dicts shaped like the JSON line without timestamp and resource attributes:
``message``, ``level``, ``logger``, ``trace_id``/``span_id`` inside a span, the key-value
pairs, ``exception.*`` for errors. stdlib `logging` calls are captured too. Nothing is
exported while capturing. The pytest plugin provides the same as the `fapilog_logs` fixture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from structlog import DropEvent

from fapilog import _bridge, _logger, _stdlib

__all__ = ["CapturedLogs", "capture_logs"]


class CapturedLogs(list[dict[str, Any]]):
    """The captured events (a list of dicts) with a few conveniences."""

    def messages(self) -> list[Any]:
        return [entry.get("message") for entry in self]

    def by_level(self, level: str) -> list[dict[str, Any]]:
        return [entry for entry in self if entry.get("level") == level.lower()]


class _Capture:
    def __init__(self, sink: CapturedLogs) -> None:
        self.sink = sink

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        pending = _bridge.capture(logger, method_name, event_dict)
        body, attributes = _bridge.event_fields(pending)
        entry: dict[str, Any] = {
            "message": body,
            "level": pending.severity_text.lower(),
            "logger": pending.logger,
        }
        span_context = _bridge._span_context(pending.context)
        if span_context is not None:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in attributes.items():
            entry.setdefault(key, value)
        self.sink.append(entry)
        raise DropEvent


def _chain_from_environment() -> list[Any]:
    """Before `configure_logging()`: the chain the first event would configure from the
    environment, without the exporters (so captured events are enriched and redacted as
    exported ones would be). An invalid environment falls back to the default redaction:
    a test never sees a secret because of a bad variable."""
    from structlog.contextvars import merge_contextvars

    from fapilog._config import _build_chain
    from fapilog._sections.enrichment import RedactionSettings
    from fapilog.processors import add_trace_context
    from fapilog.redaction import Redactor
    from fapilog.settings import LoggingSettings

    try:
        return _build_chain(LoggingSettings())[:-1]  # configure_logging()'s, minus the bridge
    except Exception:
        return [merge_contextvars, add_trace_context, Redactor.from_settings(RedactionSettings())]


@contextmanager
def capture_logs() -> Iterator[CapturedLogs]:
    """Capture fapilog (and stdlib) events in a list instead of exporting them.

    Works whether or not `configure_logging()` was called (before it, events go through
    the enrichers and redaction the environment configures, as the first exported event
    would); restores everything on exit.
    """
    captured = CapturedLogs()
    chain = _logger.CHAIN
    saved_chain = list(chain)
    capture = _Capture(captured)
    chain[-1] = capture
    temporary_handler = None
    root = logging.getLogger()
    saved_root_level = root.level
    if _stdlib.installed_handler() is None:
        temporary_handler = _stdlib.FapilogHandler(chain)
        root.addHandler(temporary_handler)
        root.setLevel(logging.DEBUG)
    saved_levels = {name: sink.min_level for name, sink in _logger._SINKS.items()}
    saved_default = _logger._DEFAULT_LEVEL[0]
    from fapilog._config import is_configured

    if not is_configured():
        _logger.set_levels(10, {})
        chain[:] = [*_chain_from_environment(), capture]
    try:
        yield captured
    finally:
        chain[:] = saved_chain
        if temporary_handler is not None:
            root.removeHandler(temporary_handler)
            root.setLevel(saved_root_level)
        _logger._DEFAULT_LEVEL[0] = saved_default
        for name, level in saved_levels.items():
            sink = _logger._SINKS.get(name)
            if sink is not None:
                sink.min_level = level

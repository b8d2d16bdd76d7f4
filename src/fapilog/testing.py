"""Helpers for testing code that logs with fapilog.

    from fapilog.testing import capture_logs

    def test_login():
        with capture_logs() as logs:
            login("alice")
        assert logs == [{"message": "user logged in", "level": "info", "logger": "app",
                         "user": "alice"}]

- `capture_logs()`: events are captured after the whole processor chain (enrichment,
  redaction) and before export, as dicts shaped like the JSON line without timestamp and
  resource attributes: ``message``, ``level``, ``logger``, ``trace_id``/``span_id`` inside a
  span, the key-value pairs, ``exception.*`` for errors. stdlib `logging` calls are captured
  too. Nothing is exported while capturing. ``capture_logs(level="debug")`` captures from
  that level up, whatever was configured before.
- `InMemoryExporter`: an exporter name whose records are kept in memory, for tests that want
  the real pipeline (queues, workers, the exporter contract, the JSON line).
- `reset()`: shut fapilog down and forget its configuration (between tests).

The pytest plugin provides `fapilog_logs` (capture_logs) and `fapilog_exporter`
(an InMemoryExporter).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from structlog import DropEvent
from structlog.contextvars import merge_contextvars
from structlog.typing import Processor

from fapilog import _levels
from fapilog._state import STATE
from fapilog.capture import stdlib
from fapilog.capture.logger import CHAIN, restore_levels, saved_levels, set_levels
from fapilog.capture.processors import add_trace_context
from fapilog.capture.record import capture
from fapilog.capture.redaction import Redactor
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.registry import json_line, register_exporter, unregister_exporter
from fapilog.lifecycle.configure import build_chain, reset
from fapilog.lifecycle.drain import force_flush
from fapilog.otel.bridge import event_fields
from fapilog.otel.trace import span_context_of
from fapilog.settings import RedactionSettings, from_environment

__all__ = ["CapturedLogs", "InMemoryExporter", "capture_logs", "reset"]


class CapturedLogs(list[dict[str, Any]]):
    """The captured events (a list of dicts) with a few conveniences."""

    def messages(self) -> list[Any]:
        return [entry.get("message") for entry in self]

    def by_level(self, level: str) -> list[dict[str, Any]]:
        return [entry for entry in self if entry.get("level") == level.lower()]


class _Capture:
    def __init__(self, sink: CapturedLogs, min_severity: int = 0) -> None:
        self.sink = sink
        self.min_severity = min_severity  # an OpenTelemetry severity number: 0 keeps all

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        pending = capture(logger, method_name, event_dict)
        if pending.severity.value < self.min_severity:
            raise DropEvent  # below the level asked for (a stdlib logger set lower itself)
        body, attributes = event_fields(pending)
        entry: dict[str, Any] = {
            "message": body,
            "level": pending.severity_text.lower(),
            "logger": pending.logger,
        }
        span_context = span_context_of(pending.context)
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in attributes.items():
            entry.setdefault(key, value)
        self.sink.append(entry)
        raise DropEvent


def _chain_from_environment() -> list[Processor]:
    """Before `configure_logging()`: the chain the first event would configure from the
    environment, without the exporters (so captured events are enriched and redacted as
    exported ones would be). Misspelt variables are reported and left out, as the first
    event's configuration does; an invalid environment falls back to the default
    redaction: a test never sees a secret because of a bad variable."""
    try:
        chain, _ = build_chain(from_environment("capture_logs"))
        return chain[:-1]  # configure_logging()'s, minus the bridge
    except Exception:
        return [merge_contextvars, add_trace_context, Redactor.from_settings(RedactionSettings())]


def _level_named(level: str | int) -> _levels.Level:
    """A level as the ``level`` setting takes it: a name (any case, ``warn`` and ``fatal``
    included) or the stdlib number of one of the five levels."""
    name = _levels.normalise(level)
    found = _levels.BY_NAME.get(name) if isinstance(name, str) else None
    if found is None:
        allowed = ", ".join(f"{known.name} ({known.number})" for known in _levels.LEVELS)
        raise ValueError(f"capture_logs: unknown level {level!r}; use one of {allowed}")
    return found


@contextmanager
def capture_logs(level: str | int | None = None) -> Iterator[CapturedLogs]:
    """Capture fapilog (and stdlib) events in a list instead of exporting them.

    Works whether or not `configure_logging()` was called (before it, events go through
    the enrichers and redaction the environment configures, as the first exported event
    would); restores everything on exit.

    `level` (``"debug"``, ``"WARNING"``, ``10``: what the ``level`` setting takes) captures
    events at that level and above, whatever was configured: every fapilog logger, the
    root stdlib logger and the stdlib loggers fapilog's ``logger_levels`` set are at
    `level` for the block, and nothing below it is captured. Without it: every level before
    `configure_logging()`, the configured levels after it (stdlib records at every level
    when stdlib capture is off).
    """
    threshold = _level_named(level) if level is not None else None
    captured = CapturedLogs()
    chain = CHAIN
    saved_chain = list(chain)
    capturing = _Capture(captured, threshold.severity.value if threshold is not None else 0)
    chain[-1] = capturing
    temporary_handler = None
    root = logging.getLogger()
    saved_root_level = root.level
    # the stdlib loggers fapilog gave a level of their own (``logger_levels``)
    configured = [logging.getLogger(name) for name in STATE.logger_levels]
    saved_logger_levels = [(logger, logger.level) for logger in configured]
    if stdlib.installed_handler() is None:
        temporary_handler = stdlib.FapilogHandler(chain)
        root.addHandler(temporary_handler)
        root.setLevel(logging.DEBUG)
    levels = saved_levels()
    if not STATE.is_configured():
        set_levels(10, {})
        chain[:] = [*_chain_from_environment(), capturing]
    if threshold is not None:
        set_levels(threshold.number, {})
        root.setLevel(threshold.number)
        for logger in configured:
            logger.setLevel(logging.NOTSET)  # the root's level, for the block
    try:
        yield captured
    finally:
        chain[:] = saved_chain
        if temporary_handler is not None:
            root.removeHandler(temporary_handler)
        if temporary_handler is not None or threshold is not None:
            root.setLevel(saved_root_level)
        if threshold is not None:
            for logger, saved_level in saved_logger_levels:
                logger.setLevel(saved_level)
        restore_levels(levels)


class InMemoryExporter:
    """An exporter name whose records fapilog keeps in memory: the real pipeline (bridge,
    queues, workers) up to the exporter, for tests.

        with InMemoryExporter() as memory:
            configure_logging(exporters=[memory.name])
            log.info("paid", order_id=7)
            assert memory.lines()[0]["order_id"] == 7

    Each configuration gets its own exporter object, all feeding this one store, so a
    reconfiguration (which shuts the old exporters down) keeps what was exported.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"memory-{uuid.uuid4().hex[:12]}"
        self._records: list[ReadableLogRecord] = []
        self._lock = threading.Lock()
        register_exporter(self.name, lambda settings: _MemoryView(self))

    def _add(self, batch: Sequence[ReadableLogRecord]) -> None:
        with self._lock:
            self._records.extend(batch)

    def records(self, *, flush: bool = True) -> list[ReadableLogRecord]:
        """The records exported so far (after `fapilog.force_flush()` unless told not)."""
        if flush:
            force_flush(10)
        with self._lock:
            return list(self._records)

    def lines(self, *, flush: bool = True) -> list[dict[str, Any]]:
        """The records as fapilog's JSON lines (dicts), resource attributes included."""
        return [json_line(record) for record in self.records(flush=flush)]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def close(self) -> None:
        """Unregister the exporter name."""
        unregister_exporter(self.name)

    def __enter__(self) -> InMemoryExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _MemoryView(LogRecordExporter):
    def __init__(self, store: InMemoryExporter) -> None:
        self._store = store

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self._store._add(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

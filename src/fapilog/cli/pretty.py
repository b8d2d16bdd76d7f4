"""`fapilog pretty`: JSON log lines shown as the development console shows records.

fapilog's JSON lines (``timestamp``, ``level``, ``logger``, ``message``, ``trace_id``,
``span_id``, attributes, resource attributes) are read as they are; other JSON lines by the
usual names (``time``/``ts``/``@timestamp``, ``levelname``/``severity``, ``name``,
``msg``/``event``). A line that is not a JSON object is passed through unchanged. The
resource attributes fapilog adds to every line (``service.*``, ``host.name``,
``process.*``, ...) are left out unless asked for (``--resource``).

Filters: a minimum level, a trace id (or its start, as the console shows it), a regular
expression searched in the raw line; a line that is not JSON passes every filter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from fapilog import _levels
from fapilog.exporters.console_format import ConsoleLine, Palette, Shown
from fapilog.exporters.console_traceback import TracebackRenderer

__all__ = ["Filters", "Pretty", "level_rank"]

_TIME_KEYS = ("timestamp", "time", "ts", "@timestamp", "asctime", "datetime")
_LEVEL_KEYS = ("level", "levelname", "severity", "severity_text", "lvl", "log.level")
_LOGGER_KEYS = ("logger", "logger_name", "name", "log.logger")
_MESSAGE_KEYS = ("message", "msg", "event", "body")
_STACK_KEYS = ("exception.stacktrace", "exc_info", "stack_trace", "traceback")
_RESOURCE_PREFIXES = (
    "service.",
    "host.",
    "process.",
    "telemetry.",
    "deployment.",
    "os.",
    "container.",
    "k8s.",
)
_EXCEPTION_KEYS = frozenset({"exception.type", "exception.message", "exception.stacktrace"})
_RANKS = {"trace": 5, "debug": 10, "info": 20, "notice": 25, "warning": 30, "warn": 30,
          "error": 40, "err": 40, "critical": 50, "fatal": 50, "crit": 50, "alert": 50,
          "emergency": 50}  # fmt: skip


def level_rank(name: str) -> int:
    """A level name's rank (the stdlib's numbers); an unknown name ranks as INFO."""
    lowered = name.strip().lower()
    if lowered in _RANKS:
        return _RANKS[lowered]
    try:
        return _levels.number_of(_levels.normalise(name))
    except (KeyError, ValueError, TypeError):
        return 20


@dataclass(frozen=True)
class Filters:
    level: int | None = None  # minimum rank
    trace: str | None = None  # a trace id or its start, lower case
    grep: re.Pattern[str] | None = None


def _first(record: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in record:
            return key, record[key]
    return None, None


def _nanoseconds(value: Any) -> int:
    """Nanoseconds since the epoch from an RFC 3339 text or a number (seconds, ms, µs or
    ns, told apart by size); -1 when it is neither."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, (int, float)):
        magnitude = abs(value)
        scale = (
            1e9 if magnitude < 1e11 else 1e6 if magnitude < 1e14 else 1e3 if magnitude < 1e17 else 1
        )
        return int(value * scale)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text.replace(",", "."))
        except ValueError:
            return -1
        if moment.tzinfo is None:
            moment = moment.astimezone()  # (local time, as the console shows it)
        delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return -1


_LATEST = 253_402_300_799 * 1_000_000_000  # 9999-12-31T23:59:59Z: what a clock can show


def _shown_time(value: Any) -> int:
    """`_nanoseconds`, -1 (no time shown) for a time before 1970 or after 9999."""
    try:
        ns = _nanoseconds(value)
    except (OverflowError, ValueError):
        return -1
    return ns if 0 <= ns <= _LATEST else -1


def _hex_id(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            return 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Pretty:
    """Turns one input line into the text shown (None: filtered out)."""

    def __init__(
        self, *, colors: bool, width: int, filters: Filters, resource: bool = False
    ) -> None:
        self._line = ConsoleLine(Palette(colors))
        self._tracebacks = TracebackRenderer(
            colors=colors, width=width, collapse=(), show_locals=False, redactor=None
        )
        self._filters = filters
        self._resource = resource

    def line(self, raw: str) -> str | None:
        """The console text of `raw` (one input line, without its newline)."""
        filters = self._filters
        try:
            record = orjson.loads(raw) if raw.lstrip().startswith("{") else None
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            return raw  # not a JSON object: unchanged, whatever the filters
        if filters.grep is not None and filters.grep.search(raw) is None:
            return None
        level_key, level = _first(record, _LEVEL_KEYS)
        level_text = str(level).lower() if level is not None else "info"
        if filters.level is not None and level_rank(level_text) < filters.level:
            return None
        trace = record.get("trace_id")
        if filters.trace is not None and not (
            isinstance(trace, str) and trace.lower().startswith(filters.trace)
        ):
            return None
        return self._render(record, level_key, level_text)

    def _render(self, record: dict[str, Any], level_key: str | None, level: str) -> str:
        time_key, moment = _first(record, _TIME_KEYS)
        logger_key, logger = _first(record, _LOGGER_KEYS)
        message_key, message = _first(record, _MESSAGE_KEYS)
        stack_key, stack = _first(record, _STACK_KEYS)
        timestamp = _shown_time(moment) if time_key is not None else -1
        skip = {level_key, logger_key, message_key, "trace_id", "span_id", "trace_flags"}
        if timestamp >= 0:
            skip.add(time_key)
        has_stack = isinstance(stack, str) and bool(stack.strip())
        if has_stack:
            skip |= _EXCEPTION_KEYS | {stack_key}
        if not self._resource:
            skip |= {key for key in record if key.startswith(_RESOURCE_PREFIXES)}
        shown = Shown(
            timestamp,
            "warning" if level == "warn" else level,
            str(logger) if logger is not None else "",
            message,
            record,
            frozenset(key for key in skip if key is not None),
            _hex_id(record.get("trace_id")),
            _hex_id(record.get("span_id")),
        )
        text = self._line.render(shown)
        if has_stack:
            text = "\n".join([text, *self._tracebacks.from_text(str(stack))])
        return text

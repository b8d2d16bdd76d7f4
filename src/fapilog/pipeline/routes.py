"""Per-exporter levels (``FAPILOG_EXPORTER_LEVELS=file:debug,loki:info``): which exporters
take a record, decided on the bridge's worker (and, for the console that writes on the
calling thread, at the end of the chain).

An exporter named there takes a logger's records from its own level; the others from
``FAPILOG_LEVEL``; a logger with a ``FAPILOG_LOGGER_LEVELS`` entry (or a level set at run
time) is taken from that level by every exporter. The caller's gate is the lowest of these
(`fapilog.capture.logger`), so nothing is captured that no exporter takes. A record a
flight recorder released, or the debug header exported, goes to every exporter. A record
an exporter does not take is counted as its ``filtered``, a term of its accounting sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fapilog._levels import severity_for_number
from fapilog._state import STATE

__all__ = ["ROUTES", "Routes"]

_Key = tuple[str, int, tuple[Any, ...]]  # (logger name, severity, targets)
# decisions remembered at most
_CACHE_AT_MOST = 8192


class Routes:
    """The exporters' own levels and the decisions made with them."""

    __slots__ = ("_cache", "_writer_names", "active", "levels")

    def __init__(self) -> None:
        self.levels: dict[str, int] = {}  # exporter name -> stdlib level
        self.active = False
        self._cache: dict[
            tuple[str, int, tuple[Any, ...]], tuple[Sequence[Any], tuple[Any, ...]]
        ] = {}
        self._writer_names: dict[int, str] = {}  # id(console exporter) -> its name

    def configure(self, levels: dict[str, int]) -> None:
        self.levels = dict(levels)
        self.active = bool(levels)
        self.changed()

    def changed(self) -> None:
        """The levels changed (configuration, `fapilog.set_level`): decide again."""
        self._cache = {}

    def name_writers(self, targets: Sequence[Any]) -> None:
        """The names of the exporters that write on the calling thread."""
        self._writer_names = {id(t.exporter): t.name for t in targets if hasattr(t, "exporter")}

    def severity_for(self, exporter: str, logger: str) -> int:
        """The lowest severity `exporter` takes from `logger`."""
        level = STATE.entry_for(logger)
        if level is None:
            level = self.levels.get(exporter, STATE.default_level)
        return severity_for_number(level).value  # (NOTSET, 0: UNSPECIFIED, 0)

    def choose(
        self, targets: Sequence[Any], logger: str, severity: int
    ) -> tuple[Sequence[Any], tuple[Any, ...]]:
        """(the targets that take a record, those that do not)."""
        key = (logger, severity, tuple(targets))
        known = self._cache.get(key)
        if known is None:
            chosen = tuple(t for t in targets if severity >= self.severity_for(t.name, logger))
            left = tuple(t for t in targets if t not in chosen)
            known = (targets, ()) if not left else (chosen, left)
            if len(self._cache) >= _CACHE_AT_MOST:
                self._cache = {}
            self._cache[key] = known
        return known

    def writes(self, writer: object, logger: str, severity: int) -> bool:
        """Whether the calling-thread exporter `writer` takes the record."""
        name = self._writer_names.get(id(writer))
        return name is None or severity >= self.severity_for(name, logger)


ROUTES = Routes()

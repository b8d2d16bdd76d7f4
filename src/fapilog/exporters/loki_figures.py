"""The Loki exporter's own figures, promtail-like (shown under ``fapilog.stats()["exporters"]
["loki"]["details"]``): entries and bytes sent, dropped by reason, spooled, of unknown
outcome; retries; requests and their duration by status. Updated on the exporter's worker,
read from any thread."""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["LokiFigures"]


class LokiFigures:
    """Counters under one lock (reentrant: see the file exporter's guard)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.sent_entries = 0
        self.sent_bytes = 0
        self.sent_requests = 0
        self.encoded_bytes = 0
        self.retries = 0
        self.spooled_entries = 0
        self.unknown_entries = 0
        self.dropped_entries: dict[str, int] = {}
        self.dropped_bytes: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.request_seconds: dict[str, list[float]] = {}  # status -> [count, sum, max]

    def sent(self, entries: int, size: int, body: int = 0) -> None:
        """`entries` stored by Loki (`body`: the bytes of a request that succeeded)."""
        with self._lock:
            self.sent_entries += entries
            self.sent_bytes += size
            if body:
                self.sent_requests += 1
                self.encoded_bytes += body

    def dropped(self, reason: str, entries: int, size: int) -> None:
        with self._lock:
            self.dropped_entries[reason] = self.dropped_entries.get(reason, 0) + entries
            self.dropped_bytes[reason] = self.dropped_bytes.get(reason, 0) + size

    def spooled(self, entries: int) -> None:
        with self._lock:
            self.spooled_entries += entries

    def unknown(self, entries: int) -> None:
        with self._lock:
            self.unknown_entries += entries

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def timed(self, status: str, started: float) -> None:
        """A request answered with `status` (``error``: none), begun at `started`
        (time.perf_counter())."""
        elapsed = time.perf_counter() - started
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            figures = self.request_seconds.setdefault(status, [0.0, 0.0, 0.0])
            figures[0] += 1
            figures[1] += elapsed
            figures[2] = max(figures[2], elapsed)

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """The figures as `LokiExporter.stats()` shows them, with `extra` keys."""
        with self._lock:
            return {
                "sent_entries": self.sent_entries,
                "sent_bytes": self.sent_bytes,
                "sent_requests": self.sent_requests,
                "encoded_bytes": self.encoded_bytes,
                "retries": self.retries,
                "spooled_entries": self.spooled_entries,
                "unknown_outcome": self.unknown_entries,
                "dropped_entries": dict(self.dropped_entries),
                "dropped_bytes": dict(self.dropped_bytes),
                **extra,
                "requests": dict(self.requests),
                "request_duration_seconds": {
                    status: {"count": int(v[0]), "sum": round(v[1], 6), "max": round(v[2], 6)}
                    for status, v in self.request_seconds.items()
                },
            }

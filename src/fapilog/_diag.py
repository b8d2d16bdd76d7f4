"""fapilog's own diagnostics: rate-limited warnings written straight to stderr.

This path never goes through the pipeline (no recursion when an exporter or the SDK fails)
and never raises. Lines are JSON in the same schema as stdout so log collectors parse them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["add_listener", "describe", "remove_listener", "report", "reset"]

INTERVAL = 60.0
Listener = Callable[[str, str, dict[str, Any]], None]


class _RateLimit:
    """When each report key was last written, what was suppressed since, and listeners."""

    def __init__(self) -> None:
        # reentrant: a signal handler may report while the frame it interrupted reports
        self.lock = threading.RLock()
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}
        self.listeners: list[Listener] = []


_LIMIT = _RateLimit()


def describe(exc: BaseException) -> str:
    """`repr(exc)` for a report. Never raises: an exception whose own repr raises (an
    exporter's, say) is named by its type, so the worker reporting it survives."""
    try:
        return repr(exc)
    except BaseException:  # (a repr can raise anything, another such exception included)
        return f"<{type(exc).__qualname__}: its repr() raised>"


def report(key: str, message: str, *, level: str = "warning", **fields: Any) -> bool:
    """Write `message` to stderr unless `key` was reported within INTERVAL seconds.
    Returns whether it was written. Listeners (alert callbacks) see every written report."""
    now = time.monotonic()
    limit = _LIMIT
    with limit.lock:
        last = limit.last.get(key)
        if last is not None and now - last < INTERVAL:
            limit.suppressed[key] = limit.suppressed.get(key, 0) + 1
            return False
        limit.last[key] = now
        suppressed = limit.suppressed.pop(key, 0)
        listeners = list(limit.listeners)
    line: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "level": level,
        "message": message,
        "logger": "fapilog",
        "fapilog.diagnostic": key,
    }
    if suppressed:
        line["fapilog.suppressed"] = suppressed
    line.update(fields)
    try:
        data = orjson.dumps(line, default=repr) + b"\n"
        stream = sys.__stderr__ or sys.stderr
        if stream is not None:
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                buffer.write(data)
            else:
                stream.write(data.decode("utf-8", "replace"))
            stream.flush()
    except Exception:  # stderr closed or broken: nothing more we can do
        pass
    for listener in listeners:
        try:
            listener(key, message, fields)
        except Exception:
            pass
    return True


def add_listener(listener: Listener) -> None:
    with _LIMIT.lock:
        if listener not in _LIMIT.listeners:
            _LIMIT.listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _LIMIT.lock:
        if listener in _LIMIT.listeners:
            _LIMIT.listeners.remove(listener)


def _after_fork_in_child() -> None:
    """A fork while another thread held the lock would leave it locked in the child."""
    _LIMIT.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def reset() -> None:
    """Forget the rate-limit state (tests, and after a reconfiguration)."""
    with _LIMIT.lock:
        _LIMIT.last.clear()
        _LIMIT.suppressed.clear()

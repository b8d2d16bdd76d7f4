"""The levels a configuration sets, and the levels changed at run time.

`configure_levels(settings)` applies a configuration's levels and everything that decides
a capture's fate after the gate: per-exporter levels, the flight recorder's bounds, rate
limits, folding, trace-following sampling (docs/sampling.md). `set_level()` changes the
global level or one logger's in this process, optionally for `ttl` seconds, and writes an
audit record (``fapilog.level.changed``) for each change and each expiry.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from structlog.contextvars import merge_contextvars

from fapilog import _levels
from fapilog._state import NO_FLOOR, STATE, UNCONFIGURED_LEVEL, signals_blocked
from fapilog.capture import admission
from fapilog.capture.context import merge_bound
from fapilog.capture.logger import get_logger, set_capture_floor, set_levels
from fapilog.capture.noise import FOLDING, NOISE, reset_counts
from fapilog.capture.processors import add_trace_context
from fapilog.capture.record import OTelBridge
from fapilog.capture.recorder import DEFERRED, LIMITS, TOTALS
from fapilog.capture.redaction import Redactor
from fapilog.pipeline.direct import AdmittingBridge, DirectBridge, keep_exception, write_released
from fapilog.pipeline.routes import ROUTES
from fapilog.settings import LoggingSettings

__all__ = [
    "AUDIT_EVENT",
    "configure_levels",
    "current_levels",
    "defer_redaction",
    "reset_levels",
    "set_level",
]

AUDIT_EVENT = "fapilog.level.changed"
"""The message of the audit record each level change (and each expiry) writes."""

_LOCK = threading.RLock()


class _Change:
    """A run-time change in force: its generation, when it expires (time.time(), None:
    never), the level of its key before the first of the changes in a row (what an expiry
    puts back), the timer of its expiry, and who made it."""

    __slots__ = ("before", "expires", "generation", "timer", "who")

    def __init__(
        self, generation: int, expires: float | None, before: int | None, who: str | None
    ) -> None:
        self.generation = generation
        self.expires = expires
        self.before = before
        self.who = who
        self.timer: threading.Timer | None = None


class _Changes:
    """The run-time changes in force, by key (None: the global level; else a logger)."""

    def __init__(self) -> None:
        self.generation = 0
        self.active: dict[str | None, _Change] = {}

    def end_all(self) -> None:
        """A configuration (or a reset) ends the run-time changes and their timers."""
        self.generation += 1
        for change in self.active.values():
            if change.timer is not None:
                change.timer.cancel()
        self.active.clear()


_CHANGES = _Changes()


class _Capture:
    """What lowers the caller's gate for flight recorders: the configuration (the buffer,
    the admin token) and the `flight_recorder()` blocks running now (level -> how many);
    and what the configuration needs at the end of the chain."""

    def __init__(self) -> None:
        self.configured = NO_FLOOR
        self.blocks: dict[int, int] = {}
        self.admit = False
        self.routed = False
        self.plain = True

    def floor(self) -> int:
        return min([self.configured, *self.blocks])


_CAPTURE = _Capture()


def _needs_admission(settings: LoggingSettings) -> bool:
    request = settings.request
    return bool(
        request.buffer.enabled
        or settings.admin.token is not None
        or settings.rate_limits
        or settings.fold_repeats is not None
        or request.follow_trace_sampling
    )


def configure_levels(settings: LoggingSettings) -> None:
    """Apply the levels of `settings` (a configuration; run-time changes end here)."""
    buffer = settings.request.buffer
    LIMITS.level = _levels.number_of(buffer.level)
    LIMITS.max_records = buffer.max_records
    LIMITS.max_bytes = buffer.max_bytes
    LIMITS.total_max_bytes = buffer.total_max_bytes
    exporter_levels = {
        name: _levels.number_of(level) for name, level in settings.exporter_levels.items()
    }
    configured = NO_FLOOR
    if buffer.enabled:
        configured = LIMITS.level
    if settings.admin.token is not None:
        configured = min(configured, _levels.number_of("DEBUG"))
    NOISE.configure(dict(settings.rate_limits))
    FOLDING.configure(settings.fold_repeats)
    admission.FOLLOW.on = settings.request.follow_trace_sampling
    with _LOCK:
        _CHANGES.end_all()
        ROUTES.configure(exporter_levels)
        _CAPTURE.configured = configured
        _CAPTURE.admit = _needs_admission(settings)
        _CAPTURE.routed = bool(exporter_levels)
        _CAPTURE.plain = not (
            settings.request.follow_trace_sampling or settings.rate_limits or settings.fold_repeats
        )
        set_levels(
            _levels.number_of(settings.level),
            {name: _levels.number_of(level) for name, level in settings.logger_levels.items()},
            exporter_floor=min(exporter_levels.values(), default=NO_FLOOR),
            capture_floor=_CAPTURE.floor(),
        )
        _apply_capture()


def defer_redaction(chain: list[Any]) -> None:
    """What a record bound for a flight recorder takes of `chain` when it is logged (the
    contextvars, the enrichers), and what only when it is released (redaction); see
    `fapilog.capture.recorder.Deferred`."""
    before = [
        step
        for step in chain
        if step is not keep_exception and not isinstance(step, (Redactor, OTelBridge))
    ]
    if all(step in (merge_contextvars, add_trace_context) for step in before):
        # no enricher that could read them: the trace ids come from the record's context
        before = [step for step in before if step is not add_trace_context]
    # (the same merge, reading structlog's own variables only)
    before = [merge_bound if step is merge_contextvars else step for step in before]
    DEFERRED.set(before, [step for step in chain if isinstance(step, Redactor)])
    DEFERRED.write = FOLDING.write = write_released


def reset_levels() -> None:
    """Back to the unconfigured state (`fapilog.lifecycle.configure.reset`, tests)."""
    NOISE.configure({})
    FOLDING.configure(None)
    admission.FOLLOW.on = False
    reset_counts()
    TOTALS.reset()
    DEFERRED.clear()
    FOLDING.write = None
    with _LOCK:
        _CHANGES.end_all()
        ROUTES.configure({})
        _CAPTURE.__init__()  # type: ignore[misc]
        set_levels(UNCONFIGURED_LEVEL, {}, exporter_floor=NO_FLOOR, capture_floor=NO_FLOOR)
        _apply_capture()


def _apply_capture() -> None:
    """(_LOCK held.) The gate's floor and the end of the chain as the configuration and
    the running `flight_recorder()` blocks need them."""
    floor = _CAPTURE.floor()
    admit = _CAPTURE.admit or bool(_CAPTURE.blocks)
    if floor < STATE.capture_floor:  # lowering: what holds the records first
        _admitting(admit, _CAPTURE.routed, _CAPTURE.plain)
        set_capture_floor(floor)
    else:  # raising: the gates first
        set_capture_floor(floor)
        _admitting(admit, _CAPTURE.routed, _CAPTURE.plain)


def _want_capture(level: int) -> Callable[[], None]:
    """A flight_recorder() block wants records from `level` up while it runs: the gate
    lets them through and admission holds them; the function returned ends that (when
    the last block ends, the gate is back where the configuration put it)."""
    with _LOCK:
        _CAPTURE.blocks[level] = _CAPTURE.blocks.get(level, 0) + 1
        _apply_capture()

    def done() -> None:
        with _LOCK:
            left = _CAPTURE.blocks.get(level, 0) - 1
            if left > 0:
                _CAPTURE.blocks[level] = left
            else:
                _CAPTURE.blocks.pop(level, None)
            _apply_capture()

    return done


def _admitting(admit: bool, routed: bool, plain: bool) -> None:
    """Run admission at the end of the chain (`admit`; `plain`: without trace-following,
    rate limits or folding), and the chain's last processor that applies it and
    per-exporter levels (`routed`) when either is needed."""
    admission.install(admit, plain)
    chain = STATE.chain
    if not chain or type(chain[-1]) not in (DirectBridge, AdmittingBridge):
        return  # (not fapilog's configured chain: capture_logs(), unconfigured)
    wanted = AdmittingBridge if admit or routed else DirectBridge
    if type(chain[-1]) is not wanted:
        chain[-1] = wanted()


STATE.want_capture = _want_capture


def _name_of(level: int | None) -> str | None:
    if level is None:
        return None
    return _levels.level_for_number(level).name


def set_level(
    level: Any, logger: str | None = None, ttl: float | None = None, *, who: str | None = None
) -> None:
    """Change the level of `logger` (and the loggers under it), or the global level
    (``FAPILOG_LEVEL``, for the exporters without a level of their own) when `logger` is
    None, in this process. With `ttl` (seconds) the change reverts on its own afterwards.
    Each change, and each expiry, writes the audit record ``fapilog.level.changed`` (what,
    from, to, ttl, `who` when given). Raises ValueError for an unknown level or a bad ttl.
    A later `configure_logging()` sets the configured levels again.

    It changes this process only: docs/sampling.md says how to reach every worker."""
    name = _levels.normalise(level)
    if not isinstance(name, str) or name not in _levels.BY_NAME:
        raise ValueError(
            f"unknown level {level!r}: use one of {', '.join(_levels.NAMES)} (or a number)"
        )
    if ttl is not None and (not isinstance(ttl, (int, float)) or isinstance(ttl, bool)):
        raise ValueError(f"ttl must be a number of seconds, got {ttl!r}")
    if ttl is not None and not 0 < ttl <= 7 * 86400:
        raise ValueError(f"ttl must be between 0 and 604800 seconds (a week), got {ttl!r}")
    if logger is not None and (not isinstance(logger, str) or not logger.strip()):
        raise ValueError(f"logger must be a logger name, got {logger!r}")
    key = logger.strip() if logger is not None else None
    if STATE.pipeline is None and STATE.autoconfigure is not None:
        STATE.autoconfigure()  # (a configuration sets the levels: it comes first)
    with _LOCK:
        shown_before = _effective(key)
        before = _apply(key, _levels.number_of(name))
        earlier = _CHANGES.active.pop(key, None)
        if earlier is not None:  # a change in a row: an expiry puts back what came before
            before = earlier.before
            if earlier.timer is not None:
                earlier.timer.cancel()
        _CHANGES.generation += 1
        change = _Change(
            _CHANGES.generation, time.time() + ttl if ttl is not None else None, before, who
        )
        _CHANGES.active[key] = change
        if ttl is not None:
            _arm(key, change, ttl)
    _audit(key, shown_before, name, ttl, who, why="set")


def _arm(key: str | None, change: _Change, seconds: float) -> None:
    """(_LOCK held.) Start the timer of `change`'s expiry."""
    with signals_blocked():
        timer = threading.Timer(max(0.0, seconds), _expire, (key, change.generation))
        timer.daemon = True
        timer.name = "fapilog-level-ttl"
        timer.start()
    change.timer = timer


def _apply(key: str | None, level: int | None) -> int | None:
    """Set `key`'s level (None: remove its entry); returns the level it had (None: no
    entry of its own)."""
    per_logger = dict(STATE.logger_levels)
    default = STATE.default_level
    if key is None:
        before: int | None = default
        default = level if level is not None else default
    else:
        before = per_logger.get(key)
        if level is None:
            per_logger.pop(key, None)
        else:
            per_logger[key] = level
    set_levels(default, per_logger)
    ROUTES.changed()
    return before


def _expire(key: str | None, generation: int) -> None:
    """A change's ttl is over: put back what it replaced, unless another change (or a
    configuration) came since."""
    with _LOCK:
        change = _CHANGES.active.get(key)
        if change is None or change.generation != generation:
            return
        del _CHANGES.active[key]
        if change.timer is not None:  # (its own, finished, unless called before its time)
            change.timer.cancel()
        shown_before = _effective(key)
        _apply(key, change.before)
        shown_after = _effective(key)
    _audit(key, shown_before, shown_after, None, change.who, why="expired")


def _rearm_after_fork() -> None:
    """A forked child has none of the parent's timer threads: start its own for the
    changes in force, for the time they have left."""
    global _LOCK
    _LOCK = threading.RLock()
    now = time.time()
    with _LOCK:  # (a change already due expires at once, on its timer's thread)
        for key, change in _CHANGES.active.items():
            if change.expires is not None:
                _arm(key, change, change.expires - now)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rearm_after_fork)


def _effective(key: str | None) -> str:
    """The level `key` has now (the global level for None), as a name."""
    if key is None:
        return _name_of(STATE.default_level) or ""
    entry = STATE.entry_for(key)
    return _name_of(entry if entry is not None else STATE.default_level) or ""


def _audit(key: str | None, before: str, to: str, ttl: float | None, who: Any, *, why: str) -> None:
    fields: dict[str, Any] = {
        "level.logger": key if key is not None else "",
        "level.from": before,
        "level.to": to,
        "level.reason": why,
    }
    if ttl is not None:
        fields["level.ttl"] = float(ttl)
    if who is not None:
        fields["level.who"] = str(who)
    # at WARNING: an operator's change must reach the exporters whatever the levels are
    get_logger("fapilog").warning(AUDIT_EVENT, **fields)


def current_levels() -> dict[str, Any]:
    """The levels in force: global, per logger, per exporter, and the run-time changes
    with the seconds they have left."""
    now = time.time()
    with _LOCK:
        changes = [
            {
                "logger": key,
                "expires_in": round(c.expires - now, 3) if c.expires is not None else None,
            }
            for key, c in _CHANGES.active.items()
        ]
    return {
        "level": _name_of(STATE.default_level),
        "loggers": {name: _name_of(level) for name, level in sorted(STATE.logger_levels.items())},
        "exporters": {name: _name_of(level) for name, level in sorted(ROUTES.levels.items())},
        "changes": changes,
    }

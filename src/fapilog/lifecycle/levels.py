"""The levels a configuration sets, and the levels changed at run time.

`configure_levels(settings)` applies a configuration's levels and everything that decides
a capture's fate after the gate: per-exporter levels, the flight recorder's bounds, rate
limits, folding, trace-following sampling (docs/sampling.md). `set_level()` changes the
global level or one logger's in this process, optionally for `ttl` seconds, and writes an
audit record (``fapilog.level.changed``) for each change and each expiry.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from structlog.contextvars import merge_contextvars

from fapilog import _levels
from fapilog._state import NO_FLOOR, STATE, UNCONFIGURED_LEVEL, signals_blocked
from fapilog.capture import admission
from fapilog.capture.logger import get_logger, set_levels, want_capture
from fapilog.capture.noise import FOLDING, NOISE, reset_counts
from fapilog.capture.processors import add_trace_context
from fapilog.capture.record import OTelBridge
from fapilog.capture.recorder import DEFERRED, LIMITS, TOTALS
from fapilog.capture.redaction import Redactor
from fapilog.pipeline.direct import AdmittingBridge, DirectBridge, keep_exception
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


class _Changes:
    """The run-time changes in force: key (None: the global level; else a logger name) ->
    (generation, expiry as time.time() or None)."""

    def __init__(self) -> None:
        self.generation = 0
        self.active: dict[str | None, tuple[int, float | None]] = {}
        self.timers: list[threading.Timer] = []

    def end_all(self) -> None:
        """A configuration (or a reset) ends the run-time changes and their timers."""
        self.generation += 1
        self.active.clear()
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


_CHANGES = _Changes()


def _needs_admission(settings: LoggingSettings) -> bool:
    request = settings.request
    return bool(
        request.buffer.enabled
        or settings.admin.token is not None
        or settings.rate_limits
        or settings.fold_repeats is not None
        or request.follow_trace_sampling
        or STATE.capture_floor < NO_FLOOR
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
    capture_floor = NO_FLOOR
    if buffer.enabled:
        capture_floor = LIMITS.level
    if settings.admin.token is not None:
        capture_floor = min(capture_floor, _levels.number_of("DEBUG"))
    NOISE.configure(dict(settings.rate_limits))
    FOLDING.configure(settings.fold_repeats)
    admission.FOLLOW.on = settings.request.follow_trace_sampling
    with _LOCK:
        _CHANGES.end_all()
        ROUTES.configure(exporter_levels)
        set_levels(
            _levels.number_of(settings.level),
            {name: _levels.number_of(level) for name, level in settings.logger_levels.items()},
            exporter_floor=min(exporter_levels.values(), default=NO_FLOOR),
            capture_floor=capture_floor,
        )
    plain = not (
        settings.request.follow_trace_sampling or settings.rate_limits or settings.fold_repeats
    )
    _admitting(_needs_admission(settings), bool(exporter_levels), plain)


def defer_redaction(chain: list[Any]) -> None:
    """What a record bound for a flight recorder takes of `chain` when it is logged (the
    contextvars, the enrichers), and what only when it is released (redaction); see
    `fapilog.capture.recorder.Deferred`."""
    skipped = (add_trace_context, keep_exception)
    before = [
        step
        for step in chain
        if step not in skipped and not isinstance(step, (Redactor, OTelBridge))
    ]
    DEFERRED.set(before, [step for step in chain if isinstance(step, Redactor)], merge_contextvars)


def reset_levels() -> None:
    """Back to the unconfigured state (`fapilog.lifecycle.configure.reset`, tests)."""
    NOISE.configure({})
    FOLDING.configure(None)
    admission.FOLLOW.on = False
    _admitting(False, False)
    reset_counts()
    TOTALS.reset()
    DEFERRED.clear()
    with _LOCK:
        _CHANGES.end_all()
        ROUTES.configure({})
        set_levels(UNCONFIGURED_LEVEL, {}, exporter_floor=NO_FLOOR, capture_floor=NO_FLOOR)


def _want_capture(level: int) -> None:
    """A flight_recorder() block wants records from `level` up: the gate lets them
    through from now on, and admission holds them."""
    want_capture(level)
    _admitting(True, ROUTES.active, admission.FOLLOW.plain)


def _admitting(admit: bool, routed: bool, plain: bool = True) -> None:
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
    with _LOCK:
        shown_before = _effective(key)
        before = _apply(key, _levels.number_of(name))
        _CHANGES.generation += 1
        generation = _CHANGES.generation
        expires = time.time() + ttl if ttl is not None else None
        _CHANGES.active[key] = (generation, expires)
    _audit(key, shown_before, name, ttl, who, why="set")
    if ttl is not None:
        with signals_blocked():
            timer = threading.Timer(ttl, _expire, (key, before, generation, who))
            timer.daemon = True
            timer.name = "fapilog-level-ttl"
            timer.start()
        with _LOCK:
            _CHANGES.timers = [t for t in _CHANGES.timers if t.is_alive()] + [timer]


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


def _expire(key: str | None, before: int | None, generation: int, who: str | None) -> None:
    """A change's ttl is over: put back what it replaced, unless another change (or a
    configuration) came since."""
    with _LOCK:
        if _CHANGES.active.get(key, (None,))[0] != generation:
            return
        del _CHANGES.active[key]
        shown_before = _effective(key)
        _apply(key, before)
        shown_after = _effective(key)
    _audit(key, shown_before, shown_after, None, who, why="expired")


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
                "expires_in": round(expires - now, 3) if expires is not None else None,
            }
            for key, (_, expires) in _CHANGES.active.items()
        ]
    return {
        "level": _name_of(STATE.default_level),
        "loggers": {name: _name_of(level) for name, level in sorted(STATE.logger_levels.items())},
        "exporters": {name: _name_of(level) for name, level in sorted(ROUTES.levels.items())},
        "changes": changes,
    }

"""What a request's outcome decides about its logs (docs/sampling.md): its flight recorder,
the debug header, trace-following sampling and the sampling of request events.

`OutcomePlan` is worked out once per configuration. For each request the middleware calls
`begin()` once the server span is current, and `end()` once the request is over and its
request event's level known: `end()` releases the held records (ahead of the request
event) when the request went badly, else discards them, and returns the fields the
request event gets (how many were released, discarded, over the bounds).
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Mapping, MutableMapping
from contextvars import Token
from typing import Any

from opentelemetry import trace

from fapilog import _levels
from fapilog.capture.noise import NOISE
from fapilog.capture.recorder import RECORDER, Recorder
from fapilog.settings import AdminSettings, RequestSettings

__all__ = ["OutcomePlan", "event_kept"]

_WARNING = 30
_random = random.random


def event_kept() -> Token[Recorder | None]:
    """For the request event of a request whose records were released: make it pass
    trace-following sampling too (the outcome wins). The token undoes it."""
    return RECORDER.set(_PASS)


class OutcomePlan:
    """The request settings' buffer, sampling and the admin token, for each request."""

    __slots__ = (
        "_debug_header",
        "_token",
        "active",
        "buffer",
        "floor",
        "follow",
        "rate",
        "slow_ms",
    )

    def __init__(self, settings: RequestSettings, admin: AdminSettings | None) -> None:
        buffer = settings.buffer
        self.buffer = buffer.enabled
        self.floor = _levels.number_of(buffer.level)
        self.slow_ms = buffer.slow_ms
        self.rate = settings.event_sample_rate
        self.follow = settings.follow_trace_sampling
        token = admin.token if admin is not None else None
        self._token = token.get_secret_value().encode() if token is not None else None
        self._debug_header = (
            admin.debug_header.lower().encode("latin-1") if admin is not None else b""
        )
        # whether `begin` can start a recorder at all
        self.active = self.buffer or self.follow or self._token is not None

    def debug_requested(self, scope: Mapping[str, Any]) -> bool:
        """Whether the request carries the debug header with the admin token (compared in
        constant time)."""
        token = self._token
        if token is None:
            return False
        name = self._debug_header
        for key, value in scope.get("headers") or ():
            if key.lower() == name:
                return hmac.compare_digest(bytes(value).strip(), token)
        return False

    def begin(self, scope: MutableMapping[str, Any]) -> Recorder | None:
        """Start the request's recorder, if it gets one (the server span is current)."""
        if self._token is not None and self.debug_requested(scope):
            recorder = Recorder(floor=10, boundary=0)
        else:
            unsampled = self.follow and not _trace_sampled()
            if self.buffer:
                recorder = Recorder(self.floor, _levels.WARN_SEVERITY if unsampled else None)
            elif unsampled:
                recorder = Recorder(None, _levels.WARN_SEVERITY)
            elif RECORDER.get() is None:
                return None
            else:  # a recorder of another request (a connection's task) is not this one's:
                recorder = Recorder(None)  # this one has a closed one, which takes nothing
                recorder.open = False
        recorder.token = RECORDER.set(recorder)
        return recorder

    def end(self, recorder: Recorder | None, level: int, failed: bool, ms: float) -> dict[str, Any]:
        """End the request's recorder: release its records when the request failed, its
        event is at WARNING or above, or it was slow; else discard them. Returns the
        request event's fields about it."""
        if recorder is None:
            return {}
        try:
            RECORDER.reset(recorder.token)
        except ValueError:  # pragma: no cover - ended in another context: nothing to undo
            pass
        slow_ms = self.slow_ms
        keep = (
            failed or level >= _WARNING or recorder.alarm or (slow_ms is not None and ms > slow_ms)
        )
        recorder.released = keep
        count = recorder.close(keep)
        fields: dict[str, Any] = {}
        if count:
            key = "fapilog.recorder.released" if keep else "fapilog.recorder.discarded"
            fields[key] = count
        if recorder.overflowed:
            fields["fapilog.recorder.overflowed"] = recorder.overflowed
        return fields

    def slow(self, ms: float) -> bool:
        return self.slow_ms is not None and ms > self.slow_ms

    def keeps_event(
        self, level: int, failed: bool, status: int | None, ms: float, released: bool
    ) -> bool:
        """Whether the request event is kept: always for failed, slow, 4xx and 5xx
        requests (and warning-or-above events, and requests whose records were
        released); else with the sample rate."""
        rate = self.rate
        if rate >= 1.0 or failed or released or level >= _WARNING or self.slow(ms):
            return True
        if status is not None and status >= 400:
            return True
        if _random() < rate:
            return True
        NOISE.sampled_out += 1
        return False


# current while a released request's event is logged: lets everything through
_PASS = Recorder(floor=0, boundary=0)


def _trace_sampled() -> bool:
    """Whether the current trace is sampled (True without a trace)."""
    context = trace.get_current_span().get_span_context()
    return not context.is_valid or context.trace_flags.sampled

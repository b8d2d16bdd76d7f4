"""Draining the pipeline: `force_flush()`, `shutdown()` with one deadline, and the exits
that must drain (interpreter exit, SIGTERM).

SIGTERM's default action kills the process without running `atexit`, so nothing queued
would be delivered: where SIGTERM still has its default action, fapilog handles it (drain,
bounded by ``shutdown_timeout``, then die by SIGTERM as before). Exiting, the other
processors on the providers fapilog uses are flushed within the same deadline
(`fapilog.lifecycle.foreign`). A server that installs its
own handler (uvicorn, gunicorn) restores this one when it finishes and re-raises the signal,
which then drains here. A handler the application set is never replaced.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fapilog import _diag
from fapilog._state import STATE, Pipeline, start_worker
from fapilog.capture.noise import FOLDING
from fapilog.lifecycle import wakeup
from fapilog.lifecycle.foreign import flush_others
from fapilog.pipeline.accounting import intake_mark
from fapilog.pipeline.router import ExportProcessor, shutdown_processors

if TYPE_CHECKING:
    from fapilog.otel.bridge import Bridge

__all__ = [
    "add_shutdown_hook",
    "at_exit",
    "begin_exit",
    "drain_in_background",
    "force_flush",
    "install_sigterm_handler",
    "shutdown",
    "sigterm_drain",
    "uninstall_sigterm_handler",
]


def begin_exit() -> None:
    """The process has begun to exit (see `ProcessState.exit_started`): from now on every
    flush and drain shares one deadline."""
    if STATE.exit_started is None:
        STATE.exit_started = time.monotonic()


def _budget(timeout: float | None, shutdown_timeout: float, *, flush: bool = False) -> float:
    """Seconds a flush or drain may take: `timeout` (default `shutdown_timeout`), and once
    the process is exiting, no more than what the one exit deadline has left; a flush then
    leaves the last part of the deadline to the final drain (see `_last_part`)."""
    budget = shutdown_timeout if timeout is None else timeout
    started = STATE.exit_started
    if started is not None:
        left = started + shutdown_timeout - time.monotonic()
        budget = min(budget, left - _last_part(shutdown_timeout) if flush else left)
    return max(0.0, budget)


def _last_part(shutdown_timeout: float) -> float:
    """The part of the exit deadline that belongs to the final drain: it delivers what was
    logged after the last flush (a server's last lines) to the exporters that work, even
    when a dead exporter made the flush, or the server's own shutdown, take all the rest;
    so the final drain has it even past the deadline, within the exit's margin."""
    return min(_LAST_PART, shutdown_timeout * 0.2)


_LAST_PART = 0.25  # seconds, at most


def force_flush(timeout: float | None = None) -> bool:
    """Export everything logged so far; wait at most `timeout` seconds (default
    `shutdown_timeout`; while the process exits, at most what its one exit deadline has
    left). Returns whether everything logged so far was settled in time: exported, or
    dropped and counted in `stats()` (an exporter that failed); False when the timeout came
    first or a worker is gone. As OpenTelemetry's `force_flush`, it says whether the flush
    completed, not whether every export succeeded: `stats()` tells that."""
    pipeline = STATE.pipeline
    bridge: Bridge | None = STATE.bridge
    if bridge is None or pipeline is None:
        return True
    budget = _budget(timeout, pipeline.settings.shutdown_timeout, flush=True)
    deadline = time.monotonic() + budget
    FOLDING.flush()  # the summary lines of runs of repeated records
    ok = bridge.flush(budget)
    for processor in list(pipeline.processors):
        ok = processor.force_flush(max(0.0, deadline - time.monotonic())) and ok
    return ok


def shutdown(timeout: float | None = None) -> bool:
    """Drain and stop the pipeline, at most `timeout` seconds (default `shutdown_timeout`),
    however slow or dead an exporter is (while the process exits, at most what its one exit
    deadline has left). Records still queued at the deadline are counted as dropped.
    Logging after shutdown is counted and discarded. Returns whether all drained and shut
    down cleanly (False too when an exporter's own `shutdown()` raised)."""
    with STATE.lock:
        pipeline = STATE.pipeline
        bridge: Bridge | None = STATE.bridge
        if pipeline is None or STATE.shut_down or bridge is None:
            return True
        if STATE.draining_thread is not None:  # a signal handler, inside this very drain
            return False
        STATE.draining_thread = threading.get_ident()
        FOLDING.flush()
        try:
            return _shutdown(pipeline, bridge, timeout)
        finally:
            STATE.draining_thread = None
            deferred, STATE.deferred_signal = STATE.deferred_signal, None
            if deferred is not None:  # a SIGTERM arrived during the drain: act on it now
                _die_by(deferred)


def _shutdown(pipeline: Pipeline, bridge: Bridge, timeout: float | None) -> bool:
    """`shutdown()`'s work (STATE.lock held)."""
    shutdown_timeout = pipeline.settings.shutdown_timeout
    now = time.monotonic()
    deadline = now + _budget(timeout, shutdown_timeout)
    # exporters that work get at least the last part of the exit deadline
    late = max(deadline, now + _last_part(shutdown_timeout)) if STATE.exit_started else None
    ok = bridge.shutdown(max(0.0, (late or deadline) - now))
    # exiting: the provider's other processors get fapilog's last records too; flushed
    # alongside fapilog's exporters, abandoned at the same deadline (lifecycle.foreign)
    others = None
    if STATE.exit_started is not None:
        until = late or deadline
        try:
            others = flush_others(pipeline.provider, pipeline.router, until - time.monotonic())
        except Exception as exc:  # (never in the way of fapilog's own drain, nor raised)
            _diag.report("exit-others", f"fapilog could not flush the other processors: {exc!r}")
    mark = intake_mark()  # nothing logged from now on reaches these exporters
    for processor in pipeline.processors:
        if processor.intake_end is None:
            processor.intake_end = mark
    ok = (
        shutdown_processors(
            pipeline.processors + STATE.retired,
            max(0.0, deadline - time.monotonic()),
            working_until=late,
        )
        and ok
    )
    for hook in list(STATE.shutdown_hooks):
        try:
            ok = hook(max(0.0, deadline - time.monotonic())) and ok
        except Exception:  # never fail a shutdown
            ok = False
    if others is not None:
        ok = others.wait(late or deadline) and ok
    STATE.shut_down = True
    return ok


def add_shutdown_hook(hook: Callable[[float], bool]) -> None:
    """Have `shutdown()` (at exit, on SIGTERM, or called) also run `hook(seconds_left)`,
    after the log exporters drained, within the same deadline. For fapilog's own span
    export (`fapilog.otel.otlp`): the TracerProvider's atexit hook never runs when the
    process dies by SIGTERM."""
    if hook not in STATE.shutdown_hooks:
        STATE.shutdown_hooks.append(hook)


def drain_in_background(processors: list[ExportProcessor], timeout: float) -> None:
    """Drain exporters a reconfiguration replaced, bounded, without holding up the caller."""

    def drain() -> None:
        for processor in processors:
            processor.shutdown(timeout)

    if start_worker("retire", drain) is None:  # interpreter shutdown: drain here
        drain()


def at_exit() -> None:
    """The interpreter is exiting (also in a forked child: its queues were emptied at fork,
    the parent delivers what was queued then, so it drains only its own records)."""
    begin_exit()
    try:
        shutdown()
    except Exception:  # pragma: no cover - never fail interpreter exit
        pass


def install_sigterm_handler(*, quit_too: bool = False) -> None:
    """Drain on SIGTERM where SIGTERM still has its default action (see module doc); with
    `quit_too`, on SIGQUIT too (a gunicorn worker's quick shutdown). Only the main thread can
    set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    signals = [signal.SIGTERM]
    if quit_too and hasattr(signal, "SIGQUIT"):
        signals.append(signal.SIGQUIT)
    for signum in signals:
        try:
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _on_sigterm)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            pass
    wakeup.watch(_on_sigterm)  # make sure the handler runs (fapilog.lifecycle.wakeup)


def sigterm_drain() -> Callable[[int, Any], None]:
    """fapilog's SIGTERM handler: drain (within the one exit deadline), then restore the
    default action and end the process by SIGTERM, as the default action would have."""
    return _on_sigterm


def uninstall_sigterm_handler() -> None:
    for name in ("SIGTERM", "SIGQUIT"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is _on_sigterm:
            signal.signal(signum, signal.SIG_DFL)


def _on_sigterm(signum: int, frame: Any) -> None:
    wakeup.handler_began()
    begin_exit()
    if STATE.draining_thread == threading.get_ident():
        # the signal interrupted this thread's own drain (the exit drain of a
        # multiprocessing worker that `Pool.terminate()` signals): ending the process now
        # would cut that drain short; it ends the process by this signal when it is done
        STATE.deferred_signal = signum
        return
    try:
        shutdown()
    finally:
        _die_by(signum)


def _die_by(signum: int) -> None:
    """End the process by `signum`, as its default action would have. A process that is
    PID 1 (a container's only process, without an init) is immune to a signal at its
    default action, so it ends with the shell's code for that signal (128 + signum)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    if os.getpid() == 1:
        os._exit(128 + signum)

"""At exit, the other processors on the providers fapilog uses are flushed too, within the
same deadline.

The LoggerProvider fapilog emits through may carry log record processors besides fapilog's
Router: the SDK's batch processor that ``opentelemetry-instrument``'s stock configuration
adds for ``OTEL_LOGS_EXPORTER=otlp``, an application's own. The global TracerProvider may
carry span processors besides fapilog's. A process that dies by SIGTERM never runs their
providers' atexit hooks, so what they hold (a server's last lines) would be lost; and a
provider fapilog owns has no such hook at all. So when the process exits (SIGTERM, the
interpreter's exit), once fapilog's bridge has emitted its last records, each of them is
flushed in a daemon thread of its own, bounded by what the one exit deadline has left. One
still flushing at the deadline (a hung collector) is abandoned: the process exits all the
same, a diagnostic on stderr names it, and ``fapilog.stats()["abandoned_processors"]``
counts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from fapilog import _diag
from fapilog._state import STATE, start_worker, worker_thread
from fapilog.otel.logs import LoggerProvider, other_log_processors
from fapilog.otel.trace import other_span_processors, sdk_tracer_provider_of

__all__ = ["OthersFlush", "flush_others"]


class OthersFlush:
    """The flushes `flush_others` started: `wait(until)` waits for them until `until`
    (time.monotonic()) and abandons those still running."""

    def __init__(self, jobs: list[tuple[str, threading.Thread | None]]) -> None:
        self.jobs = jobs

    def wait(self, until: float) -> bool:
        """Whether every flush finished by `until`; those that did not are abandoned,
        counted and named on stderr."""
        abandoned = []  # (a flush that found no thread to run in is not waited for)
        for name, thread in self.jobs:
            if thread is not None:
                thread.join(max(0.0, until - time.monotonic()))
            if thread is None or thread.is_alive():
                abandoned.append(name)
        if abandoned:
            STATE.abandoned_processors += len(abandoned)
            _diag.report(
                "exit-abandoned",
                "fapilog: the exit deadline (shutdown_timeout) passed with "
                f"{', '.join(abandoned)} still flushing: abandoned, what it held is lost",
                level="error",
                processors=abandoned,
            )
        return not abandoned


def flush_others(provider: LoggerProvider, mine: Any, timeout: float) -> OthersFlush:
    """Start flushing the processors on `provider` other than `mine` (fapilog's Router) and
    those on the TracerProvider in use other than fapilog's, each in its own daemon thread
    and told to take at most `timeout` seconds."""
    targets: list[tuple[str, Callable[[int], Any]]] = []
    logs = other_log_processors(provider, mine)
    if logs is None:  # the provider's processors cannot be told apart: flush them all
        targets.append((_named(provider), provider.force_flush))
    else:
        targets += [(_named(processor), processor.force_flush) for processor in logs]
    tracer_provider = _tracer_provider()
    if tracer_provider is not None:
        spans = other_span_processors(tracer_provider)
        if spans is None:
            targets.append((_named(tracer_provider), tracer_provider.force_flush))
        else:
            targets += [(_named(processor), processor.force_flush) for processor in spans]
    millis = int(max(0.0, timeout) * 1000)
    jobs = [
        (name, start_worker("flush-other", _quietly, name, flush, millis))
        for name, flush in targets
    ]
    return OthersFlush(jobs)


def _tracer_provider() -> TracerProvider | None:
    """The SDK TracerProvider in use: the global one, else the one fapilog created."""
    installed = sdk_tracer_provider_of(trace.get_tracer_provider())
    if installed is not None:
        return installed
    own: TracerProvider | None = STATE.tracer_provider
    return own


def _named(processor: object) -> str:
    return type(processor).__name__


def _quietly(name: str, flush: Callable[[int], Any], millis: int) -> None:
    # as a fapilog worker: what the processor's exporter logs meanwhile (the SDK's retry
    # warnings) goes to stderr, not into a pipeline that is shutting down
    with worker_thread():
        try:
            flush(millis)
        except Exception as exc:  # another library's processor: its failure is only reported
            _diag.report(f"flush-other:{name}", f"fapilog: flushing {name} raised {exc!r}")

"""Process memory and CPU for every event, without a system call per event.

A daemon thread samples the process (psutil) at most every `interval` seconds, woken only by
its stop `Event` or the timeout, and publishes a new small dict; the `ProcessMetrics`
processor attaches the latest dict to each event (one `dict.update`). After `fork()` the
child marks the sampler stale and the next event in the child starts a fresh one (the
parent's thread does not exist there, and the pid changed). The thread stops on its own
once fapilog is shut down.

Attributes (OTel semantic-convention names): ``process.memory.usage`` (resident set size,
bytes) and ``process.cpu.utilization`` (CPU time used since the previous sample divided by
the elapsed time and the CPUs available to the process, 0..1).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import psutil

from fapilog import _diag
from fapilog._state import STATE, start_worker, worker_thread

__all__ = ["ProcessMetrics", "ProcessSampler", "sampler", "stop_sampler"]

MEMORY = "process.memory.usage"
CPU = "process.cpu.utilization"


def _cpu_count(process: psutil.Process) -> int:
    try:
        return max(1, len(process.cpu_affinity()))
    except (AttributeError, psutil.Error, OSError):  # not on macOS / restricted
        return max(1, psutil.cpu_count() or 1)


class ProcessSampler:
    """The background sampler; `snapshot` is the latest sample (replaced, never mutated)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.snapshot: dict[str, Any] = {}
        self.stale = False  # set in a forked child: restart on next use
        self.samples = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._cpus = _cpu_count(self._process)
        self._last_cpu = 0.0
        self._last_wall = 0.0

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Take a first sample now (so the first event has values) and start the thread."""
        with self._lock:
            if self.running:
                return
            self._stop = threading.Event()
            self._first_sample()
            self._thread = start_worker("process-metrics", self._run, self._stop)

    def stop(self, timeout: float = 1.0) -> None:
        with self._lock:
            self._stop.set()
            thread = self._thread
            self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        with worker_thread():  # anything it logs goes to stderr, not the pipeline
            while not stop.wait(self.interval):
                if not STATE.is_configured():
                    return  # fapilog was shut down
                self.sample()

    def _first_sample(self) -> None:
        """Memory now; CPU as the average since the process started."""
        try:
            process = self._process
            with process.oneshot():
                times = process.cpu_times()
                rss = process.memory_info().rss
                created = process.create_time()
            cpu = times.user + times.system
            now = time.time()
            elapsed = max(now - created, 1e-6)
            self._last_cpu, self._last_wall = cpu, time.monotonic()
            self._publish(rss, cpu / elapsed / self._cpus)
        except (psutil.Error, OSError) as exc:
            _diag.report("process-metrics", f"fapilog cannot sample the process: {exc!r}")

    def sample(self) -> None:
        try:
            process = self._process
            with process.oneshot():
                times = process.cpu_times()
                rss = process.memory_info().rss
            cpu = times.user + times.system
            wall = time.monotonic()
            elapsed = wall - self._last_wall
            utilization = (cpu - self._last_cpu) / elapsed / self._cpus if elapsed > 0 else 0.0
            self._last_cpu, self._last_wall = cpu, wall
            self._publish(rss, utilization)
        except (psutil.Error, OSError) as exc:
            _diag.report("process-metrics", f"fapilog cannot sample the process: {exc!r}")

    def _publish(self, rss: int, utilization: float) -> None:
        self.snapshot = {MEMORY: int(rss), CPU: round(min(max(utilization, 0.0), 1.0), 4)}
        self.samples += 1

    def after_fork_in_child(self) -> None:
        self._thread = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.stale = True

    def restart(self) -> None:
        """In a forked child: a new psutil handle for the new pid, a new thread."""
        with self._lock:
            if not self.stale:
                return
            self._process = psutil.Process()
            self.stale = False
        self.start()


class ProcessMetrics:
    """The enricher: the latest process sample on every event (no system call here)."""

    __slots__ = ("_sampler",)

    def __init__(self, sampler: ProcessSampler) -> None:
        self._sampler = sampler

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        sampler = self._sampler
        if sampler.stale:
            try:
                sampler.restart()
            except Exception:  # never raise into the application
                pass
        event_dict.update(sampler.snapshot)
        return event_dict


def sampler(interval: float) -> ProcessSampler:
    """The process's one sampler (`STATE.sampler`), running, sampling every `interval` s."""
    current: ProcessSampler | None = STATE.sampler
    if current is None:
        current = STATE.sampler = ProcessSampler(interval)
    if current.interval != interval:
        current.stop()  # a thread sleeping on the old interval: start one on the new
        current.interval = interval
    if current.stale:
        current.restart()
    else:
        current.start()
    return current


def stop_sampler() -> None:
    if STATE.sampler is not None:
        STATE.sampler.stop()


def _after_fork_in_child() -> None:
    if STATE.sampler is not None:
        STATE.sampler.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

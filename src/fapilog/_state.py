"""The process state: everything `configure_logging()` builds, in one object.

`STATE.pipeline` is what the last `configure_logging()` built (settings, LoggerProvider,
router, exporter processors, enricher chain), replaced as a whole by the next call: it is
built first, then swapped in with one assignment. The rest of `STATE` lives as long as the
process: the bridge that loggers hand records to, the processor chain (one list, changed in
place, because every logger holds it), the levels, and the hooks other layers register.

This module imports nothing of fapilog at run time (types only, and none of a module that
imports this one), so every layer can read the state without importing the layers above it;
only `fapilog.lifecycle` writes the pipeline. The objects of those upper layers are held as
`Any`, each attribute's comment naming its type; their modules read them back typed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from structlog.typing import Processor

    from fapilog.otel.logs import LoggerProvider
    from fapilog.settings import LoggingSettings

__all__ = [
    "Pipeline",
    "NO_FLOOR",
    "ProcessState",
    "STATE",
    "UNCONFIGURED_LEVEL",
    "hand_over_gil",
    "signals_blocked",
    "start_worker",
    "worker_thread",
]


class Pipeline:
    """What one `configure_logging()` call built."""

    __slots__ = ("enrichers", "owns_provider", "processors", "provider", "router", "settings")

    def __init__(
        self,
        *,
        settings: LoggingSettings,
        provider: LoggerProvider,
        owns_provider: bool,
        router: Any,
        processors: list[Any],
        enrichers: Any,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.owns_provider = owns_provider  # fapilog created it (else: attached to another's)
        self.router = router  # fapilog.pipeline.router.Router: fans records out
        self.processors = processors  # [fapilog.pipeline.router.ExportProcessor], one each
        self.enrichers = enrichers  # fapilog.capture.enrichers.EnricherChain | None


def hand_over_gil(attempt: int) -> None:
    """Let another thread that wants the interpreter run now (a queue's worker, when its
    producer is outrunning it). The first `attempt` (0) is `os.sched_yield()`: it releases
    the GIL and gives up the CPU, so the thread woken by the release takes the GIL first
    (`time.sleep(0)` releases it too, but on Python 3.10 the caller mostly took it back
    before the worker woke: a 50,000-event burst shed thousands of records there). A later
    attempt, the queue still crowded, sleeps `HAND_OVER_SLEEP` (the worker gets a slice even
    when it runs slowly, under a tracer say); the caller waits at most that long per
    attempt, and only while its queue is over three quarters full."""
    if attempt == 0:
        _YIELD()
    else:
        time.sleep(HAND_OVER_SLEEP)


HAND_OVER_SLEEP = 0.00005  # seconds (50 µs)


_YIELD: Callable[[], object] = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


# The loggers' level before any configuration: every event reaches the chain's first step,
# which configures fapilog from the environment and then applies the configured level
# (`fapilog.capture.logger._configure_first`): FAPILOG_LEVEL=debug keeps a first debug line,
# FAPILOG_LEVEL=warning drops a first info line.
UNCONFIGURED_LEVEL = 0
# above every level: no exporter level, no recorder lowers the gate
NO_FLOOR = 100


class ProcessState:
    """The one process-state object (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # configure, shutdown and reset hold it
        self.pipeline: Pipeline | None = None
        self.shut_down = False
        self.pid = os.getpid()  # the process the pipeline was built in
        # when this process began to exit (time.monotonic()): the lifespan's shutdown, a
        # SIGTERM, the interpreter's exit; every flush and drain until the process is gone
        # shares the one deadline `shutdown_timeout` counted from here
        self.exit_started: float | None = None
        # the thread running `shutdown()` now, and a SIGTERM that arrived on that very thread
        # meanwhile: it ends the process once that drain is done (lifecycle.drain)
        self.draining_thread: int | None = None
        self.deferred_signal: int | None = None
        # [ExportProcessor] replaced by a reconfiguration (still draining, still counted)
        self.retired: list[Any] = []
        # fapilog.otel.bridge.Bridge, where loggers hand captured records; None before
        # configuration and after shutdown
        self.bridge: Any = None
        # configures fapilog from the environment when the first record arrives unconfigured
        # (returns the bridge, or None)
        self.autoconfigure: Callable[[], Any] | None = None
        self.dropped_unconfigured = 0  # records logged after shutdown, before reconfiguring
        # other processors on the providers in use still flushing at the exit deadline,
        # abandoned (lifecycle.foreign)
        self.abandoned_processors = 0
        # the processor chain every logger runs: one list, changed in place
        self.chain: list[Processor] = []
        self.default_level = UNCONFIGURED_LEVEL  # stdlib number
        self.logger_levels: dict[str, int] = {}  # per logger name (dotted prefixes apply)
        # the lowest level any exporter named in exporter_levels takes (100: none named)
        self.exporter_floor = NO_FLOOR
        # the lowest level a flight recorder or the debug header captures (100: neither)
        self.capture_floor = NO_FLOOR
        # lowers capture_floor to a level while a flight_recorder() block runs; returns
        # what ends that (set by fapilog.lifecycle.levels)
        self.want_capture: Callable[[int], Callable[[], None]] = lambda level: lambda: None
        # called after the loggers' levels changed (stdlib routing follows them)
        self.level_listeners: list[Callable[[], None]] = []
        self.routers: dict[int, Any] = {}  # id(provider) -> the Router added to it (once)
        # called by shutdown() with the seconds left, after the exporters drained
        self.shutdown_hooks: list[Callable[[float], bool]] = []
        # called with the new settings after every configure_logging()
        self.listeners: list[Callable[[LoggingSettings], None]] = []
        # idents of fapilog's own threads: what they log must not re-enter the pipeline
        self.worker_ids: set[int] = set()
        # the LoggerProvider fapilog created and installed globally (kept across a reset:
        # the OpenTelemetry global can be set only once per process)
        self.own_provider: LoggerProvider | None = None
        self.tracer_provider: Any = None  # the SDK TracerProvider fapilog created, if any
        # record-only mode (`fapilog config --app`): each configure_logging() call is
        # validated and appended here, as a `Recorded`, and nothing is configured
        self.recording: list[Any] | None = None
        self.sampler: Any = None  # the process-metrics sampler, once metrics were enabled
        self.stdlib: Any = None  # what routing stdlib logging changed (capture.stdlib)
        self.excepthooks: Any = None  # the unhandled-exception hooks (lifecycle.excepthook)
        self.atexit_registered = False
        self.multiprocessing_hooked = False  # (lifecycle.fork)
        self.child_drain_pid = 0  # the process whose multiprocessing exit drains (lifecycle.fork)
        self.stdlib_guard = False  # logging configuration functions wrapped (capture.stdlib)
        self.distro_configured = False  # fapilog's opentelemetry-instrument configurator ran

    @property
    def settings(self) -> LoggingSettings | None:
        pipeline = self.pipeline
        return pipeline.settings if pipeline is not None else None

    def is_configured(self) -> bool:
        return self.pipeline is not None and not self.shut_down

    def entry_for(self, name: str) -> int | None:
        """The level logger_levels gives logger `name`: its own entry or its closest
        dotted ancestor's, if any."""
        levels = self.logger_levels
        if not levels:
            return None
        probe = name
        while True:
            if probe in levels:
                return levels[probe]
            if "." not in probe:
                return None
            probe = probe.rsplit(".", 1)[0]

    def put(self, record: Any) -> None:
        """Hand a captured record to the bridge (configuring fapilog first if needed)."""
        bridge = self.bridge
        if bridge is None:
            hook = self.autoconfigure
            bridge = hook() if hook is not None else None
            if bridge is None:
                self.dropped_unconfigured += 1
                return
        bridge.put(record)

    def after_fork_in_child(self) -> None:
        """A lock held by another thread at fork time stays held in the child: replace it;
        the parent's worker threads do not exist in the child."""
        self.lock = threading.RLock()
        self.worker_ids = set()
        self.exit_started = None
        self.draining_thread = None
        self.deferred_signal = None


STATE = ProcessState()


def start_worker(name: str, run: Callable[..., object], *args: object) -> threading.Thread | None:
    """Start the daemon thread `fapilog-{name}` running `run(*args)`, with the process's
    signals blocked in it (`signals_blocked`); None where no thread can be started
    (interpreter shutdown, thread limit): the caller then works synchronously."""
    thread = threading.Thread(target=run, args=args, name=f"fapilog-{name}", daemon=True)
    try:
        with signals_blocked():
            thread.start()
    except RuntimeError:  # can't start new thread / interpreter shutdown
        return None
    return thread


# The signals sent to a process as a whole (by `kill`, a terminal, a supervisor, a pool's
# `terminate()`). The kernel hands such a signal to any one thread that does not block it,
# and it interrupts only that thread's system call; CPython runs the Python handler in the
# main thread, when that thread next runs bytecode. Given to a fapilog worker, a SIGTERM
# would leave a main thread blocked in a C call (a multiprocessing lock, a pipe read)
# asleep with its handler pending, for ever: a Pool worker that `terminate()` signals
# while it waits for a task never ends. fapilog's threads block them, so the kernel gives
# them to a thread of the application (the main thread, unless it blocks them itself).
# Faults (SIGSEGV, SIGFPE, ...) and SIGPIPE go to the thread that caused them: not here.
_PROCESS_SIGNALS = frozenset(
    getattr(signal, name)
    for name in (
        "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM",
        "SIGCHLD", "SIGWINCH", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG",
    )
    if hasattr(signal, name)
)  # fmt: skip


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Block the process-wide signals (`_PROCESS_SIGNALS`) in this thread for the block's
    duration: a thread started inside inherits the mask (also the threads an SDK component
    starts in its constructor). A signal that arrives meanwhile waits, and is delivered
    when the mask is restored. A no-op where threads have no signal mask (Windows)."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# how long a drain waits for a queue's lock once the queue's worker has missed the deadline
LOCK_WAIT_AT_EXIT = 0.5


def under_lock_at_exit(lock: Any, what: str, work: Callable[[], bool]) -> bool:
    """`work()` with `lock` held, waiting at most `LOCK_WAIT_AT_EXIT` for it (a queue's
    `finish_shutdown()`, once its worker missed the deadline); see `stuck_at_exit`."""
    if not lock.acquire(timeout=LOCK_WAIT_AT_EXIT):
        return stuck_at_exit(what)
    try:
        return work()
    finally:
        lock.release()


def stuck_at_exit(what: str) -> bool:
    """A queue's worker missed the exit deadline and holds the queue's lock, stuck itself
    (on a lock of code the signal interrupted: a tracer's, a profiler's). fapilog never
    waits for a lock it does not own at exit: say so on stderr, without taking any lock,
    and return False (not drained)."""
    message = (
        f'{{"level":"error","logger":"fapilog","message":"fapilog: the {what} worker is '
        'stuck at exit; what it still held is lost uncounted"}\n'
    )
    try:
        os.write(2, message.encode())
    except OSError:  # pragma: no cover - no stderr
        pass
    return False


class worker_thread:
    """Context manager marking the current thread as one of fapilog's own workers for its
    duration: what it logs (an SDK warning, an exporter's HTTP library) goes to stderr
    instead of re-entering the pipeline."""

    __slots__ = ("_ident",)

    def __enter__(self) -> None:
        self._ident = threading.get_ident()
        STATE.worker_ids.add(self._ident)

    def __exit__(self, *exc: object) -> None:
        STATE.worker_ids.discard(self._ident)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=STATE.after_fork_in_child)

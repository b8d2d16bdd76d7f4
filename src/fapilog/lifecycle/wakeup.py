"""Making sure fapilog's SIGTERM drain runs: the wake-up watcher.

CPython runs a Python signal handler in the main thread, when that thread next runs
bytecode, or when the system call it sleeps in fails with EINTR. The kernel interrupts
only the thread it gives the signal to. So a signal that lands just before the main thread
goes to sleep (after its last check, before the system call), or that the kernel gives to
another of the application's threads, leaves the handler pending while the main thread
sleeps, for ever. A multiprocessing Pool worker that is about to wait for its next task
when `Pool.terminate()` signals it is exactly this: the worker never drains, never ends,
and the pool's parent waits for it for ever.

CPython's C-level handler also writes the signal's number to the wake-up fd
(`signal.set_wakeup_fd`), from whichever thread took the signal. Where no one else uses
that fd (asyncio's and trio's loops set their own, and then wake the main thread
themselves), fapilog sets it to a pipe that a watcher thread reads. For a signal whose
handler is fapilog's drain, the watcher waits `GRACE` seconds for the handler to begin
and, if it has not, sends the signal again to the main thread itself
(`signal.pthread_kill`): its sleeping system call fails with EINTR, and the pending
handler runs. The watcher blocks signals itself, takes no lock the main thread can hold,
and sleeps in `read()` while no signal arrives.
"""

from __future__ import annotations

# (imported before fapilog's at-fork hook is registered, below: see `_after_fork_in_child`)
import asyncio.events  # noqa: F401
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from fapilog._state import start_worker

__all__ = ["GRACE", "handler_began", "watch"]

# how long the watcher lets a pending handler take to begin before it wakes the main thread
GRACE = 0.1


class _Watcher:
    __slots__ = ("began", "handler", "pid", "read_fd", "write_fd")

    def __init__(self, handler: Callable[[int, Any], None], read_fd: int, write_fd: int) -> None:
        self.handler = handler
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.pid = os.getpid()
        self.began = threading.Event()  # set by the handler, first thing

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:  # pragma: no cover - already closed
                pass


_watcher: _Watcher | None = None


def watch(handler: Callable[[int, Any], None]) -> None:
    """Watch for signals whose handler is `handler` (fapilog's drain) and make sure it runs
    (module doc). From the main thread, once per process; nothing where the wake-up fd is
    already someone else's, or where threads have no signal mask (Windows)."""
    global _watcher
    if (_watcher is not None and _watcher.pid == os.getpid()) or not hasattr(
        signal, "pthread_kill"
    ):
        return
    try:
        read_fd, write_fd = os.pipe()  # not inherited by exec'd children (PEP 446)
    except OSError:  # pragma: no cover - out of file descriptors
        return
    watcher = _Watcher(handler, read_fd, write_fd)
    try:
        os.set_blocking(write_fd, False)
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread
        watcher.close()
        return
    if previous != -1:  # another library wakes the main thread: leave it theirs
        signal.set_wakeup_fd(previous)
        watcher.close()
        return
    if start_worker("signal-watcher", _run, watcher) is None:
        signal.set_wakeup_fd(-1)
        watcher.close()
        return
    _watcher = watcher


def handler_began() -> None:
    """fapilog's handler began: the watcher need not wake the main thread."""
    watcher = _watcher
    if watcher is not None:
        watcher.began.set()


def _run(watcher: _Watcher) -> None:
    while True:
        try:
            data = os.read(watcher.read_fd, 64)  # no timeout: an idle worker costs nothing
        except OSError:  # pragma: no cover - closed after a fork
            return
        if not data:  # pragma: no cover - closed
            return
        for signum in set(data):
            if signal.getsignal(signum) is not watcher.handler or watcher.began.wait(GRACE):
                continue
            try:  # the main thread sleeps with the handler pending: interrupt its sleep
                signal.pthread_kill(threading.main_thread().ident or 0, signum)
            except (OSError, ValueError):  # pragma: no cover - the main thread is gone
                return


def _after_fork_in_child() -> None:
    """The child has the parent's pipe as its wake-up fd and no watcher thread: a pipe and
    a watcher of its own (the parent's watcher would otherwise read the child's signals).
    From Python 3.12, asyncio's own at-fork hook has cleared the wake-up fd by now, in every
    child, whoever set it (after-fork hooks run in the order they were registered, and
    asyncio's was registered first: imported above): no wake-up fd is one to take too."""
    global _watcher
    watcher, _watcher = _watcher, None
    if watcher is None:
        return
    try:
        current = signal.set_wakeup_fd(-1)
        if current not in (watcher.write_fd, -1):  # someone else's since: leave it theirs
            signal.set_wakeup_fd(current)
            watcher.close()
            return
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        return
    watcher.close()
    watch(watcher.handler)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

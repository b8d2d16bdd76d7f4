"""What a child process needs (prefork servers, multiprocessing): its own ``process.pid``
in the Resource, its exit drain, and gunicorn's worker signals.

The queues themselves start empty in a forked child (`fapilog.pipeline`): the parent keeps
and exports what was queued at fork time, so nothing is lost or duplicated.

multiprocessing's children end with `os._exit()`, which skips `atexit`; before it they run
multiprocessing's own exit finalizers. So fapilog's drain is one of those finalizers in every
multiprocessing child that logs: registered when the child configures fapilog itself (any
start method: fork, spawn, forkserver; pools, `ProcessPoolExecutor`, Granian's and
hypercorn's workers), or, for a child forked from a configured parent, right after the fork.
From Python 3.13, those finalizers run as an `atexit` handler of the child, registered before
anything the child registers: fapilog's own atexit drain leaves the exit to them there.
"""

from __future__ import annotations

import os
import sys

from fapilog._state import STATE
from fapilog.integrations.gunicorn import patch_worker_after_fork
from fapilog.lifecycle.drain import at_exit
from fapilog.otel.logs import update_resource

__all__ = ["at_interpreter_exit", "register_child_drain"]


def _refresh_pid_after_fork() -> None:
    """A forked child (prefork servers) logs its own process.pid, not its parent's."""
    pipeline = STATE.pipeline
    if pipeline is None or not pipeline.owns_provider:
        return
    try:
        update_resource(pipeline.provider, {"process.pid": os.getpid()})
    except Exception:  # pragma: no cover - never fail a fork
        pass


def _gunicorn_worker_after_fork() -> None:
    """A configured process forked by gunicorn (``--preload``): see `fapilog.gunicorn`."""
    if not STATE.is_configured() or "gunicorn.workers.base" not in sys.modules:
        return
    try:
        patch_worker_after_fork()
    except Exception:  # pragma: no cover - never fail a fork
        pass


def _before_fork() -> None:
    """A multiprocessing child (``fork`` start method) ends with `os._exit()`, which skips
    atexit. multiprocessing runs its own exit finalizers first, so before a fork in a
    process that uses multiprocessing, fapilog asks multiprocessing to register its drain
    in each child it starts (`register_after_fork` callbacks run in the child after
    multiprocessing has cleared the parent's finalizers)."""
    util = sys.modules.get("multiprocessing.util")
    if util is None or STATE.multiprocessing_hooked:
        return
    try:
        util.register_after_fork(STATE, _multiprocessing_child)
        STATE.multiprocessing_hooked = True
    except Exception:  # pragma: no cover - never fail a fork
        pass


def _multiprocessing_child(state: object) -> None:
    """multiprocessing starts a child's run: it has just cleared the finalizers registered
    until now (those of a forked parent, and those of a spawn or forkserver child that
    configured fapilog while importing the main module): register the drain again."""
    STATE.child_drain_pid = 0
    register_child_drain()


def register_child_drain() -> None:
    """Drain at the end of this multiprocessing child, after its finalizers of priority
    >= 0 (the application's) and before `os._exit()`; and again in each child process
    multiprocessing starts from here. Once per process; nothing outside a process that uses
    multiprocessing."""
    util = sys.modules.get("multiprocessing.util")
    if util is None or STATE.child_drain_pid == os.getpid():
        return
    try:
        util.Finalize(None, at_exit, exitpriority=-10)
        STATE.child_drain_pid = os.getpid()
        if not STATE.multiprocessing_hooked:
            util.register_after_fork(STATE, _multiprocessing_child)
            STATE.multiprocessing_hooked = True
    except Exception:  # pragma: no cover - never fail a configuration over it
        pass


def at_interpreter_exit() -> None:
    """fapilog's `atexit` drain. Not in a multiprocessing child whose exit finalizers have not
    run yet: from Python 3.13 they run as an atexit handler, which the child registered
    before fapilog's, so after it; draining here would lose what the application's own
    finalizers log. The drain among them (`register_child_drain`) comes after those."""
    util = sys.modules.get("multiprocessing.util")
    process = sys.modules.get("multiprocessing.process")
    if (
        util is not None
        and process is not None
        and STATE.child_drain_pid == os.getpid()
        and process.parent_process() is not None
        and not getattr(util, "_exiting", True)
    ):
        return
    at_exit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_refresh_pid_after_fork)
    os.register_at_fork(after_in_child=_gunicorn_worker_after_fork)

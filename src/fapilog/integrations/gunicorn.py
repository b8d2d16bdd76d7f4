"""gunicorn support (see docs/pipeline.md, "Graceful shutdown").

With ``gunicorn --preload``, the application (and so `configure_logging()`) is loaded in the
gunicorn arbiter. Each worker then resets SIGTERM to its default action (uvicorn's worker
class does), and uvicorn re-raises SIGTERM after its graceful shutdown, which would end the
worker before fapilog drains what it still has queued.

fapilog handles this itself: in a process forked from a configured one while gunicorn is
loaded (a gunicorn worker), it gives the worker its SIGTERM drain back right after gunicorn
has set up the worker's signals (`gunicorn.workers.base.Worker.load_wsgi`, which runs after
`init_signals` and before the worker serves, in the worker only). The drain is installed
only where SIGTERM has its default action, so a handler gunicorn or the application set is
never replaced (gunicorn's own sync and thread workers keep theirs).

An arbiter that loaded the app (``--preload``) logs through fapilog too, and drains at its
own exit: its exit deadline starts when it is told to stop (`Arbiter.stop`), so that its
drain shares the one deadline with its workers' instead of starting a second one once they
are gone.

`post_worker_init` is the same thing as an explicit gunicorn server hook, for worker
classes that override `load_wsgi`::

    # gunicorn.conf.py
    from fapilog.gunicorn import post_worker_init
"""

from __future__ import annotations

import sys
from typing import Any

from fapilog.lifecycle.drain import begin_exit, install_sigterm_handler

__all__ = ["patch_arbiter", "patch_worker_after_fork", "post_worker_init"]

_MARK = "_fapilog_sigterm_drain"


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` server hook."""
    install_sigterm_handler(quit_too=True)


def patch_worker_after_fork() -> bool:
    """In a forked child: when gunicorn's worker class is loaded, make its `load_wsgi`
    install fapilog's SIGTERM drain once gunicorn set the worker's signals. Returns whether
    it patched (False without gunicorn, or when already patched)."""
    base = sys.modules.get("gunicorn.workers.base")
    worker_class = getattr(base, "Worker", None) if base is not None else None
    original = getattr(worker_class, "load_wsgi", None)
    if worker_class is None or original is None or getattr(original, _MARK, False):
        return False

    def load_wsgi(self: Any) -> Any:
        try:
            return original(self)
        finally:
            # SIGQUIT too: gunicorn's quick shutdown (SIGINT to the arbiter) sends it to the
            # workers, whose default action would end them without a drain
            install_sigterm_handler(quit_too=True)

    setattr(load_wsgi, _MARK, True)
    load_wsgi.__doc__ = original.__doc__
    worker_class.load_wsgi = load_wsgi
    return True


def patch_arbiter() -> bool:
    """In a process where gunicorn's arbiter is loaded (the app loaded with ``--preload``):
    start the exit deadline when the arbiter is told to stop. Returns whether it patched."""
    arbiter = sys.modules.get("gunicorn.arbiter")
    arbiter_class = getattr(arbiter, "Arbiter", None) if arbiter is not None else None
    original = getattr(arbiter_class, "stop", None)
    if arbiter_class is None or original is None or getattr(original, _MARK, False):
        return False

    def stop(self: Any, graceful: bool = True) -> Any:
        begin_exit()
        return original(self, graceful)

    setattr(stop, _MARK, True)
    stop.__doc__ = original.__doc__
    arbiter_class.stop = stop
    return True

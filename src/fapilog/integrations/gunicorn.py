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

`post_worker_init` is the same thing as an explicit gunicorn server hook, for worker
classes that override `load_wsgi`::

    # gunicorn.conf.py
    from fapilog.gunicorn import post_worker_init
"""

from __future__ import annotations

import sys
from typing import Any

from fapilog.lifecycle.drain import install_sigterm_handler

__all__ = ["patch_worker_after_fork", "post_worker_init"]

_MARK = "_fapilog_sigterm_drain"


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` server hook."""
    install_sigterm_handler()


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
            install_sigterm_handler()

    setattr(load_wsgi, _MARK, True)
    load_wsgi.__doc__ = original.__doc__
    worker_class.load_wsgi = load_wsgi
    return True

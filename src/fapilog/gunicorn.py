"""gunicorn server hooks for fapilog (see docs/pipeline.md, "Graceful shutdown").

With ``gunicorn --preload``, the application (and so `configure_logging()`) is loaded in the
gunicorn master. Each worker then resets SIGTERM to its default action, and uvicorn's worker
re-raises SIGTERM after its graceful shutdown, which would end the worker before fapilog
drains. This hook, run in each worker after gunicorn has set up its signals, gives fapilog
back its SIGTERM drain in the worker. Put it in your gunicorn config file::

    # gunicorn.conf.py
    from fapilog.gunicorn import post_worker_init

Without ``--preload`` it is not needed (but harmless).
"""

from __future__ import annotations

from typing import Any

from fapilog import _config

__all__ = ["post_worker_init"]


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` server hook."""
    _config._install_sigterm_handler()

"""gunicorn support: the ``post_worker_init`` server hook (see docs/pipeline.md, "Graceful
shutdown"; implemented in `fapilog.integrations.gunicorn`)::

    # gunicorn.conf.py
    from fapilog.gunicorn import post_worker_init
"""

from fapilog.integrations.gunicorn import patch_worker_after_fork, post_worker_init

__all__ = ["patch_worker_after_fork", "post_worker_init"]

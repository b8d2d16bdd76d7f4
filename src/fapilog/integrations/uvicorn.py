"""uvicorn: the signal it re-raises after its graceful shutdown drains fapilog first.

uvicorn installs its own SIGTERM and SIGINT handlers before it imports the application (in
every worker of ``--workers N`` and under ``--reload`` too), so when `configure_logging()`
runs, SIGTERM is not at its default action and fapilog installs no drain of its own. After
its graceful shutdown uvicorn restores the handlers it found (the default action) and
raises the signal again, which ends the process without `atexit`: whatever was logged after
the lifespan's last flush ("Application shutdown complete", "Finished server process",
other threads' records) would be lost.

So while fapilog is configured, uvicorn's server module sees a view of the `signal` module
in which restoring SIGTERM to its default action installs fapilog's drain instead: the
re-raised signal drains what is queued (within the one exit deadline), then ends the
process by SIGTERM as before. Nothing else of uvicorn's signal handling changes. SIGINT,
restored to Python's default handler, ends the process through `KeyboardInterrupt` and
`atexit`, which drains already.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any

from fapilog._state import STATE
from fapilog.lifecycle.drain import sigterm_drain

__all__ = ["drain_on_reraised_signals"]

Handler = Callable[[int, FrameType | None], Any] | int | None


class _SignalView:
    """The `signal` module as uvicorn's server module sees it (see the module docstring)."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def signal(self, signum: int, handler: Handler) -> Handler:
        if signum == signal.SIGTERM and handler is signal.SIG_DFL and STATE.is_configured():
            handler = sigterm_drain()
        previous: Handler = self._real.signal(signum, handler)
        return previous


def drain_on_reraised_signals() -> bool:
    """Give uvicorn's server module the view of `signal` above, once per process, if uvicorn
    is loaded. Returns whether it did now."""
    server = sys.modules.get("uvicorn.server")
    current = getattr(server, "signal", None) if server is not None else None
    if current is not signal:  # not loaded, another module there, or done already
        return False
    server.signal = _SignalView(signal)  # type: ignore[union-attr]
    return True

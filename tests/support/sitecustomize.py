"""Start coverage in child interpreters the tests launch (when COVERAGE_PROCESS_START is set),
and keep the data of a child that ends by SIGTERM.

A process that dies by a signal at its default action runs no `atexit` handler, so coverage
would lose the data of every child a test ends with SIGTERM. coverage's own remedy
(`sigterm = true`) installs a SIGTERM handler, and fapilog drains on SIGTERM only where
SIGTERM still has its default action: the child would then die without draining, unlike in
production. Instead, the data is saved at the moment a process ends itself by SIGTERM (or
SIGQUIT) at its default action, which is what fapilog's drain does when it is done
(`os.kill(os.getpid(), SIGTERM)`), seen through the `os.kill` audit event. (Children started
by `opentelemetry-instrument` load its sitecustomize instead of this one.)
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

try:
    import coverage

    # (coverage's own .pth file may have started it already: then this returns None)
    coverage.process_startup()
    _COVERAGE = coverage.Coverage.current()
except Exception:  # coverage not installed or not requested
    _COVERAGE = None

# the signals fapilog drains on (SIGQUIT: a gunicorn worker's quick shutdown)
_FATAL = {signal.SIGTERM, getattr(signal, "SIGQUIT", signal.SIGTERM)}


def _save_before_dying_by_a_signal(event: str, args: tuple[Any, ...]) -> None:
    if event != "os.kill" or _COVERAGE is None:
        return
    pid, signum = args
    if pid == os.getpid() and signum in _FATAL and signal.getsignal(signum) is signal.SIG_DFL:
        try:  # (the current one: a multiprocessing child starts one of its own)
            current = coverage.Coverage.current() or _COVERAGE
            current.stop()
            current.save()
        except Exception:
            pass


if _COVERAGE is not None:
    sys.addaudithook(_save_before_dying_by_a_signal)

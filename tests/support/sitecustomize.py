"""Start coverage in child interpreters the tests launch (when COVERAGE_PROCESS_START is set),
and keep the data of a child that ends by SIGTERM.

pyproject's `sigterm = true` makes coverage take SIGTERM over: its handler saves the data,
then kills the process with the previous action. fapilog, though, drains on SIGTERM only
where SIGTERM still has its default action, so with coverage's handler in place a child
would die without draining, unlike in production. So the default action is put back, and
the data is saved at the moment a process ends itself by SIGTERM at its default action
(fapilog's drain does so when it is done: `os.kill(os.getpid(), SIGTERM)`), seen through
the `os.kill` audit event.
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


def _save_before_dying_by_sigterm(event: str, args: tuple[Any, ...]) -> None:
    if event != "os.kill" or _COVERAGE is None:
        return
    pid, signum = args
    if pid == os.getpid() and signum in _FATAL and signal.getsignal(signum) is signal.SIG_DFL:
        try:
            _COVERAGE.stop()
            _COVERAGE.save()
        except Exception:
            pass


if _COVERAGE is not None and signal.getsignal(signal.SIGTERM) == _COVERAGE._on_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.addaudithook(_save_before_dying_by_sigterm)

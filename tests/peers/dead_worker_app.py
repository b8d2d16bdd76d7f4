"""A process whose exporter's worker thread dies, and that then flushes fapilog, for the
dead-worker tests of tests/test_pipeline.py.

    python dead_worker_app.py WHEN

- WHEN ``before``: the worker dies (idle, woken by a record), then `fapilog.force_flush(60)`;
- WHEN ``during``: `fapilog.force_flush(60)` starts while the worker is alive, a record in
  its queue; the flush's wake-up kills it, so it dies while the flush waits.

The worker is killed the way thread-killing helpers do it: `PyThreadState_SetAsyncExc`
raises SystemExit in it where it next runs Python code. Raised only once the worker sleeps
in its queue's condition wait, past the point where it let go of the queue's lock, the
exception surfaces where it wakes, inside that wait, and unwinds the queue's ``with`` blocks:
the worker dies holding no lock, before it takes the record. Run it without a trace or
profile function (no coverage): on Python 3.11, while an asynchronous exception is pending
for a thread blocked in C, a traced thread spins for ever at its next Python call (CPython's
tracing dispatch rechecks the interpreter-wide eval breaker that the pending exception keeps
set), so the process would hang in its next `log.info()`, whatever fapilog does.

It prints one JSON line: whether the flush returned within `FLUSH_BOUND` s (it waits up to
60 s for a live worker) and what, whether the worker is dead, the bodies the exporter
received, and the exporter's `fapilog.stats()` figures.
"""

from __future__ import annotations

import ctypes
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence

import fapilog
from fapilog import configure_logging, log
from fapilog.exporters import (
    LogRecordExporter,
    LogRecordExportResult,
    ReadableLogRecord,
    register_exporter,
)

FLUSH_BOUND = 5.0  # far below the flush's own 60 s, far above what a dead worker needs


class Recording(LogRecordExporter):
    def __init__(self) -> None:
        self.bodies: list[object] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.bodies.extend(record.log_record.body for record in batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting until {what}")
        time.sleep(0.001)


def parked(worker: threading.Thread, *, timed: bool) -> bool:
    """Whether `worker` sleeps in its queue's condition wait (`timed`: the wait of a partial
    batch for more records, else the idle wait for a first record) and has let go of the
    queue's lock there (`saved_state`, what `Condition.wait` keeps meanwhile, is set)."""
    frame = sys._current_frames().get(worker.ident or 0)
    if frame is None or frame.f_code is not threading.Condition.wait.__code__:
        return False
    caller = frame.f_back
    # (`in`: under `make mutate`, `_next_batch` runs as a name mutmut made from it)
    if caller is None or "_next_batch" not in caller.f_code.co_name:
        return False
    local = frame.f_locals
    return "saved_state" in local and (local["timeout"] is not None) == timed


def kill(worker: threading.Thread) -> None:
    raise_in = ctypes.pythonapi.PyThreadState_SetAsyncExc
    assert raise_in(ctypes.c_ulong(worker.ident or 0), ctypes.py_object(SystemExit)) == 1


def main() -> None:
    when = sys.argv[1]
    if sys.gettrace() is not None or sys.getprofile() is not None:
        raise SystemExit("run without a trace or profile function (see the docstring)")
    exporter = Recording()
    register_exporter("recording", lambda settings: exporter)
    # `during`: a lone record waits up to a minute for its batch to fill, the worker with it
    configure_logging(exporters=["recording"], queue={"max_delay": 0 if when == "before" else 60})
    log.info("before")
    assert fapilog.force_flush(10)
    [worker] = [t for t in threading.enumerate() if t.name == "fapilog-recording"]
    if when == "before":
        until(lambda: parked(worker, timed=False), "the worker is idle")
        kill(worker)
        log.info("after")  # wakes the worker: it dies
        worker.join(10)
    else:
        log.info("after")
        until(lambda: parked(worker, timed=True), "the worker waits for more records")
        kill(worker)  # it dies when the flush wakes it
    flushed: list[bool] = []
    flusher = threading.Thread(target=lambda: flushed.append(fapilog.force_flush(60)))
    flusher.daemon = True
    flusher.start()
    flusher.join(FLUSH_BOUND)
    worker.join(10)
    figures = fapilog.stats()["exporters"]["recording"]
    print(
        json.dumps(
            {
                "flushed": flushed,
                "worker_alive": worker.is_alive(),
                "bodies": exporter.bodies,
                "figures": figures,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

"""Exporters written on the calling thread: the development console writes each record
during the log call, in call order with the application's own output (`print()`), while the
other exporters stay behind their queues.

- `DirectBridge`, the chain's last processor, captures the event (as `OTelBridge` does) and
  hands the capture to each synchronous exporter (`Direct`) before the capture goes on to
  the intake. The exporter writes it and marks the capture's OpenTelemetry context, so that
  when the record reaches its queue it is counted (exported, or dropped with the write's
  reason), not written again. A record that arrives unmarked (one `salvage` made, say) is
  written from the queue.
- `keep_exception`, placed before the redactor (`before_redaction`: only in the chain of a
  configuration with the console), keeps the logged exception aside for the console: the
  redactor replaces it by its redacted text, and the console reads its frames (and their
  local variables) on the calling thread. Only for events with an exception.
- `fapilog.pipeline.router.Router` publishes its synchronous exporters (`use_writers`) and writes a
  record someone else emits on an application thread directly too (`write_foreign`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fapilog import _diag
from fapilog._levels import WARN_SEVERITY as _WARN
from fapilog.capture.record import (
    ADMISSION,
    OTelBridge,
    Pending,
    Released,
    capture,
    exception_of,
)
from fapilog.otel.logs import ReadableLogRecord
from fapilog.pipeline.routes import ROUTES

if TYPE_CHECKING:
    from structlog.typing import Processor


__all__ = [
    "AdmittingBridge",
    "CURRENT",
    "Direct",
    "DirectBridge",
    "before_redaction",
    "direct_exporters",
    "keep_exception",
    "use_writers",
    "write_foreign",
    "write_released",
]


@runtime_checkable
class Direct(Protocol):
    """An exporter that writes on the calling thread (the console, `synchronous`)."""

    synchronous: bool

    def write_capture(self, pending: Pending, exception: BaseException | None) -> Pending:
        """Write the captured event now; return the capture (marked as written)."""
        ...

    def write_foreign(self, record: ReadableLogRecord) -> None:
        """Write a record another emitter made on this thread now (and mark it)."""
        ...


class _Current:
    """The synchronous exporters of the current configuration."""

    __slots__ = ("writers",)

    def __init__(self) -> None:
        self.writers: tuple[Direct, ...] = ()


CURRENT = _Current()


def direct_exporters(exporters: Iterable[object]) -> tuple[Direct, ...]:
    """The exporters among `exporters` that write on the calling thread."""
    return tuple(e for e in exporters if isinstance(e, Direct) and e.synchronous)


def use_writers(writers: tuple[Direct, ...]) -> None:
    """From now on, captures are written by `writers` on the calling thread."""
    CURRENT.writers = writers


class _Kept(threading.local):
    """Per thread: (event dict, its exception) kept for the console until the chain's end
    (a handful: a signal handler's log call may come in between)."""

    def __init__(self) -> None:
        self.pairs: list[tuple[object, BaseException]] = []


_KEPT = _Kept()
_KEEP_AT_MOST = 8


def keep_exception(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A chain processor, before the redactor: keep the event's exception aside for the
    synchronous console (see the module docstring)."""
    if CURRENT.writers:
        info = event_dict.get("exc_info")
        if info is not None:  # (False, like None, means none: `exception_of` says so)
            exception = exception_of(info)
            if exception is not None:
                pairs = _KEPT.pairs
                if len(pairs) >= _KEEP_AT_MOST:
                    del pairs[: 1 - _KEEP_AT_MOST]
                pairs.append((event_dict, exception))
    return event_dict


def before_redaction(console: bool) -> list[Processor]:
    """`keep_exception` when the console writes on the calling thread (`console`: the
    configuration selects it and has it synchronous); nothing otherwise: the chain of a
    production configuration has no step for the console."""
    return [keep_exception] if console else []


def _kept_for(event_dict: object) -> BaseException | None:
    pairs = _KEPT.pairs
    for index in range(len(pairs) - 1, -1, -1):
        if pairs[index][0] is event_dict:
            return pairs.pop(index)[1]
    return None


class DirectBridge(OTelBridge):
    """The chain's last processor: `OTelBridge`'s capture, written by the synchronous
    exporters before it goes to the intake."""

    __slots__ = ()

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> tuple[tuple[Pending], dict[str, Any]]:
        pending = capture(logger, method_name, event_dict)
        writers = CURRENT.writers
        if writers:
            pending = _write(writers, pending, _exception_for(pending, event_dict))
        return ((pending,), {})


class AdmittingBridge(DirectBridge):
    """`DirectBridge` for a configuration that decides each capture's fate at the end of
    the chain (`fapilog.capture.record.ADMISSION`: flight recorders, rate limits, folding,
    trace-following sampling) or has per-exporter levels (a console that writes on the
    calling thread writes only what reaches its level). The plain `DirectBridge` is in the
    chain otherwise: a configuration without these pays nothing for them."""

    __slots__ = ()

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> tuple[tuple[Pending], dict[str, Any]]:
        pending = capture(logger, method_name, event_dict)
        admit = ADMISSION.admit
        # (admission's first test, inlined: a record at its logger's exported level and
        # below WARNING, with nothing but recorders configured, goes on untouched)
        if admit is not None and not (
            ADMISSION.plain
            and _WARN > pending.severity.value >= getattr(logger, "export_severity", _WARN)
        ):
            pending = admit(logger, pending)
        writers = CURRENT.writers
        if writers and ROUTES.active and type(pending) is not Released:
            name, severity = pending.logger, pending.severity.value
            writers = tuple(w for w in writers if ROUTES.writes(w, name, severity))
        if writers:
            pending = _write(writers, pending, _exception_for(pending, event_dict))
        return ((pending,), {})


def _exception_for(pending: Pending, event_dict: MutableMapping[str, Any]) -> BaseException | None:
    """The exception the console shows for the capture of `event_dict`: the capture's own,
    else the one kept before the redactor (`keep_exception`; used up either way)."""
    exception = _kept_for(event_dict)
    if pending.exception is not None:
        exception = pending.exception
    return exception


def _write(
    writers: tuple[Direct, ...], pending: Pending, exception: BaseException | None
) -> Pending:
    """Each synchronous exporter writes the capture now (never raises)."""
    for writer in writers:
        try:
            pending = writer.write_capture(pending, exception)
        except Exception as exc:  # never into the application: written from the queue
            _diag.report("direct", f"fapilog: the console could not write: {exc!r}")
    return pending


def write_released(pending: Pending) -> Pending:
    """A record a flight recorder released (or a folded run's summary): written now by
    the exporters that write on the calling thread, so that it comes before what is
    logged next (the request event); returned marked as written."""
    writers = CURRENT.writers
    if writers and ROUTES.active and type(pending) is not Released:  # (a summary line)
        name, severity = pending.logger, pending.severity.value
        writers = tuple(w for w in writers if ROUTES.writes(w, name, severity))
    return _write(writers, pending, pending.exception)


def write_foreign(writers: Sequence[Direct], record: ReadableLogRecord) -> None:
    """Write a record emitted on an application thread by other code (the OpenTelemetry
    logs API, FastAPI's telemetry) with each synchronous exporter (never raises)."""
    for writer in writers:
        try:
            writer.write_foreign(record)
        except Exception as exc:
            _diag.report("direct", f"fapilog: the console could not write: {exc!r}")

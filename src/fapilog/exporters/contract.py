"""The exporter contract: an exporter is an OpenTelemetry `LogRecordExporter`
(``export(batch) -> LogRecordExportResult``, ``shutdown()``, ``force_flush(timeout_millis)``),
run on its own worker thread by fapilog's pipeline. It may block on I/O, but must honour its
own timeouts and never raise (return ``FAILURE``).

Optional extras, as typed Protocols (an exporter has them by having the attribute; no base
class is needed):

- `PartialLoss`: ``last_export_dropped`` says how many records of the last *failed* export
  were lost (the rest were delivered), so `fapilog.stats()` counts exactly those as dropped
  instead of the whole batch; an optional ``last_export_reason`` (a short snake_case word,
  default ``export_failed``) names the reason they are counted under, or an optional
  ``last_export_reasons`` (``(reason, records)`` pairs, or a dict, summing to
  ``last_export_dropped``; those refused for good first, then those in
  ``last_export_retry``: a reason may come in both) one reason per record. The
  reason `UNKNOWN_OUTCOME` is for records whose fate the exporter cannot know (sent, but the
  answer does not say whether they were stored): they are counted under the
  ``unknown_outcome`` term, not as dropped;
- `DetailedStats`: ``stats()`` returns the exporter's own figures (requests, retries,
  rotations ...), shown under ``fapilog.stats()["exporters"][name]["details"]``;
- `Abortable`: ``abort()`` makes a busy `export()` give up now (stop retrying, stop
  waiting on the network). Called from another thread when fapilog's shutdown deadline has
  passed with the export still running; it must return at once;
- `Progress`: ``export_progress`` says how many records of the export in progress are
  delivered already (0 when an export starts): when the shutdown deadline cuts an export
  off (a reader that stopped reading stdout), those count as exported, the rest as
  dropped.

- `Retryable`: ``last_export_retry`` lists the records of the last failed export that a
  later attempt may deliver (the sink was down or overloaded, or the shutdown deadline cut
  the export off); the other lost records were refused for good. An exporter with a disk
  spool (``ExporterSpec(spool=True)``) has them written to disk and replayed; without this
  extra, a failed export's lost records are all taken for retryable when the whole batch was
  lost, and none when only some were;
- `Destination`: ``spool_destination`` names where the exporter sends (endpoint and tenant,
  never a credential): its spool directory is keyed by it, so that records are replayed only
  to the sink they were meant for.

`shutdown()` is called on the exporter's own worker thread, once everything queued for it
was exported (or the deadline passed).

The OpenTelemetry types are re-exported here so that exporters need not import the SDK's
unstable ``opentelemetry.sdk._logs`` paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from fapilog.otel.logs import LogRecordExporter, LogRecordExportResult, ReadableLogRecord

__all__ = [
    "Abortable",
    "Destination",
    "DetailedStats",
    "LogRecordExportResult",
    "LogRecordExporter",
    "PartialLoss",
    "Progress",
    "ReadableLogRecord",
    "Retryable",
    "UNKNOWN_OUTCOME",
    "shares",
]

UNKNOWN_OUTCOME = "unknown_outcome"


@runtime_checkable
class PartialLoss(Protocol):
    """An exporter that knows how many records of its last failed export were lost: an
    int between 0 and the batch size, or None when it does not know (the whole batch then
    counts as dropped). Read right after `export()` returns ``FAILURE``."""

    last_export_dropped: int | None


@runtime_checkable
class DetailedStats(Protocol):
    """An exporter with figures of its own (a dict of numbers and dicts of numbers)."""

    def stats(self) -> dict[str, Any]: ...


@runtime_checkable
class Abortable(Protocol):
    """An exporter that can be told, from another thread, to give up its current export."""

    def abort(self) -> None: ...


@runtime_checkable
class Progress(Protocol):
    """An exporter that tells how much of the export in progress it has delivered."""

    export_progress: int


@runtime_checkable
class Retryable(Protocol):
    """An exporter that tells which records of its last failed export may be delivered by
    a later attempt (None: it does not know). Read right after `export()` returns
    ``FAILURE``."""

    last_export_retry: Sequence[ReadableLogRecord] | None


@runtime_checkable
class Destination(Protocol):
    """An exporter that names its destination (endpoint, tenant; no credential)."""

    spool_destination: str


def shares(reasons: Sequence[tuple[str, int]], count: int) -> list[tuple[str, int]]:
    """`count` records given their reasons, in the order of `reasons` (at most as many as
    each lists; any left over: ``export_failed``)."""
    result: list[tuple[str, int]] = []
    left = count
    for name, listed in reasons:
        share = min(max(listed, 0), left)
        if share:
            result.append((name, share))
            left -= share
    if left:
        result.append(("export_failed", left))
    return result

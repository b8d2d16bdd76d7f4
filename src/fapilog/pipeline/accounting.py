"""`fapilog.stats()`: the pipeline's own figures, read from the process state.

Per exporter the figures add up, with named terms::

    emitted + adopted == exported + dropped + queued + in_flight + spooled + filtered
                         + unknown_outcome

- `emitted`: records offered to the pipeline while the exporter was receiving them;
- `exported`: records the exporter delivered;
- `dropped`: records shed or lost on their way to it (by reason in `dropped_by_reason`;
  ``intake_*`` reasons were shed before reaching any exporter);
- `queued`: waiting in the intake (while the exporter is the current one) or in its queue;
- `in_flight`: in the batch the bridge is emitting, or the exporter is exporting;
- `spooled`: on disk in the exporter's spool, waiting to be replayed (docs/delivery.md);
- `adopted`: records a process that is gone left in the spool, which this one took over
  (0 without a spool). Replayed, they count as `exported` (or `dropped`) here.
- `filtered`: records below the exporter's own level (``FAPILOG_EXPORTER_LEVELS``): not
  for it, not lost.
- `unknown_outcome`: records sent whose fate the destination's answer does not tell
  (a Loki 400 that does not say which entries it rejected): maybe stored, maybe not.

What never reaches the intake has its own terms, outside the exporters' sums:
``recorder`` (records held by flight recorders: `captured == held + released + discarded +
overflowed`; released ones are emitted), ``rate_limited`` (by logger), ``folded`` (repeats
folded into a "repeated" line) and ``sampled_out`` (request events sampled out, records of
unsampled traces).

The sum holds exactly whenever the pipeline is quiet (after `fapilog.force_flush()`), across
`shutdown()` and a later `configure_logging()`. At other moments each term is read without
stopping the pipeline, so a snapshot may be a few records apart; no term is ever missing.
An exporter that a reconfiguration replaced keeps its figures (merged with its successor's
under the same name).
"""

from __future__ import annotations

from typing import Any

from fapilog._state import STATE
from fapilog.capture import noise
from fapilog.capture.recorder import TOTALS

__all__ = ["IntakeMark", "intake_mark", "stats", "unbalanced"]

_IN = ("emitted", "adopted")
_OUT = ("exported", "dropped", "queued", "in_flight", "spooled", "filtered", "unknown_outcome")


class IntakeMark:
    """The intake's figures at one moment: records offered, and dropped by reason (records
    the bridge failed to emit included, as ``emit_error``). Each exporter processor keeps
    the mark of when it started and stopped receiving records."""

    __slots__ = ("dropped", "offered")

    def __init__(self, offered: int = 0, dropped: dict[str, int] | None = None) -> None:
        self.offered = offered
        self.dropped = dropped or {}


def intake_mark() -> IntakeMark:
    """The intake's figures now (zeros without a bridge)."""
    bridge = STATE.bridge
    if bridge is None:
        return IntakeMark()
    dropped = dict(bridge.intake.dropped)
    if bridge.errors:
        dropped["emit_error"] = bridge.errors
    return IntakeMark(bridge.intake.offered, dropped)


def _exporter_figures(processor: Any, now: IntakeMark, current: bool) -> dict[str, Any]:
    """The figures of one `fapilog.pipeline.router.ExportProcessor` (typed loosely here:
    the router imports this module)."""
    figures: dict[str, Any] = processor.stats()
    end = processor.intake_end or now
    start = processor.intake_start
    reasons = figures["dropped_by_reason"]
    for reason, count in end.dropped.items():
        shed = count - start.dropped.get(reason, 0)
        if shed:
            reasons[f"intake_{reason}"] = reasons.get(f"intake_{reason}", 0) + shed
    figures["emitted"] = end.offered - start.offered
    figures["dropped"] = sum(reasons.values())  # (unknown_outcome is not among them)
    bridge = STATE.bridge
    if current and bridge is not None:
        figures["queued"] += bridge.intake.depth
        figures["in_flight"] += bridge.intake.in_flight
    return figures


def _merge(known: dict[str, Any], figures: dict[str, Any]) -> None:
    """Add a replaced exporter's figures to its successor's of the same name."""
    for key, value in figures.items():
        if key == "dropped_by_reason":
            for reason, count in value.items():
                known[key][reason] = known[key].get(reason, 0) + count
        elif key in ("details", "spool"):
            known.setdefault(key, value)  # the current exporter's own figures
        elif key == "capacity":
            continue
        else:
            known[key] += value


def stats() -> dict[str, Any]:
    """fapilog's own figures: totals and a per-exporter breakdown (see the module docstring
    and docs/pipeline.md). Totals: `emitted` counts events once; `exported`, `dropped`,
    `queued` and `in_flight` sum over exporters (a record the intake shed counts under every
    exporter). An exporter with figures of its own (`fapilog.exporters.DetailedStats`) shows
    them under ``details``; one with a disk spool shows its figures under ``spool``."""
    pipeline = STATE.pipeline
    bridge = STATE.bridge
    now = intake_mark()
    current = pipeline.processors if pipeline is not None else []
    exporters: dict[str, Any] = {}
    # the current exporters first: a replaced one's figures are added to its successor's
    for processor in [*current, *STATE.retired]:
        figures = _exporter_figures(processor, now, processor in current)
        known = exporters.get(processor.name)
        if known is None:
            exporters[processor.name] = figures
        else:
            _merge(known, figures)
    intake = bridge.intake if bridge is not None else None
    chain = pipeline.enrichers if pipeline is not None else None
    return {
        "emitted": now.offered,
        "exported": sum(e["exported"] for e in exporters.values()),
        "dropped": sum(e["dropped"] for e in exporters.values()),
        "queued": sum(e["queued"] for e in exporters.values()),
        "in_flight": sum(e["in_flight"] for e in exporters.values()),
        "spooled": sum(e["spooled"] for e in exporters.values()),
        "filtered": sum(e["filtered"] for e in exporters.values()),
        "unknown_outcome": sum(e["unknown_outcome"] for e in exporters.values()),
        "adopted": sum(e["adopted"] for e in exporters.values()),
        "intake": {
            "accepted": intake.accepted if intake is not None else 0,
            "dropped_by_reason": now.dropped,
            "queued": intake.depth if intake is not None else 0,
            "in_flight": intake.in_flight if intake is not None else 0,
            "capacity": intake.max_size if intake is not None else 0,
        },
        "exporters": exporters,
        "enricher_failures": chain.failure_counts() if chain is not None else {},
        "unconfigured_dropped": STATE.dropped_unconfigured,
        "abandoned_processors": STATE.abandoned_processors,
        "recorder": TOTALS.figures(),
        **noise.figures(),
    }


def unbalanced(figures: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The exporters whose terms do not add up in `figures` (a `stats()` result): for tests
    and health checks, meaningful when the pipeline is quiet."""
    wrong: dict[str, dict[str, int]] = {}
    for name, exporter in figures["exporters"].items():
        if sum(exporter[term] for term in _OUT) != sum(exporter[term] for term in _IN):
            wrong[name] = {term: exporter[term] for term in (*_IN, *_OUT)}
    recorder = figures.get("recorder")
    if recorder is not None and recorder["captured"] != sum(
        recorder[term] for term in ("held", "released", "discarded", "overflowed")
    ):
        wrong["recorder"] = dict(recorder)
    return wrong

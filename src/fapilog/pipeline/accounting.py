"""`fapilog.stats()`: the pipeline's own figures, read from the process state."""

from __future__ import annotations

from typing import Any

from fapilog._state import STATE

__all__ = ["stats"]


def stats() -> dict[str, Any]:
    """fapilog's own figures: totals and a per-exporter breakdown (see docs/pipeline.md).

    For each exporter, ``emitted == exported + dropped + queued`` once nothing is in flight;
    `dropped` there includes records the intake queue shed before any exporter saw them.
    Totals: `emitted` counts events once; `exported` and `dropped` sum over exporters.
    An exporter with figures of its own (`fapilog.exporters.DetailedStats`) shows them
    under ``details``.
    """
    pipeline = STATE.pipeline
    bridge = STATE.bridge
    intake_reasons = dict(bridge.intake.dropped) if bridge else {}
    if bridge is not None and bridge.errors:
        intake_reasons["emit_error"] = bridge.errors
    intake_dropped = sum(intake_reasons.values())
    emitted = bridge.intake.offered if bridge else 0
    exporters: dict[str, Any] = {}
    current = pipeline.processors if pipeline is not None else []
    for processor in STATE.retired + current:
        figures = processor.stats()
        known = exporters.get(processor.name)
        if known is not None:  # a replaced exporter of the same name: add its figures up
            for key, value in figures.items():
                if key == "dropped_by_reason":
                    for reason, count in value.items():
                        known[key][reason] = known[key].get(reason, 0) + count
                elif key == "details":
                    known[key] = value  # the current exporter's own figures
                elif key not in ("capacity", "queued"):
                    known[key] += value
            known["queued"] += figures["queued"]
            known["capacity"] = figures["capacity"]
            continue
        exporters[processor.name] = figures
    for figures in exporters.values():
        figures["dropped"] += intake_dropped
        reasons = figures["dropped_by_reason"]
        for reason, count in intake_reasons.items():
            reasons[f"intake_{reason}"] = reasons.get(f"intake_{reason}", 0) + count
    chain = pipeline.enrichers if pipeline is not None else None
    return {
        "emitted": emitted,
        "exported": sum(e["exported"] for e in exporters.values()),
        "dropped": sum(e["dropped"] for e in exporters.values()),
        "queued": (bridge.intake.depth if bridge else 0)
        + sum(e["queued"] for e in exporters.values()),
        "intake": {
            "accepted": bridge.intake.accepted if bridge else 0,
            "dropped_by_reason": intake_reasons,
            "queued": bridge.intake.depth if bridge else 0,
            "capacity": bridge.intake.max_size if bridge else 0,
        },
        "exporters": exporters,
        "enricher_failures": chain.failure_counts() if chain is not None else {},
        "unconfigured_dropped": STATE.dropped_unconfigured,
    }

"""Micro-benchmark: the caller-side cost per event of enrichment and redaction.

    python bench/enrich_cost.py            # every variant, a table of us/event
    python bench/enrich_cost.py --quick    # fewer events

Each variant runs in a fresh interpreter: fapilog configured with a no-op exporter, then
rounds of `log.info(...)` timed with `time.thread_time()` (CPU time of the calling thread
only: the pipeline's workers are not counted, GIL waits are not CPU). Two event shapes:

- typical: a constant message, an int, a short repeated string, a bound logger field;
- dynamic: an f-string message, a fresh UUID and a URL with a query string per event (no
  cache can help: every string is scanned).

The reference is structlog + orjson (JSONRenderer to /dev/null): fapilog's caller-side cost
per event is meant to stay at or below it.
Process metrics should cost the same as no metrics (the sample is attached from a cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "no redaction, no metrics": {"redaction": {"enabled": False}},
    "redaction (default)": {},
    "redaction + process metrics": {"system": {"metrics": True}},
    "process metrics only": {"redaction": {"enabled": False}, "system": {"metrics": True}},
}
REFERENCE = "structlog + orjson (reference)"


def _events(shape: str, count: int) -> Callable[[Any], None]:
    if shape == "typical":

        def typical(logger: Any) -> None:
            for index in range(count):
                logger.info("user logged in", user_id=index, plan="pro")

        return typical
    ids = [str(uuid.uuid4()) for _ in range(count)]
    urls = [f"https://api.example.com/v1/items/{i}?page=2&sort=asc" for i in range(count)]

    def dynamic(logger: Any) -> None:
        for index in range(count):
            logger.info(f"fetched item {index} for user", request_id=ids[index], url=urls[index])

    return dynamic


def _time(run: Callable[[Any], None], logger: Any, count: int, rounds: int,
          flush: Callable[[], Any]) -> float:  # fmt: skip
    results = []
    for _ in range(rounds):
        started = time.thread_time()
        run(logger)
        results.append((time.thread_time() - started) / count * 1e6)
        flush()
    return statistics.median(results)


def _child(variant: str, count: int, rounds: int) -> dict[str, float]:
    if variant == REFERENCE:
        import orjson
        import structlog

        sink = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the process
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(sink),
            cache_logger_on_first_use=True,
        )
        logger: Any = structlog.get_logger().bind(tenant="acme")
        flush: Callable[[], Any] = sink.flush
    else:
        import fapilog
        from fapilog.exporters import LogRecordExporter, LogRecordExportResult

        class Null(LogRecordExporter):
            def export(self, batch: Any) -> LogRecordExportResult:
                return LogRecordExportResult.SUCCESS

            def shutdown(self) -> None:
                return None

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return True

        fapilog.register_exporter("null", lambda settings: Null())
        fapilog.configure_logging(
            exporters=["null"],
            capture_stdlib=False,
            queue={"max_size": 4 * count, "batch_size": 1024},
            **VARIANTS[variant],
        )
        logger = fapilog.get_logger("bench").bind(tenant="acme")
        flush = fapilog.force_flush
    figures = {}
    for shape in ("typical", "dynamic"):
        run = _events(shape, count)
        run(logger)  # warm up: caches, lazily created threads
        flush()
        figures[shape] = _time(run, logger, count, rounds, flush)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events per round")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    count, rounds = (2_000, 3) if args.quick else (20_000, 5)
    if args.variant:
        print(json.dumps(_child(args.variant, count, rounds)))
        return
    print(f"caller CPU per event, median of {rounds} rounds of {count} events (us)")
    print(f"{'variant':34} {'typical':>8} {'dynamic':>8}")
    for variant in [REFERENCE, *VARIANTS]:
        command = [sys.executable, __file__, "--variant", variant]
        if args.quick:
            command.append("--quick")
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        print(f"{variant:34} {figures['typical']:8.2f} {figures['dynamic']:8.2f}")


if __name__ == "__main__":
    main()

"""Micro-benchmark: what the development console costs the calling thread per log call.

    python bench/console_cost.py            # every variant, to /dev/null and to a pipe
    python bench/console_cost.py --quick    # fewer events

fapilog's console writes each record on the calling thread (in call order with print()),
so its whole cost, rendering and the write, is the caller's. Each variant runs in a fresh
interpreter whose stdout is /dev/null or a pipe the parent drains; rounds of
`log.info(...)` are timed with `time.thread_time()` (CPU of the calling thread) and
`time.perf_counter()` (wall). The reference is structlog's own ConsoleRenderer printing to
the same stdout (structlog's PrintLogger flushes each line, as fapilog's console does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

VARIANTS = ("fapilog console", "structlog ConsoleRenderer")
SINKS = ("devnull", "pipe")


def _events(logger: Any, count: int) -> None:
    for index in range(count):
        logger.info("user logged in", user_id=index, plan="pro")


def _child(variant: str, colors: bool, count: int, rounds: int) -> dict[str, float]:
    flush: Callable[[], Any]
    if variant == "structlog ConsoleRenderer":
        import structlog

        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="%H:%M:%S.%f"),
                structlog.dev.ConsoleRenderer(colors=colors),
            ],
            logger_factory=structlog.PrintLoggerFactory(sys.stdout),
            cache_logger_on_first_use=True,
        )
        logger: Any = structlog.get_logger("bench").bind(tenant="acme")
        flush = sys.stdout.flush
    else:
        if colors:
            os.environ["FORCE_COLOR"] = "1"
        import fapilog

        fapilog.configure_logging(
            exporters=["console"],
            capture_stdlib=False,
            queue={"max_size": 4 * count, "batch_size": 1024},
        )
        logger = fapilog.get_logger("bench").bind(tenant="acme")
        flush = fapilog.force_flush
    _events(logger, count)  # warm up: caches, lazily created threads
    flush()
    cpu, wall = [], []
    for _ in range(rounds):
        started, started_wall = time.thread_time(), time.perf_counter()
        _events(logger, count)
        cpu.append((time.thread_time() - started) / count * 1e6)
        wall.append((time.perf_counter() - started_wall) / count * 1e6)
        flush()
    return {"cpu_us": statistics.median(cpu), "wall_us": statistics.median(wall)}


def measure(variant: str, sink: str, colors: bool, quick: bool) -> dict[str, float]:
    """One variant in a fresh interpreter whose stdout is `sink`."""
    command = [sys.executable, __file__, "--variant", variant, "--sink", sink]
    command += ["--colors"] if colors else []
    command += ["--quick"] if quick else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAPILOG_", "OTEL_"))}
    env.pop("FORCE_COLOR", None)
    env.pop("NO_COLOR", None)
    with open(os.devnull, "wb") as devnull:
        child = subprocess.Popen(
            command,
            stdout=devnull if sink == "devnull" else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        _, err = child.communicate(timeout=600)  # (drains the pipe as the child writes)
    if child.returncode != 0:
        raise RuntimeError(err.decode()[-2000:])
    for line in reversed(err.decode().splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, float] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(err.decode()[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events per round")
    parser.add_argument("--json", action="store_true", help="one JSON object, for run.py")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--sink", default="devnull", help=argparse.SUPPRESS)
    parser.add_argument("--colors", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    count, rounds = (2_000, 3) if args.quick else (20_000, 5)
    if args.variant:
        figures = _child(args.variant, args.colors, count, rounds)
        print("RESULT " + json.dumps(figures), file=sys.stderr)
        return
    results: dict[str, Any] = {}
    for sink in SINKS:
        for colors in (False, True):
            for variant in VARIANTS:
                key = f"{variant} | {sink} | {'colours' if colors else 'no colours'}"
                results[key] = measure(variant, sink, colors, args.quick)
    if args.json:
        print(json.dumps(results))
        return
    print(f"caller per log call, median of {rounds} rounds of {count} events (us)")
    print(f"{'variant | stdout | colours':58} {'CPU':>7} {'wall':>7}")
    for key, figures in results.items():
        print(f"{key:58} {figures['cpu_us']:7.2f} {figures['wall_us']:7.2f}")


if __name__ == "__main__":
    main()

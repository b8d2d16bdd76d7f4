"""Interleaved A/B of this checkout against another commit: is a change free on the hot paths?

    python bench/ab.py BASE_REF [--rounds 5] [--events 100000] [--requests 5000]

Checks BASE_REF out into a temporary git worktree, then runs, in each round and in
alternating order, the same benchmark scripts (this checkout's `competitors.py` and
`fastapi_bench.py`, which use only fapilog's public API) against both source trees in fresh
interpreters: the caller-side CPU per `log.info` and the process CPU per event of fapilog
logging to a file (defaults: drop_oldest), and the in-process FastAPI cost per request with
fapilog. Prints the median of each figure per side and the ratio B/A (this checkout over the
base); a ratio above 1.05 is a regression beyond the 5 % these machines' noise allows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

FIGURES = (
    ("log.info caller CPU us", "logging", "caller_cpu_us"),
    ("log.info process CPU us/event", "logging", "process_cpu_us"),
    ("FastAPI request us (fapilog)", "fastapi", "us_per_request"),
    ("FastAPI request CPU us (fapilog)", "fastapi", "cpu_us_per_request"),
    ("FastAPI request us (bare app)", "bare", "us_per_request"),
    ("FastAPI request us (recorder, INFO only)", "recorder-info", "us_per_request"),
    ("FastAPI request us (recorder, 2 DEBUG)", "recorder", "us_per_request"),
    ("FastAPI request CPU us (recorder, 2 DEBUG)", "recorder", "cpu_us_per_request"),
)
# fapilog's overhead per request (the figure minus the bare app's), for the recorder bench
OVERHEADS = (
    ("overhead us (recorder, INFO only)", "recorder-info"),
    ("overhead us (recorder, 2 DEBUG)", "recorder"),
)


def _result(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            found: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return found
    raise RuntimeError(f"no result in:\n{output[-2000:]}")


def _run(src: Path, argv: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAPILOG_", "OTEL_"))}
    env["PYTHONPATH"] = str(src)
    proc = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{proc.stderr[-2000:]}")
    return _result(proc.stderr)


def measure(
    src: Path, events: int, requests: int, scratch: Path, only: str | None
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    if only in (None, "logging"):
        out = scratch / "ab.log"
        if out.exists():
            out.unlink()
        argv = [str(BENCH / "competitors.py"), "throughput", "fapilog-drop_oldest", str(out)]
        results["logging"] = _run(src, [*argv, str(events)])
    if only in (None, "fastapi"):
        argv = [str(BENCH / "fastapi_bench.py"), "inprocess", "fapilog", str(requests)]
        results["fastapi"] = _run(src, argv)
    if only == "recorder":
        # a successful request with the flight recorder on (a base without it: off): the
        # app of the default bench, and one whose endpoint also logs two DEBUG lines; and
        # the bare app, for fapilog's overhead per request
        for key, variant in (
            ("bare", "bare"),
            ("recorder-info", "fapilog-recorder-info"),
            ("recorder", "fapilog-recorder"),
        ):
            argv = [str(BENCH / "fastapi_bench.py"), "inprocess", variant, str(requests)]
            results[key] = _run(src, argv)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the commit to compare against (A)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument(
        "--only",
        choices=["logging", "fastapi", "recorder"],
        help="one bench (recorder: requests with the flight recorder on, not in the default run)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fapilog-ab-") as temporary:
        scratch = Path(temporary)
        base = scratch / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            sides = {"A": base / "src", "B": ROOT / "src"}
            samples: dict[str, list[dict[str, dict[str, Any]]]] = {"A": [], "B": []}
            for round_number in range(args.rounds):
                order = ("A", "B") if round_number % 2 == 0 else ("B", "A")
                for side in order:
                    samples[side].append(
                        measure(sides[side], args.events, args.requests, scratch, args.only)
                    )
                print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=False,
                capture_output=True,
            )
    print(f"A = {args.base}, B = this checkout; medians of {args.rounds} interleaved rounds")
    print(f"{'figure':36} {'A':>10} {'B':>10} {'B/A':>7}")
    for label, bench, key in FIGURES:
        if bench not in samples["A"][0]:
            continue
        a = statistics.median(sample[bench][key] for sample in samples["A"])
        b = statistics.median(sample[bench][key] for sample in samples["B"])
        print(f"{label:36} {a:10.2f} {b:10.2f} {b / a:7.3f}")
    if "bare" in samples["A"][0]:
        for label, bench in OVERHEADS:
            a, b = (
                statistics.median(s[bench]["us_per_request"] - s["bare"]["us_per_request"]
                                  for s in samples[side])
                for side in ("A", "B")
            )  # fmt: skip
            print(f"{label:36} {a:10.2f} {b:10.2f} {b / a:7.3f}")


if __name__ == "__main__":
    main()

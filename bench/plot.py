"""Draw docs/benchmarks.png from bench/results/latest.json (run in the bench venv, which
has matplotlib): python bench/plot.py RESULTS.json OUT.png"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from run import COMPETITORS, LABELS


def main() -> None:
    with open(sys.argv[1]) as handle:
        data: dict[str, Any] = json.load(handle)
    out = sys.argv[2]
    throughput = data["throughput"]
    names = [n for n, _ in COMPETITORS if "error" not in throughput.get(n, {"error": 1})]
    labels = [LABELS[n] for n in names]
    fig, axes = plt.subplots(2, 2, figsize=(15, 9))

    ax = axes[0][0]
    cpu = [throughput[n]["caller_cpu_us"] for n in names]
    wall = [throughput[n]["caller_wall_us"] for n in names]
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], cpu, height=0.4, label="caller thread CPU", color="#4c72b0")
    ax.barh([i - 0.2 for i in y], wall, height=0.4, label="caller wall time", color="#a1c9f4")
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("µs per log.info (3 key-value pairs), lower is better")
    ax.legend(loc="lower right")

    ax = axes[0][1]
    ax.barh(list(y), [throughput[n]["process_cpu_us"] for n in names], color="#dd8452")
    ax.set_yticks(list(y), [""] * len(names))  # same rows as the panel on the left
    ax.invert_yaxis()
    ax.set_xlabel("process CPU µs per event, to a file (worker threads included)")

    ax = axes[1][0]
    kept = [100 * throughput[n]["lines"] / throughput[n]["expected_lines"] for n in names]
    rates = [throughput[n]["e2e_events_per_s"] / 1000 for n in names]
    ax.barh(list(y), rates, color="#55a868")
    for i, share in enumerate(kept):
        if share < 99.999:
            ax.text(rates[i], i, f" {share:.0f}% of lines kept", va="center", color="#c44e52")
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("thousand events/s until every line is on disk")

    ax = axes[1][1]
    fastapi = data.get("fastapi", {})
    bare = fastapi.get("bare", {}).get("us_per_request")
    variants = [
        ("otel", "OTel FastAPI\ninstrumentation"),
        ("fapilog", "fapilog\ndefaults"),
        ("fapilog-spans", "fapilog\nrecorded spans"),
        ("fapilog-instrumentation", "fapilog\ntracing=\ninstrumentation"),
    ]
    values, names_f = [], []
    for key, label in variants:
        us = fastapi.get(key, {}).get("us_per_request")
        if isinstance(us, (int, float)) and isinstance(bare, (int, float)):
            values.append(us - bare)
            names_f.append(label)
    if values:
        colors = {"OTel": "#c44e52", "fapilog\nt": "#8172b3"}
        ax.bar(
            names_f,
            values,
            color=[
                next((c for k, c in colors.items() if n.startswith(k)), "#4c72b0") for n in names_f
            ],
        )
        ax.set_ylabel(f"µs added per request (bare app: {bare:.0f} µs)")
    else:
        ax.text(0.5, 0.5, "FastAPI figures not measured", ha="center")
    ax.set_title("FastAPI per-request overhead (in-process ASGI)")

    machine = data["machine"]
    fig.suptitle(
        f"fapilog benchmarks: {machine['cpu']}, {machine['cores']} cores, "
        f"Python {machine['python']}, {data['events']:,} events, median of {data['repeats']}"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main()

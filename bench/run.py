"""fapilog's benchmark suite: one command, every competitor side by side.

    make bench                      # = python bench/run.py
    python bench/run.py --quick     # smaller counts, for a smoke run

Creates the venvs it needs under bench/.venvs/ (once; recreated when the requirement list
changes), runs every competitor in its own fresh interpreter, and writes
bench/results/latest.json, bench/results/latest.md and docs/benchmarks.png.
See docs/benchmarks.md for what each figure means.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"
PLOT = ROOT / "docs" / "benchmarks.png"

REQUIREMENTS: dict[str, list[str]] = {
    # this checkout (editable) + the competitors that can share an interpreter with it
    "main": [
        "-e",
        str(ROOT),
        "loguru==0.7.3",
        "python-json-logger>=3,<4",
        "matplotlib>=3.8,<4",
        "fastapi>=0.110",
        "uvicorn>=0.30",
    ],
    # upstream PyPI fapilog has the same import name: its own venv
    "upstream": ["fapilog==0.18.1"],
}
COMPETITORS: list[tuple[str, str]] = [
    ("fapilog", "main"),
    ("fapilog-drop_oldest", "main"),
    ("structlog", "main"),
    ("stdlib+python-json-logger", "main"),
    ("loguru", "main"),
    ("otel-sdk", "main"),
    ("fapilog-0.18.1", "upstream"),
]
LABELS = {
    "fapilog": "fapilog (overflow=block, 5 s bound: lossless)",
    "fapilog-drop_oldest": "fapilog (defaults: drop_oldest)",
    "structlog": "structlog + orjson",
    "stdlib+python-json-logger": "stdlib + python-json-logger",
    "loguru": "loguru serialize=True",
    "otel-sdk": "OTel SDK LoggingHandler + batch",
    "fapilog-0.18.1": "fapilog 0.18.1 (PyPI)",
}


def python_of(venv: str) -> Path:
    return VENVS / venv / "bin" / "python"


def ensure_venv(name: str) -> Path:
    """Create (or reuse) bench/.venvs/NAME with its requirements installed."""
    target = VENVS / name
    stamp = target / ".bench-requirements.json"
    wanted = json.dumps(REQUIREMENTS[name])
    if stamp.exists() and stamp.read_text() == wanted and python_of(name).exists():
        return python_of(name)
    if target.exists():
        shutil.rmtree(target)
    print(f"[bench] creating venv {target.relative_to(ROOT)} ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(target)], check=True)
    pip = [str(python_of(name)), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *REQUIREMENTS[name]], check=True)
    stamp.write_text(wanted)
    return python_of(name)


def _result_of(stderr: str) -> dict[str, Any]:
    for line in reversed(stderr.splitlines()):
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return parsed
    raise RuntimeError(f"no result; stderr tail:\n{stderr[-2000:]}")


def _run(python: Path, args: list[str], timeout: float, stdout: Any = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAPILOG_", "OTEL_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [str(python), *args],
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(BENCH),
        check=False,
    )
    return _result_of(proc.stderr)


def throughput(events: int, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fapilog-bench-") as tmp:
        for repeat in range(repeats):
            for name, venv in COMPETITORS:
                out = os.path.join(tmp, f"{name}-{repeat}.log")
                print(f"[bench] throughput {name} #{repeat + 1}", flush=True)
                try:
                    run = _run(
                        python_of(venv),
                        ["competitors.py", "throughput", name, out, str(events)],
                        timeout=600,
                    )
                except Exception as exc:
                    run = {"name": name, "error": repr(exc)[:500]}
                results.setdefault(name, []).append(run)
                if os.path.exists(out):
                    os.unlink(out)
    return {name: _median(runs) for name, runs in results.items()}


_KEEP_RUNS = frozenset(
    {"rps", "us_per_request", "caller_cpu_us", "caller_wall_us", "process_cpu_us"}
)


def spool(records: int, repeats: int) -> dict[str, Any]:
    """The disk spool with Loki down, then back (bench/spool_bench.py), median of runs."""
    runs = []
    for repeat in range(repeats):
        print(f"[bench] disk spool #{repeat + 1}", flush=True)
        try:
            runs.append(
                _run(python_of("main"), [str(BENCH / "spool_bench.py"), "--records",
                     str(records)], timeout=600)
            )  # fmt: skip
        except Exception as exc:  # a failed run is reported, not fatal
            return {"error": repr(exc)}
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


REDACTION_VARIANTS = {"off": "no redaction, no metrics", "on": "redaction (default)"}


def redaction(quick: bool, repeats: int) -> dict[str, Any]:
    """Redaction's caller-side cost per event (bench/enrich_cost.py): the same events with
    redaction on and off, interleaved, median of runs; typical (repeated strings, caches
    help) and dynamic (every string new: each is scanned in full) events."""
    figures: dict[str, dict[str, list[float]]] = {
        side: {"typical": [], "dynamic": []} for side in REDACTION_VARIANTS
    }
    for repeat in range(repeats):
        print(f"[bench] redaction cost #{repeat + 1}", flush=True)
        for side, variant in REDACTION_VARIANTS.items():
            command = [str(python_of("main")), str(BENCH / "enrich_cost.py"), "--variant",
                       variant, *(["--quick"] if quick else [])]  # fmt: skip
            try:
                out = subprocess.run(command, capture_output=True, text=True, check=True,
                                     timeout=600).stdout  # fmt: skip
            except Exception as exc:  # a failed run is reported, not fatal
                return {"error": repr(exc)[:500]}
            run = json.loads(out.strip().splitlines()[-1])
            for shape in ("typical", "dynamic"):
                figures[side][shape].append(run[shape])
    result: dict[str, Any] = {}
    for shape in ("typical", "dynamic"):
        on = statistics.median(figures["on"][shape])
        off = statistics.median(figures["off"][shape])
        result[shape] = {"on_us": on, "off_us": off, "redaction_us": on - off}
    return result


def console(quick: bool, repeats: int) -> dict[str, Any]:
    """The development console's cost to the calling thread per log call, to /dev/null and
    to a pipe, against structlog's ConsoleRenderer printing the same (bench/console_cost.py),
    median of runs."""
    runs: list[dict[str, Any]] = []
    for repeat in range(repeats):
        print(f"[bench] console cost #{repeat + 1}", flush=True)
        command = [str(python_of("main")), str(BENCH / "console_cost.py"), "--json",
                   *(["--quick"] if quick else [])]  # fmt: skip
        try:
            out = subprocess.run(command, capture_output=True, text=True, check=True,
                                 timeout=1200).stdout  # fmt: skip
        except Exception as exc:  # a failed run is reported, not fatal
            return {"error": repr(exc)[:500]}
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {
        key: {figure: statistics.median(run[key][figure] for run in runs)
              for figure in ("cpu_us", "wall_us")}
        for key in runs[0]
    }  # fmt: skip


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[0]
    merged: dict[str, Any] = dict(good[0])
    for key, value in good[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [run[key] for run in good if isinstance(run.get(key), (int, float))]
            merged[key] = statistics.median(values)
            if key in _KEEP_RUNS:
                merged[key + "_runs"] = values
    merged["runs"] = len(good)
    merged["lines_per_run"] = [run.get("lines") for run in good]
    return merged


def idle(seconds: float) -> dict[str, Any]:
    print(f"[bench] idle CPU over {seconds:.0f} s (all competitors in parallel)", flush=True)
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fapilog-idle-") as tmp,
        concurrent.futures.ThreadPoolExecutor(len(COMPETITORS)) as pool,
    ):
        futures = {
            pool.submit(
                _run,
                python_of(venv),
                ["competitors.py", "idle", name, os.path.join(tmp, name), str(seconds)],
                seconds + 120,
            ): name
            for name, venv in COMPETITORS
        }
        for future in concurrent.futures.as_completed(futures):
            name = futures[future]
            try:
                results[name] = future.result()
            except Exception as exc:
                results[name] = {"name": name, "error": repr(exc)[:500]}
    return results


FASTAPI_VARIANTS = ("bare", "otel", "fapilog", "fapilog-spans", "fapilog-instrumentation")
# in-process only: the flight recorder on (docs/sampling.md), with the app above, and with an
# endpoint that also logs two DEBUG lines, held then discarded
RECORDER_VARIANTS = ("fapilog-recorder-info", "fapilog-recorder")


def fastapi_inprocess(requests: int, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for variant in (*FASTAPI_VARIANTS, *RECORDER_VARIANTS):
        runs = []
        for repeat in range(repeats):
            print(f"[bench] fastapi in-process {variant} #{repeat + 1}", flush=True)
            try:
                runs.append(
                    _run(
                        python_of("main"),
                        ["fastapi_bench.py", "inprocess", variant, str(requests)],
                        timeout=600,
                    )
                )
            except Exception as exc:
                runs.append({"variant": variant, "error": repr(exc)[:500]})
        results[variant] = _median(runs)
    return results


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except Exception:
            time.sleep(0.1)
    return False


def _load_wrk(url: str, seconds: int, connections: int) -> dict[str, Any]:
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", proc.stdout)
    if not match:
        raise RuntimeError(f"wrk failed: {proc.stdout} {proc.stderr}")
    return {"rps": float(match.group(1)), "non_2xx": int(errors.group(1)) if errors else 0}


def _load_python(
    host: str, port: int, path: str, seconds: float, connections: int
) -> dict[str, Any]:
    """Fallback load generator: keep-alive HTTP/1.1 GETs on `connections` sockets."""
    import asyncio

    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def client(stop: float, counts: list[int]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < stop:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length:\s*(\d+)", head, re.I).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                counts[0] += 1
        finally:
            writer.close()

    async def main() -> int:
        counts = [0]
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(stop, counts) for _ in range(connections)))
        return counts[0]

    started = time.monotonic()
    done = asyncio.run(main())
    return {"rps": done / (time.monotonic() - started), "non_2xx": 0}


def uvicorn_load(seconds: int, repeats: int) -> dict[str, Any]:
    generator = "wrk" if shutil.which("wrk") else "python-asyncio"
    results: dict[str, Any] = {"generator": generator}
    for variant in FASTAPI_VARIANTS:
        runs = []
        for repeat in range(repeats):
            print(f"[bench] uvicorn + {generator} {variant} #{repeat + 1}", flush=True)
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("FAPILOG_", "OTEL_"))}
            env["BENCH_VARIANT"] = variant
            cmd = [
                str(python_of("main")), "-m", "uvicorn", "--factory", "fastapi_bench:app_factory",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                "--log-level", "warning",
            ]  # fmt: skip
            with tempfile.TemporaryFile() as sink:
                server = subprocess.Popen(
                    cmd, cwd=str(BENCH), env=env, stdout=sink, stderr=subprocess.PIPE
                )
                try:
                    url = f"http://127.0.0.1:{port}/items/7"
                    if not _wait_ready(url, time.monotonic() + 30):
                        raise RuntimeError("server did not start")
                    if generator == "wrk":
                        run = _load_wrk(url, seconds, 16)
                    else:
                        run = _load_python("127.0.0.1", port, "/items/7", seconds, 16)
                except Exception as exc:
                    run = {"error": repr(exc)[:500]}
                finally:
                    server.send_signal(signal.SIGTERM)
                    try:
                        server.wait(30)
                    except subprocess.TimeoutExpired:
                        server.kill()
                        server.wait()
                    if server.stderr is not None:
                        server.stderr.close()
                runs.append(run)
        results[variant] = _median(runs)
    return results


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo") as info:
            memory = round(int(info.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    t = data.get("throughput", {})
    fap, slog, std = (
        t.get("fapilog", {}),
        t.get("structlog", {}),
        t.get("stdlib+python-json-logger", {}),
    )
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, met: bool | None, note: str = "") -> None:
        rows.append({"target": name, "measured": value, "goal": goal, "met": met, "note": note})

    r = _ratio(fap.get("caller_cpu_us"), slog.get("caller_cpu_us"))
    add("caller-side cost (caller-thread CPU) per log.info vs structlog+orjson", r, "<= 1.0",
        None if r is None else r <= 1.0)  # fmt: skip
    # not a target: in a tight loop the caller also waits for the GIL while the workers run
    # (their CPU is the process-CPU target); docs/benchmarks.md explains
    r = _ratio(fap.get("caller_wall_us"), slog.get("caller_wall_us"))
    add("(info) caller wall time per log.info in a tight loop vs structlog+orjson", r, "-", None)
    r = _ratio(fap.get("process_cpu_us"), std.get("process_cpu_us"))
    lossless = fap.get("lines") == fap.get("expected_lines")
    add("process CPU per event to a file vs stdlib+python-json-logger", r, "<= 1.0, none lost",
        None if r is None else (r <= 1.0 and lossless),
        f"lines {fap.get('lines')}/{fap.get('expected_lines')}")  # fmt: skip
    f = data.get("fastapi", {})
    bare, otel, fapi = (f.get(v, {}).get("us_per_request") for v in ("bare", "otel", "fapilog"))
    if all(isinstance(x, (int, float)) for x in (bare, otel, fapi)):
        ours, theirs = fapi - bare, otel - bare  # type: ignore[operator]
        add("FastAPI overhead vs OTel instrumentation alone", ours / theirs, "<= 0.6",
            ours / theirs <= 0.6, f"+{ours:.0f} us vs +{theirs:.0f} us")  # fmt: skip
        add("FastAPI overhead per request (us)", ours, "< 1000", ours < 1000)
        spans = f.get("fapilog-spans", {}).get("us_per_request")
        if isinstance(spans, (int, float)):
            # not a target: the same with recorded server spans (a span processor installed)
            add("(info) the same with recorded server spans, vs OTel instrumentation alone",
                (spans - bare) / theirs, "-", None,  # type: ignore[operator]
                f"+{spans - bare:.0f} us")  # type: ignore[operator]  # fmt: skip
    else:
        add("FastAPI overhead vs OTel instrumentation alone", None, "<= 0.6", None,
            str(f.get("fapilog", {}).get("error", "not measured")))  # fmt: skip
    u = data.get("uvicorn", {})
    r = _ratio(u.get("fapilog", {}).get("rps"), u.get("bare", {}).get("rps"))
    add("uvicorn requests/s vs bare app", r, ">= 0.5", None if r is None else r >= 0.5)
    rss = fap.get("extra_rss_mb")
    add("extra RSS under load (MB)", rss, "<= 10", None if rss is None else rss <= 10)
    idle_cpu = data.get("idle", {}).get("fapilog", {}).get("idle_cpu_percent")
    add(
        "idle CPU (% of a core, 10 s)",
        idle_cpu,
        "< 0.5",
        None if idle_cpu is None else idle_cpu < 0.5,
    )
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    out = [
        "# Benchmark results",
        "",
        f"{m['date']} · {m['cpu']} · {m['cores']} cores · {m['memory_gib']} GiB · "
        f"Python {m['python']} · {m['os']}",
        f"Events per run: {data['events']:,} (+500 warm-up), median of {data['repeats']} runs.",
        "",
        "## Logging one event with three key-value pairs, JSON lines to a file",
        "",
        "| competitor | caller CPU µs/call | caller wall µs/call | process CPU µs/event "
        "| events/s to disk | lines on disk / expected | extra RSS MB | idle CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    idle_data = data.get("idle", {})
    for name, _ in COMPETITORS:
        r = data["throughput"].get(name, {})
        if "error" in r:
            out.append(f"| {LABELS[name]} | error: {r['error'][:80]} |||||||")
            continue
        idle_cpu = idle_data.get(name, {}).get("idle_cpu_percent")
        out.append(
            f"| {LABELS[name]} | {_fmt(r.get('caller_cpu_us'), 2)} "
            f"| {_fmt(r.get('caller_wall_us'), 2)} "
            f"| {_fmt(r.get('process_cpu_us'), 2)} | {_fmt(r.get('e2e_events_per_s'), 0)} "
            f"| {_fmt(r.get('lines'))} / {_fmt(r.get('expected_lines'))} "
            f"| {_fmt(r.get('extra_rss_mb'))} | {_fmt(idle_cpu, 2)} |"
        )
    out += ["", "## FastAPI, per request", ""]
    out += ["| app | in-process µs/request | overhead µs | uvicorn req/s | vs bare |",
            "|---|---:|---:|---:|---:|"]  # fmt: skip
    f, u = data.get("fastapi", {}), data.get("uvicorn", {})
    bare_us = f.get("bare", {}).get("us_per_request")
    bare_rps = u.get("bare", {}).get("rps")
    names = {
        "bare": "bare FastAPI",
        "otel": "+ OTel FastAPI instrumentation",
        "fapilog": "+ fapilog configure_logging(app=app)",
        "fapilog-spans": "+ fapilog, with a span processor (recorded server spans)",
        "fapilog-instrumentation": "+ fapilog, FAPILOG_REQUEST__TRACING=instrumentation",
        "fapilog-recorder-info": "+ fapilog, flight recorder on (FAPILOG_REQUEST__BUFFER__ENABLED)",
        "fapilog-recorder": "+ fapilog, flight recorder on, 2 DEBUG lines held and discarded",
    }
    for variant, label in names.items():
        us = f.get(variant, {}).get("us_per_request")
        rps = u.get(variant, {}).get("rps")
        over = us - bare_us if isinstance(us, float) and isinstance(bare_us, float) else None
        err = f.get(variant, {}).get("error") or u.get(variant, {}).get("error")
        note = f" ({err[:60]})" if err else ""
        out.append(
            f"| {label}{note} | {_fmt(us)} | {_fmt(over)} | {_fmt(rps, 0)} "
            f"| {_fmt(_ratio(rps, bare_rps), 2)} |"
        )
    sp = data.get("spool", {})
    if sp:
        out += ["", "## The disk spool: Loki down, then back", "",
                "| records | spooled records/s (Loki down) | replayed records/s (Loki back) "
                "| caller CPU µs/call while down | bytes on disk per record |",
                "|---:|---:|---:|---:|---:|"]  # fmt: skip
        if "error" in sp:
            out.append(f"| error: {sp['error'][:80]} |||||")
        else:
            out.append(
                f"| {_fmt(sp.get('records'))} | {_fmt(sp.get('spooled_per_s'), 0)} "
                f"| {_fmt(sp.get('replayed_per_s'), 0)} "
                f"| {_fmt(sp.get('caller_cpu_us_while_down'), 2)} "
                f"| {_fmt(sp.get('bytes_per_record'), 0)} |"
            )
    red = data.get("redaction", {})
    if red:
        out += ["", "## Redaction's caller cost per event", "",
                "| event | caller CPU µs, redaction off | redaction on | redaction's cost |",
                "|---|---:|---:|---:|"]  # fmt: skip
        if "error" in red:
            out.append(f"| error: {red['error'][:80]} ||||")
        for shape in ("typical", "dynamic"):
            if shape in red:
                row = red[shape]
                out.append(f"| {shape} | {_fmt(row['off_us'], 2)} | {_fmt(row['on_us'], 2)} "
                           f"| {_fmt(row['redaction_us'], 2)} |")  # fmt: skip
    cons = data.get("console", {})
    if cons:
        out += ["", "## The development console's caller cost per log call", "",
                "| console | stdout | colours | caller CPU µs/call | caller wall µs/call |",
                "|---|---|---|---:|---:|"]  # fmt: skip
        if "error" in cons:
            out.append(f"| error: {cons['error'][:80]} ||||")
        for key, row in cons.items():
            if key != "error":
                variant, sink, colours = key.split(" | ")
                out.append(f"| {variant} | {sink} | {colours} | {_fmt(row['cpu_us'], 2)} "
                           f"| {_fmt(row['wall_us'], 2)} |")  # fmt: skip
    out += ["", f"Load generator: {u.get('generator', '-')}", "", "## Targets", "",
            "| target | measured | goal | met |", "|---|---:|---:|---|"]  # fmt: skip
    for row in data["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        if row["target"].startswith("(info)"):
            met = "not a target"  # shown for context, see docs/benchmarks.md
        note = f" ({row['note']})" if row["note"] else ""
        out.append(
            f"| {row['target']}{note} | {_fmt(row['measured'], 2)} | {row['goal']} | {met} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--load-seconds", type=int, default=8)
    parser.add_argument(
        "--skip",
        default="",
        help="comma list: throughput,idle,fastapi,uvicorn,spool,redaction,console",
    )
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeats, args.idle_seconds = 5_000, 1, 2.0
        args.requests, args.load_seconds = 500, 2
    skip = set(filter(None, args.skip.split(",")))
    for name in REQUIREMENTS:
        ensure_venv(name)
    data: dict[str, Any] = {"machine": machine(), "events": args.events, "repeats": args.repeats}
    data["throughput"] = {} if "throughput" in skip else throughput(args.events, args.repeats)
    data["idle"] = {} if "idle" in skip else idle(args.idle_seconds)
    data["fastapi"] = {} if "fastapi" in skip else fastapi_inprocess(args.requests, args.repeats)
    data["uvicorn"] = {} if "uvicorn" in skip else uvicorn_load(args.load_seconds, args.repeats)
    records = 5_000 if args.quick else 50_000
    data["spool"] = {} if "spool" in skip else spool(records, args.repeats)
    data["redaction"] = {} if "redaction" in skip else redaction(args.quick, args.repeats)
    data["console"] = {} if "console" in skip else console(args.quick, args.repeats)
    data["targets"] = targets(data)
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"latest{suffix}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"latest{suffix}.md").write_text(markdown(data))
    if not args.quick:
        subprocess.run(
            [
                str(python_of("main")),
                str(BENCH / "plot.py"),
                str(RESULTS / "latest.json"),
                str(PLOT),
            ],
            check=False,
        )
    print(markdown(data))


if __name__ == "__main__":
    main()

"""A child process for the flight recorder's total bound: N concurrent requests, each
logging M DEBUG lines, all held at once; prints the figures as one JSON line.

    python recorder_memory.py N M TOTAL_MAX_BYTES
"""

from __future__ import annotations

import asyncio
import json
import sys
import tracemalloc

from fastapi import FastAPI

import fapilog
from fapilog import configure_logging, get_logger

REQUESTS, LINES, BOUND = (int(arg) for arg in sys.argv[1:4])

app = FastAPI()
log = get_logger("app.work")
logged = 0
all_logged: asyncio.Event
peak: dict[str, int] = {}


@app.get("/work")
async def work(lines: int) -> dict[str, int]:
    global logged
    for n in range(lines):
        log.debug("step", n=n, payload="some detail of this step")
    logged += 1
    if logged == REQUESTS:
        peak["traced"] = tracemalloc.get_traced_memory()[0]
        peak.update(fapilog.stats()["recorder"])
        all_logged.set()
    await all_logged.wait()  # every request holds its records at the same time
    return {"n": lines}


async def one(lines: int) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/work", "raw_path": b"/work",
        "query_string": f"lines={lines}".encode(), "headers": [], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "root_path": "",
    }  # fmt: skip

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        return None

    await app(scope, receive, send)


async def round_of(lines: int) -> int:
    """Traced memory growth while every request holds what it logged."""
    global logged, all_logged
    logged = 0
    all_logged = asyncio.Event()
    peak.clear()
    before = tracemalloc.get_traced_memory()[0]
    await asyncio.gather(*(one(lines) for _ in range(REQUESTS)))
    return peak["traced"] - before


configure_logging(
    app=app,
    exporters=["file"],
    file={"path": sys.argv[4]},
    # (slow_ms off: the requests wait for each other; a slow one would be released)
    request={"buffer": {"enabled": True, "total_max_bytes": BOUND, "slow_ms": None}},
)


async def main() -> tuple[int, int, dict[str, int]]:
    await round_of(0)  # warm up: the app's and the middleware's own first allocations
    idle = await round_of(0)
    busy = await round_of(LINES)
    return idle, busy, dict(peak)


tracemalloc.start()
idle, busy, figures = asyncio.run(main())
fapilog.force_flush()
after = fapilog.stats()["recorder"]
print(json.dumps({"idle": idle, "busy": busy, "at_peak": figures, "after": after}))

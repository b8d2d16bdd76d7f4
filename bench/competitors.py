"""One competitor, one figure, one fresh interpreter: run by bench/run.py, prints one JSON line.

    python bench/competitors.py throughput NAME OUT_FILE N
    python bench/competitors.py idle NAME OUT_FILE SECONDS

Every competitor logs the same event, ``info("user logged in", user_id=i, ip=..., ok=True)``
(three key-value pairs), as JSON lines to OUT_FILE. `setup()` returns the log call and a
`finish()` that returns once every accepted line is on disk.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

LogCall = Callable[[int], None]
Finish = Callable[[], dict[str, Any]]
WARMUP = 500


def _redirect_stdout(path: str) -> None:
    """Point fd 1 at `path` (for competitors whose sink is stdout)."""
    sys.stdout.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.close(fd)


def setup_fapilog(out: str, overflow: str) -> tuple[LogCall, Finish]:
    """overflow=block with a 5 s bound: lossless backpressure (the default 50 ms bound sheds
    when the file exporter stalls that long, counted as block_timeout)."""
    import fapilog
    from fapilog import log

    queue: dict[str, Any] = {"overflow": overflow}
    if overflow == "block":
        queue["block_timeout"] = 5.0
    fapilog.configure_logging(
        exporters=["file"], file={"path": out, "max_bytes": 0}, queue=queue, capture_stdlib=False
    )

    def call(i: int) -> None:
        log.info("user logged in", user_id=i, ip="10.0.0.1", ok=True)

    def finish() -> dict[str, Any]:
        fapilog.shutdown(60)
        figures = fapilog.stats()
        return {"emitted": figures["emitted"], "exported": figures["exported"],
                "dropped": figures["dropped"]}  # fmt: skip

    return call, finish


def setup_structlog(out: str) -> tuple[LogCall, Finish]:
    import logging

    import orjson
    import structlog

    handle = open(out, "wb")  # noqa: SIM115 - closed in finish()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.BytesLoggerFactory(file=handle),
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger()

    def call(i: int) -> None:
        log.info("user logged in", user_id=i, ip="10.0.0.1", ok=True)

    def finish() -> dict[str, Any]:
        handle.close()
        return {}

    return call, finish


def setup_stdlib(out: str) -> tuple[LogCall, Finish]:
    import logging

    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:  # python-json-logger < 3
        from pythonjsonlogger.jsonlogger import JsonFormatter  # type: ignore[no-redef]

    handler = logging.FileHandler(out)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("bench")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def call(i: int) -> None:
        logger.info("user logged in", extra={"user_id": i, "ip": "10.0.0.1", "ok": True})

    def finish() -> dict[str, Any]:
        handler.close()
        return {}

    return call, finish


def setup_loguru(out: str) -> tuple[LogCall, Finish]:
    from loguru import logger

    logger.remove()
    logger.add(out, serialize=True, level="INFO")

    def call(i: int) -> None:
        logger.info("user logged in", user_id=i, ip="10.0.0.1", ok=True)

    def finish() -> dict[str, Any]:
        logger.remove()
        return {}

    return call, finish


def setup_otel_sdk(out: str) -> tuple[LogCall, Finish]:
    """The raw OpenTelemetry route: stdlib logging -> LoggingHandler -> LoggerProvider ->
    BatchLogRecordProcessor (defaults) -> an exporter writing one JSON line per record."""
    import logging
    import warnings

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
    from opentelemetry.sdk.resources import Resource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from opentelemetry.sdk._logs import LoggingHandler

    handle = open(out, "w")  # noqa: SIM115 - closed in finish()
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}))
    exporter = ConsoleLogRecordExporter(
        out=handle, formatter=lambda record: record.to_json(indent=None) + "\n"
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = logging.getLogger("bench")
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def call(i: int) -> None:
        logger.info("user logged in", extra={"user_id": i, "ip": "10.0.0.1", "ok": True})

    def finish() -> dict[str, Any]:
        provider.force_flush()
        provider.shutdown()
        handle.close()
        return {}

    return call, finish


def setup_upstream(out: str) -> tuple[LogCall, Finish]:
    """PyPI fapilog 0.18.1 (own venv), defaults, its JSON stdout sink pointed at the file."""
    import asyncio

    _redirect_stdout(out)
    from fapilog import get_logger

    logger = get_logger(name="bench", format="json")

    def call(i: int) -> None:
        logger.info("user logged in", user_id=i, ip="10.0.0.1", ok=True)

    def finish() -> dict[str, Any]:
        asyncio.run(logger.stop_and_drain())
        sys.stdout.flush()
        return {}

    return call, finish


SETUPS: dict[str, Callable[[str], tuple[LogCall, Finish]]] = {
    "fapilog": lambda out: setup_fapilog(out, "block"),
    "fapilog-drop_oldest": lambda out: setup_fapilog(out, "drop_oldest"),
    "structlog": setup_structlog,
    "stdlib+python-json-logger": setup_stdlib,
    "loguru": setup_loguru,
    "otel-sdk": setup_otel_sdk,
    "fapilog-0.18.1": setup_upstream,
}


def _proc_status(field: str) -> int:
    """VmRSS / VmHWM of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def throughput(name: str, out: str, count: int) -> dict[str, Any]:
    call, finish = SETUPS[name](out)
    for i in range(WARMUP):
        call(i)
    rss_before = _proc_status("VmRSS")
    peak_reset = _reset_peak_rss()
    process0 = time.process_time_ns()
    wall0 = time.perf_counter_ns()
    thread0 = time.thread_time_ns()
    for i in range(count):
        call(i)
    thread1 = time.thread_time_ns()
    wall1 = time.perf_counter_ns()
    extra = finish()
    wall2 = time.perf_counter_ns()
    process2 = time.process_time_ns()
    peak = _proc_status("VmHWM")
    lines = _count_lines(out)
    return {
        "name": name,
        "events": count,
        "expected_lines": count + WARMUP,
        "lines": lines,
        "caller_cpu_us": (thread1 - thread0) / count / 1000,
        "caller_wall_us": (wall1 - wall0) / count / 1000,
        "e2e_seconds": (wall2 - wall0) / 1e9,
        "e2e_events_per_s": count / ((wall2 - wall0) / 1e9),
        "process_cpu_us": (process2 - process0) / count / 1000,
        "extra_rss_mb": (peak - rss_before) / 1024 if peak_reset else None,
        "python": sys.version.split()[0],
        **extra,
    }


def idle(name: str, out: str, seconds: float) -> dict[str, Any]:
    call, finish = SETUPS[name](out)
    for i in range(10):
        call(i)
    time.sleep(1.0)  # let any worker deliver and settle
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    time.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    finish()
    return {"name": name, "idle_seconds": wall, "idle_cpu_percent": 100 * cpu / wall}


def main() -> None:
    mode, name, out, amount = sys.argv[1:5]
    if mode == "throughput":
        result = throughput(name, out, int(amount))
    else:
        result = idle(name, out, float(amount))
    sys.stderr.write("RESULT " + json.dumps(result) + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    main()

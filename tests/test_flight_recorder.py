"""The per-request flight recorder (docs/sampling.md): DEBUG lines held while a request
runs, exported ahead of the request event when it goes badly, discarded (and counted)
when it goes well; bounded per request and in total; `fapilog.flight_recorder()` for jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fapilog
from conftest import runs
from fapilog import configure_logging, get_logger
from sampling_support import lines, make_app, requests_in, serve, steps_in

BUFFER = {"buffer": {"enabled": True}}


def configured(tmp_path: Path, **request: Any) -> tuple[Any, Path]:
    path = tmp_path / "app.log"
    app = make_app()
    configure_logging(
        app=app,
        exporters=["file"],
        file={"path": str(path)},
        request={**BUFFER, **request},
    )
    return app, path


def test_a_successful_request_exports_no_debug_line_and_says_how_many_were_discarded(
    tmp_path: Path,
) -> None:
    app, path = configured(tmp_path)
    (response,) = serve(app, ["/ok?tag=a"])
    assert response.status_code == 200
    found = lines(path)
    assert not [line for line in found if line["level"] == "debug"]
    (event,) = requests_in(found)
    assert event["fapilog.recorder.discarded"] == 5
    assert "fapilog.recorder.released" not in event
    assert fapilog.stats()["recorder"]["discarded"] == 5


@pytest.mark.parametrize(
    "path",
    ["/fail?tag=a", "/raise?tag=a", "/warn?tag=a", "/missing?tag=a", "/slow?tag=a&ms=120"],
)
def test_a_request_that_goes_badly_exports_its_debug_lines_in_order_before_its_event(
    tmp_path: Path, path: str
) -> None:
    app, log_path = configured(tmp_path, buffer={"enabled": True, "slow_ms": 100})
    serve(app, [path])
    found = [line for line in lines(log_path) if line["logger"] != "httpx"]
    steps = steps_in(found)
    (event,) = requests_in(found)
    assert [step["n"] for step in steps] == [0, 1, 2, 3, 4]
    # ahead of the request event, in the request's trace, with their own timestamps
    assert found.index(steps[-1]) < found.index(event)
    assert {step["trace_id"] for step in steps} == {event["trace_id"]}
    assert {step["request_id"] for step in steps} == {event["request_id"]}
    stamps = [step["timestamp"] for step in steps]
    assert stamps == sorted(stamps) and stamps[-1] < event["timestamp"]
    assert event["fapilog.recorder.released"] == 5


def test_with_the_level_at_debug_nothing_is_held(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    app = make_app()
    configure_logging(
        app=app, level="DEBUG", exporters=["file"], file={"path": str(path)}, request=BUFFER
    )
    serve(app, ["/ok?tag=a"])
    found = lines(path)
    assert len(steps_in(found)) == 5
    assert "fapilog.recorder.discarded" not in requests_in(found)[0]
    assert fapilog.stats()["recorder"]["captured"] == 0


def test_concurrent_requests_release_exactly_the_failing_ones_lines(tmp_path: Path) -> None:
    """300 requests at once, every tenth failing (a 500, an exception, a sync endpoint
    among the others): exactly the failing ones' DEBUG lines come out, each in its own
    request's trace, none crossing to another request. (No slow threshold: 300 requests at
    once on a loaded machine can take over a second, which would release them too.)"""
    app, path = configured(tmp_path, buffer={"enabled": True, "slow_ms": None})
    paths = []
    for index in range(300):
        if index % 10 == 0:
            paths.append(f"/{'fail' if index % 20 else 'raise'}?tag=t{index}")
        else:
            paths.append(f"/{'sync' if index % 3 else 'ok'}?tag=t{index}")
    serve(app, paths, concurrency=300)
    found = lines(path)
    failing = {f"t{index}" for index in range(0, 300, 10)}
    steps = steps_in(found)
    assert {step["tag"] for step in steps} == failing
    assert len(steps) == 5 * len(failing)
    by_trace: dict[str, set[str]] = {}
    for step in steps:
        by_trace.setdefault(step["trace_id"], set()).add(step["tag"])
    assert all(len(tags) == 1 for tags in by_trace.values())
    events = {event["trace_id"]: event for event in requests_in(found)}
    assert len(events) == 300
    for trace_id, tags in by_trace.items():
        assert events[trace_id]["http.response.status_code"] == 500, tags
    discarded = [e for e in events.values() if e.get("fapilog.recorder.discarded")]
    assert len(discarded) == 270
    assert fapilog.stats()["recorder"]["held"] == 0


def test_a_request_holds_at_most_max_records_the_latest_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    app = make_app(steps=50)
    configure_logging(
        app=app,
        exporters=["file"],
        file={"path": str(path)},
        request={"buffer": {"enabled": True, "max_records": 10}},
    )
    serve(app, ["/fail?tag=a"])
    found = lines(path)
    assert [step["n"] for step in steps_in(found)] == list(range(40, 50))
    (event,) = requests_in(found)
    assert event["fapilog.recorder.overflowed"] == 40
    assert event["fapilog.recorder.released"] == 10
    figures = fapilog.stats()["recorder"]
    assert figures["overflowed"] == 40 and figures["captured"] == 50


def test_the_byte_bound_of_a_request_holds(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(
        exporters=["file"],
        file={"path": str(path)},
        request={"buffer": {"max_bytes": 4096}},
    )
    log = get_logger("job")
    sizes: list[int] = []

    def job() -> None:
        with fapilog.flight_recorder() as recorder:
            for n in range(100):
                log.debug("big", n=n, blob="x" * 300)
                sizes.append(recorder.size)
            raise KeyError("end")

    with pytest.raises(KeyError):
        job()
    assert max(sizes) <= 4096
    kept = [line["n"] for line in lines(path) if line["message"] == "big"]
    assert kept and len(kept) < 100 and kept == list(range(100 - len(kept), 100))
    assert fapilog.stats()["recorder"]["overflowed"] == 100 - len(kept)


def test_a_debug_line_outside_any_recorder_is_not_exported(tmp_path: Path) -> None:
    _, path = configured(tmp_path)
    get_logger("app").debug("outside")
    assert not lines(path)
    assert fapilog.stats()["recorder"]["captured"] == 0


# -- flight_recorder() for jobs ---------------------------------------------------------------


def job_lines(tmp_path: Path, body: Any, **settings: Any) -> list[dict[str, Any]]:
    path = tmp_path / "job.log"
    configure_logging(exporters=["file"], file={"path": str(path)}, **settings)
    body(get_logger("jobs.nightly"))
    return [line for line in lines(path) if line["logger"] == "jobs.nightly"]


def test_a_job_that_succeeds_exports_none_of_its_debug_lines(tmp_path: Path) -> None:
    def body(log: Any) -> None:
        with fapilog.flight_recorder():
            for n in range(3):
                log.debug("step", n=n)
            log.info("done")

    found = job_lines(tmp_path, body)
    assert [line["message"] for line in found] == ["done"]
    assert fapilog.stats()["recorder"]["discarded"] == 3


def test_a_job_that_raises_exports_its_debug_lines_and_the_exception_goes_on(
    tmp_path: Path,
) -> None:
    def job(log: Any) -> None:
        with fapilog.flight_recorder():
            for n in range(3):
                log.debug("step", n=n)
            _ = 1 / 0

    def body(log: Any) -> None:
        with pytest.raises(ZeroDivisionError):
            job(log)

    found = job_lines(tmp_path, body)
    assert [(line["message"], line["n"]) for line in found] == [("step", n) for n in range(3)]


def test_a_job_that_logs_an_error_exports_its_debug_lines_around_it(tmp_path: Path) -> None:
    def body(log: Any) -> None:
        with fapilog.flight_recorder():
            log.debug("before")
            log.error("failed item")
            log.debug("after")

    found = job_lines(tmp_path, body)
    # the error goes out at once; the held lines when the block ends
    assert [line["message"] for line in found] == ["failed item", "before", "after"]
    assert found[1]["timestamp"] < found[0]["timestamp"] < found[2]["timestamp"]


def test_a_job_recorder_takes_the_stdlib_records_their_loggers_level_lets_through(
    tmp_path: Path,
) -> None:
    import logging

    path = tmp_path / "job.log"
    configure_logging(exporters=["file"], file={"path": str(path)})
    logging.getLogger("jobs.db").setLevel(logging.DEBUG)

    def job() -> None:
        with fapilog.flight_recorder():
            logging.getLogger("jobs.db").debug("query %s", "select 1")
            logging.getLogger("jobs.other").debug("not let through by its level")
            raise RuntimeError("x")

    try:
        with pytest.raises(RuntimeError):
            job()
    finally:
        logging.getLogger("jobs.db").setLevel(logging.NOTSET)
    found = [line for line in lines(path) if line["logger"].startswith("jobs.")]
    assert [line["message"] for line in found] == ["query select 1"]


def test_a_job_recorder_of_another_level_and_a_bad_level(tmp_path: Path) -> None:
    def job(log: Any) -> None:
        with fapilog.flight_recorder(level="info"):
            log.debug("not held")
            log.info("held")
            raise ValueError("x")

    def body(log: Any) -> None:
        with pytest.raises(ValueError):
            job(log)

    found = job_lines(tmp_path, body, level="WARNING")
    assert [line["message"] for line in found] == ["held"]
    with pytest.raises(ValueError, match="flight_recorder"):
        fapilog.flight_recorder(level="loud").__enter__()


def test_nested_recorders_keep_their_records_apart(tmp_path: Path) -> None:
    def inner(log: Any) -> None:
        with fapilog.flight_recorder():
            log.debug("inner")
            raise KeyError("x")

    def body(log: Any) -> None:
        with fapilog.flight_recorder():
            log.debug("outer")
            with pytest.raises(KeyError):
                inner(log)

    found = job_lines(tmp_path, body)
    assert [line["message"] for line in found] == ["inner"]


@pytest.mark.soak
def test_memory_stays_within_the_total_bound_under_1000_concurrent_requests(
    tmp_path: Path, timed_env: dict[str, str]
) -> None:
    """1,000 concurrent requests (200 in `make test`), each logging 1,000 DEBUG lines, all
    held at once: the held records stay within the total bound (8 MiB here), measured by
    tracemalloc against the same requests logging nothing, and the rest is counted as
    overflow."""
    import json
    import subprocess
    import sys

    requests = runs(200, 1000)
    bound = 8 * 1024 * 1024
    peer = Path(__file__).parent / "peers" / "recorder_memory.py"
    args = [str(requests), "1000", str(bound), str(tmp_path / "m.log")]
    done = subprocess.run(
        [sys.executable, str(peer), *args],
        env=timed_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    at_peak, after = figures["at_peak"], figures["after"]
    assert at_peak["held_bytes"] <= bound
    assert at_peak["captured"] == requests * 1000
    assert at_peak["overflowed"] == requests * 1000 - at_peak["held"] > 0
    # what holding costs in memory, beyond the same requests logging nothing
    assert figures["busy"] - figures["idle"] <= bound * 1.25, figures
    assert after["held"] == 0 and after["discarded"] == at_peak["held"]


@pytest.mark.soak
def test_under_uvicorn_concurrent_requests_release_only_the_failing_ones_lines(
    subprocess_env: dict[str, str],
) -> None:
    """300 concurrent requests to a real uvicorn, 50 at a time, every tenth
    failing: exactly the failing requests' DEBUG lines come out, each before its own
    request event and in its trace; none crosses to another request. Repeated (1 run in
    `make test`, 5 in `make soak`)."""
    import asyncio
    import json
    import os
    import sys

    import httpx

    from test_fastapi_uvicorn import Server

    env = {
        **subprocess_env,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent / "peers"), subprocess_env["PYTHONPATH"]]
        ),
    }

    async def requests(port: int) -> list[int]:
        # (a connection per request: uvicorn closes the connection of a request that raised)
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
        ) as client:
            kinds = {10: "fail", 0: "raise"}
            paths = [f"/{kinds.get(n % 20, 'ok')}?tag=t{n}" for n in range(300)]
            answers = await asyncio.gather(*(client.get(p) for p in paths))
            return [answer.status_code for answer in answers]

    for _ in range(runs(1, 5)):
        server = Server([sys.executable, "-m", "uvicorn", "recorder_app:app", "--port", "0"], env)
        try:
            statuses = asyncio.run(requests(server.port()))
            assert statuses.count(500) == 30 and statuses.count(200) == 270
        finally:
            assert server.stop() in (0, -15)  # (uvicorn re-raises SIGTERM once drained)
        found = [json.loads(line) for line in server.stdout if line.startswith("{")]
        steps = steps_in(found)
        failing = {f"t{n}" for n in range(0, 300, 10)}
        assert {step["tag"] for step in steps} == failing
        assert len(steps) == 5 * len(failing)
        events = {event["trace_id"]: event for event in requests_in(found)}
        for step in steps:
            event = events[step["trace_id"]]
            assert event["http.response.status_code"] == 500
            assert event["request_id"] == step["request_id"]
            assert found.index(step) < found.index(event)
        by_trace: dict[str, set[str]] = {}
        for step in steps:
            by_trace.setdefault(step["trace_id"], set()).add(step["tag"])
        assert all(len(tags) == 1 for tags in by_trace.values())


def test_the_example_exports_only_the_failed_runs_debug_lines(
    subprocess_env: dict[str, str],
) -> None:
    """examples/flight_recorder.py, as docs/sampling.md shows it."""
    import json

    from conftest import ROOT, run_python

    code = (ROOT / "examples" / "flight_recorder.py").read_text()
    rc, out, err = run_python(code, subprocess_env)
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["level"], r["message"], r.get("row")) for r in records] == [
        ("info", "import done", None),
        ("debug", "row parsed", "4"),
        ("debug", "row parsed", "five"),
        ("error", "import failed", None),
    ]
    assert out.splitlines()[-1] == "held lines released: 2, discarded: 3"

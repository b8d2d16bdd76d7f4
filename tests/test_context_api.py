"""`bind_context`, `unbind_context` and `contextualize`: values on every line logged inside
(fapilog's loggers and stdlib records routed through fapilog) and on none outside; across
asyncio tasks, threads, and the thread-pool endpoints of a FastAPI app under a real uvicorn
serving concurrent requests."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from structlog.contextvars import bind_contextvars, get_contextvars

from conftest import ROOT
from fapilog import (
    bind_context,
    configure_logging,
    contextualize,
    force_flush,
    get_logger,
    log,
    unbind_context,
)
from fapilog.testing import InMemoryExporter, capture_logs

stdlib_log = logging.getLogger("lib")


@pytest.fixture(autouse=True)
def _context_restored() -> Iterator[None]:
    """What a test binds in the test's own context does not reach the next test."""
    before = get_contextvars()
    yield
    unbind_context(*get_contextvars())
    bind_context(**before)


def _by_message(logs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["message"]: entry for entry in logs}


def test_bound_values_are_on_every_line_until_unbound() -> None:
    with capture_logs() as logs:
        log.info("before")
        bind_context(tenant="acme", **{"user.id": 42})
        log.info("fapilog line", n=1)
        stdlib_log.warning("stdlib line")
        get_logger("other").info("another logger")
        log.info("the call's own field wins", tenant="mine")
        unbind_context("tenant")
        log.info("tenant unbound")
        unbind_context("user.id", "never-bound")
        log.info("after")
    lines = _by_message(logs)
    assert "tenant" not in lines["before"] and "user.id" not in lines["before"]
    for message in ("fapilog line", "stdlib line", "another logger"):
        assert lines[message]["tenant"] == "acme" and lines[message]["user.id"] == 42, message
    assert lines["the call's own field wins"]["tenant"] == "mine"
    assert "tenant" not in lines["tenant unbound"]
    assert lines["tenant unbound"]["user.id"] == 42
    assert "tenant" not in lines["after"] and "user.id" not in lines["after"]


def test_the_real_pipeline_exports_the_bound_values(memory_exporter: Any) -> None:
    configure_logging(exporters=[memory_exporter.name])
    with contextualize(order_id=7):
        log.info("paid")
        stdlib_log.info("stdlib paid")
    log.info("done")
    records = {record.log_record.body: record.log_record for record in memory_exporter.records()}
    assert records["paid"].attributes["order_id"] == 7
    assert records["stdlib paid"].attributes["order_id"] == 7
    assert "order_id" not in records["done"].attributes


def test_contextualize_nests_and_restores_what_each_key_held() -> None:
    bind_context(a="outer")
    with capture_logs() as logs:
        with contextualize(a="mid", b=1):
            log.info("1")
            with contextualize(a="inner"):
                log.info("2")
                bind_context(c="bound inside")  # another key: left as it is
            log.info("3")
        log.info("4")
    lines = _by_message(logs)
    assert (lines["1"]["a"], lines["1"]["b"]) == ("mid", 1)
    assert (lines["2"]["a"], lines["2"]["b"]) == ("inner", 1)
    assert (lines["3"]["a"], lines["3"]["b"], lines["3"]["c"]) == ("mid", 1, "bound inside")
    assert lines["4"]["a"] == "outer" and "b" not in lines["4"]
    assert lines["4"]["c"] == "bound inside"


def test_contextualize_restores_keys_rebound_or_unbound_inside_it() -> None:
    bind_context(kept="before")
    with contextualize(kept="during", fresh=1):
        bind_context(kept="rebound")
        unbind_context("fresh")
    assert get_contextvars() == {"kept": "before"}
    with contextualize(kept="again") as entered:
        unbind_context("kept")
    assert entered is None
    assert get_contextvars() == {"kept": "before"}


def test_an_exception_inside_contextualize_is_raised_and_the_values_restored() -> None:
    def pay() -> None:
        with contextualize(order_id=7):
            try:
                raise ValueError("declined")
            except ValueError:
                log.exception("payment failed")
                raise

    with capture_logs() as logs:
        with pytest.raises(ValueError, match="declined"):
            pay()
        log.info("after")
    lines = _by_message(logs)
    assert lines["payment failed"]["order_id"] == 7
    assert lines["payment failed"]["exception.type"] == "ValueError"
    assert "order_id" not in lines["after"]
    assert get_contextvars() == {}


def test_one_contextualize_object_entered_again_inside_itself() -> None:
    binding = contextualize(depth="x")
    with binding:
        bind_context(depth="changed")
        with binding:
            assert get_contextvars()["depth"] == "x"
        assert get_contextvars()["depth"] == "changed"
    assert "depth" not in get_contextvars()


def test_exiting_in_another_context_than_entered_still_restores_there() -> None:
    """A fixture torn down in another task, a generator resumed elsewhere: the token cannot
    be used there, and the key gets its earlier value (here: unbound) all the same."""
    binding = contextualize(k="v")
    binding.__enter__()
    elsewhere = contextvars.copy_context()
    elsewhere.run(binding.__exit__, None, None, None)
    assert "k" not in elsewhere.run(get_contextvars)


def test_structlog_bindings_and_fapilogs_are_the_same_store() -> None:
    bind_contextvars(from_structlog=1)
    with capture_logs() as logs, contextualize(from_fapilog=2):
        log.info("both")
    assert (logs[0]["from_structlog"], logs[0]["from_fapilog"]) == (1, 2)
    unbind_context("from_structlog")
    assert get_contextvars() == {}


def test_async_with_and_tasks() -> None:
    async def child(name: str) -> None:
        log.info(f"{name} sees the parent's values")
        bind_context(child=name)  # stays in this task
        log.info(f"{name} bound its own")

    async def main() -> None:
        async with contextualize(request="r1"):
            log.info("inside async with")
            await asyncio.gather(child("one"), asyncio.create_task(child("two")))
            await asyncio.create_task(child("three"))
            log.info("parent after its tasks")
            other = asyncio.create_task(child("created inside, awaited outside"))
        await other
        log.info("after async with")

    with capture_logs() as logs:
        asyncio.run(main())
    lines = _by_message(logs)
    assert lines["inside async with"]["request"] == "r1"
    for name in ("one", "two", "three", "created inside, awaited outside"):
        assert lines[f"{name} sees the parent's values"]["request"] == "r1"
        assert lines[f"{name} bound its own"]["child"] == name
    # gather wraps a coroutine in a task of its own: what "one" bound stayed there too
    assert "child" not in lines["parent after its tasks"]
    assert "request" not in lines["after async with"]


class _Rendezvous:
    """`asyncio.Barrier` (Python 3.11+) for Python 3.10: `wait()` returns once `parties`
    tasks are waiting; reusable."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.waiting = 0
        self.released = asyncio.Event()

    async def wait(self) -> None:
        released = self.released
        self.waiting += 1
        if self.waiting == self.parties:
            self.waiting = 0
            self.released = asyncio.Event()
            released.set()
        await released.wait()


def test_a_hundred_concurrent_tasks_each_see_only_their_own_value(memory_exporter: Any) -> None:
    configure_logging(exporters=[memory_exporter.name], queue={"max_size": 10_000})
    tasks = 100

    async def bound(n: int, barrier: _Rendezvous) -> None:
        bind_context(task=n)
        log.info("bound", n=n)
        await barrier.wait()  # every task has bound its value before any goes on
        stdlib_log.info("stdlib", extra={"n": n})
        await barrier.wait()
        unbind_context("task")
        log.info("unbound", n=n)

    async def scoped(n: int, barrier: _Rendezvous) -> None:
        async with contextualize(task=n):
            log.info("scoped", n=n)
            await barrier.wait()
            stdlib_log.info("stdlib", extra={"n": n})
            await barrier.wait()
        log.info("left", n=n)

    async def main() -> None:
        barrier = _Rendezvous(tasks)
        await asyncio.gather(
            *(asyncio.create_task((bound if n % 2 else scoped)(n, barrier)) for n in range(tasks))
        )
        log.info("after every task")

    asyncio.run(main())
    lines = [
        {"message": record.log_record.body, **record.log_record.attributes}
        for record in memory_exporter.records()
    ]
    inside = [line for line in lines if line["message"] in ("bound", "scoped", "stdlib")]
    outside = [line for line in lines if line["message"] in ("unbound", "left", "after every task")]
    assert len(inside) == 2 * tasks and len(outside) == tasks + 1
    assert all(line["task"] == line["n"] for line in inside), inside
    assert all("task" not in line for line in outside), outside
    assert {line["n"] for line in inside} == set(range(tasks))


def test_threads_start_empty_unless_the_context_is_carried() -> None:
    async def in_executors() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(log.info, "asyncio.to_thread")  # copies the context
        await loop.run_in_executor(None, log.info, "run_in_executor")  # does not

    with capture_logs() as logs, contextualize(job="j"):
        thread = threading.Thread(target=log.info, args=("plain thread",))
        thread.start()
        thread.join()
        carried = contextvars.copy_context()
        thread = threading.Thread(target=carried.run, args=(log.info, "copied context"))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(contextvars.copy_context().run, log.info, "pool, copied").result()
        asyncio.run(in_executors())
    lines = _by_message(logs)
    assert "job" not in lines["plain thread"]
    assert lines["copied context"]["job"] == "j"
    assert lines["pool, copied"]["job"] == "j"
    assert lines["asyncio.to_thread"]["job"] == "j"
    assert "job" not in lines["run_in_executor"]


# -- a FastAPI app under a real uvicorn ------------------------------------------------------

SYNC_CLIENTS = 6
ASYNC_CLIENTS = 4
ROUNDS = 4


def _app(barrier: threading.Barrier) -> FastAPI:
    app_log = get_logger("shop")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app_log.info("app stopping")

    app = FastAPI(lifespan=lifespan)

    @app.get("/sync/{n}")
    def sync_job(n: int) -> dict[str, int]:  # a sync endpoint: run in the thread pool
        bind_context(job=n)
        app_log.info("sync started", n=n)
        barrier.wait(30)  # every sync client's request is in its endpoint, bound, at once
        with contextualize(step="middle"):
            stdlib_log.info("stdlib inside", extra={"n": n})
        app_log.info("sync finished", n=n)
        return {"n": n}

    @app.get("/async/{n}")
    async def async_job(n: int) -> dict[str, int]:
        bind_context(job=n)
        app_log.info("async started", n=n)
        await asyncio.sleep(0)
        app_log.info("async finished", n=n)
        return {"n": n}

    @app.get("/plain")
    def plain() -> dict[str, str]:
        app_log.info("plain sync")
        return {}

    @app.get("/plain-async")
    async def plain_async() -> dict[str, str]:
        app_log.info("plain async")
        return {}

    return app


class _Uvicorn:
    """uvicorn serving `app` on 127.0.0.1 in a thread of this process (its socket is
    listening before the thread starts: clients connect at once)."""

    def __init__(self, app: FastAPI) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(128)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]})
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()
        assert not self.thread.is_alive()


@pytest.mark.slow
def test_thread_pool_endpoints_under_uvicorn_keep_each_requests_values_to_it() -> None:
    barrier = threading.Barrier(SYNC_CLIENTS)
    app = _app(barrier)
    with InMemoryExporter() as memory:
        configure_logging(app=app, exporters=[memory.name], queue={"max_size": 10_000})
        server = _Uvicorn(app)
        try:

            def client(first: int, path: str) -> list[str]:
                ids = []
                with httpx.Client(base_url=server.url, timeout=30) as http:
                    for n in range(first, first + ROUNDS):
                        response = http.get(f"{path}/{n}")
                        assert response.status_code == 200, response.text
                        ids.append(response.headers["x-request-id"])
                return ids

            with ThreadPoolExecutor(SYNC_CLIENTS + ASYNC_CLIENTS) as clients:
                runs = [
                    clients.submit(client, 100 * c, "/sync" if c < SYNC_CLIENTS else "/async")
                    for c in range(SYNC_CLIENTS + ASYNC_CLIENTS)
                ]
                request_ids = [rid for run in runs for rid in run.result()]
            # after those requests: the same pool threads and connections, nothing bound
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for _ in range(2 * SYNC_CLIENTS):
                    assert http.get("/plain").status_code == 200
                    assert http.get("/plain-async").status_code == 200
        finally:
            server.stop()
        force_flush(10)
        lines = [line for line in memory.lines() if line["logger"] != "httpx"]

    assert len(set(request_ids)) == (SYNC_CLIENTS + ASYNC_CLIENTS) * ROUNDS
    job_of = {
        line["request_id"]: line["n"] for line in lines if line["message"].endswith(" started")
    }
    assert set(job_of) == set(request_ids)
    by_request: dict[str, list[dict[str, Any]]] = {rid: [] for rid in request_ids}
    for line in lines:
        if line.get("request_id") in by_request:
            by_request[line["request_id"]].append(line)
    for rid, own in by_request.items():
        n = job_of[rid]
        app_lines = [line for line in own if line["logger"] in ("shop", "lib")]
        assert len(app_lines) == (3 if n < 100 * SYNC_CLIENTS else 2), own
        # every line the endpoint logged carries its own request's value, no other's
        assert all(line["job"] == n for line in app_lines), own
        steps = [line.get("step") for line in app_lines]
        assert steps == ([None, "middle", None] if n < 100 * SYNC_CLIENTS else [None, None])
        # the lines logged in the request's own task (uvicorn's access line, the request
        # event): a sync endpoint binds in a copy of that context (docs/context.md), an
        # async endpoint in the context itself
        task_lines = [line for line in own if line["logger"] not in ("shop", "lib")]
        assert {line["logger"] for line in task_lines} == {"uvicorn.access", "fapilog.request"}
        if n < 100 * SYNC_CLIENTS:
            assert all("job" not in line for line in task_lines), task_lines
        else:
            assert all(line["job"] == n for line in task_lines), task_lines
    # the lines logged after those requests carry none of their values
    later = [line for line in lines if line.get("request_id") not in by_request]
    messages = {line["message"] for line in later}
    assert {"plain sync", "plain async", "app stopping"} <= messages
    assert any(message.startswith("Finished server process") for message in messages)
    assert all("job" not in line and "step" not in line for line in later), later


def test_an_in_process_call_leaves_nothing_bound_in_the_caller(memory_exporter: Any) -> None:
    app = FastAPI()

    @app.get("/bind")
    async def bind() -> dict[str, list[str]]:
        seen = sorted(get_contextvars())
        bind_context(tenant="acme")
        return {"seen": seen}

    configure_logging(app=app, exporters=[memory_exporter.name])

    async def call() -> tuple[list[str], dict[str, Any]]:
        bind_context(caller="test")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/bind")
            assert response.status_code == 200
        return response.json()["seen"], get_contextvars()

    seen, after = asyncio.run(call())
    assert "caller" not in seen  # the request starts clean
    assert after == {"caller": "test"}  # the caller's own, and nothing of the request's


@pytest.mark.slow
def test_the_example_runs(subprocess_env: dict[str, str]) -> None:
    """examples/context.py, as docs/context.md shows it."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "context.py")],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(text) for text in proc.stdout.splitlines()]
    keys = ("tenant", "job_id", "amount", "order_id", "batch")
    seen = [(line["message"], *(line.get(key) for key in keys)) for line in lines]
    assert sorted(seen, key=str) == sorted(
        [
            ("job started", "acme", 1, None, None, None),
            ("charged", "acme", 1, 30, None, None),
            ("job started", "acme", 2, None, None, None),
            ("charged", "acme", 2, 45, None, None),
            ("queue drained", "acme", None, None, None, None),
            ("order received", "acme", None, None, 7, None),
            ("order received", "acme", None, None, 8, None),
            ("customer notified", "acme", None, None, 7, None),
            ("customer notified", "acme", None, None, 8, None),
            ("export written", "acme", None, None, None, "nightly"),
            ("done", None, None, None, None, None),
        ],
        key=str,
    )

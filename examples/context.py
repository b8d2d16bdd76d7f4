"""Values on every line of a context: `bind_context`, `contextualize`, `unbind_context`, in
plain code, asyncio tasks, threads and a job loop (docs/context.md).

Run it: `python examples/context.py` (JSON lines on stdout).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading

from fapilog import bind_context, configure_logging, contextualize, log, unbind_context

library = logging.getLogger("payments")  # a stdlib logger, e.g. a library's


def charge(amount: int) -> None:
    library.info("charged", extra={"amount": amount})  # carries the context too


def run_jobs(jobs: list[dict[str, int]]) -> None:
    """A job loop: each job's values on its lines only, never on the next job's."""
    for job in jobs:
        with contextualize(job_id=job["id"]):
            log.info("job started")
            charge(job["amount"])
    log.info("queue drained")  # no job_id


async def handle(order_id: int) -> None:
    async with contextualize(order_id=order_id):
        log.info("order received")
        await asyncio.create_task(notify())  # a task created here sees order_id


async def notify() -> None:
    log.info("customer notified")


def main() -> None:
    configure_logging(service_name="context-example", json_console=True)

    bind_context(tenant="acme")  # on every line from here on, in this context
    run_jobs([{"id": 1, "amount": 30}, {"id": 2, "amount": 45}])

    async def orders() -> None:
        await asyncio.gather(handle(7), handle(8))  # each task sees its own order_id

    asyncio.run(orders())

    with contextualize(batch="nightly"):
        # a new thread starts with an empty context: carry it explicitly
        carried = contextvars.copy_context()
        thread = threading.Thread(target=carried.run, args=(log.info, "export written"))
        thread.start()
        thread.join()

    unbind_context("tenant")
    log.info("done")  # nothing bound any more


if __name__ == "__main__":
    main()

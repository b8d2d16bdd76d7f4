"""The example FastAPI application (`make demo` serves it with uvicorn).

    uvicorn main:app --app-dir examples/fastapi_app

One call, `configure_logging(app=app)`, gives it: a server span per request (continuing an
upstream `traceparent`), one `request completed` event per request, and `trace_id`,
`span_id` and `request_id` on every line logged while a request is handled, including
stdlib logging, dependencies and background tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from fapilog import configure_logging, get_logger

log = get_logger("shop")
inventory_logger = logging.getLogger("shop.inventory")  # a stdlib logger, e.g. a library's

app = FastAPI(title="fapilog example shop")


def user_context(scope: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The request context hook: `user.id` once the `current_user` dependency stored it."""
    user = scope.get("state", {}).get("user")
    return {"user.id": user} if user else None


configure_logging(
    app=app,
    service_name="fapilog-example-shop",
    service_version="1.0.0",
    request={"exclude_paths": ["/health"], "context_hook": user_context},
)


async def current_user(request: Request) -> str:
    """An authentication dependency: the user name from a header (a token in real life)."""
    user = request.headers.get("x-user", "anonymous")
    request.state.user = user
    log.debug("user resolved", user=user)
    return user


class Order(BaseModel):
    item_id: int
    quantity: int = 1


def send_receipt(order_id: str) -> None:
    log.info("receipt sent", order_id=order_id)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def get_item(item_id: int, user: str = Depends(current_user)) -> dict[str, Any]:
    log.info("item looked up", item_id=item_id)
    inventory_logger.info("stock checked for item %s", item_id, extra={"stock": 12})
    if item_id > 1000:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "name": f"item-{item_id}", "stock": 12}


@app.post("/orders", status_code=201)
async def create_order(
    order: Order, background: BackgroundTasks, user: str = Depends(current_user)
) -> dict[str, Any]:
    order_id = f"ord-{order.item_id}-{order.quantity}"
    log.info("order placed", order_id=order_id, item_id=order.item_id, quantity=order.quantity)
    background.add_task(send_receipt, order_id)
    return {"order_id": order_id}


@app.get("/slow")
async def slow() -> dict[str, int]:
    await asyncio.sleep(0.05)
    return {"slept_ms": 50}


@app.get("/boom")
async def boom() -> None:
    log.info("about to fail")
    raise RuntimeError("payment provider unreachable")

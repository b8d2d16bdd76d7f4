"""An unmodified FastAPI application: no fapilog, no OpenTelemetry in the code.

With fapilog installed, run it under OpenTelemetry's auto-instrumentation:

    OTEL_SERVICE_NAME=shop opentelemetry-instrument uvicorn app:app

and every line on stdout is fapilog JSON (this module's `logging` calls, uvicorn's too),
carrying the trace and span ids of the request's server span. Add a collector with
OTEL_TRACES_EXPORTER=otlp OTEL_LOGS_EXPORTER=fapilog_stdout,otlp
OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 (see docs/opentelemetry.md).
tests/test_autoinstrument.py and tests/test_otlp_e2e.py run exactly this file.
"""

import logging

from fastapi import FastAPI

app = FastAPI()
log = logging.getLogger("shop.orders")


@app.get("/orders/{order_id}")
async def get_order(order_id: int) -> dict[str, int]:
    log.warning("order looked up", extra={"order_id": order_id, "vip": order_id % 2 == 0})
    return {"id": order_id}

"""A first look (`python examples/demo.py`): fapilog with zero configuration, logging a few
structured events, an exception and a stdlib/library line, to stdout (JSON when piped, pretty
on a terminal).

Run it: `python examples/demo.py`, or `python examples/demo.py | cat` for JSON. (`make demo`
runs the FastAPI example, examples/fastapi_app/demo.py.)
"""

from __future__ import annotations

import logging

import fapilog
from fapilog import configure_logging, get_logger, log


def main() -> None:
    configure_logging(service_name="fapilog-demo", service_version=fapilog.__version__)

    log.info("demo started", user_id=42, plan="pro")
    billing = get_logger("billing").bind(tenant="acme")
    billing.info("invoice created", invoice_id="inv-001", amount_cents=1999)
    billing.warning("card expires soon", days_left=7)

    try:
        {}["missing"]
    except KeyError:
        log.exception("lookup failed", key="missing")

    logging.getLogger("some.library").warning("stdlib logger from a library", extra={"retries": 3})
    log.info("demo finished")


if __name__ == "__main__":
    main()

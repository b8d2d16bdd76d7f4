"""Enrichment and redaction in one page: a custom enricher registered in code, process
metrics from the background sampler, and secrets that never reach the output.

Run it: `python examples/enrich_and_redact.py` (JSON lines on stdout).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fapilog import configure_logging, log, register_enricher


def add_region(event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A custom enricher: takes the event dict, returns it (a structlog processor taking
    (logger, method_name, event_dict) works as well)."""
    event_dict["cloud.region"] = "eu-west-1"
    return event_dict


def main() -> None:
    register_enricher("region", add_region)
    configure_logging(
        service_name="shop",
        service_version="1.4.2",
        json_console=True,
        enrichers=["region"],
        system={"metrics": True},  # process.memory.usage, process.cpu.utilization
        redaction={"keys": ["iban"]},  # on top of the default key set
    )
    log.info(
        "customer signed up",
        email="ann@example.com",
        password="hunter2",  # a sensitive key: replaced by [REDACTED]
        billing={"iban": "DE89370400440532013000", "plan": "pro"},  # at any depth
        note="card 4111 1111 1111 1111 on file",  # a Luhn-valid card number in text
        callback="https://ann:s3cret@hooks.example.com/x?token=abc",  # credentials in URLs
    )


if __name__ == "__main__":
    main()

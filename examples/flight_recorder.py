"""The flight recorder for a background job (docs/sampling.md): its DEBUG lines come out
only for the run that fails.

    python examples/flight_recorder.py
"""

from __future__ import annotations

import fapilog

fapilog.configure_logging(json_console=True)  # FAPILOG_LEVEL=info: DEBUG is not exported
log = fapilog.get_logger("jobs.import")


def import_rows(rows: list[str]) -> None:
    with fapilog.flight_recorder():  # held: exported only if the block fails
        for row in rows:
            log.debug("row parsed", row=row)
            int(row)  # a row that is not a number fails the run
        log.info("import done", rows=len(rows))


import_rows(["1", "2", "3"])  # succeeds: one INFO line, its three DEBUG lines discarded
try:
    import_rows(["4", "five"])  # fails: its DEBUG lines come out
except ValueError:
    log.exception("import failed")
fapilog.shutdown()
figures = fapilog.stats()["recorder"]
print(f"held lines released: {figures['released']}, discarded: {figures['discarded']}")

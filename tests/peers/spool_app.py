"""A process that logs numbered records through fapilog, configured from the environment
(FAPILOG_EXPORTERS=loki or otlp, the endpoint, FAPILOG_SPOOL__DIR), for the disk spool's
tests (tests/test_spool_processes.py).

    python spool_app.py RUN COUNT RATE THEN

- RUN: a name carried by every record (``run``), so tests tell processes apart;
- COUNT: records to log (``seq`` 0 .. COUNT-1); RATE: records per second (0: at once);
- THEN: what to do afterwards:
  - ``exit``: return, so fapilog drains at interpreter exit;
  - ``deliver``: wait until every record this process logged or took over from an earlier
    one is delivered (nothing queued, in flight or spooled), print the figures, exit;
  - ``sleep``: once everything is on disk (with the sink down: spooled, the batch being
    retried included once its copy is written), print ``on disk``; then sleep until killed.

It prints ``logged <seq> <monotonic time>`` after every 50 records (flushed), and ``done``
when it has logged them all, so a test knows what was logged and when.
"""

from __future__ import annotations

import json
import sys
import time

import fapilog


def main() -> None:
    run, count, rate, then = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    fapilog.configure_logging()
    log = fapilog.get_logger("spool-test")
    started = time.monotonic()
    for seq in range(count):
        if rate > 0:
            due = started + seq / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the logging rate the test asks for
        log.info("spool test", run=run, seq=seq)
        if seq % 50 == 49 or seq == count - 1:
            print(f"logged {seq} {time.monotonic():.3f}", flush=True)
    print("done", flush=True)
    if then == "deliver":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            fapilog.force_flush(5)
            figures = fapilog.stats()
            if not (figures["queued"] or figures["in_flight"] or figures["spooled"]):
                break
            time.sleep(0.05)  # polling the figures the test waits for
        print(json.dumps({k: v for k, v in fapilog.stats().items() if k != "exporters"}))
        sys.stdout.flush()
    elif then == "sleep":
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            figures = fapilog.stats()
            # (a batch in flight is on disk only once it is copied there: counted as spooled)
            if not figures["queued"] and figures["spooled"] >= count:
                print("on disk", flush=True)
                break
            time.sleep(0.05)  # polling the figures the test waits for
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main()

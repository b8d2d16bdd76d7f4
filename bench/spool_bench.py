"""The disk spool's speeds, with the Loki exporter: records/s written to disk while Loki is
down (the caller logging as fast as it can), and records/s replayed once it is back.

    python bench/spool_bench.py [--records N]      # prints one JSON object

`make bench` (bench/run.py) runs it and shows the figures in its "disk spool" table.

"Loki" is a minimal push endpoint on 127.0.0.1 that reads each request and answers 204, so
the replay figure is fapilog's (read, decode, encode, push), not a receiver's. It is down
(nothing listening on its port) until every record is on disk.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fapilog


class _Push(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(predicate: Any, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the spool did not get there in time")
        time.sleep(0.005)  # polling fapilog's figures
    return time.monotonic()


def measure(records: int) -> dict[str, Any]:
    port = _closed_port()
    with tempfile.TemporaryDirectory() as spool_dir:
        fapilog.configure_logging(
            exporters=["loki"],
            service_name="bench",
            capture_stdlib=False,
            loki={"url": f"http://127.0.0.1:{port}", "min_backoff": 0.05, "max_backoff": 0.2},
            spool={"dir": spool_dir},
        )
        log = fapilog.get_logger("bench")

        def loki() -> dict[str, Any]:
            found: dict[str, Any] = fapilog.stats()["exporters"]["loki"]
            return found

        started = time.monotonic()
        caller = time.thread_time()
        for n in range(records):
            log.info("order placed", order_id=n, amount=12.5, currency="EUR")
        caller = time.thread_time() - caller
        spooled_at = _wait(lambda: loki()["spooled"] >= records, 120)
        on_disk = loki()["spool"]["bytes"]
        server = ThreadingHTTPServer(("127.0.0.1", port), _Push)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        back = time.monotonic()
        done = _wait(lambda: loki()["spooled"] == 0 and loki()["exported"] >= records, 300)
        figures = loki()
        fapilog.shutdown(5)
        server.shutdown()
        server.server_close()
    return {
        "records": records,
        "caller_cpu_us_while_down": round(caller / records * 1e6, 2),
        "spooled_per_s": round(records / (spooled_at - started)),
        "replayed_per_s": round(records / (done - back)),
        "bytes_per_record": round(on_disk / records, 1),
        "exported": figures["exported"],
        "dropped": figures["dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    result = json.dumps(measure(parser.parse_args().records))
    print(result)
    print("RESULT " + result, file=sys.stderr)  # for bench/run.py


if __name__ == "__main__":
    main()

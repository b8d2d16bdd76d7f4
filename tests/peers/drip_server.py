"""An HTTP server on 127.0.0.1 that answers slowly on purpose: it reads each request whole,
then sends a valid response one byte every `interval` seconds (status line, headers and
body alike), as a broken proxy or an overloaded server may. Real sockets, one thread per
connection, TLS when given a certificate; `stop()` cuts every connection, so nothing
outlives the test.

    with DripServer(interval=1.0) as server:
        ... post to server.url ...
        server.requests          # requests read so far
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

__all__ = ["DripServer"]

RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class DripServer:
    def __init__(
        self,
        *,
        interval: float = 1.0,
        response: bytes = RESPONSE,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """`tls`: (certificate file, key file) to serve HTTPS."""
        self.interval = interval
        self.tls = tls
        self.response = response
        self.requests = 0
        self.bytes_sent = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> DripServer:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> DripServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.requests >= count, timeout)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._cond:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._cond:
                self._connections.append(connection)
            self._spawn(self._serve, connection)

    def _serve(self, connection: socket.socket) -> None:
        try:
            if self.tls is not None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self.tls)
                connection.settimeout(10)
                connection = context.wrap_socket(connection, server_side=True)
                with self._cond:
                    self._connections.append(connection)
            if not self._read_request(connection):
                return
            with self._cond:
                self.requests += 1
                self._cond.notify_all()
            for index in range(len(self.response)):
                if self._stop.wait(self.interval):
                    return
                connection.sendall(self.response[index : index + 1])
                with self._cond:
                    self.bytes_sent += 1
        except OSError:
            return  # the client gave up (its deadline) or the server stops
        finally:
            connection.close()

    def _read_request(self, connection: socket.socket) -> bool:
        """Read one request (headers, then a Content-Length body)."""
        connection.settimeout(10)
        return read_request(connection) is not None


def read_request(connection: Any) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 request read from `connection` (a socket, plain or TLS): its request
    line and headers, and its Content-Length body; None when the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    deadline = time.monotonic() + 10
    while len(body) < length and time.monotonic() < deadline:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head, body

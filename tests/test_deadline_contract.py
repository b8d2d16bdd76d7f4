"""The bounded transport under the Loki exporter, at its own edges: real sockets on
127.0.0.1, plain and TLS (TLS in TLS, as through an HTTPS proxy), servers that close, stall,
break the TLS stream or never answer the handshake; a kept-alive connection reused only while
its server keeps it; every wait ended by the deadline or by `abort()`. In-process."""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpcore
import httpx
import pytest

from fapilog.exporters._deadline import (
    DeadlineBackend,
    DeadlineTransport,
    _readable,
    install_quiet_filter,
    quiet_requests,
)
from peers.drip_server import read_request

BODY = bytes(range(256)) * 1200  # 300 KB: many TLS records, more than one read


_Served = TypeVar("_Served", bound="Listening")


class Listening:
    """A listener on 127.0.0.1 that serves each connection on a thread of its own
    (`_serve`); `close()` shuts the listener and every connection and waits for the
    threads."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in list(self._threads):
            thread.join(10)

    def __enter__(self: _Served) -> _Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._accepted()
            self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _accepted(self) -> None:
        """(Counted by a subclass that wants to.)"""

    def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError


class Server(Listening):
    """HTTP/1.1 on 127.0.0.1, TLS when given a certificate. `mode`:
    "answer" each request with BODY (keep-alive; "close" closes after the answer),
    "silent" accepts and never reads, "hangup" closes each connection at once,
    "junk" answers a request with bytes that are not TLS records, "stall" does the TLS
    handshake and then neither reads nor writes,
    "eof" / "notify" answer without a length and end the stream without / with TLS's
    close_notify."""

    def __init__(
        self, mode: str = "answer", tls: tuple[str, str] | None = None, body: bytes = BODY
    ) -> None:
        self.mode, self.tls, self.body = mode, tls, body
        self.connections = 0
        self.received: list[int] = []  # each request body's length
        self.heads: list[bytes] = []  # each request's line and headers
        self.seen = threading.Event()  # a request arrived
        self.ended = 0  # connections the server has closed
        self.errors: list[BaseException] = []  # what ended a connection early
        self._changed = threading.Condition()
        super().__init__()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def wait_ended(self, count: int) -> None:
        """Until the server has closed `count` connections."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.ended >= count, 10)

    def _accepted(self) -> None:
        self.connections += 1

    def _serve(self, sock: socket.socket) -> None:
        conn: Any = sock
        try:
            if self.mode == "silent":
                self._stop.wait()  # reads nothing until close()
                return
            if self.mode == "stall":  # the TLS handshake, then nothing read or written
                sock.settimeout(10)
                assert self.tls is not None
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self.tls)
                conn = context.wrap_socket(sock, server_side=True)
                self._stop.wait()
                return
            if self.mode == "hangup":
                return
            sock.settimeout(10)
            if self.tls is not None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self.tls)
                conn = context.wrap_socket(sock, server_side=True)
            while self._request(conn):
                if self.mode == "junk":
                    os.write(conn.fileno(), b"\x17\x03\x03\x00\x05junk!" * 4)  # under TLS
                    return
                if self.mode in ("eof", "notify"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + self.body)
                    if self.mode == "notify":
                        conn = conn.unwrap()
                    return
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\n\r\n"
                conn.sendall(head.encode() + self.body)
                if self.mode == "close":
                    return
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)
            return
        finally:
            conn.close()
            sock.close()
            with self._changed:
                self.ended += 1
                self._changed.notify_all()

    def _request(self, conn: Any) -> bool:
        request = read_request(conn)
        if request is None:
            return False
        head, body = request
        self.received.append(len(body))
        self.heads.append(head)
        self.seen.set()
        return True


@pytest.fixture(params=["http", "https"])
def tls(request: pytest.FixtureRequest) -> tuple[str, str] | None:
    if request.param == "http":
        return None
    certificate: tuple[str, str] = request.getfixturevalue("trusted")
    return certificate


@pytest.fixture
def transport() -> Iterator[DeadlineTransport]:
    made = DeadlineTransport()
    yield made
    made.close()


def client(transport: DeadlineTransport) -> httpx.Client:
    return httpx.Client(transport=transport, timeout=10)


# -- requests, plain and TLS -------------------------------------------------------------------


def test_a_request_and_its_whole_answer_each_way_and_a_connection_kept_alive(
    tls: tuple[str, str] | None, transport: DeadlineTransport
) -> None:
    with Server(tls=tls) as server, client(transport) as http:
        for size in (0, 1, 2_000_000):
            with transport.deadline(30):
                response = http.post(server.url, content=b"x" * size)
            assert (response.status_code, response.content) == (200, BODY)
            assert response.headers["content-length"] == str(len(BODY))
        assert server.received == [0, 1, 2_000_000]
        assert server.connections == 1  # one connection, kept alive and reused
        stream = response.extensions["network_stream"]
        peer = stream.get_extra_info("server_addr")
        assert peer == ("127.0.0.1", server.port)
        sock = stream.get_extra_info("socket")
        assert isinstance(sock, socket.socket)
        assert stream.get_extra_info("client_addr") == sock.getsockname()
        assert stream.get_extra_info("no such thing") is None
        assert stream.get_extra_info("is_readable") is False
        ssl_object = stream.get_extra_info("ssl_object")
        assert (ssl_object is None) == (tls is None)
        if tls is not None:
            assert isinstance(ssl_object, ssl.SSLObject)
            assert ssl_object.server_hostname == "127.0.0.1"


def test_a_connection_its_server_closed_is_not_reused(
    tls: tuple[str, str] | None, transport: DeadlineTransport
) -> None:
    with Server("close", tls=tls) as server, client(transport) as http:
        for count in range(1, 4):
            with transport.deadline(30):
                assert http.get(server.url).content == BODY
            server.wait_ended(count)  # the server's end has reached the client's socket
        assert server.connections == 3


@pytest.mark.parametrize("mode", ["eof", "notify"])
def test_an_answer_ended_by_closing_the_tls_stream_is_read_whole(
    mode: str, trusted: tuple[str, str], transport: DeadlineTransport
) -> None:
    with Server(mode, tls=trusted) as server, client(transport) as http, transport.deadline(30):
        assert http.get(server.url).content == BODY


def test_bytes_that_are_not_tls_are_a_read_error(
    trusted: tuple[str, str], transport: DeadlineTransport
) -> None:
    with (
        Server("junk", tls=trusted) as server,
        client(transport) as http,
        transport.deadline(30),
        pytest.raises(httpx.ReadError),
    ):
        http.get(server.url)


def test_an_untrusted_certificate_is_a_connect_error_and_the_socket_is_closed(
    certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")
    transport = DeadlineTransport()
    with Server(tls=certificate) as server, client(transport) as http:
        with transport.deadline(30), pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
            http.get(server.url)
        assert transport.backend._open == set()


@pytest.mark.parametrize(
    ("mode", "seconds", "error"),
    [("hangup", 30, httpx.ConnectError), ("silent", 0.3, httpx.ConnectTimeout)],
    ids=["hung-up", "never-answered"],
)
def test_a_failed_handshake_is_a_connect_error_or_timeout_and_its_socket_is_closed(
    mode: str,
    seconds: float,
    error: type[Exception],
    trusted: tuple[str, str],
    transport: DeadlineTransport,
) -> None:
    """A server that hangs up during the handshake; one that never answers it, ended at the
    deadline."""
    with Server(mode, tls=trusted) as server, client(transport) as http:
        with transport.deadline(seconds), pytest.raises(error):
            http.get(server.url)
        assert transport.backend._open == set()


def test_tls_inside_tls_as_through_an_https_proxy(trusted: tuple[str, str]) -> None:
    """A relay that ends the outer TLS and passes the bytes on to a TLS server: the inner
    TLS runs over the outer one, both on the backend's sockets."""
    context = ssl.create_default_context(cafile=trusted[0])
    with Server(tls=trusted) as server:
        relay = socket.create_server(("127.0.0.1", 0))

        def run_relay() -> None:
            sock, _ = relay.accept()
            outer_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            outer_context.load_cert_chain(*trusted)
            with outer_context.wrap_socket(sock, server_side=True) as outer:
                inner = socket.create_connection(("127.0.0.1", server.port))
                with inner:
                    back = threading.Thread(target=_pump, args=(inner, outer), daemon=True)
                    back.start()
                    _pump(outer, inner)
                    inner.shutdown(socket.SHUT_RDWR)  # the client is done: so is the relay
                    back.join(10)

        relay_thread = threading.Thread(target=run_relay, daemon=True)
        relay_thread.start()
        backend = DeadlineBackend()
        with backend.deadline(30):
            plain = backend.connect_tcp("127.0.0.1", relay.getsockname()[1])
            outer = plain.start_tls(context, "127.0.0.1")
            inner = outer.start_tls(context, "localhost")
            assert inner.get_extra_info("ssl_object").server_hostname == "localhost"
            assert outer.get_extra_info("ssl_object").server_hostname == "127.0.0.1"
            inner.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            received = b""
            while not received.endswith(BODY):
                chunk = inner.read(65536)
                assert chunk
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 OK\r\n")
            inner.close()
        relay.close()
        relay_thread.join(10)
        assert backend._open == set()


# -- readable: a kept-alive connection's end -----------------------------------------------------


@pytest.mark.parametrize("poll", [True, False], ids=["poll", "select"])
def test_a_socket_is_readable_when_data_or_its_end_is_there_or_it_is_closed(
    poll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not poll:
        monkeypatch.delattr(select, "poll")
    mine, theirs = socket.socketpair()
    with mine, theirs:
        assert _readable(mine) is False
        theirs.sendall(b"x")
        assert _readable(mine) is True
        assert mine.recv(1) == b"x"
        assert _readable(mine) is False
        theirs.close()
        assert _readable(mine) is True
    assert _readable(mine) is True  # closed


# -- deadlines ------------------------------------------------------------------------------------


def test_each_wait_is_the_shorter_of_its_timeout_and_what_is_left() -> None:
    backend = DeadlineBackend()
    assert backend.left(None, TimeoutError) is None
    assert backend.left(2.5, TimeoutError) == 2.5
    with backend.deadline(10):
        assert backend.left(2.5, TimeoutError) == 2.5
        left = backend.left(None, TimeoutError)
        assert left is not None and 9 < left <= 10
        left = backend.left(60, TimeoutError)
        assert left is not None and 9 < left <= 10
        with backend.deadline(3):
            left = backend.left(None, TimeoutError)
            assert left is not None and 2 < left <= 3
            with backend.deadline(100):  # an inner block cannot extend its outer one
                left = backend.left(None, TimeoutError)
                assert left is not None and left <= 3
        left = backend.left(None, TimeoutError)
        assert left is not None and 9 < left <= 10
    assert backend.left(None, TimeoutError) is None
    with (
        backend.deadline(-5),
        pytest.raises(TimeoutError, match=r"^the request.s deadline has passed$"),
    ):
        backend.left(None, TimeoutError)
    with backend.deadline(0), pytest.raises(KeyError, match="deadline has passed"):
        backend.left(1.0, KeyError)


def test_a_deadline_is_this_threads_own() -> None:
    backend = DeadlineBackend()
    seen: list[float | None] = []
    with backend.deadline(5):
        thread = threading.Thread(target=lambda: seen.append(backend.left(None, TimeoutError)))
        thread.start()
        thread.join(10)
    assert seen == [None]


def test_a_server_that_never_reads_ends_the_send_at_the_deadline(
    transport: DeadlineTransport,
) -> None:
    with (
        Server("silent") as server,
        client(transport) as http,
        transport.deadline(0.5),
        pytest.raises(httpx.WriteTimeout),
    ):
        http.post(server.url, content=b"x" * 50_000_000)


def test_a_server_that_never_answers_ends_the_read_at_the_deadline(
    transport: DeadlineTransport,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, client(transport) as http:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with transport.deadline(0.3), pytest.raises(httpx.ReadTimeout):
            http.get(url)  # the listener's backlog takes the connection; nobody answers


# -- connecting --------------------------------------------------------------------------------


def test_socket_options_and_the_local_address_are_applied() -> None:
    backend = DeadlineBackend()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        keepalive = (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        stream = backend.connect_tcp(
            "127.0.0.1", port, timeout=5, local_address="127.0.0.2", socket_options=[keepalive]
        )
        sock = stream.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        local, local_port = stream.get_extra_info("client_addr")
        assert local == "127.0.0.2" and local_port > 1023  # the address given, any port
        assert backend._open == {sock}
        stream.close()
        assert backend._open == set()
        with pytest.raises(httpcore.ConnectError):
            backend.connect_tcp("127.0.0.1", port, socket_options=[(-1, -1, 1)])
        assert backend._open == set()


def test_a_connection_not_taken_in_ends_at_its_timeout_or_the_deadline() -> None:
    """A listener whose backlog is full: the next connection's handshake gets no answer."""
    backend = DeadlineBackend()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        waiting = []
        try:
            with pytest.raises(httpcore.ConnectTimeout):  # noqa: PT012 - fill, then one more
                for _ in range(8):
                    waiting.append(socket.create_connection(address, 0.3))
                    backend.connect_tcp(*address, timeout=0.3)
            with backend.deadline(0.3), pytest.raises(httpcore.ConnectTimeout):
                backend.connect_tcp(*address)
        finally:
            for sock in waiting:
                sock.close()


def test_a_write_to_a_reset_connection_is_a_write_error_and_past_the_deadline_a_timeout() -> None:
    backend = DeadlineBackend()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stream = backend.connect_tcp(*listener.getsockname(), timeout=5)
        with backend.deadline(0), pytest.raises(httpcore.WriteTimeout, match="deadline"):
            stream.write(b"x")
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # a reset
        with pytest.raises(httpcore.WriteError):
            stream.write(b"x" * 10_000_000, 5)
        stream.close()


def test_nothing_listening_is_a_connect_error() -> None:
    backend = DeadlineBackend()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
    with holder, pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("127.0.0.1", holder.getsockname()[1], timeout=5)


def test_abort_ends_the_waits_under_way_and_refuses_new_ones(
    transport: DeadlineTransport,
) -> None:
    outcome: list[BaseException] = []
    with Server("silent") as server, client(transport) as http:

        def request() -> None:
            try:
                with transport.deadline(60):
                    http.get(server.url)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=request, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not transport.backend._open and time.monotonic() < deadline:
            time.sleep(0.01)
        transport.backend.abort()
        thread.join(10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError)
        with pytest.raises(httpx.ConnectTimeout, match=r"^the request was aborted$"):
            http.get(server.url)


def test_a_connection_opened_after_abort_is_shut_at_once() -> None:
    backend = DeadlineBackend()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stream = backend.connect_tcp("127.0.0.1", listener.getsockname()[1], timeout=5)
        backend.abort()
        late = socket.create_connection(listener.getsockname(), 5)
        backend._opened(late)  # as when abort() came while it was connecting
        late.settimeout(5)
        assert late.recv(1) == b""  # shut down: the read ends at once
        with pytest.raises(httpcore.ReadTimeout, match="aborted"):
            stream.read(1)
        stream.close()
        late.close()


def test_sleep_sleeps() -> None:
    started = time.monotonic()
    DeadlineBackend().sleep(0.05)
    assert time.monotonic() - started >= 0.05


def test_a_handshake_not_answered_ends_at_its_own_timeout_without_a_deadline(
    trusted: tuple[str, str],
) -> None:
    """A TLS handshake, also one inside TLS, waits at most the timeout it is given."""
    context = ssl.create_default_context(cafile=trusted[0])
    backend = DeadlineBackend()
    with Server("silent") as silent:
        plain = backend.connect_tcp("127.0.0.1", silent.port, timeout=5)
        with pytest.raises(httpcore.ConnectTimeout):
            plain.start_tls(context, "127.0.0.1", timeout=0.3)
    with Server(tls=trusted) as server:  # the outer TLS answers, the inner is taken as HTTP
        plain = backend.connect_tcp("127.0.0.1", server.port, timeout=5)
        outer = plain.start_tls(context, "127.0.0.1", timeout=5)
        with pytest.raises(httpcore.ConnectTimeout):
            outer.start_tls(context, "localhost", timeout=0.3)
    assert backend._open == set()


def tls_stream(server: Server, certificate: tuple[str, str]) -> Any:
    context = ssl.create_default_context(cafile=certificate[0])
    plain = DeadlineBackend().connect_tcp("127.0.0.1", server.port, timeout=5)
    return plain.start_tls(context, "127.0.0.1", timeout=5)


def test_a_tls_read_gives_at_most_what_is_asked_and_says_what_is_still_there(
    trusted: tuple[str, str],
) -> None:
    with Server(tls=trusted) as server:
        stream = tls_stream(server, trusted)
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
        first = stream.read(5, 5)
        assert first == b"HTTP/"
        assert stream.get_extra_info("is_readable") is True  # the rest of the answer
        received = first
        while not received.endswith(BODY):
            chunk = stream.read(100_000, 5)
            assert chunk
            received += chunk
        assert stream.get_extra_info("is_readable") is False
        stream.close()
    with Server(tls=trusted, body=b"short") as server:  # one TLS record, read in part
        stream = tls_stream(server, trusted)
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
        assert stream.read(5, 5) == b"HTTP/"
        assert stream.get_extra_info("is_readable") is True  # decrypted, not read yet
        received = b"HTTP/"
        while not received.endswith(b"short"):
            received += stream.read(100_000, 5)
        assert stream.get_extra_info("is_readable") is False
        stream.close()


def test_tls_reads_and_writes_end_at_their_own_timeout_without_a_deadline(
    trusted: tuple[str, str],
) -> None:
    with Server("stall", tls=trusted) as server:
        stream = tls_stream(server, trusted)
        with pytest.raises(httpcore.ReadTimeout, match="timed out"):
            stream.read(10, 0.3)
        with pytest.raises(httpcore.WriteTimeout, match="timed out"):
            stream.write(b"x" * 50_000_000, 0.3)
        stream.close()


def test_a_tls_error_says_what_went_wrong(trusted: tuple[str, str]) -> None:
    with Server("junk", tls=trusted) as server:
        stream = tls_stream(server, trusted)
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
        with pytest.raises(httpcore.ReadError) as caught_error:
            stream.read(10, 5)
        assert "SSL" in str(caught_error.value)
        with pytest.raises(httpcore.WriteError) as write_error:  # the connection failed
            stream.write(b"more", 5)
        assert str(write_error.value) not in ("", "None")
        stream.close()
    with Server("silent", tls=trusted) as silent:
        backend = DeadlineBackend()
        plain = backend.connect_tcp("127.0.0.1", silent.port, timeout=5)
        context = ssl.create_default_context(cafile=trusted[0])
        with pytest.raises(httpcore.ConnectTimeout, match="timed out"):
            plain.start_tls(context, "127.0.0.1", timeout=0.3)


# -- through a forward proxy -------------------------------------------------------------------


def test_a_request_goes_through_the_proxy_with_its_credentials_and_headers() -> None:
    with Server() as proxy:
        url = f"http://ann:s3cret@127.0.0.1:{proxy.port}"
        transport = DeadlineTransport(proxy=httpx.Proxy(url, headers={"X-Via": "fapilog"}))
        with client(transport) as http, transport.deadline(30):
            assert http.get("http://loki.invalid:3100/push?x=1").content == BODY
        transport.close()
    [head] = proxy.heads
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET http://loki.invalid:3100/push?x=1 HTTP/1.1"
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in lines[1:])}
    assert headers[b"proxy-authorization"] == b"Basic YW5uOnMzY3JldA=="
    assert headers[b"x-via"] == b"fapilog"
    assert headers[b"host"] == b"loki.invalid:3100"


def test_requests_through_the_proxy_are_bounded_and_aborted_like_any() -> None:
    with Server("silent") as proxy:
        transport = DeadlineTransport(proxy=httpx.Proxy(f"http://127.0.0.1:{proxy.port}"))
        with client(transport) as http:
            with transport.deadline(0.3), pytest.raises(httpx.ReadTimeout):
                http.get("http://loki.invalid:3100/")
            transport.backend.abort()
            with pytest.raises(httpx.ConnectTimeout, match="aborted"):
                http.get("http://loki.invalid:3100/")
        transport.close()


def test_without_a_deadline_the_clients_own_timeouts_apply(transport: DeadlineTransport) -> None:
    with Server("silent") as server:
        with (
            httpx.Client(transport=transport, timeout=0.3) as http,
            pytest.raises(httpx.ReadTimeout),
        ):
            http.get(server.url)
        plain = transport.backend.connect_tcp("127.0.0.1", server.port, timeout=5)
        with pytest.raises(httpcore.ReadTimeout, match="timed out"):
            plain.read(10, 0.3)
        plain.close()


# -- fapilog's own requests are not logged -------------------------------------------------------


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("name", ["httpx", "httpcore", "httpx._client", "httpcore.http11"])
def test_httpx_and_httpcore_say_nothing_of_a_quiet_request_only(name: str) -> None:
    logger = logging.getLogger(name)  # (a child logger that exists before the filter)
    install_quiet_filter()
    install_quiet_filter()  # (once is enough: never twice)
    assert [type(f).__name__ for f in logger.filters].count("_OwnRequestFilter") == 1
    kept = _Kept()
    logger.addHandler(kept)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with quiet_requests():
            logger.info("fapilog's own request")
        logger.info("the application's request")
    finally:
        logger.setLevel(level)
        logger.removeHandler(kept)
    assert kept.messages == ["the application's request"]


class Socks5(Listening):
    """A SOCKS5 proxy on 127.0.0.1 (no authentication, or a username and password; CONNECT
    only) that records the credentials and addresses it is given and relays the bytes."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []
        self.offered: list[set[int]] = []  # the authentication methods each client offered
        self.credentials: list[tuple[str, str]] = []
        super().__init__()

    @staticmethod
    def _exactly(sock: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _serve(self, sock: socket.socket) -> None:
        try:
            _, methods = self._exactly(sock, 2)
            offered = set(self._exactly(sock, methods))
            self.offered.append(offered)
            if 2 in offered:  # username and password (RFC 1929)
                sock.sendall(b"\x05\x02")
                _, length = self._exactly(sock, 2)
                user = self._exactly(sock, length).decode()
                password = self._exactly(sock, self._exactly(sock, 1)[0]).decode()
                self.credentials.append((user, password))
                sock.sendall(b"\x01\x00")
            else:
                sock.sendall(b"\x05\x00")  # no authentication
            _, command, _, kind = self._exactly(sock, 4)
            assert command == 1  # CONNECT
            if kind == 3:  # a domain name
                host = self._exactly(sock, self._exactly(sock, 1)[0]).decode()
            else:
                host = socket.inet_ntoa(self._exactly(sock, 4))
            port = int.from_bytes(self._exactly(sock, 2), "big")
            self.asked.append((host, port))
            target = socket.create_connection(("127.0.0.1", port), 5)
            self._sockets.append(target)
            sock.sendall(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
            back = threading.Thread(target=_pump, args=(target, sock), daemon=True)
            back.start()
            _pump(sock, target)
        except OSError:
            pass


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass


@pytest.mark.parametrize(("scheme", "userinfo"), [("socks5", ""), ("socks5h", "ann:pw@")])
def test_a_request_goes_through_a_socks5_proxy_bounded_and_abortable(
    scheme: str, userinfo: str
) -> None:
    """(The proxy connects to 127.0.0.1 whatever host it is asked for.)"""
    proxy = Socks5()
    try:
        with Server() as server:
            url = f"{scheme}://{userinfo}127.0.0.1:{proxy.port}"
            transport = DeadlineTransport(proxy=httpx.Proxy(url))
            with client(transport) as http:
                with transport.deadline(30):
                    response = http.get(f"http://loki.example:{server.port}/push")
                assert response.content == BODY
                assert proxy.asked == [("loki.example", server.port)]
                assert proxy.credentials == ([("ann", "pw")] if userinfo else [])
                assert server.heads[0].startswith(b"GET /push HTTP/1.1")
                transport.backend.abort()
                with pytest.raises(httpx.ConnectTimeout, match="aborted"):
                    http.get(f"http://loki.example:{server.port}/push")
            transport.close()
    finally:
        proxy.close()

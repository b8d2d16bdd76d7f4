"""An httpx transport whose requests are bounded as a whole: connecting, sending the request
and reading the whole response take together at most the seconds given to `deadline()`,
however the server paces its bytes.

httpx's own timeouts apply per operation (a read waits at most ``read`` seconds for the next
bytes), so a server answering one byte a second holds a request for as long as it drips.
Here the socket I/O is done by `DeadlineBackend`, an httpcore network backend whose every
wait (connect, TLS handshake, each send and each receive) lasts at most what is left of the
deadline of the request running on the calling thread; past it the request fails with a
timeout (`httpx.ConnectTimeout`, `httpx.WriteTimeout` or `httpx.ReadTimeout`). Nothing waits
on another thread: the deadline only shortens the socket timeouts of the caller's own I/O.

    transport = DeadlineTransport(proxy=environment_proxy(url))
    client = httpx.Client(transport=transport, timeout=10)
    with transport.deadline(10):
        client.post(url, content=body)      # connect + send + the whole response

Everything else is httpcore's connection pool (keep-alive, HTTP/1.1), TLS with httpx's
default context (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured) and the environment's proxy
(`environment_proxy`: ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY``, read as
httpx reads them). TLS runs on memory buffers over the plain stream, so TLS through an
HTTPS proxy is bounded the same way. Name resolution (the system resolver) is not bounded.

`quiet_requests()` keeps httpx and httpcore from logging fapilog's own requests on the
calling thread (once `install_quiet_filter()` has put the filter on their loggers).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from typing import Any

import httpcore
import httpx

__all__ = [
    "DeadlineBackend",
    "DeadlineTransport",
    "environment_proxy",
    "install_quiet_filter",
    "quiet_requests",
]

_READ_SIZE = 64 * 1024

# httpcore's exceptions -> httpx's (the names httpx users catch)
_HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


@contextmanager
def _as_httpx() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            mapped = _HTTPX_ERRORS.get(kind)
            if mapped is not None:
                raise mapped(str(exc)) from exc
        raise


@contextmanager
def _as_httpcore(timeout: type[Exception], other: type[Exception]) -> Iterator[None]:
    """Socket errors as httpcore's: a timeout as `timeout`, any other OSError as `other`."""
    try:
        yield
    except (httpcore.TimeoutException, httpcore.NetworkError):
        raise
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except OSError as exc:
        raise other(str(exc) or type(exc).__name__) from exc


class _Deadlines(threading.local):
    at: float | None = None


class DeadlineBackend(httpcore.NetworkBackend):
    """Blocking sockets whose every wait ends by the deadline of the calling thread's current
    request (see `deadline`), or after httpcore's per-operation timeout if that comes first.
    TCP only: the transport never asks httpcore for a Unix socket."""

    def __init__(self) -> None:
        self._deadlines = _Deadlines()
        self._open: set[socket.socket] = set()  # (set operations are atomic)
        self.aborted = False

    def abort(self) -> None:
        """Give up now, from any thread: every open connection is shut down (a wait on it
        returns at once) and no new request waits (see `left`). Returns at once."""
        self.aborted = True
        for sock in list(self._open):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _opened(self, sock: socket.socket) -> None:
        self._open.add(sock)
        if self.aborted:  # aborted while connecting
            self.abort()

    def _closed(self, sock: socket.socket) -> None:
        self._open.discard(sock)

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Bound the I/O this thread does inside the block to `seconds` in total."""
        outer = self._deadlines.at
        at = time.monotonic() + max(0.0, seconds)
        self._deadlines.at = at if outer is None else min(outer, at)
        try:
            yield
        finally:
            self._deadlines.at = outer

    def left(self, timeout: float | None, error: type[Exception]) -> float | None:
        """The timeout for one wait: `timeout`, shortened to what is left of the deadline;
        `error` when nothing is left."""
        if self.aborted:
            raise error("the request was aborted")
        at = self._deadlines.at
        if at is None:
            return timeout
        remaining = at - time.monotonic()
        if remaining <= 0:
            raise error("the request's deadline has passed")
        return remaining if timeout is None else min(timeout, remaining)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        source = None if local_address is None else (local_address, 0)
        with _as_httpcore(httpcore.ConnectTimeout, httpcore.ConnectError):
            wait = self.left(timeout, httpcore.ConnectTimeout)
            sock = socket.create_connection((host, port), wait, source_address=source)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()
                raise
        self._opened(sock)
        return _SocketStream(sock, self)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _SocketStream(httpcore.NetworkStream):
    """A plain connected socket; each wait bounded by the backend's deadline."""

    def __init__(self, sock: socket.socket, backend: DeadlineBackend) -> None:
        self._sock = sock
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _as_httpcore(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(self._backend.left(timeout, httpcore.ReadTimeout))
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        with _as_httpcore(httpcore.WriteTimeout, httpcore.WriteError):
            while view:
                # one send per wait: a server that reads a byte at a time cannot stretch it
                self._sock.settimeout(self._backend.left(timeout, httpcore.WriteTimeout))
                view = view[self._sock.send(view) :]

    def close(self) -> None:
        self._backend._closed(self._sock)
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _TlsStream(self, ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            return _readable(self._sock)
        return None


class _TlsStream(httpcore.NetworkStream):
    """TLS on memory buffers over another stream (a socket, or an HTTPS proxy's tunnel):
    its I/O is the outer stream's, so it is bounded by the same deadline."""

    def __init__(
        self,
        outer: httpcore.NetworkStream,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None,
        timeout: float | None,
    ) -> None:
        self._outer = outer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = ssl_context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        try:
            self._run(self._tls.do_handshake, timeout)
        except httpcore.TimeoutException as exc:
            outer.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (httpcore.NetworkError, ssl.SSLError) as exc:
            outer.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc

    def _run(self, operation: Any, timeout: float | None, *args: Any) -> Any:
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush(timeout)
                data = self._outer.read(_READ_SIZE, timeout)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush(timeout)
            return result

    def _flush(self, timeout: float | None) -> None:
        pending = self._outgoing.read()
        if pending:
            self._outer.write(pending, timeout)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            data: bytes = self._run(self._tls.read, timeout, max_bytes)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # the end of the stream, closed or not with close_notify
        except ssl.SSLError as exc:
            raise httpcore.ReadError(str(exc)) from exc
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        try:
            while view:
                view = view[self._run(self._tls.write, timeout, view) :]
        except ssl.SSLError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._outer.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _TlsStream(self, ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._tls
        if info == "is_readable":  # bytes not decrypted yet, decrypted not read yet, or more
            return (
                self._incoming.pending > 0
                or self._tls.pending() > 0
                or self._outer.get_extra_info("is_readable")
            )
        return self._outer.get_extra_info(info)


def _readable(sock: socket.socket) -> bool:
    """Whether a read would return at once (data, or the end: the server closed an idle
    kept-alive connection). A closed socket counts as readable."""
    if sock.fileno() < 0:
        return True
    if sys.platform == "win32" or not hasattr(select, "poll"):
        ready, _, _ = select.select([sock], [], [], 0)
        return bool(ready)
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx():
            yield from self._stream

    def close(self) -> None:
        closer = getattr(self._stream, "close", None)
        if closer is not None:
            with _as_httpx():
                closer()


class DeadlineTransport(httpx.BaseTransport):
    """httpcore's connection pool (or proxy pool) on a `DeadlineBackend`: see the module
    docstring. `deadline(seconds)` bounds the requests made inside it on this thread."""

    def __init__(self, *, proxy: httpx.Proxy | None = None) -> None:
        self.backend = DeadlineBackend()
        context = httpx.create_ssl_context(trust_env=True)
        pool: httpcore.ConnectionPool | httpcore.HTTPProxy | httpcore.SOCKSProxy
        if proxy is None:
            pool = httpcore.ConnectionPool(ssl_context=context, network_backend=self.backend)
        elif proxy.url.scheme in ("socks5", "socks5h"):
            pool = httpcore.SOCKSProxy(  # needs the socksio package, as httpx does
                proxy_url=_core_url(proxy.url),
                proxy_auth=proxy.raw_auth,
                ssl_context=context,
                network_backend=self.backend,
            )
        else:
            pool = httpcore.HTTPProxy(
                proxy_url=_core_url(proxy.url),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                ssl_context=context,
                proxy_ssl_context=proxy.ssl_context,
                network_backend=self.backend,
            )
        self._pool = pool

    def deadline(self, seconds: float) -> Any:
        """Context manager: the requests this thread makes inside take at most `seconds`."""
        return self.backend.deadline(seconds)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=_core_url(request.url),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        with _as_httpx():
            self._pool.close()


def _core_url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    )


def environment_proxy(url: httpx.URL) -> httpx.Proxy | None:
    """The proxy the environment sets for `url` (``<SCHEME>_PROXY``, else ``ALL_PROXY``),
    unless ``NO_PROXY`` exempts its host (``*``; a host, IP address or ``localhost``; a
    domain, which covers its subdomains; ``.domain``: its subdomains only), as httpx reads
    them."""
    found = urllib.request.getproxies()
    if _exempt(url.host, found.get("no", "")):
        return None
    value = found.get(url.scheme) or found.get("all")
    if not value:
        return None
    return httpx.Proxy(value if "://" in value else f"http://{value}")


def _exempt(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for item in no_proxy.split(","):
        entry = item.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry = (httpx.URL(entry).host if "://" in entry else entry).strip("[]")
        if _is_address(entry) or entry == "localhost":
            if host == entry:
                return True
        elif entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


class _Quiet(threading.local):
    on = False


_QUIET = _Quiet()


class _OwnRequestFilter(logging.Filter):
    """Keeps httpx from logging each of fapilog's own requests ("HTTP Request: POST ..."):
    on a fapilog worker those lines would be noise on stderr, or feed the pipeline itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.on


_FILTER = _OwnRequestFilter()


def install_quiet_filter() -> None:
    """On httpx's and httpcore's loggers (a logger's filters do not apply to its children,
    so every module logger: ``httpcore.connection``, ``httpcore.http11``, ...)."""
    names = {"httpx", "httpcore"} | {
        name
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(("httpx.", "httpcore."))
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextmanager
def quiet_requests() -> Iterator[None]:
    """On this thread, httpx and httpcore log nothing while the block runs."""
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = False

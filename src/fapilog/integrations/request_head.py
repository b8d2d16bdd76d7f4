"""The request head: what fapilog needs of a request's ASGI scope, read in one walk.

The server span (host, user agent, trace propagation headers), the request event (request
id, content length) and request enrichment (user agent, proxy headers, allowlisted headers)
all read the same `RequestHead`, filled by one pass over the header list. Which headers
matter is decided once per configuration and propagator (`HeadReader`), not per request.
ASGI servers give header names in lower case, as bytes.

A ``Content-Length`` counts only when it is one (or several equal) plain decimal numbers of
at most 2**63 - 1 (`content_length`); anything else (a sign, other digits, a number too
large for an OpenTelemetry integer) is ignored, as if it were absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["HeadReader", "MAX_SIZE", "RequestHead", "content_length"]

MAX_SIZE = 2**63 - 1
"""The largest size attribute fapilog records (OpenTelemetry integers are signed 64-bit)."""
_MAX_DIGITS = len(str(MAX_SIZE))
_OWS = b" \t"  # the whitespace HTTP allows around a field value

# what a header is read for (a name may serve several)
_HOST = 1
_USER_AGENT = 2
_CONTENT_LENGTH = 4
_REQUEST_ID = 8
_X_FORWARDED_FOR = 16
_FORWARDED = 32
_PROPAGATION = 64
_SHOWN = 128


class RequestHead:
    """The headers of one request that fapilog reads (bytes, as the server gave them)."""

    __slots__ = (
        "carrier",
        "content_length",
        "forwarded",
        "headers",
        "host",
        "request_id",
        "shown",
        "user_agent",
        "x_forwarded_for",
    )

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.headers = headers  # the full list (for a propagator that reads any header)
        self.host: bytes | None = None
        self.user_agent: bytes | None = None
        self.content_length: int | None = None  # None: none, or none that counts
        self.request_id: bytes | None = None  # the first valid inbound request id
        # (the empty tuple until a header fills them: most requests have none)
        self.x_forwarded_for: Sequence[bytes] = ()
        self.forwarded: Sequence[bytes] = ()
        self.carrier: dict[str, list[str]] | None = None  # trace propagation headers
        self.shown: Sequence[tuple[bytes, bytes]] = ()  # allowlisted headers, in order


class HeadReader:
    """Reads the headers that one configuration needs (see the module docstring).

    `request_id`: the request id header (lower case) and its validator; `propagation`: the
    header names the trace propagator reads; `shown`: the allowlisted header names;
    `proxies`: whether proxy headers matter (trusted proxies are configured)."""

    __slots__ = ("_roles", "_valid_id")

    def __init__(
        self,
        *,
        request_id: bytes | None,
        valid_id: Any,
        propagation: Iterable[bytes] = (),
        shown: Iterable[bytes] = (),
        proxies: bool = False,
    ) -> None:
        roles: dict[bytes, int] = {b"host": _HOST, b"user-agent": _USER_AGENT}
        roles[b"content-length"] = _CONTENT_LENGTH
        if request_id is not None:
            roles[request_id] = roles.get(request_id, 0) | _REQUEST_ID
        if proxies:
            roles[b"x-forwarded-for"] = roles.get(b"x-forwarded-for", 0) | _X_FORWARDED_FOR
            roles[b"forwarded"] = roles.get(b"forwarded", 0) | _FORWARDED
        for name in propagation:
            roles[name] = roles.get(name, 0) | _PROPAGATION
        for name in shown:
            roles[name] = roles.get(name, 0) | _SHOWN
        self._roles = roles
        self._valid_id = valid_id

    def read(self, scope: Mapping[str, Any]) -> RequestHead:
        headers = scope.get("headers") or ()
        head = RequestHead(headers)
        roles = self._roles
        for name, value in headers:
            role = roles.get(name)
            if role is None:
                continue
            if role & _HOST:
                head.host = value
            if role & _USER_AGENT:
                head.user_agent = value
            if role & _CONTENT_LENGTH:
                length = content_length(value)
                previous = head.content_length
                if length is None or (previous is not None and previous != length):
                    length = _INVALID  # (two different lengths: none counts)
                head.content_length = length
            if role & _REQUEST_ID and head.request_id is None and self._valid_id(value):
                head.request_id = value
            if role & _X_FORWARDED_FOR:
                head.x_forwarded_for = (*head.x_forwarded_for, value)
            if role & _FORWARDED:
                head.forwarded = (*head.forwarded, value)
            if role & _PROPAGATION:
                carrier = head.carrier
                if carrier is None:
                    carrier = head.carrier = {}
                carrier.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
            if role & _SHOWN:
                head.shown = (*head.shown, (name, value))
        if head.content_length == _INVALID:
            head.content_length = None
        return head


_INVALID = -1  # while reading: a Content-Length that does not count


def content_length(value: bytes | str) -> int | None:
    """A ``Content-Length`` value as a size: ASCII digits only (leading zeros allowed),
    optional whitespace around them, at most `MAX_SIZE`; None for anything else."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    digits = raw.strip(_OWS)
    if not digits.isdigit():  # (bytes: ASCII digits only; no sign, no "_", not empty)
        return None
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) > _MAX_DIGITS:
        return None
    size = int(digits)
    return size if size <= MAX_SIZE else None

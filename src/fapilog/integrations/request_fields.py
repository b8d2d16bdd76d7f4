"""Request enrichment used by the FastAPI middleware: client address, user agent, headers.

`request_fields(scope, head, plan)` returns the attributes added to the request event from
the ASGI scope and its `RequestHead`; `response_fields(headers, plan)` those from the
response headers. (Body sizes, method, route and status are the middleware's.) The
`EnrichmentPlan` is what the settings mean, computed once per configuration. See
docs/enrichment.md.

- ``client.address``: the peer address, anonymised by default (IPv4 to its /24, IPv6 to
  its /48: ``203.0.113.0``, ``2001:db8:cafe::``); ``client_ip=full`` keeps it whole,
  ``none`` leaves it out. ``X-Forwarded-For`` / ``Forwarded`` are honoured only when the
  peer is one of the ``trusted_proxies``: the chain is walked from the right while the hop
  is trusted, so a client cannot spoof its address through them.
- ``user_agent.original``.
- ``http.request.header.<name>`` / ``http.response.header.<name>`` (lower-case names, a
  list of values, as the OpenTelemetry semantic conventions define them) for the headers
  in the ``headers`` allowlist, none by default. Sensitive headers (``Authorization``,
  ``Cookie``, ``Set-Cookie``, ``Proxy-Authorization``, ``X-API-Key`` and
  ``sensitive_headers``) only ever show the redaction marker. Headers whose value is a
  URL (``Referer``, ``Location``, ...: `URL_HEADERS`) show it without its query string, or
  with its values redacted (``query``, see `fapilog.integrations.access_lines`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fapilog.integrations.access_lines import clean_target
from fapilog.integrations.request_head import RequestHead
from fapilog.settings import RequestSettings
from fapilog.settings.redaction import DEFAULT_MARKER, SENSITIVE_HEADERS

__all__ = [
    "EnrichmentPlan",
    "URL_HEADERS",
    "anonymize_ip",
    "client_address",
    "parse_ip",
    "request_fields",
    "response_fields",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REQUEST_PREFIX = "http.request.header."
_RESPONSE_PREFIX = "http.response.header."
_CACHE_LIMIT = 1024
# headers whose value is a URL, which may carry a query string (proxies put the original
# request target in the last four)
URL_HEADERS = frozenset({b"referer", b"location", b"content-location", b"x-original-url",
                         b"x-original-uri", b"x-forwarded-uri", b"x-rewrite-url"})  # fmt: skip


class EnrichmentPlan:
    """What one `RequestSettings` (and the redaction marker) mean, computed once."""

    __slots__ = (
        "client_ip",
        "marker",
        "proxies",
        "query_marker",
        "request_headers",
        "response_headers",
        "sensitive",
        "settings",
        "shown",
    )

    def __init__(
        self,
        settings: RequestSettings,
        marker: str = DEFAULT_MARKER,
        secret_headers: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.marker = marker
        self.client_ip = settings.client_ip
        self.proxies: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in settings.trusted_proxies
        )
        names = [name.lower() for name in settings.headers]
        self.request_headers = {n.encode("latin-1"): _REQUEST_PREFIX + n for n in names}
        self.response_headers = {n.encode("latin-1"): _RESPONSE_PREFIX + n for n in names}
        self.sensitive = frozenset(
            name.lower().encode("latin-1")
            for name in (*SENSITIVE_HEADERS, *settings.sensitive_headers, *secret_headers)
        )
        self.shown: dict[str, str] = {}  # peer host -> what client.address shows (no proxies)
        # None: query strings omitted; else the marker replacing their values
        self.query_marker = marker if settings.query == "redacted" else None


def request_fields(
    scope: Mapping[str, Any], head: RequestHead, plan: EnrichmentPlan
) -> dict[str, Any]:
    """The request event's enrichment from an ASGI ``http`` scope and its head (never
    raises for a well-formed scope; malformed header values are skipped)."""
    fields: dict[str, Any] = {}
    if head.user_agent is not None:
        fields["user_agent.original"] = head.user_agent.decode("latin-1")
    wanted = plan.request_headers
    for name, value in head.shown:
        fields.setdefault(wanted[name], []).append(_shown(plan, name, value))
    if plan.client_ip != "none":
        client = scope.get("client")
        peer = str(client[0]) if client else None
        if peer is not None:
            address = _client(plan, peer, head.forwarded, head.x_forwarded_for)
            if address:
                fields["client.address"] = address
    return fields


def response_fields(headers: Iterable[tuple[bytes, bytes]], plan: EnrichmentPlan) -> dict[str, Any]:
    """The request event's enrichment from the response headers (the allowlist only)."""
    wanted = plan.response_headers
    if not wanted:
        return {}
    fields: dict[str, Any] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in wanted:
            fields.setdefault(wanted[name], []).append(_shown(plan, name, value))
    return fields


def _shown(plan: EnrichmentPlan, name: bytes, value: bytes) -> str:
    """What an allowlisted header shows: the marker for a sensitive one, a URL without its
    query string (or with its values redacted), any other value as it is."""
    if name in plan.sensitive:
        return plan.marker
    text = value.decode("latin-1")
    if name in URL_HEADERS and "?" in text:
        return clean_target(text, plan.query_marker)
    return text


def _client(
    plan: EnrichmentPlan, peer: str, forwarded: Sequence[bytes], x_forwarded_for: Sequence[bytes]
) -> str:
    if plan.proxies and (forwarded or x_forwarded_for):
        address = client_address(
            peer,
            plan.proxies,
            forwarded=b",".join(forwarded).decode("latin-1") if forwarded else None,
            x_forwarded_for=(
                b",".join(x_forwarded_for).decode("latin-1") if x_forwarded_for else None
            ),
        )
        return _show(plan.client_ip, address)
    shown = plan.shown.get(peer)  # the same few peers over and over (a proxy, a LB)
    if shown is None:
        shown = _show(plan.client_ip, peer)
        if len(plan.shown) >= _CACHE_LIMIT:
            plan.shown.clear()
        plan.shown[peer] = shown
    return shown


def _show(mode: str, address: str) -> str:
    if mode == "full":
        ip = parse_ip(address)
        return str(ip) if ip is not None else address
    return anonymize_ip(address)


def anonymize_ip(address: str) -> str:
    """IPv4 -> its /24 network address, IPv6 -> its /48 (an IPv4-mapped IPv6 address is
    treated as IPv4). Something that is not an IP address (a unix socket, a test client
    name) is returned unchanged."""
    ip = parse_ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network((ip, prefix), strict=False).network_address)


def parse_ip(text: str) -> IPAddress | None:
    """An IP address from a peer or proxy-header value: ``192.0.2.1``, ``192.0.2.1:8080``,
    ``2001:db8::1``, ``[2001:db8::1]:4711``, quoted; None for ``unknown``, obfuscated
    identifiers and anything else."""
    value = text.strip().strip('"').strip()
    if not value:
        return None
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.partition(":")[0]
    if "%" in value:  # IPv6 zone index
        value = value.partition("%")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(ip: IPAddress, proxies: tuple[IPNetwork, ...]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in proxies)


def _forwarded_for(header: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header, in order."""
    hops: list[str] = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                hops.append(value.strip())
    return hops


def client_address(
    peer: str,
    proxies: tuple[IPNetwork, ...],
    *,
    forwarded: str | None = None,
    x_forwarded_for: str | None = None,
) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the
    right-most hop of ``Forwarded`` (preferred) or ``X-Forwarded-For`` that is not itself
    a trusted proxy. An unparsable hop stops the walk (the last trusted hop is used)."""
    current = parse_ip(peer)
    if current is None or not _trusted(current, proxies):
        return peer
    if forwarded is not None:
        hops = _forwarded_for(forwarded)
    elif x_forwarded_for is not None:
        hops = [hop for hop in x_forwarded_for.split(",") if hop.strip()]
    else:
        hops = []
    for hop in reversed(hops):
        if not _trusted(current, proxies):
            break
        ip = parse_ip(hop)
        if ip is None:
            break
        current = ip
    return str(current)

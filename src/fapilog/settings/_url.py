"""Strict parsing of the URL settings (the Loki URL, the OTLP endpoint): a URL that a client
would refuse later, or silently take apart otherwise than meant (``http://loki host:3100``,
``http://loki:99999``, ``loki:3100``), is refused at configure time with what is wrong.

The caller raises the setting error, which shows the value with its userinfo masked."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = ["url_problem"]

# a host name: letters (any script: internationalised names), digits, "-", ".", "_", "~"
# and percent-escapes, as RFC 3986 allows in a registered name
_HOST_CHAR = re.compile(r"[\w\-.~%]")
_PORT = re.compile(r"[0-9]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")  # RFC 3986


def url_problem(raw: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """What is wrong with `raw` as a URL of one of `schemes` with a host and an optional
    port, or None when nothing is. Surrounding whitespace is ignored (the settings strip it).
    The text never quotes the userinfo (nor anything before the URL's last "@")."""
    text = raw.strip()
    if not text:
        return "it is empty"
    for char in text:
        if char == " ":
            return "it contains a space"
        if char.isspace() or not char.isprintable():
            return f"it contains the control character {char!r}"
    scheme, sep, rest = text.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):  # (credentials in front of the URL, say)
        return "it has no scheme (" + " or ".join(f"{name}://" for name in schemes) + ")"
    if scheme.lower() not in schemes:
        return f"the scheme {scheme!r} is not supported"
    # after the userinfo, up to its last "@", as `mask_url` masks it: nothing before it is
    # ever quoted (a password may hold "/", "?" or "#" unencoded)
    hostport = re.split(r"[/?#]", rest.rpartition("@")[2], maxsplit=1)[0]
    if hostport.startswith("["):
        host, bracket, port = hostport[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return "the IPv6 address is not closed by ']' before the port"
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        port = port[1:]
    else:
        host, _, port = hostport.partition(":")
        if not host:
            return "it has no host"
        wrong = sorted({char for char in host if not _HOST_CHAR.fullmatch(char)})
        if wrong:
            return "the host contains " + ", ".join(repr(char) for char in wrong)
    if not _PORT.fullmatch(port):
        return f"the port {port!r} is not a number"
    if port and not 1 <= int(port) <= 65535:
        return f"the port {int(port)} is out of range (1-65535)"
    try:
        urlsplit(text)
    except ValueError as exc:  # pragma: no cover - every case above is checked first
        return f"it cannot be parsed ({exc})"
    return None

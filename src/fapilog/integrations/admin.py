"""The level route: ``GET``/``PUT`` on ``FAPILOG_ADMIN__PATH`` (``/_fapilog/levels``),
served by the request middleware ahead of the application, and only while
``FAPILOG_ADMIN__TOKEN`` is set (docs/sampling.md).

- Every request needs ``Authorization: Bearer <token>``, compared in constant time;
  without it: 401, and nothing changes.
- ``GET`` answers the levels in force (`fapilog.lifecycle.levels.current_levels`).
- ``PUT`` takes ``{"logger": name or null, "level": "debug", "ttl": seconds or null}`` and
  calls `fapilog.set_level` (the audit record names the client as ``who``); it answers the
  levels in force afterwards, or 400 saying what is wrong with the body.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fapilog.lifecycle.levels import current_levels, set_level
from fapilog.settings import AdminSettings

__all__ = ["AdminRoute", "MAX_BODY"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 4096  # bytes of a PUT body read at most
_AUTHORIZATION = b"authorization"


class AdminRoute:
    """The route of one configuration's admin settings (a token is set)."""

    __slots__ = ("_token", "path")

    def __init__(self, admin: AdminSettings) -> None:
        assert admin.token is not None
        self._token = b"Bearer " + admin.token.get_secret_value().encode()
        self.path = admin.path

    @classmethod
    def of(cls, admin: AdminSettings | None) -> AdminRoute | None:
        """The route, or None: never mounted without a token."""
        return cls(admin) if admin is not None and admin.token is not None else None

    def authorized(self, scope: Scope) -> bool:
        given = b""
        for key, value in scope.get("headers") or ():
            if key.lower() == _AUTHORIZATION:
                given = bytes(value).strip()
                break
        return hmac.compare_digest(given, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.authorized(scope):
            await _answer(send, 401, {"error": "a valid bearer token is required"},
                          [(b"www-authenticate", b'Bearer realm="fapilog"')])  # fmt: skip
            return
        method = scope.get("method", "GET")
        if method == "GET":
            await _answer(send, 200, current_levels())
            return
        if method != "PUT":
            await _answer(send, 405, {"error": "use GET or PUT"}, [(b"allow", b"GET, PUT")])
            return
        body = await _read_body(receive)
        if body is None:
            await _answer(send, 413, {"error": f"the body is over {MAX_BODY} bytes"})
            return
        try:
            change = _parse(body)
            client = scope.get("client")
            who = f"{client[0]} via {self.path}" if client else self.path
            set_level(change["level"], change.get("logger"), change.get("ttl"), who=who)
        except ValueError as exc:
            await _answer(send, 400, {"error": str(exc)})
            return
        await _answer(send, 200, current_levels())


def _parse(body: bytes) -> dict[str, Any]:
    try:
        change = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(change, dict) or "level" not in change:
        raise ValueError('write {"logger": "name" or null, "level": "debug", "ttl": 60 or null}')
    unknown = sorted(set(change) - {"logger", "level", "ttl"})
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(unknown)}")
    return change


async def _read_body(receive: Receive) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += bytes(message.get("body", b""))
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return body


async def _answer(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""Values on every record of a context: `bind_context`, `unbind_context`, `contextualize`.

The store is structlog's contextvars (`structlog.contextvars`: one `ContextVar` per key),
the one the chain's first processor, `merge_contextvars`, reads for every record (fapilog's
loggers, `structlog.get_logger()` loggers and the stdlib records routed into fapilog alike),
and the one the FastAPI middleware binds ``request_id`` in and each request starts clean
(`fapilog.integrations.isolation`). So these functions and structlog's own
``bind_contextvars`` see each other's values, and the log call does no more than it did:
the cost is in binding, not in logging.

Being contextvars, the values follow the context: an asyncio task gets a copy of its
creator's (it sees what was bound there; what it binds stays in it), a FastAPI sync endpoint
runs in a copy of the request's, and a plain `threading.Thread` starts empty (run its target
with `contextvars.copy_context().run` to carry them).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import structlog.contextvars
from structlog.contextvars import STRUCTLOG_KEY_PREFIX, bind_contextvars

__all__ = ["ContextBinding", "bind_context", "contextualize", "merge_bound", "unbind_context"]

_Tokens = Mapping[str, contextvars.Token[Any]]


def bind_context(**values: Any) -> None:
    """Put `values` on every record logged from now on in the current context: until
    `unbind_context()`, or until the request ends when called inside a request (FastAPI)::

        bind_context(tenant="acme", **{"user.id": 42})

    A key already bound takes the new value; a field given in the log call itself wins
    over a bound one of the same key."""
    bind_contextvars(**values)


def unbind_context(*keys: str) -> None:
    """Take `keys` off the records of the current context (a key not bound is ignored)."""
    if not keys:
        return
    names = {STRUCTLOG_KEY_PREFIX + key for key in keys}
    # every variable of those names (two threads binding a new key at the same moment can
    # each create one), so a key never survives its unbinding
    for var in contextvars.copy_context():
        if var.name in names:
            var.set(Ellipsis)  # structlog's "not bound"


class ContextBinding:
    """What `contextualize()` returns: a context manager for ``with`` and ``async with``
    that binds its values on entry and puts back, on exit (an exception included), what
    those keys held before (bound to another value, or not bound). Other keys, bound or
    unbound inside the block, are left as they are.

    Each ``with`` should take its own ``contextualize(...)`` call; one object may be
    entered again inside itself (nested ``with``), not by two tasks at once.
    """

    __slots__ = ("_entered", "_values")

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values
        self._entered: list[_Tokens] = []

    def __enter__(self) -> None:
        self._entered.append(bind_contextvars(**self._values))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._entered:
            _restore(self._entered.pop())

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def __repr__(self) -> str:
        return f"contextualize({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


def contextualize(**values: Any) -> ContextBinding:
    """Bind `values` for the duration of a block, then put back what was there::

        with contextualize(order_id=7):
            log.info("paid")           # carries order_id=7
        log.info("done")               # does not (or the order_id bound before, if any)

    ``async with contextualize(...)`` works the same; blocks nest (the inner value wins
    inside the inner block); a task created inside the block sees the values."""
    return ContextBinding(values)


def _restore(tokens: _Tokens) -> None:
    for token in tokens.values():
        var = token.var
        try:
            var.reset(token)
        except (ValueError, RuntimeError):
            # exited in another context than entered (a generator resumed elsewhere, a
            # fixture torn down in another task), or the token was used: set what the key
            # held before directly, in the current context
            old = token.old_value
            var.set(Ellipsis if old is contextvars.Token.MISSING else old)


# structlog's own variables, by name (``structlog_<key>``): a private table of structlog's
# contextvars module, read only by `merge_bound` (which falls back to structlog's merge
# without it)
_STRUCTLOG_VARS: dict[str, contextvars.ContextVar[Any]] | None = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None
)
_PREFIX_LENGTH = len(STRUCTLOG_KEY_PREFIX)


def merge_bound(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog's `merge_contextvars`, reading only structlog's own variables instead of
    every variable of the context (a request's context has many): the values bound now,
    keys of the call winning. For a record held by a flight recorder."""
    table = _STRUCTLOG_VARS
    if table is None:
        return structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
    for name, variable in tuple(table.items()):
        value = variable.get()
        if value is not Ellipsis:
            event_dict.setdefault(name[_PREFIX_LENGTH:], value)
    return event_dict

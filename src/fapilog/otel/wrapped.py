"""Providers inside wrappers: an OpenTelemetry Logger- or TracerProvider someone installed
globally may wrap the SDK's (Logfire's ProxyLoggerProvider and ProxyTracerProvider keep it
as ``provider``, to swap it later). fapilog attaches to the SDK provider inside."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["MAX_WRAPPERS", "WRAPPED_PROVIDER_ATTRIBUTES", "inner_provider"]

# Where a provider that wraps another keeps it, followed at most MAX_WRAPPERS deep.
WRAPPED_PROVIDER_ATTRIBUTES = ("provider", "_provider", "_delegate", "_wrapped", "__wrapped__")
MAX_WRAPPERS = 4

_Kind = TypeVar("_Kind")


def inner_provider(provider: object, kind: type[_Kind], method: str) -> _Kind | None:
    """The `kind` instance (an SDK provider class) `provider` is, or wraps: a provider of
    the API (an object whose class has `method`, ``get_logger``/``get_tracer``) that keeps
    another under one of `WRAPPED_PROVIDER_ATTRIBUTES`, read as stored (a wrapper's own
    ``__getattr__`` forwarding is not followed). None when there is none within
    `MAX_WRAPPERS` wrappers."""
    current = provider
    for _ in range(MAX_WRAPPERS + 1):
        if isinstance(current, kind):
            return current
        if not callable(getattr(type(current), method, None)):
            return None
        inner: object = None
        for name in WRAPPED_PROVIDER_ATTRIBUTES:
            try:
                inner = object.__getattribute__(current, name)
            except Exception:
                continue
            if inner is not None and inner is not current:
                break
            inner = None
        if inner is None:
            return None
        current = inner
    return None

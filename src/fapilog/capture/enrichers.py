"""Enrichers: processors that add context to every event (see docs/enrichment.md).

`build_processors(settings)` returns the enrichment processors placed in the chain, in
order, before redaction (so whatever an enricher adds is redacted too):

1. process metrics (``FAPILOG_SYSTEM__METRICS=true``): the latest background sample of
   the process's memory and CPU, attached from a cache;
2. the custom enrichers named in ``FAPILOG_ENRICHERS``, in that order.

A custom enricher is a structlog processor ``(logger, method_name, event_dict) ->
event_dict``, or a callable ``(event_dict) -> event_dict``, or a class whose instances are
either. Register it in code with ``fapilog.register_enricher(name, fn)`` or from a package
through the entry-point group ``fapilog.enrichers``. An enricher that raises is skipped
for that event (the event is still logged), its failures are counted
(`failure_counts()`) and the first one is reported on stderr. Raising
``structlog.DropEvent`` drops the event on purpose.

Static facts (service, version, environment, host, pid, runtime) are not enrichers: they
are OpenTelemetry Resource attributes, set once per process and carried by every exporter.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, MutableMapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from structlog import DropEvent

from fapilog import _diag
from fapilog._state import STATE
from fapilog.settings._errors import setting_error

if TYPE_CHECKING:
    from structlog.typing import Processor

    from fapilog.settings import LoggingSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "EnricherChain",
    "build_processors",
    "check_names",
    "failure_counts",
    "known_enrichers",
    "register_enricher",
    "unregister_enricher",
]

ENTRY_POINT_GROUP = "fapilog.enrichers"

# enrichers registered in code, by name (entry points are looked up when configured)
_lock = threading.Lock()
_registered: dict[str, Any] = {}


def _key(name: str) -> str:
    return name.strip().lower()


def register_enricher(name: str, enricher: Any, *, replace: bool = False) -> None:
    """Make `enricher` usable as `name` in ``FAPILOG_ENRICHERS`` / ``enrichers=[...]``.

    `enricher`: a structlog processor, a callable taking and returning the event dict, or a
    class (instantiated without arguments when configured). Raises ValueError when `name`
    is taken (pass ``replace=True``) or invalid, TypeError when `enricher` is not callable.
    """
    key = _key(name)
    if not key or not key.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"invalid enricher name {name!r}: use letters, digits, '_', '-' or '.'")
    if not callable(enricher):
        raise TypeError(f"enricher {name!r} must be callable, got {enricher!r}")
    with _lock:
        if not replace and key in _registered:
            raise ValueError(f"enricher {key!r} is already registered (pass replace=True)")
        _registered[key] = enricher


def unregister_enricher(name: str) -> None:
    with _lock:
        _registered.pop(_key(name), None)


def _entry_points() -> dict[str, Any]:
    return {_key(ep.name): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_enrichers() -> list[str]:
    """Names usable in ``FAPILOG_ENRICHERS``: registered in code or by entry point."""
    with _lock:
        names = set(_registered)
    return sorted(names | set(_entry_points()))


def _resolve(name: str) -> Any:
    key = _key(name)
    with _lock:
        enricher = _registered.get(key)
    if enricher is None:
        entry = _entry_points().get(key)
        if entry is None:
            known = known_enrichers()
            listed = ", ".join(known) if known else "none are registered"
            raise setting_error(
                "enrichers",
                f"unknown enricher (register one with fapilog.register_enricher() or the "
                f"{ENTRY_POINT_GROUP!r} entry-point group)",
                value=name,
                allowed=f"known enrichers: {listed}",
            )
        try:
            enricher = entry.load()
        except Exception as exc:
            raise setting_error(
                "enrichers",
                f"enricher {key!r} (entry point {entry.value}) failed to load: {exc!r}",
                value=name,
            ) from exc
    if isinstance(enricher, type):
        try:
            enricher = enricher()
        except Exception as exc:
            raise setting_error(
                "enrichers",
                f"enricher {key!r} ({enricher.__qualname__}) could not be created: {exc!r}",
                value=name,
            ) from exc
    if not callable(enricher):
        raise setting_error(
            "enrichers", f"enricher {key!r} is not callable: {enricher!r}", value=name
        )
    return enricher


def _takes_event_only(enricher: Callable[..., Any]) -> bool:
    """Whether `enricher` is called with the event dict alone (else: structlog's three
    arguments). Decided once, at configure time."""
    try:
        signature = inspect.signature(enricher)
    except (TypeError, ValueError):  # builtins without a signature: assume a processor
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        return False
    required = [p for p in positional if p.default is p.empty]
    return len(positional) == 1 or (len(required) == 1 and len(positional) < 3)


class EnricherChain:
    """The configured custom enrichers, run in order as one processor. A failure skips
    that enricher for that event; the event goes on."""

    __slots__ = ("_reported", "_steps", "failures", "names")

    def __init__(self, enrichers: list[tuple[str, Callable[..., Any]]]) -> None:
        self.names = tuple(name for name, _ in enrichers)
        self._steps = tuple(
            (index, name, fn, _takes_event_only(fn)) for index, (name, fn) in enumerate(enrichers)
        )
        self.failures = [0] * len(enrichers)
        self._reported = [False] * len(enrichers)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for index, name, fn, event_only in self._steps:
            try:
                result = fn(event_dict) if event_only else fn(logger, method_name, event_dict)
            except DropEvent:
                raise
            except Exception as exc:
                self._failed(index, name, f"raised {exc!r}")
                continue
            if result is None:  # changed the dict in place and forgot to return it
                continue
            if type(result) is dict or isinstance(result, MutableMapping):
                event_dict = result
            else:
                self._failed(index, name, f"returned {type(result).__name__}, not the event dict")
        return event_dict

    def _failed(self, index: int, name: str, what: str) -> None:
        self.failures[index] += 1
        if not self._reported[index]:
            self._reported[index] = True
            _diag.report(
                f"enricher:{name}",
                f"fapilog enricher {name!r} {what}; it is skipped for the events where it "
                "fails (the events are still logged; see fapilog.enrichers.failure_counts())",
                enricher=name,
            )

    def failure_counts(self) -> dict[str, int]:
        return dict(zip(self.names, self.failures, strict=True))

    def __repr__(self) -> str:
        return f"<fapilog.EnricherChain {list(self.names)}>"


def failure_counts() -> dict[str, int]:
    """How often each configured enricher failed since the last configuration change."""
    pipeline = STATE.pipeline
    chain = pipeline.enrichers if pipeline is not None else None
    return chain.failure_counts() if chain is not None else {}


def check_names(settings: LoggingSettings) -> None:
    """Raise the ConfigurationError `build_processors` would raise for an unknown or broken
    enricher, starting nothing."""
    for name in settings.enrichers:
        _resolve(name)


def build_processors(settings: LoggingSettings) -> tuple[list[Processor], EnricherChain | None]:
    """The enrichment processors for `settings`, and the custom enrichers' chain (its
    failure counts); raises ConfigurationError for an unknown or broken enricher (before
    anything running is changed)."""
    resolved: list[tuple[str, Callable[..., Any]]] = []
    for name in dict.fromkeys(_key(n) for n in settings.enrichers):
        resolved.append((name, _resolve(name)))
    processors: list[Processor] = []
    if settings.system.metrics:
        # imported here: psutil is loaded only when process metrics are turned on
        from fapilog.capture import process_metrics

        sampler = process_metrics.sampler(settings.system.metrics_interval)
        processors.append(process_metrics.ProcessMetrics(sampler))
    elif STATE.sampler is not None:
        STATE.sampler.stop()
    chain = EnricherChain(resolved) if resolved else None
    if chain is not None:
        processors.append(chain)
    return processors, chain

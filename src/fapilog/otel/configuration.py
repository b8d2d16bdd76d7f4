"""The one adapter around the SDK's auto-configuration (`opentelemetry.sdk._configuration`),
which `opentelemetry-instrument` uses and fapilog's configurator builds on.

That module is private to the SDK; every use of it lives here, checked once at import. Where
a piece is missing, the public route is taken: the TracerProvider then reads
``OTEL_TRACES_SAMPLER`` itself, the default id generator is used, trace exporters are loaded
from their entry points, and metrics are reported as not configured.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from opentelemetry.sdk import _configuration as _sdk
from opentelemetry.sdk.resources import Resource

__all__ = [
    "BaseConfigurator",
    "id_generator_from_env",
    "init_metrics",
    "run_stock_configurator",
    "sampler_from_env",
    "trace_exporter_class",
]


class _FallbackConfigurator:
    """What `opentelemetry-instrument` calls on a configurator: ``configure(**kwargs)``."""

    def configure(self, **kwargs: Any) -> None:
        self._configure(**kwargs)

    def _configure(self, **kwargs: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _has(*names: str) -> bool:
    return all(callable(getattr(_sdk, name, None)) for name in names)


BaseConfigurator: Any = getattr(_sdk, "_BaseConfigurator", None) or _FallbackConfigurator
_SAMPLER = _has("_import_sampler", "_get_sampler")
_ID_GENERATOR = _has("_import_id_generator", "_get_id_generator")
_METRICS = _has("_get_exporter_names", "_import_exporters", "_init_metrics")


def run_stock_configurator(**kwargs: Any) -> None:
    """The SDK's own configurator (``FAPILOG_AUTO_INSTRUMENT=false``)."""
    stock: Any = getattr(_sdk, "_OTelSDKConfigurator", None)
    if stock is not None:
        stock().configure(**kwargs)


def sampler_from_env() -> Any:
    """The sampler ``OTEL_TRACES_SAMPLER`` names (None: the TracerProvider reads it)."""
    if not _SAMPLER:  # pragma: no cover - an SDK change
        return None
    return _sdk._import_sampler(_sdk._get_sampler())


def id_generator_from_env() -> Any:
    """The id generator ``OTEL_PYTHON_ID_GENERATOR`` names (None: the default one)."""
    if not _ID_GENERATOR:  # pragma: no cover - an SDK change
        return None
    return _sdk._import_id_generator(_sdk._get_id_generator())


def trace_exporter_class(name: str) -> Any:
    """The span exporter class of the ``opentelemetry_traces_exporter`` entry point `name`."""
    found = [ep for ep in entry_points(group="opentelemetry_traces_exporter") if ep.name == name]
    if not found:
        raise RuntimeError(f"no opentelemetry_traces_exporter entry point named {name!r}")
    return found[0].load()


def init_metrics(resource: Resource, otlp_timeout: float) -> None:
    """The MeterProvider exactly as the SDK configurator builds it (``OTEL_METRICS_EXPORTER``),
    with `otlp_timeout` seconds for OTLP metric exporters. Raises when it cannot."""
    if not _METRICS:  # pragma: no cover - an SDK change
        raise RuntimeError("this SDK's auto-configuration has no metrics set-up fapilog knows")
    names = _sdk._get_exporter_names("metrics")
    _, metric_exporters, _ = _sdk._import_exporters([], names, [])
    args: dict[Any, dict[str, Any]] = {}
    for exporter_class in metric_exporters.values():
        if exporter_class.__module__.startswith("opentelemetry.exporter.otlp."):
            args[exporter_class] = {"timeout": otlp_timeout}
    _sdk._init_metrics(metric_exporters, resource, exporter_args_map=args)

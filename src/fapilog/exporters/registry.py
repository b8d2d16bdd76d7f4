"""The exporter registry: names in `FAPILOG_EXPORTERS` -> OpenTelemetry `LogRecordExporter`s.

Built-in names are listed in `BUILTIN` (each the import path of its module's `SPEC`, so an
exporter's module, and what it needs, is imported only when configured). Add your own in
code with ``fapilog.register_exporter("name", factory)`` or from a package through the
entry-point group ``fapilog.exporters`` (the entry point names a factory, or an
`ExporterSpec`). A factory is called with the `LoggingSettings` and returns a
`LogRecordExporter`; its own options come from
``FAPILOG_EXPORTER_OPTIONS__<NAME>__<OPTION>``, read with `exporter_options(settings, name)`.
Names are resolved when `configure_logging()` runs, so an unknown name fails there, listing
the known ones. docs/exporters.md has the guide.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from fapilog.exceptions import ConfigurationError
from fapilog.exporters.contract import LogRecordExporter, ReadableLogRecord
from fapilog.exporters.render import JsonRenderer
from fapilog.exporters.spec import ExporterFactory, ExporterSpec
from fapilog.settings import LoggingSettings
from fapilog.settings._errors import setting_error

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "create_exporter",
    "exporter_options",
    "exporter_spec",
    "json_line",
    "known_exporters",
    "register_exporter",
    "unregister_exporter",
]

ENTRY_POINT_GROUP = "fapilog.exporters"

# the built-in exporters: name -> "module:SPEC"
BUILTIN: dict[str, str] = {
    "stdout": "fapilog.exporters.stdout:SPEC",
    "console": "fapilog.exporters.stdout:CONSOLE_SPEC",
    "file": "fapilog.exporters.file:SPEC",
    "loki": "fapilog.exporters.loki:SPEC",
    "otlp": "fapilog.exporters.otlp:SPEC",
}

_lock = threading.Lock()
_registered: dict[str, ExporterSpec] = {}


def register_exporter(
    name: str,
    factory: ExporterFactory,
    *,
    max_delay: float | Callable[[LoggingSettings], float | None] | None = None,
    replace: bool = False,
    spool: bool = False,
) -> None:
    """Make `name` usable in `exporters=[...]` / `FAPILOG_EXPORTERS`.

    `factory(settings)` returns a `LogRecordExporter`; it is called by `configure_logging()`
    (raise `ConfigurationError` there for bad options). `max_delay` and `spool`: see
    `ExporterSpec`.
    """
    key = name.strip().lower()
    if not key or not key.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"invalid exporter name {name!r}: use letters, digits, '_' or '-'")
    if not callable(factory):
        raise TypeError(f"exporter factory for {name!r} must be callable, got {factory!r}")
    with _lock:
        if not replace and (key in _registered or key in BUILTIN):
            raise ValueError(f"exporter {key!r} is already registered (pass replace=True)")
        _registered[key] = ExporterSpec(key, factory, max_delay, spool)


def unregister_exporter(name: str) -> None:
    with _lock:
        _registered.pop(name.strip().lower(), None)


def exporter_options(settings: LoggingSettings, name: str) -> dict[str, Any]:
    """The options of exporter `name`: ``exporter_options={"name": {...}}`` in code, or
    ``FAPILOG_EXPORTER_OPTIONS__<NAME>__<OPTION>=value`` in the environment (values from the
    environment are strings; option names are lower case there)."""
    key = name.strip().lower()
    for candidate, options in settings.exporter_options.items():
        if candidate.strip().lower() == key:
            return dict(options)
    return {}


_RENDERER = JsonRenderer()


def json_line(record: ReadableLogRecord) -> dict[str, Any]:
    """`record` as fapilog's JSON line (the stdout/file schema), as a dict."""
    return _RENDERER.as_dict(record)


def _entry_points() -> dict[str, Any]:
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_exporters() -> list[str]:
    return sorted(set(BUILTIN) | set(_registered) | set(_entry_points()))


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def exporter_spec(name: str) -> ExporterSpec:
    """The spec of `name`, or a ConfigurationError listing the known names."""
    key = name.strip().lower()
    with _lock:
        spec = _registered.get(key)
    if spec is not None:
        return spec
    builtin = BUILTIN.get(key)
    if builtin is not None:
        try:
            resolved = _resolve(builtin)
        except (ImportError, AttributeError) as exc:
            raise setting_error(
                "exporters", f"exporter {key!r} is not available: {exc}", value=name
            ) from exc
        return resolved if isinstance(resolved, ExporterSpec) else ExporterSpec(key, resolved)
    entry = _entry_points().get(key)
    if entry is not None:
        try:
            loaded = entry.load()
        except Exception as exc:
            raise setting_error(
                "exporters",
                f"exporter {key!r} (entry point {entry.value}) failed to load: {exc!r}",
                value=name,
            ) from exc
        if isinstance(loaded, ExporterSpec):
            return dataclasses.replace(loaded, name=key)
        if not callable(loaded):
            raise setting_error(
                "exporters",
                f"exporter {key!r} (entry point {entry.value}) is "
                f"{type(loaded).__name__}, not an exporter factory or ExporterSpec",
                value=name,
            )
        return ExporterSpec(key, loaded)
    raise setting_error(
        "exporters",
        "unknown exporter",
        value=name,
        allowed=f"known exporters: {', '.join(known_exporters())}",
    )


def create_exporter(spec: ExporterSpec, settings: LoggingSettings) -> LogRecordExporter:
    try:
        exporter = spec.factory(settings)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise setting_error(
            "exporters", f"exporter {spec.name!r} could not be created: {exc!r}", value=spec.name
        ) from exc
    if not isinstance(exporter, LogRecordExporter):
        raise setting_error(
            "exporters",
            f"exporter factory for {spec.name!r} returned {type(exporter).__name__}, "
            "not an opentelemetry LogRecordExporter",
            value=spec.name,
        )
    return exporter

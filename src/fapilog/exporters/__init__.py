"""The exporter registry: names in `FAPILOG_EXPORTERS` -> OTel `LogRecordExporter`s.

Built-in names are listed in `BUILTIN`. Add your own in code with
``fapilog.register_exporter("name", factory)`` or from a package through the entry-point
group ``fapilog.exporters`` (the entry point names a factory, or an `ExporterSpec`). A
factory is called with the `LoggingSettings` and returns a `LogRecordExporter`; its own
options come from ``FAPILOG_EXPORTER_OPTIONS__<NAME>__<OPTION>``, read with
`exporter_options(settings, name)`. Names are resolved when `configure_logging()` runs, so
an unknown name fails there, listing the known ones. docs/exporters.md has the guide.

The OTel exporter types are re-exported here (`LogRecordExporter`, `LogRecordExportResult`,
`ReadableLogRecord`), so custom exporters need not import the SDK's unstable
``opentelemetry.sdk._logs`` paths; `json_line(record)` gives fapilog's JSON line as a dict.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from fapilog._otel_logs import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog._render import JsonRenderer
from fapilog.exceptions import ConfigurationError
from fapilog.settings import LoggingSettings

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "ExporterFactory",
    "ExporterSpec",
    "LogRecordExportResult",
    "LogRecordExporter",
    "ReadableLogRecord",
    "create_exporter",
    "exporter_options",
    "exporter_spec",
    "json_line",
    "known_exporters",
    "register_exporter",
    "unregister_exporter",
]

ExporterFactory = Callable[[LoggingSettings], LogRecordExporter]
ENTRY_POINT_GROUP = "fapilog.exporters"


@dataclass(frozen=True)
class ExporterSpec:
    """A registered exporter: its factory and the batching it prefers.

    `max_delay` is the longest a partial batch waits for more records before export: a
    number of seconds, None for the queue settings' `max_delay`, or a callable computing it
    from the settings (e.g. Loki's ``FAPILOG_LOKI__BATCH_WAIT``).
    """

    name: str
    factory: ExporterFactory
    max_delay: float | Callable[[LoggingSettings], float | None] | None = None

    def delay_for(self, settings: LoggingSettings) -> float | None:
        """The batching delay for `settings` (see `max_delay`)."""
        delay = self.max_delay
        return delay(settings) if callable(delay) else delay


def _stdout(settings: LoggingSettings) -> LogRecordExporter:
    from fapilog.exporters.stdout import ConsoleExporter, StdoutJsonExporter

    isatty = bool(getattr(sys.stdout, "isatty", lambda: False)())
    return StdoutJsonExporter() if settings.use_json(isatty) else ConsoleExporter()


def _console(settings: LoggingSettings) -> LogRecordExporter:
    from fapilog.exporters.stdout import ConsoleExporter

    return ConsoleExporter()


# name -> "module:function" for built-ins not shipped with this module (imported lazily)
BUILTIN: dict[str, ExporterSpec | str] = {
    "stdout": ExporterSpec("stdout", _stdout),
    "console": ExporterSpec("console", _console),
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
) -> None:
    """Make `name` usable in `exporters=[...]` / `FAPILOG_EXPORTERS`.

    `factory(settings)` returns a `LogRecordExporter`; it is called by `configure_logging()`
    (raise `ConfigurationError` there for bad options). `max_delay`: see `ExporterSpec`.
    """
    key = name.strip().lower()
    if not key or not key.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"invalid exporter name {name!r}: use letters, digits, '_' or '-'")
    if not callable(factory):
        raise TypeError(f"exporter factory for {name!r} must be callable, got {factory!r}")
    with _lock:
        if not replace and (key in _registered or key in BUILTIN):
            raise ValueError(f"exporter {key!r} is already registered (pass replace=True)")
        _registered[key] = ExporterSpec(key, factory, max_delay)


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
    if isinstance(builtin, ExporterSpec):
        return builtin
    if isinstance(builtin, str):
        try:
            resolved = _resolve(builtin)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"FAPILOG_EXPORTERS: exporter {key!r} is not available: {exc}"
            ) from exc
        return resolved if isinstance(resolved, ExporterSpec) else ExporterSpec(key, resolved)
    entry = _entry_points().get(key)
    if entry is not None:
        try:
            loaded = entry.load()
        except Exception as exc:
            raise ConfigurationError(
                f"FAPILOG_EXPORTERS: exporter {key!r} (entry point {entry.value}) failed to "
                f"load: {exc!r}"
            ) from exc
        if isinstance(loaded, ExporterSpec):
            return dataclasses.replace(loaded, name=key)
        if not callable(loaded):
            raise ConfigurationError(
                f"FAPILOG_EXPORTERS: exporter {key!r} (entry point {entry.value}) is "
                f"{type(loaded).__name__}, not an exporter factory or ExporterSpec"
            )
        return ExporterSpec(key, loaded)
    raise ConfigurationError(
        f"FAPILOG_EXPORTERS (setting 'exporters'): unknown exporter {name!r}; "
        f"known exporters: {', '.join(known_exporters())}",
        [{"setting": "exporters", "env": "FAPILOG_EXPORTERS", "value": repr(name)}],
    )


def create_exporter(spec: ExporterSpec, settings: LoggingSettings) -> LogRecordExporter:
    try:
        exporter = spec.factory(settings)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"exporter {spec.name!r} could not be created: {exc!r}") from exc
    if not isinstance(exporter, LogRecordExporter):
        raise ConfigurationError(
            f"exporter factory for {spec.name!r} returned {type(exporter).__name__}, "
            "not an opentelemetry LogRecordExporter"
        )
    return exporter

"""fapilog under `opentelemetry-instrument`: zero code changes (see docs/opentelemetry.md).

`opentelemetry-instrument uvicorn app:app` loads, through entry points in fapilog's
package metadata:

- `FapilogDistro` (group ``opentelemetry_distro``): selects fapilog's configurator
  (``OTEL_PYTHON_CONFIGURATOR=fapilog`` unless set) and keeps the stock logging
  instrumentation from adding a second root handler;
- `FapilogConfigurator` (group ``opentelemetry_configurator``): one Resource for traces,
  metrics and logs; a TracerProvider whose span export is bounded (`fapilog.otlp`); the
  MeterProvider as the SDK would build it; and fapilog's log pipeline via
  `configure_logging()` on an SDK LoggerProvider it installs globally, so an application
  that also calls `configure_logging()` attaches to the same pipeline instead of a second;
- `post_instrument` (group ``opentelemetry_post_instrument``): runs last whatever distro
  and configurator were chosen: makes sure fapilog's stdlib handler is the only route from
  `logging` to OpenTelemetry (an OTel `LoggingHandler` on the root logger, from the SDK's
  ``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED`` or `opentelemetry-instrumentation-
  logging`, would export every record twice) and that a later `logging.config.dictConfig()`
  (uvicorn calls one at start-up) does not take the stdlib loggers away from fapilog;
- `DistroStdoutExporter`, `DistroConsoleExporter`, `DistroFileExporter`,
  `DistroLokiExporter` (group ``opentelemetry_logs_exporter``, names ``fapilog_stdout`` ...),
  so that ``OTEL_LOGS_EXPORTER=fapilog_stdout,otlp`` works under another configurator.

``FAPILOG_AUTO_INSTRUMENT=false`` turns all of this off (the stock SDK configuration is used).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar

from opentelemetry import trace
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk.trace import TracerProvider

from fapilog import _diag
from fapilog._state import STATE
from fapilog.capture import stdlib
from fapilog.exceptions import ConfigurationError
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult, ReadableLogRecord
from fapilog.exporters.registry import (
    create_exporter,
    exporter_spec,
    known_exporters,
    register_exporter,
)
from fapilog.lifecycle.configure import configure_from_environment, configure_logging
from fapilog.otel import configuration as sdk_configuration
from fapilog.otel.logs import global_sdk_provider, new_provider, set_global_provider
from fapilog.otel.otlp import bounded_span_processor, resolve_timeout, span_processors
from fapilog.otel.resource import build_resource
from fapilog.otel.semconv import OTLP_EXPORTER_NAMES
from fapilog.otel.trace import sdk_tracer_provider_of
from fapilog.settings import LoggingSettings, from_environment

__all__ = [
    "AUTO_INSTRUMENT_ENV",
    "DistroConsoleExporter",
    "DistroFileExporter",
    "DistroLokiExporter",
    "DistroStdoutExporter",
    "FapilogConfigurator",
    "FapilogDistro",
    "configure_sdk",
    "exporters_from_otel_env",
    "post_instrument",
    "remove_otel_logging_handlers",
]

AUTO_INSTRUMENT_ENV = "FAPILOG_AUTO_INSTRUMENT"
_CONFIGURATOR_ENV = "OTEL_PYTHON_CONFIGURATOR"
_NAME = "fapilog"


def _enabled() -> bool:
    return os.environ.get(AUTO_INSTRUMENT_ENV, "true").strip().lower() not in (
        "false", "0", "no", "off"
    )  # fmt: skip


class FapilogDistro(BaseDistro):  # type: ignore[misc]  # BaseDistro is untyped
    """The ``opentelemetry_distro`` entry point ``fapilog`` (select it with
    ``OTEL_PYTHON_DISTRO=fapilog`` when another distro is installed too)."""

    def _configure(self, **kwargs: Any) -> None:
        if _enabled():
            os.environ.setdefault(_CONFIGURATOR_ENV, _NAME)

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Instrument like the stock distro, with two adjustments: the `logging`
        instrumentation may inject trace fields into records but installs no handler
        (fapilog's is the route), and FastAPI gets no per-message `send`/`receive` spans
        (unless ``FAPILOG_REQUEST__INTERNAL_SPANS=true``)."""
        if _enabled():
            if entry_point.name == "logging":
                kwargs["enable_log_auto_instrumentation"] = False
            elif entry_point.name == "fastapi" and not _settings().request.internal_spans:
                kwargs.setdefault("exclude_spans", ["receive", "send"])
        instrumentor = entry_point.load()
        instrumentor().instrument(**kwargs)


class FapilogConfigurator(sdk_configuration.BaseConfigurator):  # type: ignore[misc]
    """The ``opentelemetry_configurator`` entry point ``fapilog`` (select it with
    ``OTEL_PYTHON_CONFIGURATOR=fapilog`` when another configurator is installed too)."""

    def _configure(self, **kwargs: Any) -> None:
        if not _enabled():
            sdk_configuration.run_stock_configurator(**kwargs)
            return
        configure_sdk()


# -- OTEL_LOGS_EXPORTER -> FAPILOG_EXPORTERS ------------------------------------------------


def exporters_from_otel_env() -> list[str] | None:
    """fapilog exporter names for ``OTEL_LOGS_EXPORTER`` (None when unset or ``none``).

    ``fapilog_<name>`` is fapilog's `<name>` exporter; ``otlp`` / ``otlp_proto_grpc`` /
    ``otlp_proto_http`` is fapilog's `otlp` exporter (the protocol from the name, when it has
    one, becomes the default ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL``); ``console`` is fapilog's
    console; any other name is loaded from the ``opentelemetry_logs_exporter`` entry points,
    instantiated without arguments and run behind fapilog's batching like any exporter.
    """
    raw = os.environ.get("OTEL_LOGS_EXPORTER", "").strip()
    if not raw or raw.lower() == "none":
        return None
    names: list[str] = []
    for item in raw.split(","):
        name = item.strip().lower()
        if not name or name == "none":
            continue
        mapped: str | None
        if name.startswith("fapilog_"):
            mapped = name[len("fapilog_") :]
        elif name in OTLP_EXPORTER_NAMES:
            mapped = "otlp"
            protocol = OTLP_EXPORTER_NAMES[name]
            if protocol is not None:
                os.environ.setdefault("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", protocol)
        elif name == "console":
            mapped = "console"
        else:
            mapped = _register_otel_log_exporter(name)
            if mapped is None:
                continue
        if mapped not in names:
            names.append(mapped)
    return names or None


def _register_otel_log_exporter(name: str) -> str | None:
    """Make the ``opentelemetry_logs_exporter`` entry point `name` a fapilog exporter."""
    key = f"otel_{name}"
    if key in known_exporters():
        return key
    found = [ep for ep in entry_points(group="opentelemetry_logs_exporter") if ep.name == name]
    if not found:
        _diag.report(
            f"otel-logs-exporter:{name}",
            f"fapilog: OTEL_LOGS_EXPORTER names {name!r}, which no installed package provides "
            "(entry point group opentelemetry_logs_exporter); ignored",
            level="error",
        )
        return None
    target = found[0]

    def factory(settings: LoggingSettings) -> LogRecordExporter:
        exporter: LogRecordExporter = target.load()()
        return exporter

    register_exporter(key, factory, replace=True)
    return key


# -- the configurator -----------------------------------------------------------------------


def _settings() -> LoggingSettings:
    """Settings from the environment (invalid ones reported, the defaults used)."""
    return from_environment("opentelemetry-instrument")


_lock = threading.Lock()


def configure_sdk() -> LoggingSettings:
    """What `FapilogConfigurator` does: providers for traces, metrics and logs that share one
    Resource, then fapilog's pipeline. Returns the settings used."""
    with _lock:
        if "FAPILOG_EXPORTERS" not in os.environ:
            names = exporters_from_otel_env()
            if names:
                os.environ["FAPILOG_EXPORTERS"] = ",".join(names)
        settings = _settings()
        # (with telemetry.distro.*, which replaces the deprecated telemetry.auto.version)
        resource = build_resource(settings)
        if sdk_tracer_provider_of(trace.get_tracer_provider()) is None:
            provider = TracerProvider(
                resource=resource,
                sampler=sdk_configuration.sampler_from_env(),
                id_generator=sdk_configuration.id_generator_from_env(),
            )
            for processor in _span_processors(settings):
                provider.add_span_processor(processor)
            trace.set_tracer_provider(provider)
        _init_metrics(settings, resource)
        if global_sdk_provider() is None:
            set_global_provider(new_provider(resource))
        try:
            settings = configure_logging(settings)
        except ConfigurationError as exc:
            _diag.report("autoinstrument-configure", f"fapilog: {exc}", level="error")
            settings = configure_logging(LoggingSettings.model_construct())
        STATE.distro_configured = True
        install_config_guard()
        remove_otel_logging_handlers()
        return settings


def _span_processors(settings: LoggingSettings) -> list[Any]:
    """OTLP span export from fapilog.otel.otlp, plus any other OTEL_TRACES_EXPORTER name
    loaded from its entry point, each behind a bounded batch processor."""
    processors: list[Any] = []
    try:
        processors.extend(span_processors(settings))
    except ConfigurationError as exc:
        _diag.report(
            "autoinstrument-traces", f"fapilog: OTLP span export off: {exc}", level="error"
        )
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "")
    others = [
        n.strip()
        for n in raw.split(",")
        if n.strip() and n.strip().lower() not in OTLP_EXPORTER_NAMES and n.strip() != "none"
    ]
    for name in others:
        try:
            exporter_class = sdk_configuration.trace_exporter_class(name)
            processors.append(bounded_span_processor(exporter_class(), settings))
        except Exception as exc:
            _diag.report(
                f"autoinstrument-traces:{name}",
                f"fapilog: OTEL_TRACES_EXPORTER {name!r} could not be loaded: {exc!r}",
                level="error",
            )
    return processors


def _init_metrics(settings: LoggingSettings, resource: Any) -> None:
    """The MeterProvider exactly as the SDK configurator builds it (OTEL_METRICS_EXPORTER),
    with fapilog's short OTLP timeout."""
    try:
        sdk_configuration.init_metrics(resource, resolve_timeout(settings, "traces"))
    except Exception as exc:
        _diag.report("autoinstrument-metrics", f"fapilog: metrics not configured: {exc!r}")


# -- after instrumentation: one route from stdlib logging -----------------------------------


def post_instrument() -> None:
    """The ``opentelemetry_post_instrument`` hook (runs after every instrumentor).
    Never raises: the application must start."""
    if not _enabled():
        return
    try:
        if not STATE.is_configured():
            # another distro/configurator ran: attach fapilog to the provider it installed
            configure_from_environment("opentelemetry-instrument")
        remove_otel_logging_handlers()
        install_config_guard()
    except Exception as exc:
        _diag.report(
            "autoinstrument", f"fapilog auto-instrumentation failed: {exc!r}", level="error"
        )


def remove_otel_logging_handlers() -> list[logging.Handler]:
    """Take OpenTelemetry's own `LoggingHandler`s (the SDK's, the logging
    instrumentation's) off the root logger: fapilog's handler already sends every stdlib
    record to the same LoggerProvider. Returns the handlers removed
    (`fapilog.capture.stdlib.remove_otel_handlers`), while fapilog captures stdlib logging:
    otherwise they are the route of stdlib records to OpenTelemetry, and stay."""
    if stdlib.installed_handler() is None:
        return []
    return stdlib.remove_otel_handlers()


def _remove_otel_handlers_again() -> None:
    """After a logging configuration call (see `install_config_guard`)."""
    if STATE.is_configured():
        remove_otel_logging_handlers()


def install_config_guard() -> None:
    """fapilog's handler stays the route from stdlib logging after a later
    `logging.config.dictConfig()` / `fileConfig()` / `logging.basicConfig()` (uvicorn
    configures logging after auto-instrumentation ran): `fapilog.capture.stdlib`'s guard,
    which also removes OpenTelemetry's own root handlers again after each such call."""
    stdlib.install_config_guard(after=_remove_otel_handlers_again)


# -- OTEL_LOGS_EXPORTER=fapilog_* under another configurator ------------------------------


class _NamedExporter(LogRecordExporter):
    """A fapilog exporter as an ``opentelemetry_logs_exporter`` entry point: built from the
    environment's settings when the SDK's own configurator instantiates it. (fapilog's
    configurator maps ``fapilog_<name>`` to its pipeline directly and never builds these.)"""

    exporter_name: ClassVar[str] = "stdout"

    def __init__(self) -> None:
        self._inner = create_exporter(exporter_spec(self.exporter_name), _settings())

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self._inner.export(batch)

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class DistroStdoutExporter(_NamedExporter):
    """``fapilog_stdout``: JSON lines on stdout."""

    exporter_name = "stdout"


class DistroConsoleExporter(_NamedExporter):
    """``fapilog_console``: the pretty console."""

    exporter_name = "console"


class DistroFileExporter(_NamedExporter):
    """``fapilog_file``: the rotating file (``FAPILOG_FILE__*``)."""

    exporter_name = "file"


class DistroLokiExporter(_NamedExporter):
    """``fapilog_loki``: Grafana Loki (``FAPILOG_LOKI__*``)."""

    exporter_name = "loki"

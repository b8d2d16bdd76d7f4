"""fapilog under `opentelemetry-instrument` (see docs/opentelemetry.md; implemented in
`fapilog.integrations.distro`, which pyproject's entry points name).

`StdoutExporter`, `ConsoleExporter`, `FileExporter` and `LokiExporter` are the names the
``opentelemetry_logs_exporter`` entry points had before: the same classes as the
``Distro*Exporter`` ones, kept so that installed packages' old entry points still load.
"""

from fapilog.integrations.distro import (
    AUTO_INSTRUMENT_ENV,
    DistroConsoleExporter,
    DistroFileExporter,
    DistroLokiExporter,
    DistroStdoutExporter,
    FapilogConfigurator,
    FapilogDistro,
    configure_sdk,
    exporters_from_otel_env,
    post_instrument,
    remove_otel_logging_handlers,
)

StdoutExporter = DistroStdoutExporter
ConsoleExporter = DistroConsoleExporter
FileExporter = DistroFileExporter
LokiExporter = DistroLokiExporter

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

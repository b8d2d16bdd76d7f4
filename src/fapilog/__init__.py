"""fapilog: OpenTelemetry-native structured logging for FastAPI.

from fapilog import configure_logging, log
configure_logging()
log.info("user logged in", user_id=42)
"""

from fapilog._version import __version__
from fapilog.capture.context import bind_context, contextualize, unbind_context
from fapilog.capture.enrichers import register_enricher
from fapilog.capture.logger import BoundLogger, get_logger, log
from fapilog.capture.recorder import flight_recorder
from fapilog.exceptions import ConfigurationError
from fapilog.exporters.registry import register_exporter
from fapilog.lifecycle.configure import configure_logging
from fapilog.lifecycle.drain import force_flush, shutdown
from fapilog.lifecycle.levels import set_level
from fapilog.pipeline.accounting import stats
from fapilog.pipeline.metrics import register_metrics
from fapilog.settings import LoggingSettings

__all__ = [
    "BoundLogger",
    "ConfigurationError",
    "LoggingSettings",
    "__version__",
    "bind_context",
    "configure_logging",
    "contextualize",
    "flight_recorder",
    "force_flush",
    "get_logger",
    "log",
    "register_enricher",
    "register_exporter",
    "register_metrics",
    "set_level",
    "shutdown",
    "stats",
    "unbind_context",
]

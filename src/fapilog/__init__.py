"""fapilog: OpenTelemetry-native structured logging for FastAPI.

from fapilog import configure_logging, log
configure_logging()
log.info("user logged in", user_id=42)
"""

from fapilog._config import configure_logging, force_flush, shutdown, stats
from fapilog._logger import BoundLogger, get_logger, log
from fapilog._monitoring import register_metrics
from fapilog.enrichers import register_enricher
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import register_exporter
from fapilog.settings import LoggingSettings

__all__ = [
    "BoundLogger",
    "ConfigurationError",
    "LoggingSettings",
    "configure_logging",
    "force_flush",
    "get_logger",
    "log",
    "register_enricher",
    "register_exporter",
    "register_metrics",
    "shutdown",
    "stats",
]

__version__ = "0.1.0"

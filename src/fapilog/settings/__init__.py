"""fapilog's settings: `LoggingSettings` and its sections, one module per section.

Every setting has an environment variable: ``FAPILOG_`` + the field name in upper case,
nested sections joined with ``__`` (``FAPILOG_QUEUE__MAX_SIZE``). docs/configuration.md lists
them all (generated from `settings_reference()`).
"""

from fapilog._levels import NAMES as LEVELS
from fapilog.settings._base import UNSET, Unset, parse_list
from fapilog.settings._errors import ENV_PREFIX, env_var_for
from fapilog.settings.admin import AdminSettings
from fapilog.settings.console import ConsoleSettings
from fapilog.settings.file import FileSettings
from fapilog.settings.loki import LokiSettings
from fapilog.settings.model import Environment, LoggingSettings, from_environment
from fapilog.settings.otlp import OtlpSettings
from fapilog.settings.queue import Overflow, QueueSettings
from fapilog.settings.redaction import RedactionSettings
from fapilog.settings.reference import reference_markdown, settings_reference
from fapilog.settings.request import BufferSettings, ContextHook, RequestSettings, TracingMode
from fapilog.settings.spool import SpoolSettings
from fapilog.settings.system import SystemSettings

__all__ = [
    "AdminSettings",
    "BufferSettings",
    "ConsoleSettings",
    "ContextHook",
    "ENV_PREFIX",
    "Environment",
    "FileSettings",
    "LEVELS",
    "LoggingSettings",
    "LokiSettings",
    "OtlpSettings",
    "Overflow",
    "QueueSettings",
    "RedactionSettings",
    "RequestSettings",
    "SpoolSettings",
    "SystemSettings",
    "TracingMode",
    "UNSET",
    "Unset",
    "env_var_for",
    "from_environment",
    "parse_list",
    "reference_markdown",
    "settings_reference",
]

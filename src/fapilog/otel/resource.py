"""The OpenTelemetry Resource of fapilog's records and spans: built once per configuration,
never per record."""

from __future__ import annotations

import os
import platform
import socket
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry.sdk.resources import Resource

from fapilog._version import __version__
from fapilog.settings import LoggingSettings
from fapilog.settings._errors import setting_error

__all__ = ["build_resource", "resource_fields", "service_version"]


def service_version(settings: LoggingSettings) -> str | None:
    """`service.version`: ``FAPILOG_SERVICE_VERSION``, else the installed version of the
    distribution named by ``FAPILOG_SYSTEM__PACKAGE``, else None."""
    if settings.service_version:
        return settings.service_version
    package = settings.system.package
    if not package:
        return None
    try:
        return version(package)
    except PackageNotFoundError:
        raise setting_error(
            "system.package", "no installed distribution has that name", value=package
        ) from None


def resource_fields(settings: LoggingSettings) -> tuple[Any, ...]:
    """The settings the Resource depends on (a change rebuilds it)."""
    return (settings.service_name, settings.service_version, settings.env, settings.system.package)


def build_resource(settings: LoggingSettings) -> Resource:
    """OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME, then fapilog's settings (which win),
    then host and process facts, and fapilog as the OpenTelemetry distribution
    (``telemetry.distro.name`` and ``telemetry.distro.version``)."""
    attributes: dict[str, Any] = {
        "telemetry.distro.name": "fapilog",
        "telemetry.distro.version": __version__,
        "deployment.environment.name": settings.env,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "process.runtime.name": platform.python_implementation().lower(),
        "process.runtime.version": platform.python_version(),
    }
    if settings.service_name:
        attributes["service.name"] = settings.service_name
    version_text = service_version(settings)
    if version_text:
        attributes["service.version"] = version_text
    detected = Resource.create({})
    # OTEL_RESOURCE_ATTRIBUTES may name the host or the environment: keep theirs, unless
    # FAPILOG_ENV / env= was given explicitly
    if "host.name" in detected.attributes:
        del attributes["host.name"]
    if (
        "deployment.environment.name" in detected.attributes
        and "env" not in settings.model_fields_set
    ):
        del attributes["deployment.environment.name"]
    return detected.merge(Resource(attributes))

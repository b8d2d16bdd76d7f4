"""`configure_logging()` and the lifecycle of the one pipeline a process has.

configure_logging() is idempotent: the same settings twice change nothing; different settings
swap the exporters (draining the old ones) and log one `fapilog.config.changed` event. It
attaches to an SDK LoggerProvider someone else installed instead of replacing it. At
interpreter exit everything emitted is drained, bounded by `shutdown_timeout`.
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry.sdk.resources import Resource
from structlog.contextvars import merge_contextvars

from fapilog import _diag, _stdlib
from fapilog._bridge import Bridge, OTelBridge, set_bridge, state
from fapilog._logger import CHAIN, BoundLogger, _factory, set_levels
from fapilog._otel_logs import (
    LoggerProvider,
    global_sdk_provider,
    new_provider,
    replace_resource,
    set_global_provider,
)
from fapilog._pipeline import ExportProcessor, Router, shutdown_processors
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import create_exporter, exporter_spec
from fapilog.processors import add_trace_context
from fapilog.settings import LoggingSettings

if TYPE_CHECKING:
    from structlog.typing import Processor

__all__ = [
    "configure_logging",
    "current_settings",
    "force_flush",
    "is_configured",
    "reset",
    "shutdown",
    "stats",
]

_LEVEL_NUMBERS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class _Pipeline:
    """Everything configure_logging() built; one per process."""

    def __init__(self) -> None:
        self.settings: LoggingSettings | None = None
        self.provider: LoggerProvider | None = None
        self.owns_provider = False
        self.router: Router | None = None
        self.bridge: Bridge | None = None
        self.processors: list[ExportProcessor] = []
        self.retired: list[ExportProcessor] = []  # replaced by a reconfiguration
        self.pid = os.getpid()
        self.shut_down = False


_lock = threading.RLock()
_pipeline = _Pipeline()
_atexit_registered = False
_routers: dict[int, Router] = {}  # id(provider) -> the router added to it
# Other things fapilog set up that must drain within the same deadline (fapilog.otlp's span
# processors): called by shutdown() with the seconds left. See add_shutdown_hook().
_shutdown_hooks: list[Callable[[float], bool]] = []


def is_configured() -> bool:
    return _pipeline.settings is not None and not _pipeline.shut_down


def current_settings() -> LoggingSettings | None:
    return _pipeline.settings


def configure_logging(
    settings: LoggingSettings | None = None, *, app: Any = None, **overrides: Any
) -> LoggingSettings:
    """Configure fapilog for this process and return the effective settings.

    `settings` (default: read from `FAPILOG_*` / `OTEL_*` environment variables) with
    `overrides` applied on top, e.g. ``configure_logging(level="DEBUG")``. With `app` (a
    FastAPI/Starlette application) also instrument it: server spans and request logging.
    Raises `ConfigurationError` for invalid settings; never afterwards.
    """
    if settings is not None and not isinstance(settings, LoggingSettings):
        raise ConfigurationError(
            f"configure_logging() takes a LoggingSettings, got {type(settings).__name__}"
        )
    resolved = (settings or LoggingSettings()).with_overrides(overrides)
    specs = [exporter_spec(name) for name in resolved.exporters]
    with _lock:
        changes = _apply(resolved, specs)
    if changes:
        from fapilog._logger import get_logger

        get_logger("fapilog").info("fapilog.config.changed", changed=changes)
    if app is not None:
        from fapilog.fastapi import instrument_app

        instrument_app(app, resolved)
    return resolved


def _diff(old: LoggingSettings, new: LoggingSettings) -> dict[str, Any]:
    before, after = old.model_dump(), new.model_dump()
    changed: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changed[key] = {"from": before.get(key), "to": after.get(key)}
    return changed


def _apply(settings: LoggingSettings, specs: list[Any]) -> dict[str, Any]:
    global _atexit_registered
    pipeline = _pipeline
    previous = pipeline.settings if not pipeline.shut_down else None
    if previous is not None and previous == settings and pipeline.pid == os.getpid():
        return {}
    # build everything that can fail before touching the running pipeline
    chain = _build_chain(settings)
    rebuild = previous is None or not pipeline.processors or _exporters_changed(previous, settings)
    processors = (
        [
            ExportProcessor(
                spec.name,
                create_exporter(spec, settings),
                settings.queue,
                max_delay=spec.delay_for(settings),
            )
            for spec in specs
        ]
        if rebuild
        else pipeline.processors
    )
    if pipeline.provider is None:
        _install_provider(pipeline, settings)
    elif pipeline.owns_provider and (
        previous is None or _resource_fields(previous) != _resource_fields(settings)
    ):
        replace_resource(pipeline.provider, _resource(settings))
    assert pipeline.provider is not None
    router = _routers.get(id(pipeline.provider))
    if router is None:
        router = _routers[id(pipeline.provider)] = Router()
        pipeline.provider.add_log_record_processor(router)
    pipeline.router = router
    old_processors = pipeline.processors if rebuild else []
    if old_processors and pipeline.bridge is not None and not pipeline.shut_down:
        # what was logged before this call still goes to the exporters configured then
        pipeline.bridge.flush(settings.shutdown_timeout)
    router.targets = tuple(processors)
    pipeline.processors = processors
    if pipeline.bridge is None or pipeline.shut_down:
        pipeline.bridge = Bridge(pipeline.provider, settings.queue)
    set_bridge(pipeline.bridge)
    state().autoconfigure = _autoconfigure
    CHAIN[:] = chain
    _configure_structlog()
    levels = {name: _LEVEL_NUMBERS[level] for name, level in settings.logger_levels.items()}
    set_levels(_LEVEL_NUMBERS[settings.level], levels)
    if settings.capture_stdlib:
        _stdlib.install(CHAIN, _LEVEL_NUMBERS[settings.level], levels)
    else:
        _stdlib.uninstall()
    pipeline.settings = settings
    pipeline.shut_down = False
    pipeline.pid = os.getpid()
    from fapilog import _monitoring

    _monitoring.install(settings, stats)
    if not _atexit_registered:
        atexit.register(_at_exit)
        _atexit_registered = True
    _install_sigterm_handler()
    if old_processors:
        # drain the old exporters in the background (bounded), keeping their counts
        pipeline.retired.extend(old_processors)
        _drain_in_background(old_processors, settings.shutdown_timeout)
    return _diff(previous, settings) if previous is not None else {}


# Settings that only affect the caller-side chain and levels: changing them keeps the
# running exporters (and their queues) as they are.
_CHAIN_ONLY_FIELDS = frozenset(
    {"level", "logger_levels", "capture_stdlib", "enrichers", "redaction", "request",
     "shutdown_timeout", "on_alert"}
)  # fmt: skip


def _exporters_changed(old: LoggingSettings, new: LoggingSettings) -> bool:
    return any(
        getattr(old, name) != getattr(new, name)
        for name in LoggingSettings.model_fields
        if name not in _CHAIN_ONLY_FIELDS
    )


def _build_chain(settings: LoggingSettings) -> list[Processor]:
    """contextvars merge -> trace context -> enrichers -> redaction -> the OTel bridge.
    (The level gate runs before the chain, in BoundLogger / the stdlib logger levels.)"""
    from fapilog import enrichers, redaction

    return [
        merge_contextvars,
        add_trace_context,
        *enrichers.build_processors(settings),
        *redaction.build_processors(settings),
        OTelBridge(),
    ]


def _drain_in_background(processors: list[ExportProcessor], timeout: float) -> None:
    def drain() -> None:
        for processor in processors:
            processor.shutdown(timeout)

    threading.Thread(target=drain, name="fapilog-retire", daemon=True).start()


def _resource_fields(settings: LoggingSettings) -> tuple[Any, ...]:
    return (settings.service_name, settings.service_version, settings.env, settings.system.package)


def _resource(settings: LoggingSettings) -> Resource:
    """The Resource of fapilog's records: OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME, then
    fapilog's settings (which win), then host and process facts. Built once, not per record."""
    attributes: dict[str, Any] = {
        "deployment.environment.name": settings.env,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "process.runtime.name": platform.python_implementation().lower(),
        "process.runtime.version": platform.python_version(),
    }
    if settings.service_name:
        attributes["service.name"] = settings.service_name
    from fapilog.enrichers import service_version

    version = service_version(settings)  # FAPILOG_SERVICE_VERSION, else FAPILOG_SYSTEM__PACKAGE
    if version:
        attributes["service.version"] = version
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


def _refresh_pid_after_fork() -> None:
    """A forked child (prefork servers) logs its own process.pid, not its parent's."""
    pipeline = _pipeline
    provider = pipeline.provider
    if provider is None or not pipeline.owns_provider:
        return
    try:
        provider._resource = provider.resource.merge(Resource({"process.pid": os.getpid()}))
        if pipeline.bridge is not None:
            pipeline.bridge._loggers.clear()
    except Exception:  # pragma: no cover - never fail a fork
        pass


def _gunicorn_worker_after_fork() -> None:
    """A configured process forked by gunicorn (``--preload``): see `fapilog.gunicorn`."""
    if not is_configured() or "gunicorn.workers.base" not in sys.modules:
        return
    try:
        from fapilog.gunicorn import patch_worker_after_fork

        patch_worker_after_fork()
    except Exception:  # pragma: no cover - never fail a fork
        pass


_multiprocessing_hooked: list[bool] = []


def _before_fork() -> None:
    """A multiprocessing child (``fork`` start method) ends with `os._exit()`, which skips
    atexit. multiprocessing runs its own exit finalizers first, so before a fork in a
    process that uses multiprocessing, fapilog asks multiprocessing to register its drain
    in each child it starts (`register_after_fork` callbacks run in the child after
    multiprocessing has cleared the parent's finalizers)."""
    util = sys.modules.get("multiprocessing.util")
    if util is None or _multiprocessing_hooked:
        return
    try:
        util.register_after_fork(_pipeline, _multiprocessing_child)
        _multiprocessing_hooked.append(True)
    except Exception:  # pragma: no cover - never fail a fork
        pass


def _multiprocessing_child(pipeline: _Pipeline) -> None:
    """In a multiprocessing child: drain at its exit, after the finalizers of priority >= 0
    (the application's) and before `os._exit()`."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:  # pragma: no cover - it called us
        return
    util.Finalize(None, _at_exit, exitpriority=-10)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_child=_refresh_pid_after_fork,
    )
    os.register_at_fork(after_in_child=_gunicorn_worker_after_fork)


def _install_provider(pipeline: _Pipeline, settings: LoggingSettings) -> None:
    existing = global_sdk_provider()
    if existing is not None and existing is not pipeline.provider:
        pipeline.provider = existing
        pipeline.owns_provider = False
        return
    provider = new_provider(_resource(settings))
    pipeline.provider = provider
    pipeline.owns_provider = True
    try:
        set_global_provider(provider)
    except Exception:  # pragma: no cover - the API only warns
        pass


def _configure_structlog() -> None:
    """Point structlog at fapilog's chain, wrapper class and sinks, so that
    `structlog.get_logger()` in user code goes through the same pipeline."""
    processors: list[Processor] = CHAIN
    structlog.configure(
        processors=processors,
        wrapper_class=BoundLogger,
        context_class=dict,
        logger_factory=_factory,
        cache_logger_on_first_use=True,
    )


def _autoconfigure() -> Bridge | None:
    """The first event logged before configure_logging(): configure from the environment.
    Invalid environment settings are reported on stderr and the defaults are used."""
    with _lock:
        if _pipeline.bridge is not None and not _pipeline.shut_down:
            return _pipeline.bridge
        if _pipeline.shut_down:
            return None
        try:
            configure_logging()
        except ConfigurationError as exc:
            _diag.report("autoconfigure", f"fapilog: {exc}; using defaults", level="error")
            try:
                configure_logging(LoggingSettings.model_construct())
            except Exception:
                return None
        return _pipeline.bridge


state().autoconfigure = _autoconfigure


def force_flush(timeout: float | None = None) -> bool:
    """Export everything logged so far; wait at most `timeout` seconds (default
    `shutdown_timeout`). Returns whether everything was exported in time."""
    pipeline = _pipeline
    if pipeline.bridge is None or pipeline.settings is None:
        return True
    budget = pipeline.settings.shutdown_timeout if timeout is None else timeout
    deadline = time.monotonic() + max(0.0, budget)
    ok = pipeline.bridge.flush(budget)
    for processor in list(pipeline.processors):
        ok = processor.force_flush(max(0.0, deadline - time.monotonic())) and ok
    return ok


def shutdown(timeout: float | None = None) -> bool:
    """Drain and stop the pipeline, at most `timeout` seconds (default `shutdown_timeout`),
    however slow or dead an exporter is. Records still queued at the deadline are counted as
    dropped. Logging after shutdown is counted and discarded. Returns whether all drained."""
    with _lock:
        pipeline = _pipeline
        if pipeline.settings is None or pipeline.shut_down or pipeline.bridge is None:
            return True
        budget = pipeline.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, budget)
        ok = pipeline.bridge.shutdown(budget)
        remaining = max(0.0, deadline - time.monotonic())
        ok = shutdown_processors(pipeline.processors + pipeline.retired, remaining) and ok
        for hook in list(_shutdown_hooks):
            try:
                ok = hook(max(0.0, deadline - time.monotonic())) and ok
            except Exception:  # never fail a shutdown
                ok = False
        pipeline.shut_down = True
        return ok


def add_shutdown_hook(hook: Callable[[float], bool]) -> None:
    """Have `shutdown()` (at exit, on SIGTERM, or called) also run `hook(seconds_left)`,
    after the log exporters drained, within the same deadline. For fapilog's own span
    export (fapilog.otlp): the TracerProvider's atexit hook never runs when the process
    dies by SIGTERM."""
    if hook not in _shutdown_hooks:
        _shutdown_hooks.append(hook)


def _install_sigterm_handler() -> None:
    """SIGTERM's default action kills the process without running atexit, so nothing queued
    would be delivered. Where SIGTERM still has its default action, fapilog handles it:
    drain (bounded by shutdown_timeout), then die by SIGTERM as before. A server that
    installs its own handler (uvicorn, gunicorn) restores this one when it finishes and
    re-raises the signal, which then drains here. A handler the application set is never
    replaced."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    try:
        shutdown()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _at_exit() -> None:
    # also in a forked child: its queues were emptied at fork (the parent delivers what
    # was queued then), so it drains only its own records
    try:
        shutdown()
    except Exception:  # pragma: no cover - never fail interpreter exit
        pass


def stats() -> dict[str, Any]:
    """fapilog's own figures: totals and a per-exporter breakdown.

    For each exporter, ``emitted == exported + dropped + queued`` once nothing is in flight;
    `dropped` there includes records the intake queue shed before any exporter saw them.
    Totals: `emitted` counts events once; `exported` and `dropped` sum over exporters.
    """
    pipeline = _pipeline
    bridge = pipeline.bridge
    intake_reasons = dict(bridge.intake.dropped) if bridge else {}
    if bridge is not None and bridge.errors:
        intake_reasons["emit_error"] = bridge.errors
    intake_dropped = sum(intake_reasons.values())
    emitted = bridge.intake.offered if bridge else 0
    exporters: dict[str, Any] = {}
    for processor in pipeline.retired + pipeline.processors:
        figures = processor.stats()
        known = exporters.get(processor.name)
        if known is not None:  # a replaced exporter of the same name: add its figures up
            for key, value in figures.items():
                if key == "dropped_by_reason":
                    for reason, count in value.items():
                        known[key][reason] = known[key].get(reason, 0) + count
                elif key not in ("capacity", "queued"):
                    known[key] += value
            known["queued"] += figures["queued"]
            known["capacity"] = figures["capacity"]
            continue
        exporters[processor.name] = figures
    for figures in exporters.values():
        figures["dropped"] += intake_dropped
        reasons = figures["dropped_by_reason"]
        for reason, count in intake_reasons.items():
            reasons[f"intake_{reason}"] = reasons.get(f"intake_{reason}", 0) + count
    return {
        "emitted": emitted,
        "exported": sum(e["exported"] for e in exporters.values()),
        "dropped": sum(e["dropped"] for e in exporters.values()),
        "queued": (bridge.intake.depth if bridge else 0)
        + sum(e["queued"] for e in exporters.values()),
        "intake": {
            "accepted": bridge.intake.accepted if bridge else 0,
            "dropped_by_reason": intake_reasons,
            "queued": bridge.intake.depth if bridge else 0,
            "capacity": bridge.intake.max_size if bridge else 0,
        },
        "exporters": exporters,
        "enricher_failures": _enricher_failures(),
        "unconfigured_dropped": state().dropped_unconfigured,
    }


def _enricher_failures() -> dict[str, int]:
    from fapilog import enrichers

    return enrichers.failure_counts()


def reset() -> None:
    """Shut down and forget all configuration (for test suites: gives the next
    configure_logging() a clean process state). The OTel global provider stays."""
    global _pipeline
    with _lock:
        shutdown(timeout=2.0)
        _stdlib.uninstall()
        set_bridge(None)
        state().autoconfigure = _autoconfigure
        provider = _pipeline.provider
        if (
            provider is not None
            and provider is not global_sdk_provider()
            and _pipeline.owns_provider
        ):
            _routers.pop(id(provider), None)
        fresh = _Pipeline()
        # keep our own provider: the OTel global can be set only once per process
        if _pipeline.owns_provider and _pipeline.provider is global_sdk_provider():
            fresh.provider = _pipeline.provider
            fresh.owns_provider = True
        _pipeline = fresh
        set_levels(20, {})
        from fapilog._logger import default_chain

        CHAIN[:] = default_chain()
        structlog.reset_defaults()
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _diag.reset()
        logging.getLogger().setLevel(logging.WARNING)

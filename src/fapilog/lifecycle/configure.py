"""`configure_logging()`: builds the pipeline, then swaps it in (the composition root).

configure_logging() is idempotent: the same settings twice change nothing; different settings
swap the exporters (draining the old ones) and log one `fapilog.config.changed` event. It
attaches to an SDK LoggerProvider someone else installed instead of replacing it.
Everything that can fail (settings, enrichers, exporter factories, the Resource) is built
before the running pipeline is touched. At interpreter exit everything emitted is drained,
bounded by `shutdown_timeout` (`fapilog.lifecycle.drain`).
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from structlog.contextvars import merge_contextvars

from fapilog import _diag
from fapilog._levels import LevelName
from fapilog._state import STATE, Pipeline
from fapilog.capture import enrichers, redaction, stdlib
from fapilog.capture.logger import (
    configure_structlog,
    default_chain,
    get_logger,
)
from fapilog.capture.processors import add_trace_context
from fapilog.exceptions import ConfigurationError
from fapilog.exporters import otlp
from fapilog.exporters.contract import Destination
from fapilog.exporters.registry import create_exporter, exporter_spec
from fapilog.exporters.stdout import console_selected
from fapilog.integrations import gunicorn, uvicorn
from fapilog.lifecycle import excepthook
from fapilog.lifecycle.drain import (
    drain_in_background,
    install_sigterm_handler,
    shutdown,
    uninstall_sigterm_handler,
)
from fapilog.lifecycle.fork import at_interpreter_exit, register_child_drain
from fapilog.lifecycle.levels import configure_levels, defer_redaction, reset_levels
from fapilog.otel.bridge import Bridge
from fapilog.otel.logs import (
    LoggerProvider,
    global_sdk_provider,
    new_provider,
    replace_resource,
    set_global_provider,
)
from fapilog.otel.resource import build_resource, resource_fields
from fapilog.pipeline import alerts, metrics
from fapilog.pipeline.accounting import intake_mark
from fapilog.pipeline.direct import DirectBridge, before_redaction
from fapilog.pipeline.router import ExportProcessor, Router
from fapilog.pipeline.spool import open_spool
from fapilog.settings import (
    UNSET,
    AdminSettings,
    ConsoleSettings,
    Environment,
    FileSettings,
    LoggingSettings,
    LokiSettings,
    OtlpSettings,
    QueueSettings,
    RedactionSettings,
    RequestSettings,
    SpoolSettings,
    SystemSettings,
    Unset,
    from_environment,
)
from fapilog.settings._otel_env import sdk_disabled

if TYPE_CHECKING:
    from structlog.typing import Processor

    from fapilog.capture.enrichers import EnricherChain
    from fapilog.exporters.spec import ExporterSpec

__all__ = [
    "Recorded",
    "build_chain",
    "check_settings",
    "configure_from_environment",
    "configure_logging",
    "recording",
    "reset",
]


@dataclass(frozen=True)
class Recorded:
    """One `configure_logging()` call seen in record-only mode (`recording`): the
    `LoggingSettings` passed (None: read from the environment), the setting keywords given,
    and the effective settings."""

    given: LoggingSettings | None
    keywords: Mapping[str, Any]
    settings: LoggingSettings


@contextmanager
def recording() -> Iterator[list[Recorded]]:
    """Record-only mode, for `fapilog config --app`: inside it, `configure_logging()`
    validates its settings (raising `ConfigurationError` as usual), appends a `Recorded` to
    the list yielded and returns the settings; it starts no exporter, opens no connection,
    installs no handler and instruments no app. What is logged meanwhile is dropped (the
    first event does not configure fapilog from the environment either)."""
    calls: list[Recorded] = []
    with STATE.lock:
        if STATE.recording is not None:
            raise RuntimeError("fapilog is already recording configure_logging() calls")
        STATE.recording = calls
    try:
        yield calls
    finally:
        with STATE.lock:
            STATE.recording = None


def configure_logging(
    settings: LoggingSettings | None = None,
    *,
    app: Any = None,
    level: LevelName | int | Unset = UNSET,
    env: Environment | Unset = UNSET,
    json_console: bool | Unset | None = UNSET,
    service_name: str | Unset | None = UNSET,
    service_version: str | Unset | None = UNSET,
    exporters: Sequence[str] | Unset = UNSET,
    logger_levels: Mapping[str, LevelName | int] | Unset = UNSET,
    exporter_levels: Mapping[str, LevelName | int] | Unset = UNSET,
    rate_limits: Mapping[str, float] | Unset = UNSET,
    fold_repeats: float | Unset | None = UNSET,
    capture_stdlib: bool | Unset = UNSET,
    capture_exceptions: bool | Unset = UNSET,
    shutdown_timeout: float | Unset = UNSET,
    enrichers: Sequence[str] | Unset = UNSET,
    exporter_options: Mapping[str, Mapping[str, Any]] | Unset = UNSET,
    allow_unknown: bool | Unset = UNSET,
    queue: QueueSettings | Mapping[str, Any] | Unset = UNSET,
    file: FileSettings | Mapping[str, Any] | Unset = UNSET,
    loki: LokiSettings | Mapping[str, Any] | Unset = UNSET,
    otlp: OtlpSettings | Mapping[str, Any] | Unset = UNSET,
    spool: SpoolSettings | Mapping[str, Any] | Unset = UNSET,
    request: RequestSettings | Mapping[str, Any] | Unset = UNSET,
    redaction: RedactionSettings | Mapping[str, Any] | Unset = UNSET,
    system: SystemSettings | Mapping[str, Any] | Unset = UNSET,
    console: ConsoleSettings | Mapping[str, Any] | Unset = UNSET,
    admin: AdminSettings | Mapping[str, Any] | Unset = UNSET,
    on_alert: Callable[[dict[str, Any]], None] | Unset | None = UNSET,
) -> LoggingSettings:
    """Configure fapilog for this process and return the effective settings.

    `settings` (default: read from the `FAPILOG_*` / `OTEL_*` environment variables) with
    the keywords given applied on top: ``configure_logging(level="DEBUG",
    exporters=["stdout", "file"], file={"path": "app.log"})``. There is one keyword per
    field of `LoggingSettings`, typed as the field (a level also as a stdlib number such
    as ``logging.DEBUG``), validated as the field is, and each outranks the environment
    and `settings`; a keyword left out changes nothing (None is a value: ``json_console=
    None`` is "decide from the terminal"). A section (``queue``, ``file``, ``otlp``, ...)
    takes its model (it replaces the section) or a mapping of some of its fields (merged
    into the section); the mapping settings ``logger_levels`` and ``exporter_options`` are
    merged by key too. Every setting, its environment variable and default:
    ``help(LoggingSettings)`` and docs/configuration.md.

    With `app` (a FastAPI/Starlette application) also instrument it: server spans and
    request logging. Raises `ConfigurationError` for invalid settings, naming the setting
    and its environment variable; never afterwards. The same settings twice change nothing.
    """
    arguments = dict(locals())  # (the first statement: the parameters, nothing else yet)
    # the setting keywords given (a test checks they are exactly LoggingSettings' fields)
    overrides = {
        name: value
        for name, value in arguments.items()
        if name not in ("settings", "app") and value is not UNSET
    }
    if settings is not None and not isinstance(settings, LoggingSettings):
        raise ConfigurationError(
            f"configure_logging() takes a LoggingSettings, got {type(settings).__name__}"
        )
    passed = settings
    if settings is None:
        # allow_unknown decides whether reading the environment fails: it applies from the
        # first read on
        given = {} if allow_unknown is UNSET else {"allow_unknown": allow_unknown}
        settings = LoggingSettings(**given)
    resolved = settings.with_overrides(overrides)
    problem = resolved.unknown_exporter_levels()
    if problem is not None:
        raise ConfigurationError(problem)
    specs = [exporter_spec(name) for name in resolved.exporters]
    calls = STATE.recording
    if calls is not None:  # record-only mode (`recording`): validated, nothing configured
        check_settings(resolved)
        calls.append(Recorded(passed, overrides, resolved))
    else:
        with STATE.lock:
            changes = _apply(resolved, specs)
        for listener in list(STATE.listeners):
            try:
                listener(resolved)
            except Exception as exc:  # a listener's failure must not fail the configuration
                _diag.report("configure-listener", f"fapilog: {listener!r} failed: {exc!r}")
        if changes:
            get_logger("fapilog").info("fapilog.config.changed", changed=changes)
    if app is not None:  # (in record-only mode: only checked to be an application)
        # imported here: the FastAPI integration (and its tracing) loads only with an app
        from fapilog.integrations.fastapi import instrument_app

        instrument_app(app, resolved)
    return resolved


def check_settings(settings: LoggingSettings) -> None:
    """Raise the ConfigurationError that building `settings` would raise for the exporter
    names, the custom enrichers and the Resource, building nothing (record-only mode)."""
    for name in settings.exporters:
        exporter_spec(name)
    enrichers.check_names(settings)
    build_resource(settings)


def _diff(old: LoggingSettings, new: LoggingSettings) -> dict[str, Any]:
    before, after = old.model_dump(), new.model_dump()
    changed: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changed[key] = {"from": before.get(key), "to": after.get(key)}
    return changed


# Settings that only affect the caller-side chain and levels (or, allow_unknown, only how
# the settings are read): changing them keeps the running exporters (and their queues).
_CHAIN_ONLY_FIELDS = frozenset(
    {"level", "logger_levels", "capture_stdlib", "capture_exceptions", "enrichers",
     "redaction", "request", "shutdown_timeout", "on_alert", "allow_unknown",
     "exporter_levels", "rate_limits", "fold_repeats", "admin"}
)  # fmt: skip


def _exporters_changed(old: LoggingSettings, new: LoggingSettings) -> bool:
    """Whether the exporters must be rebuilt; the console redacts what it renders itself
    (tracebacks, their local variables), so it is rebuilt when redaction changes."""
    if old.redaction != new.redaction and (console_selected(old) or console_selected(new)):
        return True
    return any(
        getattr(old, name) != getattr(new, name)
        for name in LoggingSettings.model_fields
        if name not in _CHAIN_ONLY_FIELDS
    )


def build_chain(settings: LoggingSettings) -> tuple[list[Processor], EnricherChain | None]:
    """contextvars merge -> trace context -> enrichers -> redaction -> the OTel bridge
    (the level gate runs before the chain, in BoundLogger and the stdlib logger levels),
    and the custom enrichers' chain. The bridge is `DirectBridge`, which also hands each
    capture to the console when one writes on the calling thread, and with the console the
    exception is kept aside for it before redaction (`fapilog.pipeline.direct`)."""
    enrichment, enricher_chain = enrichers.build_processors(settings)
    chain: list[Processor] = [
        merge_contextvars,
        add_trace_context,
        *enrichment,
        *before_redaction(console_selected(settings) and settings.console.synchronous),
        *redaction.build_processors(settings),
        DirectBridge(),
    ]
    return chain, enricher_chain


def _apply(settings: LoggingSettings, specs: list[ExporterSpec]) -> dict[str, Any]:
    """Build what `settings` need, then swap it in (STATE.lock held)."""
    running = STATE.pipeline  # (shut down, or not)
    previous = running if not STATE.shut_down else None
    if previous is not None and previous.settings == settings and STATE.pid == os.getpid():
        return {}
    old = previous.settings if previous is not None else None
    # -- build: everything that can fail, before touching the running pipeline
    chain, enricher_chain = build_chain(settings)
    resource = build_resource(settings)
    retiring: list[ExportProcessor] = []
    created: list[ExportProcessor] = []
    if (
        previous is not None
        and previous.processors
        and not _exporters_changed(previous.settings, settings)
    ):
        processors = previous.processors  # the running exporters keep their queues
    else:
        built = _not_sent_twice(_without_otlp_when_disabled(specs), settings, previous)
        processors = created = [_processor(spec, settings, resource) for spec in built]
        retiring = running.processors if running is not None else []
    provider, owns_provider = _provider(previous, settings, resource)
    router = STATE.routers.get(id(provider))
    if router is None:
        router = STATE.routers[id(provider)] = Router()
        provider.add_log_record_processor(router)
    if retiring and STATE.bridge is not None and not STATE.shut_down:
        # what was logged before this call still goes to the exporters configured then
        STATE.bridge.flush(settings.shutdown_timeout)
    # -- swap
    if STATE.bridge is None or STATE.shut_down:
        STATE.bridge = Bridge(provider, settings.queue, earlier=STATE.bridge, router=router)
    redactor = next((p for p in chain if isinstance(p, redaction.Redactor)), None)
    STATE.bridge.show_names_as(redactor.redact_text if redactor is not None else None)
    mark = intake_mark()
    for processor in retiring:
        if processor.intake_end is None:
            processor.intake_end = mark
    for processor in created:
        processor.intake_start = mark
    router.targets = tuple(processors)
    STATE.pipeline = Pipeline(
        settings=settings,
        provider=provider,
        owns_provider=owns_provider,
        router=router,
        processors=processors,
        enrichers=enricher_chain,
    )
    STATE.shut_down = False
    STATE.exit_started = None  # (configured again after an exit began: no longer exiting)
    STATE.pid = os.getpid()
    STATE.chain[:] = chain
    defer_redaction(chain)
    configure_structlog()
    configure_levels(settings)
    stdlib.route(settings)
    excepthook.route(settings)
    alerts.install()
    try:
        metrics.register_metrics()  # on the global MeterProvider (a no-op proxy until set)
    except Exception as exc:  # (the metrics API never raises in practice)
        _diag.report("metrics", f"fapilog could not register its metrics: {exc!r}")
    if not STATE.atexit_registered:
        atexit.register(at_interpreter_exit)
        STATE.atexit_registered = True
    install_sigterm_handler()
    uvicorn.drain_on_reraised_signals()
    gunicorn.patch_arbiter()
    register_child_drain()
    if retiring:
        # drain the old exporters in the background (bounded), keeping their counts
        STATE.retired.extend(retiring)
        drain_in_background(retiring, settings.shutdown_timeout)
    return _diff(old, settings) if old is not None else {}


def _not_sent_twice(
    specs: list[ExporterSpec], settings: LoggingSettings, previous: Pipeline | None
) -> list[ExporterSpec]:
    """`specs` without the `otlp` exporter when the provider fapilog emits through already
    exports OTLP logs to the same endpoint (the user's own processor): each record would
    reach the collector twice. Named once on stderr."""
    if otlp.SPEC not in specs:
        return specs
    provider = previous.provider if previous is not None else global_sdk_provider()
    endpoint = otlp.exported_by(provider, settings) if provider is not None else None
    if endpoint is None:
        return specs
    if endpoint not in _SAME_ENDPOINT_NAMED:
        _SAME_ENDPOINT_NAMED.add(endpoint)
        _diag.report(
            f"otlp-same-endpoint:{endpoint}",
            f"fapilog: the LoggerProvider fapilog attached to already exports logs over OTLP "
            f"to {endpoint}, where the 'otlp' exporter would send them: fapilog does not "
            "create its 'otlp' exporter, so that each record reaches the collector once "
            "(through that processor, outside fapilog's queues and fapilog.stats())",
            endpoint=endpoint,
        )
    return [spec for spec in specs if spec is not otlp.SPEC]


# the endpoints named by `_not_sent_twice`, each once (until `reset`)
_SAME_ENDPOINT_NAMED: set[str] = set()


def _without_otlp_when_disabled(specs: list[ExporterSpec]) -> list[ExporterSpec]:
    """`specs` without the `otlp` exporter under ``OTEL_SDK_DISABLED=true`` (the
    OpenTelemetry switch that turns export off: no OTLP logs, and no OTLP spans either, see
    `fapilog.otel.otlp.trace_protocols`), said once on stderr. The local exporters (stdout,
    console, file) and Loki keep working; `fapilog.stats()` has no `otlp` exporter then."""
    kept = [spec for spec in specs if spec.name != "otlp"]
    if len(kept) == len(specs) or not sdk_disabled():
        return specs
    _diag.report(
        "otlp-sdk-disabled",
        "fapilog: OTEL_SDK_DISABLED=true: the 'otlp' exporter is not started (no OTLP export "
        "of logs or spans); the other exporters work as configured",
    )
    return kept


def _processor(spec: ExporterSpec, settings: LoggingSettings, resource: Any) -> ExportProcessor:
    """One exporter behind its queue, with its disk spool when it sends over a network."""
    exporter = create_exporter(spec, settings)
    spool = None
    if spec.spool:
        destination = exporter.spool_destination if isinstance(exporter, Destination) else ""
        service = str(resource.attributes.get("service.name", "unknown_service"))
        spool = open_spool(settings.spool, spec.name, service, destination)
    return ExportProcessor(
        spec.name, exporter, settings.queue, max_delay=spec.delay_for(settings), spool=spool
    )


def _provider(
    previous: Pipeline | None, settings: LoggingSettings, resource: Any
) -> tuple[LoggerProvider, bool]:
    """The LoggerProvider to emit through: the one in use, one someone else installed
    globally (fapilog attaches to it), or a new one of fapilog's, installed globally."""
    if previous is not None:
        provider, owns = previous.provider, previous.owns_provider
        if owns and resource_fields(previous.settings) != resource_fields(settings):
            replace_resource(provider, resource)
        return provider, owns
    existing = global_sdk_provider()
    if existing is not None:
        # fapilog's own from before a reset (the global can be set once per process), or
        # someone else's (the application's, opentelemetry-instrument's): attach to it
        owns = existing is STATE.own_provider
        if owns:
            replace_resource(existing, resource)
        return existing, owns
    provider = new_provider(resource)
    STATE.own_provider = provider
    try:
        set_global_provider(provider)
    except Exception:  # pragma: no cover - the API only warns
        pass
    return provider, True


def _autoconfigure() -> Bridge | None:
    """The first event logged before configure_logging(): configure from the environment."""
    with STATE.lock:
        if STATE.shut_down or STATE.recording is not None:
            return None
        if STATE.bridge is None:
            try:
                configure_from_environment("autoconfigure")
            except Exception:
                return None
        bridge: Bridge | None = STATE.bridge
        return bridge


def configure_from_environment(what: str) -> LoggingSettings:
    """`configure_logging()` from the environment; when that fails (invalid settings, an
    exporter that cannot be created), the error is reported on stderr, naming `what`
    configured, and fapilog runs on its defaults: an application must start even when its
    logging configuration is wrong."""
    try:
        # the environment's valid settings, its unknown variables reported on stderr
        return configure_logging(from_environment(what))
    except ConfigurationError as exc:
        _diag.report(f"configure:{what}", f"fapilog: {exc}; using defaults", level="error")
        return configure_logging(LoggingSettings.model_construct())


STATE.autoconfigure = _autoconfigure


def reset() -> None:
    """Shut down and forget all configuration (for test suites: gives the next
    configure_logging() a clean process state). The OTel global provider stays."""
    with STATE.lock:
        shutdown(timeout=2.0)
        stdlib.uninstall()
        excepthook.uninstall()
        STATE.bridge = None
        STATE.autoconfigure = _autoconfigure
        pipeline = STATE.pipeline
        if pipeline is not None and pipeline.provider is not global_sdk_provider():
            STATE.routers.pop(id(pipeline.provider), None)
        STATE.pipeline = None
        STATE.retired = []
        STATE.shut_down = False
        STATE.exit_started = None
        STATE.pid = os.getpid()
        reset_levels()
        STATE.chain[:] = default_chain()
        structlog.reset_defaults()
        uninstall_sigterm_handler()
        _diag.reset()
        _SAME_ENDPOINT_NAMED.clear()
        logging.getLogger().setLevel(logging.WARNING)

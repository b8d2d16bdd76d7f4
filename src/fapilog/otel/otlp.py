"""OTLP export of logs and traces to collectors (see docs/opentelemetry.md).

fapilog uses the OpenTelemetry SDK's own OTLP exporters (grpc or http/protobuf) and
configures them from `LoggingSettings.otlp` (``FAPILOG_OTLP__*``); every field left unset
falls back to the standard ``OTEL_EXPORTER_OTLP_*`` variables, read by the SDK itself.

A collector that is down must never block the application or stretch its exit:

- exports run on background workers (fapilog's `ExportProcessor` for logs, a
  `BoundedBatchSpanProcessor` for spans) with a short per-export timeout (5 s by default,
  retries included);
- once the interpreter starts exiting, an exporter whose last export failed gives up at once
  (its retry back-off is aborted, what is left is dropped and counted) instead of retrying
  into a dead collector;
- the span processor's shutdown shares fapilog's exit deadline (`shutdown_timeout`, counted
  from the moment the interpreter starts exiting) instead of the SDK's 30 s.

`span_processors(settings)` is called by fapilog's tracing set-up
(`fapilog.integrations.tracing`) and by the `opentelemetry-instrument` configurator
(`fapilog.integrations.distro`) when they create a TracerProvider: the span processors that
export traces over OTLP.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import unquote

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from fapilog import _diag
from fapilog._state import STATE, signals_blocked, start_worker
from fapilog.exceptions import ConfigurationError
from fapilog.otel.log_exporters import otlp_log_exporter_class, replace_grpc_logs_stub
from fapilog.otel.otlp_logs import Delivery
from fapilog.otel.semconv import OTLP_EXPORTER_NAMES
from fapilog.otel.trace import batch_flush, batch_shutdown, own_span_processor
from fapilog.settings._errors import scrub, setting_error
from fapilog.settings._otel_env import check_otlp_environment, otlp_variable, sdk_disabled
from fapilog.settings.otlp import PROTOCOLS, Protocol

if TYPE_CHECKING:
    from fapilog.otel.logs import LogRecordExporter
    from fapilog.settings import LoggingSettings

__all__ = [
    "BoundedBatchSpanProcessor",
    "DEFAULT_TIMEOUT",
    "ExportGuard",
    "GuardedSpanExporter",
    "OTLP_EXPORTER_NAMES",
    "bounded_span_processor",
    "check_log_settings",
    "created_log_exporter",
    "exit_budget",
    "flush_span_processors",
    "header_secrets",
    "http_log_endpoint",
    "log_destination",
    "resolve_protocol",
    "resolve_timeout",
    "sdk_log_exporter",
    "sdk_span_exporter",
    "span_processors",
    "trace_protocols",
]

Signal = Literal["logs", "traces"]
DEFAULT_TIMEOUT = 5.0
_SIGNAL_PATH = {"logs": "v1/logs", "traces": "v1/traces"}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value is not None and value.strip() else None


def resolve_protocol(settings: LoggingSettings, signal: Signal) -> Protocol:
    """`FAPILOG_OTLP__PROTOCOL`, else `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else
    `OTEL_EXPORTER_OTLP_PROTOCOL`, else grpc (the Python SDK's default for ``otlp``)."""
    if settings.otlp.protocol is not None:
        return settings.otlp.protocol
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = _env(name)
        if value is None:
            continue
        if value == "grpc":
            return "grpc"
        if value == "http/protobuf":
            return "http/protobuf"
        raise setting_error(
            None, "not a supported protocol", value=value, allowed=", ".join(PROTOCOLS), env=name
        )
    return "grpc"


def resolve_timeout(settings: LoggingSettings, signal: Signal) -> float:
    """Seconds one export may take, retries included: `FAPILOG_OTLP__TIMEOUT`, else
    `OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT` (seconds, as the
    Python SDK reads them), else `DEFAULT_TIMEOUT`."""
    if settings.otlp.timeout is not None:
        return settings.otlp.timeout
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        value = _env(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise setting_error(None, "expected a number of seconds > 0", value=value, env=name)
        return seconds
    return DEFAULT_TIMEOUT


def _read_file(path: str, setting: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise setting_error(
            f"otlp.{setting}", f"cannot read it: {exc.strerror or exc}", value=path
        ) from None


def _headers(settings: LoggingSettings) -> dict[str, str] | None:
    headers = settings.otlp.headers
    return {k: v.get_secret_value() for k, v in headers.items()} if headers else None


def header_secrets(settings: LoggingSettings, signal: Signal) -> tuple[str, ...]:
    """The header values the exporter of `signal` sends (fapilog's, and those of the
    variable the SDK reads), as given, URL-decoded and their last word (a token after
    ``Bearer``): what its diagnostics are scrubbed of. Not those shorter than 4 characters
    (no credential, and masking them would mask every such piece of text)."""
    values = [value.get_secret_value() for value in settings.otlp.headers.values()]
    found = otlp_variable(signal, "HEADERS")
    if found is not None:
        values += [item.partition("=")[2].strip() for item in found[1].split(",")]
    forms = {form for value in values for form in (value, unquote(value), *value.split()[-1:])}
    return tuple(sorted((form for form in forms if len(form) >= 4), key=len, reverse=True))


def _http_endpoint(settings: LoggingSettings, signal: Signal) -> str | None:
    base = settings.otlp.endpoint
    if base is None:
        return None  # the SDK reads OTEL_EXPORTER_OTLP_[<SIGNAL>_]ENDPOINT
    base = base.rstrip("/")
    for path in _SIGNAL_PATH.values():
        base = base.removesuffix("/" + path)
    return f"{base}/{_SIGNAL_PATH[signal]}"


def check_log_settings(settings: LoggingSettings) -> None:
    """Raise the ConfigurationError the `otlp` exporter's creation would raise (protocol,
    timeout, certificate files, the ``OTEL_EXPORTER_OTLP_*`` variables the SDK reads): the
    SDK's exporter is created, as fapilog creates it, and shut down unused (a gRPC channel
    connects only when used; nothing is sent)."""
    exporter: Any = created_log_exporter(settings)
    exporter.shutdown()


def created_log_exporter(
    settings: LoggingSettings, delivery: Delivery | None = None
) -> LogRecordExporter:
    """`sdk_log_exporter`, any failure to create it raised as a ConfigurationError (its
    text scrubbed of the header values)."""
    try:
        return sdk_log_exporter(settings, delivery=delivery)
    except ConfigurationError:
        raise
    except Exception as exc:  # not chained: the exception's own text may carry a header value
        said = scrub(repr(exc), header_secrets(settings, "logs"))
        raise setting_error(
            "exporters", f"exporter 'otlp' could not be created: {said}", value="otlp"
        ) from None


def http_log_endpoint(settings: LoggingSettings) -> str:
    """The URL the http/protobuf `otlp` exporter posts logs to: ``FAPILOG_OTLP__ENDPOINT``
    + ``/v1/logs``, else ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` as given, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/logs``, else the SDK's default."""
    own = _http_endpoint(settings, "logs")
    if own is not None:
        return own
    specific = _env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
    if specific is not None:
        return specific
    base = _env("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return f"{base.rstrip('/')}/{_SIGNAL_PATH['logs']}"


def _check_files(settings: LoggingSettings) -> dict[str, str]:
    files = {}
    for setting in ("certificate", "client_certificate", "client_key"):
        path = getattr(settings.otlp, setting)
        if path is not None:
            _read_file(path, setting)  # a clear error now rather than at the first export
            files[setting] = path
    return files


def _grpc_kwargs(settings: LoggingSettings, signal: Signal) -> dict[str, Any]:
    import grpc  # type: ignore[import-untyped]

    otlp = settings.otlp
    # the SDK reads the OTEL_ variables that fapilog's settings leave unset
    check_otlp_environment(signal, headers=not otlp.headers, endpoint=otlp.endpoint is None)
    files = _check_files(settings)
    insecure = otlp.insecure
    if insecure is None and files:
        insecure = False  # certificates given: TLS, whatever the endpoint's scheme says
    kwargs: dict[str, Any] = {
        "endpoint": otlp.endpoint,
        "insecure": insecure,
        "headers": _headers(settings),
        "timeout": resolve_timeout(settings, signal),
    }
    if otlp.compression is not None:
        kwargs["compression"] = (
            grpc.Compression.Gzip if otlp.compression == "gzip" else grpc.Compression.NoCompression
        )
    if files and not insecure:
        kwargs["credentials"] = grpc.ssl_channel_credentials(
            root_certificates=_read_file(files["certificate"], "certificate")
            if "certificate" in files
            else None,
            private_key=_read_file(files["client_key"], "client_key")
            if "client_key" in files
            else None,
            certificate_chain=_read_file(files["client_certificate"], "client_certificate")
            if "client_certificate" in files
            else None,
        )
    return kwargs


def _http_kwargs(
    settings: LoggingSettings, signal: Signal, delivery: Delivery | None = None
) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http import Compression

    otlp = settings.otlp
    # (over HTTP the SDK adds the headers of the OTEL_ variables to fapilog's)
    check_otlp_environment(signal, headers=True, endpoint=otlp.endpoint is None)
    _check_files(settings)
    kwargs: dict[str, Any] = {
        "endpoint": _http_endpoint(settings, signal),
        "certificate_file": otlp.certificate,
        "client_key_file": otlp.client_key,
        "client_certificate_file": otlp.client_certificate,
        "headers": _headers(settings),
        "timeout": resolve_timeout(settings, signal),
    }
    if otlp.compression is not None:
        kwargs["compression"] = (
            Compression.Gzip if otlp.compression == "gzip" else Compression.NoCompression
        )
    certificate = otlp.certificate or _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_CERTIFICATE")
    certificate = certificate or _env("OTEL_EXPORTER_OTLP_CERTIFICATE")
    provider = _env("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER") or _env(
        f"OTEL_PYTHON_EXPORTER_OTLP_HTTP_{signal.upper()}_CREDENTIAL_PROVIDER"
    )
    if (certificate or delivery is not None) and not provider:  # else: the provider's
        session = _session()
        if delivery is not None:
            session.hooks["response"].append(delivery.response_hook)
            delivery.attached = True
        kwargs["session"] = session
    return kwargs


def _session() -> Any:
    """A requests Session in which the collector's CA certificate, once configured, is used:
    plain requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` replace a Session's own
    `verify` file, so the configured certificate would be silently ignored."""
    import requests

    class CertificateSession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            merged: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
            if isinstance(self.verify, str):
                merged["verify"] = self.verify
            return merged

    return CertificateSession()


def log_destination(settings: LoggingSettings) -> str:
    """Where logs go (protocol and endpoint, as configured or from the environment): what
    the `otlp` exporter's spool directory is keyed by. Headers (credentials) are left out."""
    protocol = resolve_protocol(settings, "logs")
    endpoint = (
        settings.otlp.endpoint
        or _env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
        or ("localhost:4317" if protocol == "grpc" else "http://localhost:4318")
    )
    return f"{protocol} {endpoint}"


def sdk_log_exporter(
    settings: LoggingSettings,
    protocol: Protocol | None = None,
    *,
    delivery: Delivery | None = None,
) -> LogRecordExporter:
    """The SDK's OTLP log exporter for `protocol` (default: `resolve_protocol`), configured
    from `settings.otlp` and the standard environment variables.

    With `delivery` (`fapilog.otel.otlp_logs`), the exporter reports the collector's answers
    to it, and over gRPC sends requests cut to the collector's message limit; it sets
    ``delivery.attached`` when that works (not with a credential provider's Session over
    HTTP, nor with a gRPC exporter not built as `fapilog.otel.logs` checks)."""
    protocol = protocol or resolve_protocol(settings, "logs")
    exporter_class = otlp_log_exporter_class(protocol)
    if protocol == "grpc":
        exporter = exporter_class(**_grpc_kwargs(settings, "logs"))
        if delivery is not None:
            delivery.attached = replace_grpc_logs_stub(exporter, delivery.grpc_stub)
        return exporter
    return exporter_class(**_http_kwargs(settings, "logs", delivery))


def sdk_span_exporter(settings: LoggingSettings, protocol: Protocol | None = None) -> SpanExporter:
    """The SDK's OTLP span exporter for `protocol` (default: `resolve_protocol`)."""
    protocol = protocol or resolve_protocol(settings, "traces")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**_grpc_kwargs(settings, "traces"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(**_http_kwargs(settings, "traces"))


# -- exit: a dead collector must not stretch it -------------------------------------------


class _ExitClock:
    """When the interpreter started exiting (the main thread finished), and the exporters
    to release then. `threading._register_atexit` callbacks run before `atexit` handlers, so
    every shutdown at exit measures its budget from the same instant."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        self._lock = threading.Lock()
        self._guards: weakref.WeakSet[ExportGuard] = weakref.WeakSet()
        self._hooked = False

    def track(self, guard: ExportGuard) -> None:
        with self._lock:
            self._guards.add(guard)
            if not self._hooked:
                register: Callable[[Callable[[], None]], None] | None = getattr(
                    threading, "_register_atexit", None
                )
                try:
                    if register is not None:
                        register(self.start)
                        self._hooked = True
                except RuntimeError:  # already shutting down
                    pass

    def start(self) -> None:
        with self._lock:
            if self.started_at is None:
                self.started_at = time.monotonic()
            if STATE.exit_started is None:  # the one exit deadline starts here too
                STATE.exit_started = self.started_at
            guards = list(self._guards)
        for guard in guards:
            guard.on_exit()

    def remaining(self, deadline: float) -> float:
        """What is left of `deadline`, counted from the start of the one exit deadline
        (`ProcessState.exit_started`: a signal, the lifespan's shutdown) when that came
        before the interpreter's exit."""
        started = self.started_at
        begun = STATE.exit_started
        if begun is not None and (started is None or begun < started):
            started = begun
        if started is None:
            return deadline
        return max(0.0, deadline - (time.monotonic() - started))

    def _after_fork(self) -> None:
        # (threading's exit callbacks survive the fork: the hook stays registered)
        self.started_at = None
        self._lock = threading.Lock()


_EXIT = _ExitClock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_EXIT._after_fork)


def exit_budget(deadline: float) -> float:
    """Seconds left of `deadline` (fapilog's `shutdown_timeout`): all of it before the
    interpreter started exiting, what the exit has not used up yet afterwards."""
    return _EXIT.remaining(deadline)


R = TypeVar("R")


class ExportGuard:
    """Wraps the SDK exporter calls: no instrumentation of the export's own HTTP/gRPC calls
    (no spans, no feedback loop), and no waiting on a dead collector once exiting. What it
    reports of an exception is scrubbed of `secrets` (`header_secrets`) and URL userinfo."""

    def __init__(self, name: str, inner: Any, secrets: Sequence[str] = ()) -> None:
        self.name = name
        self.inner = inner
        self.secrets = tuple(secrets)
        self.failing = False
        self.closed = False
        self._lock = threading.Lock()
        _EXIT.track(self)

    def call(self, export: Callable[[], R], success: R, failure: R) -> R:
        if self.closed or (self.failing and _EXIT.started_at is not None):
            return failure
        try:
            with suppress_instrumentation():
                result = export()
        except Exception as exc:
            said = scrub(repr(exc), self.secrets)
            _diag.report(f"otlp:{self.name}", f"fapilog OTLP {self.name} exporter raised: {said}")
            result = failure
        self.failing = result != success
        return result

    def on_exit(self) -> None:
        """The interpreter is exiting: if the collector was failing, abort the retry back-off
        now (the SDK waits up to the whole export timeout otherwise)."""
        if self.failing:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.inner.shutdown()
        except Exception as exc:
            said = scrub(repr(exc), self.secrets)
            _diag.report(f"otlp-shutdown:{self.name}", f"OTLP {self.name} shutdown: {said}")


class GuardedSpanExporter(SpanExporter):
    """The SDK's OTLP span exporter behind fapilog's guard (see `ExportGuard`)."""

    def __init__(self, inner: SpanExporter, secrets: Sequence[str] = ()) -> None:
        self._guard = ExportGuard("traces", inner, secrets)
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._guard.call(
            lambda: self.inner.export(spans), SpanExportResult.SUCCESS, SpanExportResult.FAILURE
        )

    def shutdown(self) -> None:
        self._guard.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class BoundedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor with fapilog's bounds: `shutdown()` waits at most what
    is left of `shutdown_timeout` (counted from the start of the interpreter's exit) instead
    of 30 s, and `force_flush(timeout)` honours its timeout."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        shutdown_timeout: float,
        schedule_delay: float | None = None,
    ) -> None:
        with signals_blocked():  # the SDK starts its worker thread here
            super().__init__(
                exporter,
                schedule_delay_millis=schedule_delay * 1000 if schedule_delay is not None else None,
            )
        self.shutdown_timeout = shutdown_timeout
        self._done = False
        _track_processor(self)

    def shutdown(self) -> None:
        if self._done:
            return
        self._done = True
        batch_shutdown(self, exit_budget(self.shutdown_timeout))

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        if self._done:
            return False
        timeout = (timeout_millis if timeout_millis is not None else 30000) / 1000
        outcome: list[bool] = []

        def flush() -> None:
            outcome.append(batch_flush(self))

        worker = start_worker("span-flush", flush)
        if worker is None:  # interpreter shutdown: no thread to bound the wait with
            return False
        worker.join(max(0.0, timeout))
        return bool(outcome and outcome[0])


_PROCESSORS: weakref.WeakSet[BoundedBatchSpanProcessor] = weakref.WeakSet()


def _track_processor(processor: BoundedBatchSpanProcessor) -> None:
    _PROCESSORS.add(processor)
    own_span_processor(processor)
    # fapilog's shutdown() flushes them within its deadline (see flush_span_processors)
    if flush_span_processors not in STATE.shutdown_hooks:
        STATE.shutdown_hooks.append(flush_span_processors)


def flush_span_processors(timeout: float) -> bool:
    """Export the spans fapilog's span processors still hold, within `timeout` seconds.

    `fapilog.shutdown()` calls this with what its deadline has left, after the logs: on
    SIGTERM the process dies without running atexit hooks (uvicorn re-raises the signal),
    so the TracerProvider's own shutdown would never export the last spans."""
    deadline = time.monotonic() + max(0.0, timeout)
    ok = True
    for processor in list(_PROCESSORS):
        if processor._done:
            continue
        left = max(0.0, deadline - time.monotonic())
        ok = processor.force_flush(int(left * 1000)) and ok
    return ok


def trace_protocols(settings: LoggingSettings) -> list[Protocol]:
    """The OTLP protocols spans are exported with (usually none or one).

    `FAPILOG_OTLP__TRACES=false` or ``OTEL_SDK_DISABLED=true``: none. Otherwise the OTLP
    names in `OTEL_TRACES_EXPORTER` (``otlp`` resolved like the logs' protocol,
    ``otlp_proto_grpc``, ``otlp_proto_http``); when that variable is unset, OTLP spans go
    with OTLP logs (``otlp`` in `exporters`), or always with `FAPILOG_OTLP__TRACES=true`.
    """
    if settings.otlp.traces is False or sdk_disabled():
        return []
    raw = _env("OTEL_TRACES_EXPORTER")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()] if raw else []
    protocols: list[Protocol] = []
    for name in names:
        if name in OTLP_EXPORTER_NAMES:
            protocol = OTLP_EXPORTER_NAMES[name] or resolve_protocol(settings, "traces")
            if protocol not in protocols:
                protocols.append(protocol)
    if protocols:
        return protocols
    wanted = settings.otlp.traces is True or (raw is None and "otlp" in settings.exporters)
    return [resolve_protocol(settings, "traces")] if wanted else []


def bounded_span_processor(
    exporter: SpanExporter, settings: LoggingSettings
) -> BoundedBatchSpanProcessor:
    """`exporter` behind a `BoundedBatchSpanProcessor` with fapilog's shutdown deadline."""
    return BoundedBatchSpanProcessor(exporter, shutdown_timeout=settings.shutdown_timeout)


def span_processors(settings: LoggingSettings) -> list[SpanProcessor]:
    """The span processors exporting traces over OTLP for `settings` (see
    `trace_protocols`): the SDK's OTLP span exporter, guarded, in a bounded batch processor.
    Raises ConfigurationError for invalid OTLP settings."""
    processors: list[SpanProcessor] = []
    for protocol in trace_protocols(settings):
        secrets = header_secrets(settings, "traces")
        try:
            inner = sdk_span_exporter(settings, protocol)
        except ConfigurationError:
            raise
        except Exception as exc:
            # not chained: the exception's own text may carry a header value
            said = scrub(repr(exc), secrets)
            raise ConfigurationError(f"OTLP span exporter could not be created: {said}") from None
        processors.append(bounded_span_processor(GuardedSpanExporter(inner, secrets), settings))
    return processors

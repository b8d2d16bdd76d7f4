"""OpenTelemetry semantic conventions as fapilog writes them: one place for the exception
attributes of a record, the ``error.type`` of a span, and the names of the OTLP exporters in
``OTEL_*_EXPORTER`` variables."""

from __future__ import annotations

import traceback

from fapilog.settings.otlp import Protocol

__all__ = ["OTLP_EXPORTER_NAMES", "error_type", "exception_attributes", "exception_message"]

# OTEL_TRACES_EXPORTER / OTEL_LOGS_EXPORTER names meaning OTLP, with the protocol they imply
OTLP_EXPORTER_NAMES: dict[str, Protocol | None] = {
    "otlp": None,
    "otlp_proto_grpc": "grpc",
    "otlp_proto_http": "http/protobuf",
}


def error_type(exc: BaseException) -> str:
    """``exception.type`` / ``error.type``: the exception class's fully qualified name, bare
    for builtins and for classes of the main script (``ValueError``, ``PaymentError``)."""
    kind = type(exc)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def exception_message(exc: BaseException) -> str | None:
    """``exception.message`` exactly as OpenTelemetry's logging handler writes it: the text
    of the exception's first argument (``KeyError('k')`` -> ``k``, without the quotes its
    `str()` adds; ``OSError(2, "No such file")`` -> ``2``, the rest being in the stack
    trace); None (no ``exception.message``) for an exception raised without arguments.
    Never raises."""
    try:
        args = exc.args
        return str(args[0]) if args else None
    except Exception:
        return f"<unprintable {type(exc).__qualname__}>"


def exception_attributes(exc: BaseException) -> dict[str, str]:
    """``exception.type``, ``exception.message`` (when there is one, `exception_message`)
    and ``exception.stacktrace`` of `exc` (never raises, whatever the exception's
    `__str__` does)."""
    kind = type(exc)
    name = error_type(exc)
    message = exception_message(exc)
    try:
        stack = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    except Exception:
        stack = f"{name}: {message}"
    if message is None:
        return {"exception.type": name, "exception.stacktrace": stack}
    return {"exception.type": name, "exception.message": message, "exception.stacktrace": stack}

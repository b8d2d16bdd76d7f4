"""structlog processors fapilog puts in its chain, usable in your own chains too
(implemented in `fapilog.capture.processors`)."""

from fapilog.capture.processors import add_trace_context

__all__ = ["add_trace_context"]

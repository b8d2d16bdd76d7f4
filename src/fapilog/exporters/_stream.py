"""Shared writing to a text stream (stdout), safe against closed and broken pipes."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from fapilog import _diag

__all__ = ["write_stream"]


def write_stream(stream: IO[Any] | None, data: bytes, name: str) -> str | None:
    """Write `data` to `stream` (default: the current sys.stdout) and flush. Never raises;
    returns None when written, else why not: ``broken_pipe`` (the reader went away) or
    ``write_error`` (a closed stream, EIO, ENOSPC)."""
    target = stream if stream is not None else sys.stdout
    if target is None:
        return "write_error"
    try:
        buffer = getattr(target, "buffer", None)
        if buffer is not None:
            target.flush()  # keep order with text the app wrote through the same stream
            buffer.write(data)
            buffer.flush()
        else:
            target.write(data.decode("utf-8", "replace"))
            target.flush()
        return None
    except BrokenPipeError:
        # The reader went away (`| head`). Point the fd at /dev/null so that neither we nor
        # the interpreter's final flush raise again (the recipe in Python's signal docs).
        _silence(target)
        _diag.report(f"stream:{name}", f"fapilog {name} exporter: broken pipe, output stops")
        return "broken_pipe"
    except (ValueError, OSError) as exc:  # closed file, EIO, ENOSPC
        _diag.report(f"stream:{name}", f"fapilog {name} exporter cannot write: {exc!r}")
        return "write_error"


def _silence(stream: IO[Any]) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass

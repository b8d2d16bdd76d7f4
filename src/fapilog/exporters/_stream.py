"""Shared writing to a text stream (stdout), safe against closed and broken pipes."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from fapilog import _diag

__all__ = ["write_stream"]


def write_stream(stream: IO[Any] | None, data: bytes, name: str) -> bool:
    """Write `data` to `stream` (default: the current sys.stdout) and flush. Never raises;
    returns False when the stream is gone (closed, broken pipe)."""
    target = stream if stream is not None else sys.stdout
    if target is None:
        return False
    try:
        buffer = getattr(target, "buffer", None)
        if buffer is not None:
            target.flush()  # keep order with text the app wrote through the same stream
            buffer.write(data)
            buffer.flush()
        else:
            target.write(data.decode("utf-8", "replace"))
            target.flush()
        return True
    except BrokenPipeError:
        # The reader went away (`| head`). Point the fd at /dev/null so that neither we nor
        # the interpreter's final flush raise again (the recipe in Python's signal docs).
        _silence(target)
        _diag.report(f"stream:{name}", f"fapilog {name} exporter: broken pipe, output stops")
        return False
    except (ValueError, OSError) as exc:  # closed file, EIO, ENOSPC
        _diag.report(f"stream:{name}", f"fapilog {name} exporter cannot write: {exc!r}")
        return False


def _silence(stream: IO[Any]) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass

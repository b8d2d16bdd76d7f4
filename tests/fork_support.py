"""A piece of a test run in a forked child: `in_forked_child(work)`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any


def in_forked_child(work: Callable[[], Any]) -> Any:
    """`work()`'s JSON result, run in a forked child, where no at-fork hook may raise and
    neither may `work` (what it raised is the failure's message)."""
    read_fd, write_fd = os.pipe()
    escaped: list[str] = []
    pid = -1
    saved_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: escaped.append(repr(unraisable.exc_value))
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            sys.unraisablehook = saved_hook
    if pid == 0:  # pragma: no cover - the child: never returns into pytest
        try:
            os.close(read_fd)
            try:
                answer: dict[str, Any] = {"got": work()}
            except BaseException as exc:
                answer = {"raised": repr(exc)}
            answer.update(pid=os.getpid(), escaped=escaped)
            os.write(write_fd, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    answer = json.loads(data)
    assert answer["pid"] == pid
    assert "raised" not in answer, answer["raised"]
    assert answer["escaped"] == []
    return answer["got"]

"""The contract of fapilog's unhandled-exception hooks (`fapilog.lifecycle.excepthook`),
in process: which exceptions become a record and with which thread fields, that the main
thread's record is exported (within a bounded wait) before the previous hook runs, that
the previous hooks always run, that a failure to log is reported on stderr and never
stops the previous hook, and how `install()`/`uninstall()` treat hooks installed by
someone else."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest

import fapilog.testing
from conftest import MemoryExporter
from fapilog import _diag, configure_logging
from fapilog._state import STATE
from fapilog.lifecycle import excepthook


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _traceback_of_a_raise() -> TracebackType:
    def deep_frame_of_the_failure() -> None:
        raise LookupError("elsewhere")

    try:
        deep_frame_of_the_failure()
    except LookupError as caught:
        tb = caught.__traceback__
    assert tb is not None
    return tb


@pytest.fixture
def previous_hooks() -> Iterator[dict[str, list[Any]]]:
    """Hooks of the application's, in place before configure_logging(): what they saw."""
    seen: dict[str, list[Any]] = {"sys": [], "threading": []}
    saved = (sys.excepthook, threading.excepthook)
    sys.excepthook = lambda kind, exc, tb: seen["sys"].append((kind, exc, tb))
    threading.excepthook = seen["threading"].append
    try:
        yield seen
    finally:
        fapilog.testing.reset()
        sys.excepthook, threading.excepthook = saved


@pytest.fixture
def diagnostics() -> Iterator[list[tuple[str, str]]]:
    found: list[tuple[str, str]] = []

    def listener(key: str, message: str, fields: dict[str, Any]) -> None:
        found.append((key, message))

    _diag.add_listener(listener)
    try:
        yield found
    finally:
        _diag.remove_listener(listener)


def _attributes(memory_exporter: MemoryExporter) -> list[dict[str, Any]]:
    return [dict(r.log_record.attributes) for r in memory_exporter.records()]


def test_an_exception_that_ends_a_thread_is_an_error_record_naming_the_thread(
    memory_exporter: MemoryExporter, previous_hooks: dict[str, list[Any]]
) -> None:
    configure_logging(exporters=[memory_exporter.name])

    def fail() -> None:
        raise RuntimeError("thread broke")

    worker = threading.Thread(target=fail, name="worker-7")
    worker.start()
    worker.join()
    (record,) = memory_exporter.records()
    assert record.log_record.severity_text == "ERROR"
    assert record.log_record.body == "unhandled exception"
    assert record.instrumentation_scope.name == "fapilog.excepthook"
    attributes = record.log_record.attributes
    assert attributes["thread.name"] == "worker-7"
    assert attributes["thread.id"] == worker.ident
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == "thread broke"
    assert "in fail" in attributes["exception.stacktrace"]
    (args,) = previous_hooks["threading"]  # then the hook that was there before
    assert args.thread is worker and str(args.exc_value) == "thread broke"
    assert previous_hooks["sys"] == []


def test_the_main_threads_record_is_exported_before_the_previous_hook_runs(
    memory_exporter: MemoryExporter,
) -> None:
    """The traceback Python prints comes after the record (the hook flushes first), and
    the record names the main thread."""
    exported_when_called: list[list[Any]] = []
    saved = sys.excepthook

    def previous(kind: Any, exc: BaseException, tb: Any) -> None:
        exported_when_called.append(list(memory_exporter.exporter.get_finished_logs()))

    sys.excepthook = previous
    try:
        configure_logging(exporters=[memory_exporter.name])
        exc = _raised(ValueError("boom"))
        sys.excepthook(type(exc), exc, exc.__traceback__)
        ((record,),) = exported_when_called
        assert record.log_record.body == "unhandled exception"
        assert record.log_record.attributes["thread.name"] == "MainThread"
        assert record.log_record.attributes["thread.id"] == threading.main_thread().ident
        assert record.log_record.attributes["exception.message"] == "boom"
    finally:
        fapilog.testing.reset()
        sys.excepthook = saved


@pytest.mark.parametrize(("shutdown_timeout", "waited"), [(0.25, 0.25), (5.0, 1.0)])
def test_the_main_thread_waits_for_its_record_at_most_a_second_and_the_shutdown_timeout(
    memory_exporter: MemoryExporter,
    previous_hooks: dict[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    shutdown_timeout: float,
    waited: float,
) -> None:
    """The flush before Python's traceback is bounded by min(1 s, shutdown_timeout); an
    exception in another thread does not wait at all."""
    budgets: list[float | None] = []
    real_flush = excepthook.force_flush

    def spy(timeout: float | None = None) -> bool:
        budgets.append(timeout)
        return real_flush(timeout)

    monkeypatch.setattr(excepthook, "force_flush", spy)
    configure_logging(exporters=[memory_exporter.name], shutdown_timeout=shutdown_timeout)
    exc = _raised(ValueError("boom"))
    sys.excepthook(type(exc), exc, exc.__traceback__)
    assert budgets == [waited]
    worker = threading.Thread(target=lambda: 1 / 0)
    worker.start()
    worker.join()
    assert budgets == [waited]
    assert len(previous_hooks["sys"]) == 1 and len(previous_hooks["threading"]) == 1


def test_the_traceback_passed_to_the_hook_is_kept_when_the_exception_has_none(
    memory_exporter: MemoryExporter, previous_hooks: dict[str, list[Any]]
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    exc = ValueError("never raised here")
    tb = _traceback_of_a_raise()
    sys.excepthook(ValueError, exc, tb)
    (attributes,) = _attributes(memory_exporter)
    assert "deep_frame_of_the_failure" in attributes["exception.stacktrace"]
    assert previous_hooks["sys"] == [(ValueError, exc, tb)]
    other = KeyError("never raised either")
    threading.excepthook(threading.ExceptHookArgs([KeyError, other, tb, None]))
    assert "deep_frame_of_the_failure" in _attributes(memory_exporter)[1]["exception.stacktrace"]


def test_the_exceptions_own_traceback_wins_over_none(
    memory_exporter: MemoryExporter, previous_hooks: dict[str, list[Any]]
) -> None:
    """A hook called with no traceback still logs where the exception was raised."""
    configure_logging(exporters=[memory_exporter.name])

    def where_it_was_raised() -> None:
        raise ValueError("raised")

    try:
        where_it_was_raised()
    except ValueError as caught:
        exc = caught
    sys.excepthook(ValueError, exc, None)
    sys.excepthook(ValueError, exc, _traceback_of_a_raise())  # (its own still wins)
    for attributes in _attributes(memory_exporter):
        assert "where_it_was_raised" in attributes["exception.stacktrace"]
        assert "deep_frame_of_the_failure" not in attributes["exception.stacktrace"]


def test_a_thread_exception_without_a_thread_is_logged_without_thread_fields(
    memory_exporter: MemoryExporter, previous_hooks: dict[str, list[Any]]
) -> None:
    """`threading.excepthook` may be called with ``thread=None`` (the interpreter does so
    for `_thread.start_new_thread`)."""
    configure_logging(exporters=[memory_exporter.name])
    exc = _raised(KeyError("k"))
    args = threading.ExceptHookArgs([KeyError, exc, exc.__traceback__, None])
    threading.excepthook(args)
    (attributes,) = _attributes(memory_exporter)
    assert attributes["exception.type"] == "KeyError"
    assert "thread.name" not in attributes and "thread.id" not in attributes
    assert previous_hooks["threading"] == [args]


def test_exit_and_ctrl_c_and_no_exception_are_passed_on_without_a_record(
    memory_exporter: MemoryExporter,
    previous_hooks: dict[str, list[Any]],
    diagnostics: list[tuple[str, str]],
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    for quiet in (SystemExit(0), KeyboardInterrupt()):
        exc = _raised(quiet)
        threading.excepthook(threading.ExceptHookArgs([type(exc), exc, None, None]))
        sys.excepthook(type(exc), exc, exc.__traceback__)
    threading.excepthook(threading.ExceptHookArgs([None, None, None, threading.current_thread()]))
    assert memory_exporter.records() == [] and diagnostics == []
    assert len(previous_hooks["threading"]) == 3 and len(previous_hooks["sys"]) == 2


class _Unloggable(Exception):
    def with_traceback(self, tb: Any) -> Any:
        raise RuntimeError("cannot attach a traceback")


def test_a_failure_to_log_is_reported_on_stderr_and_the_previous_hook_still_runs(
    memory_exporter: MemoryExporter,
    previous_hooks: dict[str, list[Any]],
    diagnostics: list[tuple[str, str]],
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    exc = _Unloggable("x")
    sys.excepthook(_Unloggable, exc, _traceback_of_a_raise())
    assert diagnostics == [
        (
            "excepthook",
            "fapilog could not log an unhandled exception: "
            "RuntimeError('cannot attach a traceback')",
        )
    ]
    assert memory_exporter.records() == []
    assert [kind for kind, _, _ in previous_hooks["sys"]] == [_Unloggable]


def test_configuring_again_keeps_the_installed_hooks(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    installed = (sys.excepthook, threading.excepthook, STATE.excepthooks)
    configure_logging(exporters=[memory_exporter.name], level="DEBUG")
    assert (sys.excepthook, threading.excepthook, STATE.excepthooks) == installed


@pytest.mark.parametrize("replaced", ["sys", "threading"])
def test_configuring_again_puts_fapilogs_hooks_back_in_front_of_a_replacement(
    memory_exporter: MemoryExporter, previous_hooks: dict[str, list[Any]], replaced: str
) -> None:
    """Someone replaced one of fapilog's hooks (not chaining to it): the next
    configuration installs fapilog's again, in front of that replacement, and restores
    the other one's previous hook underneath."""
    configure_logging(exporters=[memory_exporter.name])
    theirs: list[Any] = []
    if replaced == "sys":
        sys.excepthook = lambda kind, exc, tb: theirs.append(kind)
    else:
        threading.excepthook = lambda args: theirs.append(args.exc_type)
    configure_logging(exporters=[memory_exporter.name], level="DEBUG")
    assert sys.excepthook is STATE.excepthooks.sys_hook
    assert threading.excepthook is STATE.excepthooks.threading_hook
    exc = _raised(ValueError("once"))
    sys.excepthook(ValueError, exc, exc.__traceback__)
    threading.excepthook(threading.ExceptHookArgs([ValueError, exc, None, None]))
    bodies = [r.log_record.body for r in memory_exporter.records()]
    assert bodies == ["fapilog.config.changed"] + ["unhandled exception"] * 2
    assert theirs == [ValueError]
    assert len(previous_hooks["sys"]) + len(previous_hooks["threading"]) == 1


def test_after_uninstall_a_hook_kept_on_top_only_passes_exceptions_on(
    memory_exporter: MemoryExporter, previous_hooks: dict[str, list[Any]]
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    fapilogs = (sys.excepthook, threading.excepthook)

    def sys_on_top(kind: Any, exc: BaseException, tb: Any) -> None:
        fapilogs[0](kind, exc, tb)

    def threading_on_top(args: Any) -> None:
        fapilogs[1](args)

    sys.excepthook, threading.excepthook = sys_on_top, threading_on_top
    on_top = (sys.excepthook, threading.excepthook)
    excepthook.uninstall()
    assert (sys.excepthook, threading.excepthook) == on_top
    assert STATE.excepthooks is None
    exc = _raised(ValueError("passed on"))
    sys.excepthook(ValueError, exc, exc.__traceback__)
    threading.excepthook(threading.ExceptHookArgs([ValueError, exc, None, None]))
    assert memory_exporter.records() == []
    assert len(previous_hooks["sys"]) == 1 and len(previous_hooks["threading"]) == 1
    excepthook.uninstall()  # (nothing installed: nothing to do)
    assert (sys.excepthook, threading.excepthook) == on_top


def test_the_setting_decides_whether_the_hooks_are_installed(
    memory_exporter: MemoryExporter, previous_hooks: dict[str, list[Any]]
) -> None:
    before = (sys.excepthook, threading.excepthook)
    configure_logging(exporters=[memory_exporter.name], capture_exceptions=False)
    assert (sys.excepthook, threading.excepthook) == before
    assert STATE.excepthooks is None
    configure_logging(exporters=[memory_exporter.name], capture_exceptions=True)
    assert sys.excepthook is STATE.excepthooks.sys_hook
    assert STATE.excepthooks.previous_sys is before[0]
    assert STATE.excepthooks.previous_threading is before[1]

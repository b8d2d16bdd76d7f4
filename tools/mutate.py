"""Mutation testing (`make mutate`, not part of `make test`): mutmut over the pipeline,
bridge, lifecycle and exporter modules, one module at a time, in a scratch copy of the repo.

    python tools/mutate.py                       # every module of MODULE_TESTS, smallest first
    python tools/mutate.py src/fapilog/pipeline/routes.py src/fapilog/lifecycle/fork.py
    python tools/mutate.py src/fapilog/lifecycle/fork.py --tests tests/test_fork.py
                                    # (modules first: --tests takes every word after it)
    python tools/mutate.py --survivors src/fapilog/pipeline/routes.py   # the diff of each survivor
    python tools/mutate.py --json run.json ...; python tools/mutate.py --rerun run.json ...
                                    # then only the survivors of that run (after adding tests)
    python tools/mutate.py --only '*_after_fork_in_child*' src/fapilog/lifecycle/wakeup.py

Prints, per module: mutants, killed, timeouts (counted as killed), survived, no tests, the run
time and the kill rate. The exit status is 0 whenever the runs completed (the rates are figures to
read, not a gate).

How a module is run:
- the repo's tracked and untracked, not ignored, files are copied to a scratch directory
  (`--workdir`, else a temporary one, removed afterwards unless `--keep`): `mutants/` never
  appears in the repo;
- mutmut (3.8+, `[tool.mutmut]` written into the scratch copy's pyproject.toml) mutates that one
  module (`only_mutate`), with `source_paths = ["src"]` so that the whole package is importable
  from `mutants/src`;
- `mutants/src` exists before mutmut starts and is first on PYTHONPATH: the tests' child
  interpreters import the mutated tree, and the active mutant reaches them through
  MUTANT_UNDER_TEST, which they inherit. (Created any later, the directory would be missing when
  the interpreter first scans its path, and Python caches that: fapilog would then be imported
  from the editable install, unmutated, and mutmut finds no test for any mutant);
- the tests are the ones MODULE_TESTS lists for the module (fast tests that exercise it). mutmut's
  stats run maps each mutated function to the tests that call it in the pytest process; the plugin
  below (`-p fapilog_mutate_plugin`) adds every test that started a child process to every
  function, since code that runs only in a child (at fork, at exit, in a worker process) is not
  seen by that in-process map and would otherwise be reported as "no tests";
- a mutant's run ends at its first failing test (mutmut runs `-x`, fastest tests first); it is a
  timeout after (time of its tests + --timeout-constant) x --timeout-multiplier seconds.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from scratch import copy_working_tree

ROOT = Path(__file__).resolve().parent.parent

MP = "tests/test_multiprocessing.py"

# module -> the fast tests that exercise it. The order of the keys is the default run order
# (smallest module first).
MODULE_TESTS: dict[str, list[str]] = {
    "src/fapilog/pipeline/routes.py": [
        "tests/test_router_contract_2.py",
        "tests/test_exporter_levels.py",
        "tests/test_runtime_levels.py",
        "tests/test_dev_console.py",
    ],
    "src/fapilog/lifecycle/fork.py": [
        "tests/test_lifecycle_contract.py",
        "tests/test_fork.py",
        "tests/test_enrich_system.py::test_after_fork_the_child_has_its_own_pid_and_sampler",
        f"{MP}::test_a_pool_delivers_every_record_of_every_task[fork-close]",
        f"{MP}::test_a_pool_delivers_every_record_of_every_task[forkserver-close]",
        f"{MP}::test_a_fork_child_that_configures_fapilog_itself_delivers_everything",
        f"{MP}::test_the_drain_runs_after_the_applications_own_exit_finalizers",
        "tests/test_gunicorn.py::test_gunicorn_sigterm_mid_load_delivers_everything_emitted"
        "[preload-plain]",
    ],
    "src/fapilog/lifecycle/foreign.py": [
        "tests/test_lifecycle_contract.py",
        "tests/test_sigterm_others.py::test_sigterm_flushes_the_applications_own_log_processor",
        "tests/test_sigterm_others.py::test_a_plain_exit_flushes_the_applications_own_log_processor",
        "tests/test_sigterm_others.py::test_sigterm_abandons_a_hung_processor_and_exits_within_the_deadline",
        "tests/test_sigterm_others.py::test_sigterm_flushes_the_applications_span_processor_and_reports_a_raising_one",
        "tests/test_lifecycle.py::test_attaches_to_preinstalled_logger_provider",
    ],
    "src/fapilog/lifecycle/wakeup.py": [
        "tests/test_lifecycle_contract.py",
        "tests/test_drain_contract.py::"
        "test_a_sigterm_on_the_draining_thread_is_deferred_to_the_end_of_the_drain",
        "tests/test_signals.py::test_a_handler_left_pending_while_the_main_thread_sleeps_still_runs",
        "tests/test_signals.py::test_fapilogs_threads_block_the_signals_sent_to_the_process",
        "tests/test_signals.py::test_a_forked_child_has_its_own_watcher_for_a_pending_handler",
        f"{MP}::test_a_pool_delivers_every_record_of_every_task[fork-with]",
    ],
    "src/fapilog/pipeline/accounting.py": [
        "tests/test_accounting_contract.py",
        "tests/test_pipeline.py",
        "tests/test_monitoring.py",
        "tests/test_bridge.py::test_a_log_record_processor_that_raises_is_accounted_exactly",
        "tests/test_enrichers.py::test_enricher_failures_show_in_stats",
    ],
    "src/fapilog/pipeline/metrics.py": ["tests/test_metrics.py", "tests/test_monitoring.py"],
    "src/fapilog/pipeline/alerts.py": ["tests/test_alerts.py", "tests/test_monitoring.py"],
    "src/fapilog/pipeline/direct.py": [
        "tests/test_direct_contract.py",
        "tests/test_dev_console.py",
        "tests/test_console_order.py",
        "tests/test_exporter_levels.py",
        "tests/test_flight_recorder.py",
        "tests/test_recorder_edges.py",
        "tests/test_values_degrade_alone.py",
    ],
    "src/fapilog/otel/codec.py": ["tests/test_spool.py"],
    "src/fapilog/otel/bridge.py": [
        "tests/test_bridge_contract.py",
        "tests/test_bridge.py",
        "tests/test_logger_names.py",
        "tests/test_values_degrade_alone.py",
        "tests/test_otel_conformance.py",
        "tests/test_exporter_levels.py",
        "tests/test_context_api.py",
        "tests/test_logging_never_raises.py",
    ],
    "src/fapilog/lifecycle/drain.py": [
        "tests/test_drain_contract.py",
        "tests/test_lifecycle_contract.py::"
        "test_the_drain_is_installed_where_sigterm_has_its_default_action",
        "tests/test_lifecycle_contract.py::"
        "test_the_applications_own_handlers_are_never_replaced_nor_removed",
        "tests/test_lifecycle_contract.py::test_only_the_main_thread_installs_the_drain",
        "tests/test_pid1.py",
        "tests/test_shutdown.py::test_normal_exit_delivers_every_record",
        "tests/test_shutdown.py::test_a_burst_with_the_default_queues_is_not_shed_between_workers",
        "tests/test_shutdown.py::test_exit_is_bounded_by_the_deadline_when_an_exporter_blocks_forever",
        "tests/test_signals.py::test_sigterm_into_a_tight_logging_loop_exits_in_time_with_a_gap_free_file",
        "tests/test_signals.py::test_a_sigterm_during_the_drain_lets_the_drain_finish_then_ends_the_process",
        "tests/test_process.py::test_sigterm_drains_before_dying",
        "tests/test_lifecycle.py",
    ],
    "src/fapilog/pipeline/segments.py": [
        "tests/test_segments_contract.py",
        "tests/test_spool_contract.py",
        "tests/test_spool_dirs_contract.py",
        "tests/test_spooling_contract.py",
        "tests/test_spool.py",
    ],
    "src/fapilog/pipeline/spooling.py": [
        "tests/test_spooling_contract.py",
        "tests/test_spool_dirs_contract.py",
        "tests/test_spool.py",
    ],
    "src/fapilog/pipeline/intake.py": [
        "tests/test_intake_contract.py",
        "tests/test_intake_contract_2.py",
        "tests/test_pipeline.py",
    ],
    "src/fapilog/pipeline/router.py": [
        "tests/test_router_contract.py",
        "tests/test_router_contract_2.py",
        "tests/test_pipeline.py",
        "tests/test_exporter_levels.py",
    ],
    "src/fapilog/pipeline/spool.py": [
        "tests/test_spool_contract.py",
        "tests/test_spool_dirs_contract.py",
        "tests/test_segments_contract.py",
        "tests/test_spooling_contract.py",
        "tests/test_spool.py",
    ],
    "src/fapilog/pipeline/queue.py": [
        "tests/test_queue_contract.py",
        "tests/test_queue_contract_2.py",
        "tests/test_queue_contract_3.py",
        "tests/test_pipeline.py",
    ],
    "src/fapilog/lifecycle/excepthook.py": [
        "tests/test_excepthook_contract.py",
        "tests/test_excepthook.py",
    ],
    "src/fapilog/lifecycle/levels.py": [
        "tests/test_levels_contract.py",
        "tests/test_runtime_levels.py",
        "tests/test_recorder_edges.py",
        "tests/test_exporter_levels.py",
        "tests/test_noise.py",
        "tests/test_sampling.py",
        "tests/test_flight_recorder.py",
    ],
    "src/fapilog/lifecycle/configure.py": [
        "tests/test_configure_contract.py",
        "tests/test_configure_signature.py",
        "tests/test_secret_free_errors.py",
        "tests/test_unknown_env.py",
        "tests/test_existing_otel_setup.py",
        "tests/test_enrichers.py",
        "tests/test_lifecycle.py::test_attaches_to_preinstalled_logger_provider",
    ],
    "src/fapilog/exporters/spec.py": ["tests/test_registry.py"],
    "src/fapilog/exporters/_stream.py": [
        "tests/test_stream_contract.py",
        "tests/test_console_and_testing.py",
    ],
    "src/fapilog/exporters/__init__.py": ["tests/test_registry.py"],
    "src/fapilog/exporters/loki_figures.py": [
        "tests/test_loki_figures_contract.py",
        "tests/test_loki_limits.py",
    ],
    "src/fapilog/exporters/loki_request.py": [
        "tests/test_loki_request_contract.py",
        "tests/test_loki_exporter.py",
    ],
    "src/fapilog/exporters/contract.py": ["tests/test_registry.py"],
    "src/fapilog/exporters/stdout.py": [
        "tests/test_stdout_contract.py",
        "tests/test_console_and_testing.py",
    ],
    "src/fapilog/exporters/loki_response.py": [
        "tests/test_loki_response_contract.py",
        "tests/test_loki_exporter.py",
    ],
    "src/fapilog/exporters/loki_protobuf.py": [
        "tests/test_loki_protobuf_contract.py",
        "tests/test_loki_labels_utf8.py",
        "tests/test_loki_protobuf.py",
    ],
    "src/fapilog/exporters/registry.py": ["tests/test_registry.py"],
    "src/fapilog/exporters/otlp.py": [
        "tests/test_otlp_contract.py",
        "tests/test_otlp.py",
        "tests/test_otlp_delivery.py",
        "tests/test_existing_otel_setup.py::test_endpoints_are_compared_normalised",
        "tests/test_existing_otel_setup.py::test_a_processor_inside_wrappers_is_found",
    ],
    "src/fapilog/exporters/loki_config.py": [
        "tests/test_loki_config_contract.py",
        "tests/test_loki_exporter.py",
    ],
    "src/fapilog/exporters/loki_streams.py": [
        "tests/test_loki_streams_contract.py",
        "tests/test_loki_exporter.py",
        "tests/test_loki_labels_utf8.py",
    ],
    "src/fapilog/exporters/console_format.py": [
        "tests/test_console_format_contract.py",
        "tests/test_console_safety.py",
        "tests/test_dev_console.py",
        "tests/test_console_and_testing.py",
    ],
    "src/fapilog/exporters/render.py": [
        "tests/test_render_contract.py",
        "tests/test_loki_streams_contract.py",
        "tests/test_console_format_contract.py",
        "tests/test_hot_path.py",
        "tests/test_values_degrade_alone.py",
        "tests/test_logging_never_raises.py",
        "tests/test_console_safety.py",
        "tests/test_console_and_testing.py",
        "tests/test_redaction_exporters.py",
    ],
    "src/fapilog/exporters/console_traceback.py": [
        "tests/test_console_traceback_contract.py",
        "tests/test_console_safety.py",
        "tests/test_dev_console.py",
    ],
    "src/fapilog/exporters/console.py": [
        "tests/test_console_contract.py",
        "tests/test_console_safety.py",
        "tests/test_dev_console.py",
        "tests/test_console_and_testing.py",
        "tests/test_console_order.py",
    ],
    "src/fapilog/exporters/file.py": [
        "tests/test_file_contract.py",
        "tests/test_file_open_contract.py",
        "tests/test_file_rotation_contract.py",
        "tests/test_file_exporter.py",
        "tests/test_file_multiprocess.py::"
        "test_a_partial_write_on_a_full_file_system_is_cut_back_to_the_last_whole_line",
    ],
    "src/fapilog/exporters/_deadline.py": [
        "tests/test_deadline_contract.py",
        "tests/test_loki_deadline.py",
    ],
    "src/fapilog/exporters/loki.py": [
        "tests/test_loki_contract.py",
        "tests/test_loki_exporter.py",
        "tests/test_loki_limits.py",
        "tests/test_loki_deadline.py",  # the environment's proxy, the deadline on a push
    ],
}

# mutmut's exit codes (mutmut.stats.status_by_exit_code) grouped for the table
KILLED = {1, 3}
TIMEOUT = {24, -24, 152, 255, 36, -9}  # SIGXCPU from the time limit; SIGKILL 1 s after it
SURVIVED = {0}
NO_TESTS = {5, 33}

PLUGIN = '''\
"""pytest plugin of tools/mutate.py (written into the scratch copy, never into the repo)."""

import os
import sys
from pathlib import Path

import pytest

_started_child = False
_children_cpu = 0.0
_names = None
_CHILD_EVENTS = {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.system"}


def _audit(event, args):
    global _started_child
    if event in _CHILD_EVENTS:
        _started_child = True


def _stats_run():
    from mutmut.mutation.trampoline import get_mutant_under_test

    return get_mutant_under_test() == "stats"


def pytest_configure(config):
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        # mutmut keeps "stats" in the process; the children run the original code (a child
        # recording its calls would need mutmut's config, read from its own working directory,
        # and its record would be lost anyway: the plugin adds its test below instead)
        del os.environ["MUTANT_UNDER_TEST"]
    if _stats_run():
        sys.addaudithook(_audit)


def _all_functions():
    global _names
    if _names is None:
        import json

        from mutmut.utils.format_utils import mangled_name_from_mutant_name

        _names = set()
        for meta in Path("src").rglob("*.py.meta"):
            for key in json.loads(meta.read_text())["exit_code_by_key"]:
                _names.add(mangled_name_from_mutant_name(key))
    return _names


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _started_child, _children_cpu
    _started_child = False
    times = os.times()
    _children_cpu = times.children_user + times.children_system


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if not _stats_run():
        return
    times = os.times()
    if _started_child or times.children_user + times.children_system > _children_cpu:
        from mutmut.state import state

        state()._stats.update(_all_functions())
'''


@dataclass
class Result:
    module: str
    total: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    no_tests: int = 0
    other: int = 0
    seconds: float = 0.0
    error: str = ""
    survivors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return (self.killed + self.timeout) / self.total if self.total else 0.0


def make_scratch(workdir: Path) -> None:
    """The working tree copied to `workdir`, and the pytest plugin (`PLUGIN`) beside it, in
    `.mutate/` (on the children's PYTHONPATH: see `child_env`)."""
    copy_working_tree(workdir)
    plugin_dir = workdir / ".mutate"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "fapilog_mutate_plugin.py").write_text(PLUGIN)


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def write_config(workdir: Path, module: str, tests: list[str], args: argparse.Namespace) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    # a [tool.mutmut] section of the repo's, if any, is replaced by this run's
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    also_copy = sorted(
        p.name
        for p in workdir.iterdir()
        if p.name not in {"src", "tests", "mutants", "pyproject.toml"}
        and not p.name.startswith(".mutate")
    )
    text += f"""
[tool.mutmut]
source_paths = ["src"]
only_mutate = {toml_list([module])}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "fapilog_mutate_plugin"]
pytest_add_cli_args_test_selection = {toml_list(tests)}
also_copy = {toml_list(also_copy)}
process_isolation = "forkserver"
timeout_multiplier = {args.timeout_multiplier}
timeout_constant = {args.timeout_constant}
use_git_change_detection = false
"""
    (workdir / "pyproject.toml").write_text(text)


def child_env(workdir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FAPILOG_", "OTEL_", "MUTANT_UNDER_TEST", "COVERAGE_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [str(workdir / "mutants" / "src"), str(workdir / ".mutate")]
    )
    # the suite's children start coverage when this is set (tests/conftest.py sets it by
    # default); empty, they do not: coverage is not measured here
    env["COVERAGE_PROCESS_START"] = ""
    return env


def tally(workdir: Path, result: Result) -> None:
    meta = workdir / "mutants" / (result.module + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    for name, code in codes.items():
        if code is None:  # not run (`--only`, `--rerun`)
            continue
        result.total += 1
        if code in KILLED:
            result.killed += 1
        elif code in TIMEOUT:
            result.timeout += 1
        elif code in SURVIVED:
            result.survived += 1
            result.survivors.append(name)
        elif code in NO_TESTS:
            result.no_tests += 1
            result.survivors.append(name)
        else:
            result.other += 1
            result.survivors.append(f"{name} (exit code {code})")


def run_module(
    workdir: Path, module: str, tests: list[str], only: list[str], args: argparse.Namespace
) -> Result:
    """mutmut on `module` (only the mutants `only` names, if any: names or fnmatch patterns)."""
    result = Result(module)
    shutil.rmtree(workdir / "mutants", ignore_errors=True)
    (workdir / "mutants" / "src").mkdir(parents=True)
    write_config(workdir, module, tests, args)
    log = workdir / ".mutate-logs" / f"{module.replace('/', '_')}.log"
    log.parent.mkdir(exist_ok=True)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs), *only],
            cwd=workdir,
            env=child_env(workdir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=args.module_timeout)
        except subprocess.TimeoutExpired:
            code = None
            result.error = f"stopped after {args.module_timeout} s"
        finally:
            # the mutmut process group: its fork server, the test runs and their children
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    result.seconds = time.monotonic() - started
    if code not in (0, None):
        result.error = f"mutmut exited with {code}: see {log}"
    try:
        tally(workdir, result)
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        result.error = result.error or f"no results ({exc}): see {log}"
    if result.error:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print("\n".join(f"    | {line}" for line in tail), file=sys.stderr)
    return result


def source_line(module: str, mutant: str, diff: str) -> int | None:
    """The line of the module that the mutant changes (the first removed line of the diff)."""
    mangled = mutant.rpartition(".")[2].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("x_"):
        cls, name = None, mangled[2:]
    else:
        _, cls, name = mangled.split("ǁ")
    tree = ast.parse((ROOT / module).read_text())
    scope: list[ast.stmt] = tree.body
    if cls is not None:
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == cls:
                scope = node.body
    start = None
    for node in scope:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            start = node.lineno
    hunk = re.search(r"^@@ -(\d+)", diff, flags=re.M)
    if start is None or hunk is None:
        return None
    offset = int(hunk.group(1))
    for line in diff.split("\n")[3:]:
        if line.startswith("-"):
            return start + offset - 1
        if line.startswith(" "):
            offset += 1
    return None


def show_survivors(workdir: Path, result: Result) -> None:
    names = [name.split(" ")[0] for name in result.survivors]
    if not names:
        return
    script = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        "print(json.dumps({n: get_diff_for_mutant(n, path=sys.argv[1]) for n in sys.argv[2:]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, result.module, *names],
        cwd=workdir,
        env=child_env(workdir),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return
    diffs: dict[str, str] = json.loads(out.stdout)
    for listed in result.survivors:
        name = listed.split(" ")[0]
        diff = diffs[name]
        line = source_line(result.module, name, diff)
        print(f"\n--- {result.module}:{line}  {listed}")
        print("\n".join(diff.split("\n")[2:]))


def print_table(results: list[Result]) -> None:
    head = (
        f"{'module':44} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} "
        f"{'no tests':>8} {'other':>5} {'time':>7}  kill rate"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.module.removeprefix('src/fapilog/'):44} {r.total:7} {r.killed:6} {r.timeout:7} "
            f"{r.survived:8} {r.no_tests:8} {r.other:5} {r.seconds / 60:6.1f}m  "
            f"{100 * r.rate:5.1f}%" + (f"  ({r.error})" if r.error else "")
        )
    total = Result("total")
    for r in results:
        for key in ("total", "killed", "timeout", "survived", "no_tests", "other", "seconds"):
            setattr(total, key, getattr(total, key) + getattr(r, key))
    if len(results) > 1:
        print(
            f"{'total':44} {total.total:7} {total.killed:6} {total.timeout:7} {total.survived:8} "
            f"{total.no_tests:8} {total.other:5} {total.seconds / 60:6.1f}m  "
            f"{100 * total.rate:5.1f}%"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", help="src/fapilog/... files (default: all of MODULE_TESTS)"
    )
    parser.add_argument(
        "--tests", nargs="+", help="the tests to run instead of MODULE_TESTS' (pytest ids)"
    )
    parser.add_argument(
        "--only", nargs="+", help="mutant names or fnmatch patterns to run (one module)"
    )
    parser.add_argument(
        "--rerun", type=Path, help="run only the survivors listed in this --json file of a run"
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--timeout-multiplier", type=float, default=4.0)
    parser.add_argument("--timeout-constant", type=float, default=10.0)
    parser.add_argument("--module-timeout", type=float, default=None, help="seconds per module")
    parser.add_argument("--survivors", action="store_true", help="print the diff of each survivor")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    try:
        mutmut_version = version("mutmut")
    except PackageNotFoundError:
        parser.error("mutmut is not installed: pip install -e '.[mutate]'")
    if not (3, 8) <= tuple(int(part) for part in mutmut_version.split(".")[:2]) < (4, 0):
        parser.error(f"mutmut {mutmut_version}: this script needs mutmut>=3.8,<4")
    modules = [m.removeprefix("./") for m in args.modules] or list(MODULE_TESTS)
    unknown = [m for m in modules if not (ROOT / m).is_file()]
    unmapped = [m for m in modules if m not in MODULE_TESTS and not args.tests]
    if unknown or unmapped:
        parser.error(
            f"no such module: {unknown}"
            if unknown
            else f"no tests mapped for {unmapped}: use --tests"
        )

    # `kill` of this script ends its mutmut run too (the `finally` of `run_module`)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fapilog-mutate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    make_scratch(workdir)
    print(f"scratch copy: {workdir}", flush=True)
    results: list[Result] = []
    try:
        for module in modules:
            tests = args.tests or MODULE_TESTS[module]
            print(f"{module}: mutating, tests {' '.join(tests)}", flush=True)
            only = list(args.only or [])
            if args.rerun:
                previous = {r["module"]: r for r in json.loads(args.rerun.read_text())}
                if module not in previous or not previous[module]["survivors"]:
                    print(f"{module}: no survivors in {args.rerun}", flush=True)
                    continue
                only += [name.split(" ")[0] for name in previous[module]["survivors"]]
            result = run_module(workdir, module, tests, only, args)
            results.append(result)
            print(
                f"{module}: {result.killed + result.timeout}/{result.total} killed "
                f"({100 * result.rate:.1f}%) in {result.seconds:.0f} s",
                flush=True,
            )
            if args.survivors:
                show_survivors(workdir, result)
            if args.json:
                args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    finally:
        print()
        print_table(results)
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nmutants and logs kept in {workdir}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

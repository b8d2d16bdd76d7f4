"""The package layout keeps its rules: the folders follow the data flow without import
cycles, one process-state object, one adapter per unstable OpenTelemetry API, short modules,
a clean public surface, and docs that name only what exists."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from importlib.metadata import distribution
from pathlib import Path

import pytest

import fapilog
from conftest import ROOT

SRC = ROOT / "src" / "fapilog"
MAX_LINES = 600
MAX_LOCAL_IMPORTS = 5


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path, *, type_checking: bool = True) -> list[tuple[str, bool, int]]:
    """(imported fapilog module, inside a function, line) for every import statement,
    imports inside functions and (unless told not) `TYPE_CHECKING` blocks included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(node) for function in functions for node in ast.walk(function)}
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        if not type_checking and id(node) in typing_only:
            continue
        hits = set()
        for name in targets:
            target = name
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                hits.add(target)
        found.extend((hit, id(node) in inside, node.lineno) for hit in hits)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        # a package's __init__ re-exporting its submodules is not their cycle partner
        graph[module] = {
            target
            for target, _, _ in _imports(module, path)
            if not (MODULES[target].name == "__init__.py" and module.startswith(target + "."))
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_counting_lazy_and_type_checking_imports() -> None:
    assert _cycles(_graph()) == []


def test_few_imports_of_the_package_inside_functions_each_with_a_reason() -> None:
    local = [
        (path, line)
        for module, path in MODULES.items()
        for _, inside, line in _imports(module, path)
        if inside
    ]
    assert len(local) <= MAX_LOCAL_IMPORTS, local
    for path, line in local:
        above = path.read_text(encoding="utf-8").splitlines()[line - 2].strip()
        assert above.startswith("#"), f"{path}:{line}: say why this import is inside a function"


def test_the_process_state_module_imports_nothing_of_fapilog_at_run_time() -> None:
    path = MODULES["fapilog._state"]
    assert _imports("fapilog._state", path, type_checking=False) == []
    # and its type-only imports are of modules that do not import it back (no cycle)
    graph = _graph()
    for target, _, _ in _imports("fapilog._state", path):
        assert "fapilog._state" not in graph[target], target


def test_lower_layers_never_import_the_composition_root() -> None:
    importers = {
        module for module, targets in _graph().items() if "fapilog.lifecycle.configure" in targets
    }
    # the public API, the testing helpers and the entry points that call it from outside
    assert importers <= {
        "fapilog",
        "fapilog._config",
        "fapilog.testing",
        "fapilog.integrations.distro",
        "fapilog.cli.effective",  # `fapilog config --app`: record-only mode
    }


def test_modules_are_short() -> None:
    long = {
        module: count
        for module, path in MODULES.items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_only_the_logs_adapter_imports_the_unstable_logs_sdk() -> None:
    importers = [
        module
        for module, path in MODULES.items()
        if "opentelemetry.sdk._logs" in path.read_text(encoding="utf-8")
        and any(
            isinstance(node, ast.Import | ast.ImportFrom)
            and any(
                name.startswith("opentelemetry.sdk._logs")
                for name in (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
            )
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    ]
    assert importers == ["fapilog.otel.logs"]


_HISTORY = re.compile(r"\b(issue|acceptance) #?\d+\b", re.I)
# (the folder's name is split so that this line does not match itself)
_OUTSIDE = re.compile(r"(?<![\w/(\[])(DESIGN|STYLE|LOKI)\.md|(?<![\w.])" + "sha" + "red/")


def test_no_text_points_outside_the_repository() -> None:
    found = []
    for folder in ("docs", "src", "tests", "examples", "bench"):
        for path in (ROOT / folder).rglob("*"):
            hidden = any(part.startswith(".") for part in path.relative_to(ROOT).parts)
            if hidden:  # bench/.venvs and other git-ignored trees are not the project's
                continue
            if path.is_file() and path.suffix in {".md", ".py", ".toml", ".yaml", ".yml"}:
                text = path.read_text(encoding="utf-8", errors="replace")
                for number, line in enumerate(text.splitlines(), 1):
                    if _HISTORY.search(line) or _OUTSIDE.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


# -- the public surface -------------------------------------------------------------------


def _public_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(fapilog.__path__, "fapilog.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]


@pytest.mark.parametrize("name", ["fapilog", *_public_modules()])
def test_all_is_sorted_and_names_what_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert list(exported) == sorted(exported), name
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names {item!r}, which it lacks"
        assert not item.startswith("_") or item == "__version__"


def test_every_settings_section_is_importable_from_fapilog_settings() -> None:
    from pydantic import BaseModel

    from fapilog import settings

    sections = {
        field.annotation.__name__
        for field in settings.LoggingSettings.model_fields.values()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    assert sections == {
        "QueueSettings",
        "FileSettings",
        "LokiSettings",
        "OtlpSettings",
        "RequestSettings",
        "SpoolSettings",
        "RedactionSettings",
        "SystemSettings",
        "ConsoleSettings",
        "AdminSettings",
    }
    assert sections <= set(settings.__all__)


def test_all_lists_user_api_not_test_helpers() -> None:
    for name in ["fapilog", *_public_modules()]:
        module = importlib.import_module(name)
        for item in getattr(module, "__all__", ()):
            assert "test" not in item.lower() or name == "fapilog.testing", (name, item)
    assert set(fapilog.__all__) >= {"configure_logging", "log", "get_logger", "LoggingSettings"}


def test_no_two_public_classes_share_a_name() -> None:
    seen: dict[str, type] = {}
    for info in pkgutil.walk_packages(fapilog.__path__, "fapilog."):
        module = importlib.import_module(info.name)
        for attribute, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value.__module__.startswith("fapilog")
                and not value.__name__.startswith("_")
                and not attribute.startswith("_")
            ):
                if attribute != value.__name__:
                    continue  # an alias kept for an old import path: the same class
                other = seen.setdefault(value.__name__, value)
                assert other is value, f"two public classes named {value.__name__}"


# -- docs name only what exists -----------------------------------------------------------

_FROM_IMPORT = re.compile(r"^\s*from (fapilog[\w.]*) import \(?([\w, \n]+?)\)?\s*$", re.M)
_IMPORT = re.compile(r"^\s*import (fapilog[\w.]*)", re.M)
_DOTTED = re.compile(r"`(fapilog(?:\.\w+)+)(?:\(\))?`")
# a backticked `fapilog.x.y` is a code path when x is a module of the package or private;
# otherwise it names a logger, an event or a metric (`fapilog.request`, `fapilog.records.*`)
_TOP_LEVEL = {name.split(".")[1] for name in MODULES if name.count(".") >= 1}


def _named_paths() -> set[tuple[str, str | None]]:
    """(module, attribute) pairs the docs, README, examples and entry points name."""
    texts = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    texts += sorted((ROOT / "examples").rglob("*.py"))
    named: set[tuple[str, str | None]] = set()
    for path in texts:
        text = path.read_text(encoding="utf-8")
        for module, names in _FROM_IMPORT.findall(text):
            for item in re.split(r"[,\s]+", names):
                if item and item != "as":
                    named.add((module, item))
        for module in _IMPORT.findall(text):
            named.add((module, None))
        for dotted in _DOTTED.findall(text):
            second = dotted.split(".")[1]
            if second in _TOP_LEVEL or second.startswith("_") or second in fapilog.__all__:
                named.add((dotted, None))
    for entry in distribution("fapilog").entry_points:  # pyproject's, as installed
        module, _, attribute = entry.value.partition(":")
        named.add((module.strip(), attribute.strip() or None))
    return named


def _resolve(dotted: str) -> object:
    """A module, or an attribute (possibly nested) of the longest importable module."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part)
        return found
    raise ModuleNotFoundError(dotted)


def test_every_import_path_the_docs_examples_and_entry_points_name_works() -> None:
    named = _named_paths()
    assert ("fapilog.testing", "capture_logs") in named  # the scan sees the docs
    assert ("fapilog.distro", "FapilogDistro") in named
    # the paths the docs named before the package was laid out by stage still work
    named |= {
        ("fapilog._config", "reset"),
        ("fapilog.distro", "StdoutExporter"),
        ("fapilog.distro", "FapilogDistro"),
        ("fapilog.distro", "post_instrument"),
        ("fapilog.middleware", "RequestLoggingMiddleware"),
        ("fapilog.fastapi", "current_request_id"),
        ("fapilog.gunicorn", "post_worker_init"),
        ("fapilog.otlp", "span_processors"),
        ("fapilog.settings", "RequestSettings"),
        ("fapilog.enrichers", "failure_counts"),
        ("fapilog.exporters.file", None),
    }
    broken = []
    for module, attribute in sorted(named, key=lambda pair: (pair[0], pair[1] or "")):
        try:
            found = _resolve(module)
            if attribute is not None:
                getattr(found, attribute)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{module} {attribute}: {exc}")
    assert broken == []


def test_the_architecture_page_maps_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text[text.index("## Module map") :]
    listed = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, re.M):
        listed.update(re.findall(r"`([\w/]+\.py)`", cell))
    files = {str(path.relative_to(SRC)) for path in SRC.rglob("*.py")}
    assert files - listed == set(), "modules missing from docs/architecture.md's module map"
    assert listed - files == set(), "docs/architecture.md's module map names missing modules"


def test_the_architecture_page_names_only_files_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    where = text[text.index("## Where to add") :]
    assert all(kind in where for kind in ("**An exporter**", "**An enricher**", "**A setting**"))
    assert "**An integration**" in where
    assert "## A record's way, file by file" in text
    paths = set(re.findall(r"`(src/fapilog/[\w/]+\.py)`", text))
    assert len(paths) > 20
    missing = sorted(path for path in paths if not (ROOT / path).is_file())
    assert missing == []

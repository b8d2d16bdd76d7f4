"""`make test-otel-range`: the test suite against the lowest and the highest OpenTelemetry
releases that pyproject.toml allows.

The OpenTelemetry logs SDK is still unstable (its API changed in 1.35, 1.39, 1.42 and
1.44), so pyproject pins the minor series fapilog is tested with. This target checks both
ends of that range: for each, a virtualenv of its own (`.venv-otel-lowest`,
`.venv-otel-highest`), every `opentelemetry-*` requirement pinned to the bound (the lowest:
the `>=` version; the highest: the newest release on the package index inside the range),
the installed versions checked against the pins, then the whole test suite.

    python tools/otel_range.py [lowest|highest ...] [-- pytest arguments]
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "opentelemetry-sdk>=1.45,<1.46" in pyproject's dependencies and dev extra
REQUIREMENT = re.compile(r'"(opentelemetry-[a-z-]+)>=([^,"]+),<([^,";]+)"')


def requirements() -> dict[str, tuple[str, str]]:
    """Each OpenTelemetry distribution pyproject names, with its (lowest, upper) bounds."""
    text = (ROOT / "pyproject.toml").read_text()
    found = {name: (low, high) for name, low, high in REQUIREMENT.findall(text)}
    if "opentelemetry-sdk" not in found:
        sys.exit("otel_range: no opentelemetry-sdk>=X,<Y requirement in pyproject.toml")
    return found


def highest(python: str, ranges: dict[str, tuple[str, str]]) -> dict[str, str]:
    """The newest release in each range that pip resolves together with everything else the
    dev install brings (a dev dependency may cap OpenTelemetry): a dry run."""
    report = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
         "--report", "-", f"{ROOT}[dev]"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    resolved = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report)["install"]
    }
    return {name: resolved[name] for name in ranges}


def _release(version: str) -> tuple[tuple[int, ...], str]:
    """A version compared the way pip compares them here: "1.45" == "1.45.0"."""
    numbers, rest = re.fullmatch(r"(\d+(?:\.\d+)*)(.*)", version).groups()  # type: ignore[union-attr]
    release = tuple(int(part) for part in numbers.split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    return release, rest


def installed(python: str) -> dict[str, str]:
    listing = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {item["name"].lower(): item["version"] for item in json.loads(listing)}


def run(bound: str, pytest_args: list[str]) -> int:
    ranges = requirements()
    home = ROOT / f".venv-otel-{bound}"
    python = str(home / "bin" / "python")
    identity = f"{sys.version.split()[0]} {sys.base_prefix}\n"  # the interpreter that made it
    stamp = home / "made-by"
    if home.exists() and (not stamp.exists() or stamp.read_text() != identity):
        shutil.rmtree(home)
    if not home.exists():
        venv.create(home, with_pip=True)
        stamp.write_text(identity)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    if bound == "lowest":
        pins = {name: low for name, (low, _high) in ranges.items()}
    else:
        pins = highest(python, ranges)
    constraints = home / "otel-constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]", "-c", str(constraints)],
        check=True,
    )
    have = installed(python)
    wrong = {
        name: have.get(name)
        for name, version in pins.items()
        if _release(have.get(name, "0")) != _release(version)
    }
    if wrong:
        print(f"otel_range: {bound}: expected {pins}, installed {wrong}", file=sys.stderr)
        return 1
    otel = {name: version for name, version in have.items() if name.startswith("opentelemetry-")}
    shown = ", ".join(f"{name} {version}" for name, version in sorted(otel.items()))
    print(f"== the test suite with the {bound} OpenTelemetry releases allowed: {shown}", flush=True)
    return subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "auto", *pytest_args],
        check=False,
        cwd=ROOT,
    ).returncode


def main(argv: list[str]) -> int:
    bounds, pytest_args = argv, []
    if "--" in argv:
        split = argv.index("--")
        bounds, pytest_args = argv[:split], argv[split + 1 :]
    bounds = bounds or ["lowest", "highest"]
    unknown = set(bounds) - {"lowest", "highest"}
    if unknown:
        sys.exit(f"otel_range: unknown bound(s) {sorted(unknown)}: lowest or highest")
    failed = [bound for bound in bounds if run(bound, pytest_args) != 0]
    if failed:
        which = " and ".join(failed)
        print(f"otel_range: the suite failed with the {which} releases", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The ``fapilog`` command (click): ``config``, ``check`` and ``pretty``; docs/cli.md.

Exit codes: 0 success; 1 an invalid configuration, a check that did not pass, an app that
could not be imported; 2 wrong usage (click's).
"""

from __future__ import annotations

import io
import re
import shutil
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

import click
import orjson

from fapilog._version import __version__
from fapilog.cli.checks import Outcome, run_checks
from fapilog.cli.effective import AppNotFound, Row, app_settings, check_exporters, rows
from fapilog.cli.follow import follow, is_regular, open_log, read_lines
from fapilog.cli.pretty import Filters, Pretty, level_rank
from fapilog.exceptions import ConfigurationError
from fapilog.exporters.console_format import colors_wanted
from fapilog.settings import LoggingSettings

__all__ = ["main"]

_APP_HELP = (
    "import the application MODULE:ATTR (as uvicorn names it) and use the configuration "
    "its configure_logging() call makes; nothing is started, no connection opened"
)


def _fail(message: str) -> NoReturn:
    click.echo(f"fapilog: {message}", err=True)
    sys.exit(1)


def _settings(app: str | None, factory: bool) -> tuple[LoggingSettings, Any]:
    """The settings to report or check (the environment's, or the application's) and the
    application's `Recorded` call (None without one)."""
    try:
        if app is None:
            settings, recorded, calls = LoggingSettings(), None, 1
        else:
            settings, recorded, calls = app_settings(app, factory)
        check_exporters(settings)
    except (ConfigurationError, AppNotFound) as exc:
        _fail(str(exc))
    except Exception as exc:  # the application's own import failed
        _fail(f"importing {app} failed: {type(exc).__name__}: {exc}")
    if app is not None and recorded is None:
        click.echo(
            f"fapilog: {app} did not call configure_logging() on import; shown: the "
            "environment's configuration (what fapilog uses when the application logs first)",
            err=True,
        )
    elif calls > 1:
        click.echo(
            f"fapilog: {app} called configure_logging() {calls} times; shown: the last call",
            err=True,
        )
    return settings, recorded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="fapilog")
def main() -> None:
    """fapilog: structured, OpenTelemetry-native logging for FastAPI.

    \b
    fapilog config    the effective settings, and where each value came from
    fapilog check     send a marked record to each configured exporter
    fapilog pretty    JSON log lines as the development console shows them
    """


# -- config ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--changed", is_flag=True, help="only the settings not at their default")
@click.option("--app", metavar="MODULE:ATTR", help=_APP_HELP)
@click.option(
    "--factory", is_flag=True, help="with --app: ATTR is a factory to call (uvicorn's --factory)"
)
def config(as_json: bool, changed: bool, app: str | None, factory: bool) -> None:
    """The effective settings: each value, its environment variable and its source
    (default, a FAPILOG_* variable, an OTEL_* fallback, or the application's code).
    Secrets are masked. Exits 1 when the configuration is invalid."""
    settings, recorded = _settings(app, factory)
    table: list[Row] = rows(settings, recorded)
    if changed:
        table = [row for row in table if row.source.kind != "default"]
    if as_json:
        document = {
            "fapilog": __version__,
            "app": app,
            "settings": [row.as_json() for row in table],
        }
        click.echo(orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2).decode())
        return
    widths = [
        max([len("setting")] + [len(row.setting) for row in table]),
        max([len("value")] + [len(_text(row.value)) for row in table]),
    ]
    widths[1] = min(widths[1], 48)
    click.echo(f"{'setting':<{widths[0]}}  {'value':<{widths[1]}}  source")
    for row in table:
        value = _text(row.value)
        click.echo(f"{row.setting:<{widths[0]}}  {value:<{widths[1]}}  {row.source.name}")


# -- check ----------------------------------------------------------------------------------


def _mark(value: bool) -> str:
    return "yes" if value else "no"


def _report(outcome: Outcome) -> list[str]:
    probe = outcome.probe
    if probe is None:
        return [f"{outcome.exporter}: skipped ({outcome.note})"]
    verdict = "ok" if outcome.passed else "FAILED"
    latency = f"{probe.latency_ms:.0f} ms" if probe.latency_ms is not None else "-"
    lines = [
        f"{outcome.exporter}: {verdict}  {probe.target}".rstrip(),
        f"  reachable: {_mark(probe.reachable)}  authenticated: {_mark(probe.authenticated)}  "
        f"accepted: {_mark(probe.accepted)}  latency: {latency}",
    ]
    if probe.error:
        lines.append(f"  error: {probe.error}")
    if probe.fix:
        lines.append(f"  fix: {probe.fix}")
    return lines


@main.command()
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="seconds for all checks together",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
@click.option("--app", metavar="MODULE:ATTR", help=_APP_HELP)
@click.option("--factory", is_flag=True, help="with --app: ATTR is a factory to call")
def check(timeout: float, as_json: bool, app: str | None, factory: bool) -> None:
    """Exercise each configured exporter for real, leaving only marked traces: Loki gets
    one line in the stream {service_name="fapilog-check"}, the OTLP collector one record
    with fapilog.check=true, the file exporter's directory a scratch file written,
    rotated and removed. Exits 0 only when every check passes."""
    settings, _ = _settings(app, factory)
    try:
        outcomes = run_checks(settings, timeout)
    except ConfigurationError as exc:
        _fail(str(exc))
    passed = all(outcome.passed for outcome in outcomes)
    if as_json:
        document = {"passed": passed, "exporters": [outcome.as_json() for outcome in outcomes]}
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        for outcome in outcomes:
            for line in _report(outcome):
                click.echo(line)
    sys.exit(0 if passed else 1)


# -- pretty ---------------------------------------------------------------------------------


@main.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-f",
    "--follow",
    "following",
    is_flag=True,
    help="keep reading the files as they grow (rotation included)",
)
@click.option(
    "-n",
    "--lines",
    "last",
    type=click.IntRange(min=0),
    help="with --follow: begin with the last N lines",
)
@click.option(
    "--level", help="show records at this level or above (debug, info, warning, error, critical)"
)
@click.option("--trace", help="show the records of this trace id (or its first digits)")
@click.option("--grep", help="show the lines this regular expression matches")
@click.option(
    "--resource", is_flag=True, help="show the resource attributes (service.*, host.*, process.*)"
)
@click.option(
    "--color/--no-color", default=None, help="colours (default: on a terminal, unless NO_COLOR)"
)
def pretty(
    *,
    files: tuple[str, ...],
    following: bool,
    last: int | None,
    level: str | None,
    trace: str | None,
    grep: str | None,
    resource: bool,
    color: bool | None,
) -> None:
    """Show JSON log lines (from FILES, or standard input) as the development console
    shows records. Lines that are not JSON are passed through unchanged."""
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as exc:
        raise click.BadParameter(f"not a regular expression: {exc}", param_hint="--grep") from None
    if level is not None and level.strip().lower() not in (
        "debug",
        "info",
        "warning",
        "warn",
        "error",
        "critical",
    ):
        raise click.BadParameter(
            "one of debug, info, warning, error, critical", param_hint="--level"
        )
    filters = Filters(
        level=level_rank(level) if level else None,
        trace=trace.strip().lower() if trace else None,
        grep=pattern,
    )
    colors = colors_wanted(sys.stdout) if color is None else color
    width = shutil.get_terminal_size((100, 24)).columns
    shower = Pretty(colors=colors, width=width, filters=filters, resource=resource)
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper):
        # a line that is not JSON goes out byte for byte (its undecodable bytes were kept
        # as surrogate escapes); what the terminal's encoding cannot show is replaced
        utf8 = (out.encoding or "").lower().replace("-", "") == "utf8"
        out.reconfigure(errors="surrogateescape" if utf8 else "replace")
    failed = False

    def show(lines: Iterable[str], each: bool = False) -> None:
        for raw in lines:
            text = shower.line(raw)
            if text is not None:
                out.write(text + "\n")
                if each:  # (a pipe is shown as it comes)
                    out.flush()
        out.flush()

    try:
        if following and files and all(name != "-" and is_regular(name) for name in files):
            for batch in follow(list(files), last):
                show(batch)
            return
        for name in files or ("-",):  # (a pipe or standard input: read as it comes)
            if name == "-":
                show(read_lines(sys.stdin.buffer), each=True)
                continue
            try:
                with open_log(name) as stream:
                    show(read_lines(stream), each=not is_regular(name))
            except (OSError, EOFError) as exc:  # (gzip.BadGzipFile is an OSError)
                said = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                click.echo(f"fapilog pretty: {name}: {said}", err=True)
                failed = True
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `fapilog pretty app.log | head`
        sys.stderr.close()
        return
    if failed:
        sys.exit(1)

"""Query strings out of request-related output (`FAPILOG_REQUEST__QUERY`, docs/fastapi.md).

A query string often carries secrets (an OAuth ``code=``, a signed URL's
``X-Amz-Signature=``, an API ``key=``), so fapilog writes none in clear. Its own request
event and server span record the path only; this module does the same for what it routes
from elsewhere:

- the servers' access lines. `fapilog.capture.stdlib` adds `ACCESS_FILTER` to the loggers
  named in `CLEANED_LOGGERS` while it routes them, so each of their records is cleaned once,
  in place, before any handler formats it (its message and its arguments, whatever format
  the server was given). What each server logs, and what is cleaned:

  - ``uvicorn.access`` (uvicorn, and gunicorn's ``uvicorn_worker`` workers):
    ``'%s - "%s %s HTTP/%s" %d'`` with (client, method, path with query string, HTTP
    version, status). ``uvicorn.error`` has uvicorn's WebSocket lines,
    ``'%s - "WebSocket %s" ...'``, with the path and query string too. Every argument
    holding a ``?`` is cleaned.
  - ``gunicorn.access`` (gunicorn's own workers, its ``asgi`` worker included): its
    ``access_log_format`` with a mapping of atoms: ``r`` (the request line, with the query
    string), ``q`` (the query string), ``f`` and ``{referer}i`` (the Referer),
    ``{raw_uri}e``, ``{query_string}e``, ``{http_referer}e``.
  - ``hypercorn.access``: its ``access_log_format`` with atoms: ``R`` (request line with the
    query string), ``Uq`` (path with query string), ``q``, ``f`` and ``{referer}i``.
  - ``granian.access``: its format with a dict: ``path`` (without the query string),
    ``query_string``, and ``_h<n>`` for the headers its format names (a Referer).

- URL-valued headers fapilog shows when they are allowlisted (``Referer``, ``Location``,
  ...), through `clean_target` (`fapilog.integrations.request_fields`), and the query
  string the OpenTelemetry instrumentation records on its server span
  (`fapilog.integrations.tracing.query_hook`).

``omit`` (the default) drops the query string and keeps the path (``/cb``); ``redacted``
keeps it with every value replaced by the redaction marker, keys kept
(``/cb?code=[REDACTED]&key=[REDACTED]``; a part without ``=`` is replaced whole). Text
without a ``?`` is never parsed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

from fapilog import _diag
from fapilog._state import STATE

__all__ = [
    "ACCESS_FILTER",
    "AccessLineFilter",
    "CLEANED_LOGGERS",
    "clean_target",
    "clean_text",
    "query_marker",
    "redact_query",
]

# the loggers whose records carry request targets (see the module docstring)
CLEANED_LOGGERS = frozenset(
    {"uvicorn.access", "uvicorn.error", "gunicorn.access", "hypercorn.access", "granian.access"}
)
# mapping atoms that are a query string (without the "?")
_QUERY_ATOMS = ("q", "query_string", "{query_string}e")
# mapping atoms that are a path or URL with the query string after its first "?"
_TARGET_ATOMS = ("Uq", "f", "path", "{referer}i", "{raw_uri}e", "{http_referer}e",
                 "{request_uri}e")  # fmt: skip
# mapping atoms that are a request line ("GET /cb?code=... HTTP/1.1")
_LINE_ATOMS = ("r", "R")
_HEADER_ATOM = "_h"  # granian: the headers its format names, _h0, _h1, ...

# a path or an absolute URL followed by a query string, within text: the query string runs
# to the next whitespace (a request target has none), but for the quotes or brackets that
# close it ("GET /cb?code=1 HTTP/1.1", "WebSocket /ws?token=1"). (No backtracking over the
# query string itself: a long one costs linear time.)
# a "?" and the query string after it (to the next blank); the path or URL before it begins
# after the last blank, quote or opening bracket (found with str.rfind: one pass in all,
# whatever a client puts in its request line)
_QUERY_MARK = re.compile(r"\?(\S*)")
_TARGET_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://|/")
_BOUNDARIES = " \t\r\n\f\v\"'(<["
_CLOSERS = "\"')>]"


def redact_query(query: str, marker: str) -> str:
    """Every value of `query` (``a=1&b=2``) replaced by `marker`, keys kept; a part
    without ``=`` (which may be a token itself) is replaced whole."""
    parts = []
    for part in query.split("&"):
        key, sep, _ = part.partition("=")
        parts.append(f"{key}={marker}" if sep else marker if part else "")
    return "&".join(parts)


def clean_target(target: str, marker: str | None) -> str:
    """A path or URL without its query string (`marker` None), or with every value of it
    replaced by `marker`. Everything after the first ``?`` is the query string."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    return f"{path}?{redact_query(query, marker)}" if marker is not None else path


def clean_text(text: str, marker: str | None) -> str:
    """`text` (a request line, a message) with the query string of every path and URL in
    it removed (`marker` None) or redacted."""
    if "?" not in text:
        return text
    pieces: list[str] = []
    last = 0  # what is copied so far
    searched = 0  # where the previous query string ended (a blank follows it)
    for match in _QUERY_MARK.finditer(text):
        mark = match.start()
        begin = searched
        for char in _BOUNDARIES:
            begin = max(begin, text.rfind(char, searched, mark) + 1)
        searched = match.end()
        target = text[begin:mark]
        if "#" in target or _TARGET_START.match(target) is None:
            continue  # not a path or URL (or the "?" is in a fragment)
        rest = match.group(1)
        query = rest.rstrip(_CLOSERS)
        closing = rest[len(query) :]
        pieces.append(text[last:mark])
        pieces.append(closing if marker is None else f"?{redact_query(query, marker)}{closing}")
        last = match.end()
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)


def query_marker(settings: Any) -> str | None:
    """What `settings` (a `LoggingSettings`, or None) make of query strings: None to omit
    them, else the redaction marker that replaces their values."""
    if settings is None or settings.request.query != "redacted":
        return None
    marker: str = settings.redaction.marker
    return marker


class AccessLineFilter(logging.Filter):
    """Cleans the query strings out of a server's request record, in place, before its
    handlers see it (see the module docstring). Never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._settings: Any = None
        self._marker: str | None = None

    def marker(self) -> str | None:
        """The current configuration's policy (worked out again only when it changes)."""
        settings = STATE.settings
        if settings is not self._settings:
            self._marker = query_marker(settings)
            self._settings = settings
        return self._marker

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            _clean(record, self)
        except Exception as exc:  # an unexpected record: keep nothing of it that may leak
            record.msg = "access line withheld: fapilog could not remove its query string"
            record.args = ()
            _diag.report("access-line", f"fapilog could not clean an access line: {exc!r}")
        return True


def _clean(record: logging.LogRecord, policy: AccessLineFilter) -> None:
    args = record.args
    if not args:
        message = record.msg
        if isinstance(message, str) and "?" in message:
            record.msg = clean_text(message, policy.marker())
        return
    if isinstance(args, tuple):
        if any(type(arg) is str and "?" in arg for arg in args):
            marker = policy.marker()
            record.args = tuple(
                _clean_value(arg, marker) if type(arg) is str and "?" in arg else arg
                for arg in args
            )
        return
    if isinstance(args, MutableMapping):
        _clean_atoms(args, policy)


def _clean_value(value: str, marker: str | None) -> str:
    if value.startswith("/") or "://" in value:
        return clean_target(value, marker)
    return clean_text(value, marker)


def _clean_atoms(atoms: MutableMapping[str, Any], policy: AccessLineFilter) -> None:
    """A mapping of access-log atoms (gunicorn, hypercorn, granian), cleaned in place (it
    keeps its own class: gunicorn's and hypercorn's answer ``-`` for a missing atom)."""
    for key in _QUERY_ATOMS:
        value = atoms.get(key)
        if isinstance(value, str) and value:
            marker = policy.marker()
            atoms[key] = redact_query(value, marker) if marker is not None else ""
    for key in _TARGET_ATOMS:
        value = atoms.get(key)
        if isinstance(value, str) and "?" in value:
            atoms[key] = clean_target(value, policy.marker())
    for key in _LINE_ATOMS:
        value = atoms.get(key)
        if isinstance(value, str) and "?" in value:
            atoms[key] = clean_text(value, policy.marker())
    index = 0
    while (key := f"{_HEADER_ATOM}{index}") in atoms:  # (granian numbers them from 0)
        value = atoms[key]
        if isinstance(value, str) and "?" in value:
            atoms[key] = _clean_value(value, policy.marker())
        index += 1


ACCESS_FILTER = AccessLineFilter()
"""The one filter `fapilog.capture.stdlib` adds to each of `CLEANED_LOGGERS`."""

"""What configuring the Loki exporter checks and derives, at `configure_logging()` time:
the push URL, the stream labels and Loki's rules for labels, tenants and credentials
(messages never contain a credential: the URL is shown with its userinfo masked, the tenant
and the credentials not at all). Label values are valid UTF-8 (`label_value`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from fapilog.exporters.loki_protobuf import PROTOBUF_EXTRA, snappy_compressor
from fapilog.settings import LokiSettings
from fapilog.settings._errors import has_userinfo, setting_error
from fapilog.settings._url import url_problem

__all__ = [
    "LABEL_SOURCES",
    "Label",
    "MAX_LABELS",
    "PUSH_PATH",
    "label_value",
    "parse_labels",
    "push_url",
    "sanitize_label_name",
    "validate",
]

PUSH_PATH = "/loki/api/v1/push"
MAX_LABELS = 15  # Loki 3.x max_label_names_per_series
MAX_LABEL_NAME_BYTES = 1024
MAX_LABEL_VALUE_BYTES = 2048
# label name -> where its value comes from, for the names people use
LABEL_SOURCES: dict[str, str] = {
    "service_name": "service.name",
    "service_namespace": "service.namespace",
    "service_version": "service.version",
    "environment": "deployment.environment.name",
    "env": "deployment.environment.name",
    "host": "host.name",
    "level": "level",
    "logger": "logger",
}
# never labels: one stream per value would explode Loki's index
_HIGH_CARDINALITY = frozenset(
    {"trace_id", "span_id", "message", "timestamp", "request_id", "user_id", "process.pid"}
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_TENANT = re.compile(r"^[A-Za-z0-9!\-_.*'()]{1,150}$")
_UNSAFE_TENANTS = frozenset({".", ".."})  # Loki refuses them (they name directories)
_LABEL_REPLACED = frozenset('"\\\ufffd')
_URL_FORM = "http(s)://host[:port], e.g. http://loki:3100"


def sanitize_label_name(name: str) -> str:
    """A Loki label name for `name`: invalid characters become ``_``, a leading digit gets
    a ``_`` prefix (``service.name`` -> ``service_name``)."""
    cleaned = _INVALID_LABEL_CHARS.sub("_", name.strip())
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def push_url(url: str) -> str:
    """The push endpoint for a base URL (``http://loki:3100``, ``https://gw/loki``) or a
    full push URL, which is kept as is."""
    parsed = httpx.URL(url.strip())
    path = parsed.path.rstrip("/")
    if not path.endswith(PUSH_PATH):
        path += PUSH_PATH
    return str(parsed.copy_with(path=path))


@dataclass(frozen=True)
class Label:
    name: str
    source: str


def parse_labels(specs: Sequence[str], static: dict[str, str]) -> list[Label]:
    """`labels` entries (``name`` or ``name=source``) as `Label`s; ValueError on a bad one."""
    result: list[Label] = []
    seen: set[str] = set()
    for spec in specs:
        name, sep, source = spec.partition("=")
        name, source = name.strip(), source.strip()
        if not sep:
            source = LABEL_SOURCES.get(name, name)
            name = sanitize_label_name(name)
        if not name or not source:
            raise ValueError(f"label {spec!r}: write `name` or `name=source`")
        if not _LABEL_NAME.match(name):
            raise ValueError(
                f"label name {name!r} is not valid for Loki (letters, digits and _, "
                "not starting with a digit)"
            )
        if source in _HIGH_CARDINALITY or name in _HIGH_CARDINALITY:
            raise ValueError(
                f"label {spec!r} has one value per event and would create a stream per event; "
                "keep it in the line (trace_id and span_id go to structured metadata)"
            )
        result.append(Label(name, source))
    names = [label.name for label in result] + list(static)
    for name in static:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"static label name {name!r} is not valid for Loki")
    for name in names:
        if name in seen:
            raise ValueError(f"label {name!r} is given twice")
        seen.add(name)
        if len(name.encode()) > MAX_LABEL_NAME_BYTES:
            raise ValueError(f"label name {name[:40]!r}... is longer than 1024 bytes")
    if len(names) > MAX_LABELS:
        raise ValueError(f"{len(names)} labels; Loki allows at most {MAX_LABELS} per stream")
    return result


def label_value(value: Any) -> str:
    """A label value's text as Loki stores it alike from a JSON or a protobuf push: every
    character that is not printable (control and format characters, separators other than
    the space, a lone surrogate), U+FFFD, ``"`` and ``\\`` becomes ``_`` (Loki's label
    parser refuses U+FFFD; Loki 2.9 was seen to store quotes, backslashes and control
    characters of a JSON push's label values escaped, of a protobuf push's as they are);
    cut at Loki's 2048 bytes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable() or '"' in text or "\\" in text or "\ufffd" in text:
        text = "".join(
            "_" if char in _LABEL_REPLACED or not char.isprintable() else char for char in text
        )
    if text.isascii():
        return text[:MAX_LABEL_VALUE_BYTES]
    return text.encode("utf-8")[:MAX_LABEL_VALUE_BYTES].decode("utf-8", "ignore")


def validate(settings: LokiSettings) -> None:
    """Loki's rules, checked at configure time; messages never contain a credential."""
    raw = settings.url.strip()
    # parsed strictly (a space, no host, another scheme, a bad port), then as the client
    # will; the value shown with its userinfo masked, as any URL setting
    problem = url_problem(raw)
    url: httpx.URL | None = None
    if problem is None:
        try:
            url = httpx.URL(raw)
        except Exception as exc:  # (its text masked like the value: setting_error)
            problem = str(exc) or type(exc).__name__
    if url is None:
        raise setting_error(
            "loki.url",
            f"not a valid URL: {problem}; expected {_URL_FORM}",
            value=raw,
            mask="url",
        )
    if url.username or url.password or has_userinfo(raw):
        raise setting_error(
            "loki.url",
            "carries credentials: set FAPILOG_LOKI__USERNAME and FAPILOG_LOKI__PASSWORD "
            "(or FAPILOG_LOKI__BEARER_TOKEN) instead",
            value=raw,
            mask="url",
        )
    tenant = settings.tenant_id
    if tenant in _UNSAFE_TENANTS:
        raise setting_error(
            "loki.tenant_id",
            "'.' and '..' are not valid tenant ids (Loki refuses them)",
            value=tenant,
            secret=True,
        )
    if tenant is not None and not _TENANT.match(tenant):
        # the tenant is sent as a header like the credentials: shown masked, with what is
        # wrong with it (its length, the characters not allowed)
        wrong = ", ".join(sorted({repr(char) for char in tenant if not _TENANT.match(char)}))
        if len(tenant) > 150:
            what = f"{len(tenant)} characters, more than 150"
        else:
            what = f"it holds {wrong}, not allowed" if wrong else "it is empty"
        raise setting_error(
            "loki.tenant_id",
            what,
            value=tenant,
            allowed="up to 150 of the characters A-Z a-z 0-9 ! - _ . * ' ( )",
            secret=True,
        )
    if (settings.username is None) != (settings.password is None):
        missing = "password" if settings.password is None else "username"
        raise setting_error(
            f"loki.{missing}",
            "basic auth needs both FAPILOG_LOKI__USERNAME and FAPILOG_LOKI__PASSWORD",
        )
    if settings.bearer_token is not None and settings.password is not None:
        raise setting_error(
            "loki.bearer_token",
            "set either a bearer token or basic auth (username/password), not both",
            value=settings.bearer_token.get_secret_value(),
            secret=True,
        )
    try:
        parse_labels(settings.labels, settings.static_labels)
    except ValueError as exc:
        raise setting_error("loki.labels", str(exc), value=settings.labels) from None
    if settings.encoding == "protobuf":
        try:
            snappy_compressor()
        except ImportError:
            raise setting_error(
                "loki.encoding",
                "it needs the cramjam package (snappy compression): "
                f"{PROTOBUF_EXTRA}, or set FAPILOG_LOKI__ENCODING=json",
                value="protobuf",
            ) from None
    if settings.min_backoff > settings.max_backoff:
        raise setting_error(
            "loki.min_backoff",
            f"it is larger than FAPILOG_LOKI__MAX_BACKOFF ({settings.max_backoff})",
            value=settings.min_backoff,
        )

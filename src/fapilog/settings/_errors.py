"""The one formatter of setting errors.

Every invalid setting, whoever detects it (pydantic validation, an exporter's factory, the
OTLP resolver reading ``OTEL_*``), is reported in the same words::

    FAPILOG_QUEUE__MAX_SIZE (setting 'queue.max_size'): 0 is invalid: ... (allowed: ...)

naming the environment variable, the setting's path, the value and what is allowed;
`ConfigurationError.errors` carries the same as data.

A setting that can hold a credential is never shown as given: a secret (`SecretStr`, or a
field marked `SECRET`) as ``**********``; a mapping of secrets (headers) with its names and
every value masked, ``authorization=**********``; a URL (a field marked `URL`) with its
userinfo masked, ``https://**********@host``. Any other value, and every message, has the
userinfo of the URLs in it masked; an unknown setting's value is not shown at all (it may be
a credential under a misspelt name). `scrub` does the same for fapilog's runtime diagnostics.
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from fapilog.exceptions import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "Masked",
    "Problem",
    "SECRET",
    "URL",
    "configuration_error",
    "env_var_for",
    "from_validation_error",
    "has_userinfo",
    "mask_mapping",
    "mask_url",
    "mask_userinfo",
    "masked",
    "scrub",
    "setting_error",
]

ENV_PREFIX = "FAPILOG_"
MASK = "**********"
_UNSET: Any = object()
# a URL's userinfo in free text: from "scheme://" to the last "@" of the word (a password
# may hold "/", "?" or "#" unencoded: masking too much beats showing part of it)
# (the word after "scheme://" is taken whole, then cut at its last "@": one pass, whatever
# the text)
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)(\S*)")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP token
# the shortest text of a masked value replaced in messages (shorter ones are no credential,
# and replacing them would mangle the message around them)
_SHORTEST_PART = 4


class Masked:
    """`Annotated` metadata of a setting that can hold a credential, saying how errors show
    its value: ``"secret"`` (never), ``"url"`` (userinfo masked), ``"mapping"`` (names
    shown, values masked)."""

    __slots__ = ("how",)

    def __init__(self, how: str) -> None:
        self.how = how


SECRET = Masked("secret")
URL = Masked("url")


def mask_userinfo(text: str) -> str:
    """`text` with the userinfo of every URL in it masked: ``https://**********@host``."""
    if "@" not in text:
        return text
    return _USERINFO.sub(_masked_userinfo, text)


def _masked_userinfo(match: re.Match[str]) -> str:
    scheme, rest = match.groups()
    at = rest.rfind("@")
    return match.group(0) if at < 0 else f"{scheme}{MASK}{rest[at:]}"


def mask_url(url: str) -> str:
    """A URL (or ``user:password@host:port``) with its userinfo masked."""
    start, end = _userinfo(url)
    return url if start == end else url[:start] + MASK + url[end:]


def has_userinfo(url: str) -> bool:
    """Whether a URL carries credentials (``user:password@``) before its query."""
    start, end = _userinfo(url.split("?", 1)[0].split("#", 1)[0])
    return end > start


def _userinfo(url: str) -> tuple[int, int]:
    """Where a URL's userinfo starts and ends: after ``scheme://`` (or at the start, also
    when an ``@`` comes before the ``://``: credentials put in front of the URL) up to its
    last ``@``; an empty span without one."""
    scheme = url.find("://")
    start = scheme + 3 if scheme >= 0 and "@" not in url[:scheme] else 0
    end = url.rfind("@")
    return (start, end) if end >= start else (start, start)


def mask_mapping(value: Any) -> str:
    """A ``name=value,...`` mapping (headers; a dict, or its JSON text) with every value
    masked; a name is shown when it is a valid header name, an item without ``=`` is
    masked whole (it may be the rest of a value that held a comma)."""
    if isinstance(value, Mapping):
        return ",".join(f"{_shown_name(name)}={MASK}" for name in value)
    if not isinstance(value, str):
        return MASK
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return MASK
        return mask_mapping(parsed) if isinstance(parsed, dict) else MASK
    shown = []
    for item in text.split(","):
        name, sep, _ = item.partition("=")
        if not item.strip():
            shown.append("")
        elif sep:
            shown.append(f"{_shown_name(name)}={MASK}")
        else:
            shown.append(MASK)
    return ",".join(shown)


def _shown_name(name: Any) -> str:
    text = str(name).strip()
    return text if _HEADER_NAME.match(text) else MASK


def masked(value: Any, how: str) -> str:
    """`value` as errors show a setting masked `how` (see `Masked`)."""
    if how == "url" and isinstance(value, str):
        return mask_url(value)
    if how == "mapping":
        return mask_mapping(value)
    return MASK


def _secret_parts(value: str, how: str) -> list[str]:
    """The parts of a masked value that must not appear in a message on their own."""
    if how == "url":
        start, end = _userinfo(value)
        return [value[start:end]]
    if how == "mapping":
        parts = []
        for item in value.split(","):
            _, sep, rest = item.partition("=")
            parts.append(rest.strip() if sep else item.strip())
        return parts
    return []


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` (an exception's, a server's answer) as a diagnostic may show it: every one of
    `secrets` replaced by the mask, and the userinfo of the URLs in it masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return mask_userinfo(text)


def env_var_for(*loc: str | int) -> str:
    """The environment variable of a setting path:
    ``("queue", "max_size")`` -> ``FAPILOG_QUEUE__MAX_SIZE``."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


class Problem:
    """One invalid setting: its path (``"loki.url"``; None for a variable that is not a
    fapilog setting, such as ``OTEL_EXPORTER_OTLP_PROTOCOL``), what is wrong, the value as
    given, what is allowed, and how the value is masked (`secret`: never shown; `mask`:
    one of `Masked`'s ways)."""

    __slots__ = ("allowed", "env", "mask", "problem", "setting", "value")

    # a line said once after the problems of its kind (how to silence a check, say)
    note: str | None = None

    def __init__(
        self,
        setting: str | None,
        problem: str,
        *,
        value: Any = _UNSET,
        allowed: str | None = None,
        secret: bool = False,
        mask: str | None = None,
        env: str | None = None,
    ) -> None:
        self.setting = setting
        self.problem = problem
        self.value = value
        self.allowed = allowed
        self.mask = mask or ("secret" if secret else None)
        self.env = env or (env_var_for(*setting.split(".")) if setting else ENV_PREFIX + "*")

    @property
    def secret(self) -> bool:
        return self.mask is not None

    @property
    def shown(self) -> str | None:
        if self.value is _UNSET:
            return None
        if self.mask is not None:
            return repr(masked(self.value, self.mask))
        return mask_userinfo(repr(self.value))

    @property
    def described(self) -> str:
        """What is wrong, without the value when it is masked (a parser's message may quote
        its input) and without the userinfo of any URL."""
        problem = self.problem
        value = self.value
        if self.mask is not None and isinstance(value, str) and value:
            shown = masked(value, self.mask)
            for form in (value, repr(value)[1:-1], value.strip()):
                if len(form) >= _SHORTEST_PART:
                    problem = problem.replace(form, shown)
            for part in _secret_parts(value, self.mask):
                if len(part) >= _SHORTEST_PART:
                    problem = problem.replace(part, MASK)
        return mask_userinfo(problem)

    def line(self) -> str:
        shown = self.shown
        problem = self.described
        if self.setting is None:
            head = f"{self.env}={shown}" if shown is not None else self.env
            text = f"{head} is invalid: {problem}"
        else:
            text = f"{self.env} (setting {self.setting!r}): "
            text += f"{shown} is invalid: {problem}" if shown is not None else problem
        if self.allowed and self.allowed not in problem:
            text += f" (allowed: {self.allowed})"
        return text

    def record(self) -> dict[str, str]:
        entry = {"env": self.env, "error": self.described}
        if self.setting is not None:
            entry["setting"] = self.setting
        shown = self.shown
        if shown is not None:
            entry["value"] = shown
        if self.allowed:
            entry["allowed"] = self.allowed
        return entry


def configuration_error(
    problems: Iterable[Problem], *, heading: bool = False
) -> ConfigurationError:
    """A ConfigurationError for `problems`: one line each (under a heading when asked, as
    for a whole settings object)."""
    found = list(problems)
    lines = [problem.line() for problem in found]
    if heading or len(lines) > 1:
        message = "invalid fapilog settings:\n  " + "\n  ".join(lines)
    else:
        message = lines[0]
    notes = dict.fromkeys(problem.note for problem in found if problem.note)
    if notes:
        message += "\n" + "\n".join(f"({note})" for note in notes)
    return ConfigurationError(message, [problem.record() for problem in found])


def setting_error(
    setting: str | None,
    problem: str,
    *,
    value: Any = _UNSET,
    allowed: str | None = None,
    secret: bool = False,
    mask: str | None = None,
    env: str | None = None,
) -> ConfigurationError:
    """The ConfigurationError for one bad setting (see `Problem`)."""
    return configuration_error(
        [Problem(setting, problem, value=value, allowed=allowed, secret=secret, mask=mask, env=env)]
    )


# -- pydantic's validation errors ---------------------------------------------------------


def _allowed_values(error: Mapping[str, Any]) -> str | None:
    ctx = error.get("ctx") or {}
    expected = ctx.get("expected")
    if expected:
        return str(expected)
    if error.get("type") in ("bool_parsing", "bool_type"):
        return "true or false"
    if error.get("type", "").startswith(("int_", "float_")):
        return "a number"
    for bound, text in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"a number {text} {ctx[bound]}"
    return None


def _field(model: type[BaseModel], loc: tuple[str, ...]) -> tuple[int, FieldInfo | None]:
    """How many parts of an error location name the setting (a section's field: 2, a plain
    field: 1; the rest points inside a dict or list value), and that field."""
    field = model.model_fields.get(loc[0]) if loc else None
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and len(loc) > 1:
        return 2, annotation.model_fields.get(loc[1])
    return 1, field


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in getattr(annotation, "__args__", ()) or ())


def _masking(field: FieldInfo | None, whole: bool) -> str | None:
    """How an error shows the value of `field` (`whole`: the error is about the whole value,
    not an item inside it), None: as it is."""
    if field is None:
        return None
    for item in field.metadata:
        if isinstance(item, Masked):
            return item.how
    annotation = field.annotation
    if not _is_secret(annotation):
        return None
    mapping = any(
        typing.get_origin(kind) is dict for kind in (annotation, *typing.get_args(annotation))
    )
    return "mapping" if mapping and whole else "secret"


def _closest_field(model: type[BaseModel], loc: tuple[str, ...]) -> str | None:
    """The field name closest to the unknown key at `loc` (in `model` or its section)."""
    if not loc:
        return None
    owner: Any = model
    if len(loc) > 1:
        field = model.model_fields.get(loc[0])
        owner = field.annotation if field is not None else None
        if not (isinstance(owner, type) and issubclass(owner, BaseModel)):
            return None
    names = sorted(name for name, field in owner.model_fields.items() if not field.exclude)
    close = difflib.get_close_matches(str(loc[-1]).lower(), names, n=1, cutoff=0.6)
    return close[0] if close else None


def from_validation_error(
    exc: ValidationError, model: type[BaseModel], *, before: Iterable[Problem] = ()
) -> ConfigurationError:
    """pydantic's ValidationError of `model` (LoggingSettings) as a ConfigurationError,
    after the problems `before` (found before validation)."""
    problems = list(before)
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if isinstance(part, (str, int)))
        field_loc = tuple(part for part in loc if isinstance(part, str))
        depth, field = _field(model, field_loc)
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        value = error.get("input")
        if error.get("type") == "extra_forbidden":
            # an unknown setting: maybe a credential under a misspelt name
            message, value = "unknown setting (its value is not shown)", _UNSET
            closest = _closest_field(model, field_loc)
            if closest is not None:
                message += f"; did you mean {closest!r}?"
        problems.append(
            Problem(
                ".".join(str(part) for part in loc) or "settings",
                message,
                value=value,
                allowed=_allowed_values(error),
                mask=_masking(field, len(loc) <= depth),
                env=env_var_for(*field_loc[:depth]) if field_loc else ENV_PREFIX + "*",
            )
        )
    return configuration_error(problems, heading=True)

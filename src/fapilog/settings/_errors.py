"""The one formatter of setting errors.

Every invalid setting, whoever detects it (pydantic validation, an exporter's factory, the
OTLP resolver reading ``OTEL_*``), is reported in the same words::

    FAPILOG_QUEUE__MAX_SIZE (setting 'queue.max_size'): 0 is invalid: ... (allowed: ...)

naming the environment variable, the setting's path, the value (masked when the setting is
a secret) and what is allowed; `ConfigurationError.errors` carries the same as data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from fapilog.exceptions import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "Problem",
    "configuration_error",
    "env_var_for",
    "from_validation_error",
    "setting_error",
]

ENV_PREFIX = "FAPILOG_"
MASK = "**********"
_UNSET: Any = object()


def env_var_for(*loc: str | int) -> str:
    """The environment variable of a setting path:
    ``("queue", "max_size")`` -> ``FAPILOG_QUEUE__MAX_SIZE``."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


class Problem:
    """One invalid setting: its path (``"loki.url"``; None for a variable that is not a
    fapilog setting, such as ``OTEL_EXPORTER_OTLP_PROTOCOL``), what is wrong, the value as
    given, what is allowed, and whether the value is a secret (then never shown)."""

    __slots__ = ("allowed", "env", "problem", "secret", "setting", "value")

    def __init__(
        self,
        setting: str | None,
        problem: str,
        *,
        value: Any = _UNSET,
        allowed: str | None = None,
        secret: bool = False,
        env: str | None = None,
    ) -> None:
        self.setting = setting
        self.problem = problem
        self.value = value
        self.allowed = allowed
        self.secret = secret
        self.env = env or (env_var_for(*setting.split(".")) if setting else ENV_PREFIX + "*")

    @property
    def shown(self) -> str | None:
        if self.value is _UNSET:
            return None
        if self.secret:
            return repr(MASK)
        return repr(self.value)

    @property
    def described(self) -> str:
        """What is wrong, without the value when it is a secret (a parser's message may
        quote its input)."""
        problem = self.problem
        value = self.value
        if self.secret and isinstance(value, str) and value:
            for form in (value, repr(value)[1:-1]):
                problem = problem.replace(form, MASK)
        return problem

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
    return ConfigurationError(message, [problem.record() for problem in found])


def setting_error(
    setting: str | None,
    problem: str,
    *,
    value: Any = _UNSET,
    allowed: str | None = None,
    secret: bool = False,
    env: str | None = None,
) -> ConfigurationError:
    """The ConfigurationError for one bad setting (see `Problem`)."""
    return configuration_error(
        [Problem(setting, problem, value=value, allowed=allowed, secret=secret, env=env)]
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


def _field(model: type[BaseModel], loc: tuple[str, ...]) -> tuple[int, Any]:
    """How many parts of an error location name the setting (a section's field: 2, a plain
    field: 1; the rest points inside a dict or list value), and that field's annotation."""
    field = model.model_fields.get(loc[0]) if loc else None
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and len(loc) > 1:
        inner = annotation.model_fields.get(loc[1])
        return 2, inner.annotation if inner is not None else None
    return 1, annotation


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in getattr(annotation, "__args__", ()) or ())


def from_validation_error(exc: ValidationError, model: type[BaseModel]) -> ConfigurationError:
    """pydantic's ValidationError of `model` (LoggingSettings) as a ConfigurationError."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if isinstance(part, (str, int)))
        field_loc = tuple(part for part in loc if isinstance(part, str))
        depth, annotation = _field(model, field_loc)
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(
            Problem(
                ".".join(str(part) for part in loc) or "settings",
                message,
                value=error.get("input"),
                allowed=_allowed_values(error),
                secret=_is_secret(annotation),
                env=env_var_for(*field_loc[:depth]) if field_loc else ENV_PREFIX + "*",
            )
        )
    return configuration_error(problems, heading=True)

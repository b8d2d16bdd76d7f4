"""The ``FAPILOG_*`` variable names the settings honour, and the unknown ones.

A misspelt variable (``FAPILOG_LEVL``, ``FAPILOG_EXPORTER``, ``FAPILOG_QUEUE_MAX_SIZE``) is
not read by anything; `unknown_variables` finds every such name in an environment, with the
closest known name, so that the configuration can refuse it (or, configured implicitly,
report it and go on).

The known names come from the model itself: every field (``FAPILOG_LEVEL``), every section
as a whole, in JSON (``FAPILOG_QUEUE``), and each field of a section joined with ``__``
(``FAPILOG_QUEUE__MAX_SIZE``), so a section added later is known at once. A mapping setting
is honoured whole (``FAPILOG_LOGGER_LEVELS=uvicorn=WARNING``) and key by key
(``FAPILOG_LOGGER_LEVELS__UVICORN=WARNING``, ``FAPILOG_LOKI__STATIC_LABELS__TEAM=pay``,
``FAPILOG_EXPORTER_OPTIONS__<NAME>__<KEY>``), as pydantic-settings reads them. Names matched
case-insensitively, as the settings are read.

Variables that fapilog reads outside the model (`READ_ELSEWHERE`) are never unknown.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from fapilog.settings._base import section_model
from fapilog.settings._errors import ENV_PREFIX, Problem

__all__ = [
    "ALLOW_UNKNOWN",
    "READ_ELSEWHERE",
    "UnknownVariable",
    "allows_unknown",
    "is_known",
    "suggestion",
    "unknown_variables",
]

ALLOW_UNKNOWN = ENV_PREFIX + "ALLOW_UNKNOWN"
# read with os.environ by fapilog's modules, not by the settings model
# (FAPILOG_AUTO_INSTRUMENT: fapilog.integrations.distro, whether the distro configures)
READ_ELSEWHERE = frozenset({ENV_PREFIX + "AUTO_INSTRUMENT"})
# names people carry over from other libraries, where spelling distance misleads
_USUAL = {
    "LOG_LEVEL": "LEVEL",
    "LOGLEVEL": "LEVEL",
    "LOGGING_LEVEL": "LEVEL",
    "ENVIRONMENT": "ENV",
    "EXPORTER": "EXPORTERS",
}
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_HINT = (
    f"{ALLOW_UNKNOWN}=true turns this check off, for variables of another program that "
    f"share the {ENV_PREFIX} prefix"
)


class UnknownVariable(Problem):
    """A ``FAPILOG_*`` variable that is no setting: its name as given and the closest known
    one. Its value is never shown (it may be a credential under a misspelt name)."""

    __slots__ = ("closest", "name")

    note = _HINT

    def __init__(self, name: str, closest: str | None) -> None:
        text = "not a fapilog setting"
        if closest is not None:
            text += f"; did you mean {closest}?"
        super().__init__(None, text, env=name)
        self.name = name
        self.closest = closest

    def line(self) -> str:
        return f"{self.name} is {self.problem}"


def _is_mapping(annotation: Any) -> bool:
    """Whether a field's type is a mapping (or an optional one): pydantic-settings then reads
    ``<FIELD>__<KEY>`` variables into it."""
    kinds = (annotation, *typing.get_args(annotation))
    return any(kind is dict or typing.get_origin(kind) is dict for kind in kinds)


def _walk(model: type[BaseModel], prefix: str, exact: set[str], mappings: set[str]) -> None:
    for name, field in model.model_fields.items():
        env = prefix + name.upper()
        exact.add(env)
        section = section_model(field.annotation)
        if section is not None:
            _walk(section, env + "__", exact, mappings)
        elif _is_mapping(field.annotation):
            mappings.add(env)


@lru_cache(maxsize=8)
def _known(model: type[BaseModel]) -> tuple[frozenset[str], frozenset[str]]:
    """(every exact name, every mapping setting's name), without the prefix, upper case."""
    exact: set[str] = set()
    mappings: set[str] = set()
    _walk(model, "", exact, mappings)
    return frozenset(exact), frozenset(mappings)


def is_known(name: str, model: type[BaseModel]) -> bool:
    """Whether the settings of `model` (or another part of fapilog) read variable `name`
    (which starts with ``FAPILOG_``, in any case)."""
    upper = name.upper()
    if upper in READ_ELSEWHERE:
        return True
    rest = upper[len(ENV_PREFIX) :]
    exact, mappings = _known(model)
    if rest in exact:
        return True
    for mapping in mappings:
        if rest.startswith(mapping + "__"):
            keys = rest[len(mapping) + 2 :].split("__")
            return all(keys)  # (an empty key is no key: FAPILOG_LOGGER_LEVELS__)
    return False


def suggestion(name: str, model: type[BaseModel]) -> str | None:
    """The known variable closest to `name`, or None when none is close."""
    rest = name.upper()[len(ENV_PREFIX) :]
    exact, mappings = _known(model)
    if rest in _USUAL:
        return ENV_PREFIX + _USUAL[rest]
    squashed = rest.replace("_", "")
    for candidate in sorted(exact):  # a missing or extra "_": QUEUE_MAX_SIZE, FILE_PATH
        if candidate.replace("_", "") == squashed:
            return ENV_PREFIX + candidate
    parts = rest.split("__")
    for cut in range(1, len(parts)):  # a misspelt mapping with keys after it
        head, keys = "__".join(parts[:cut]), parts[cut:]
        close = difflib.get_close_matches(head, sorted(mappings), n=1, cutoff=0.8)
        if close and all(keys):
            return ENV_PREFIX + "__".join([close[0], *keys])
    close = difflib.get_close_matches(rest, sorted(exact), n=1, cutoff=0.6)
    return ENV_PREFIX + close[0] if close else None


def unknown_variables(environ: Mapping[str, str], model: type[BaseModel]) -> list[UnknownVariable]:
    """Every ``FAPILOG_*`` variable of `environ` (matched in any case) that nothing reads,
    sorted by name, each with the closest known name."""
    found = [
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX) and not is_known(name, model)
    ]
    return [UnknownVariable(name, suggestion(name, model)) for name in sorted(found)]


def allows_unknown(given: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """Whether the check is off: ``allow_unknown`` given in code, else
    ``FAPILOG_ALLOW_UNKNOWN`` in the environment (any case), true."""
    if "allow_unknown" in given:
        return _true(given["allow_unknown"])
    values: Iterable[str] = (
        value for name, value in environ.items() if name.upper() == ALLOW_UNKNOWN
    )
    return any(_true(value) for value in values)


def _true(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in _TRUE

"""`FAPILOG_CONSOLE__*`: the development console (the `console` exporter, and `stdout` when
it is not writing JSON; see docs/exporters.md)."""

from __future__ import annotations

from pydantic import Field, field_validator

from fapilog.settings._base import CommaList, Section

__all__ = ["ConsoleSettings", "DEFAULT_COLLAPSED"]

# the packages whose frames a traceback on the console folds into one line
DEFAULT_COLLAPSED = ["starlette", "fastapi", "anyio", "uvicorn", "fapilog"]


class ConsoleSettings(Section):
    """`FAPILOG_CONSOLE__*`: the development console."""

    locals: bool = Field(
        default=False,
        description="show each shown frame's local variables under a traceback (values "
        "redacted like every logged value)",
    )
    collapse: CommaList = Field(
        default_factory=lambda: list(DEFAULT_COLLAPSED),
        description="packages whose frames a traceback folds into one line "
        "(… 14 framework frames …); empty: every frame shown",
    )
    synchronous: bool = Field(
        default=True,
        description="write each record on the calling thread, in call order with print() "
        "(false: from a queue and worker, like the other exporters)",
    )

    @field_validator("collapse")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = [item.strip() for item in value]
        for name in names:
            if not name or not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a package name, e.g. starlette")
        return list(dict.fromkeys(names))

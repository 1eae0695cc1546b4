"""One wording for pydantic's validation errors, so every "bad input" message names each field alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["describe_problems"]


def describe_problems(error: ValidationError, whole: str) -> str:
    """`field.path: message; ...` for every problem; `whole` stands for an error about the whole
    input (an empty location). pydantic's "Value error, " prefix is dropped: it says nothing."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or whole
        problems.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(problems)

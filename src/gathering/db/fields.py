"""Field types of domain inputs (pydantic), shared by every layer that takes them: numbers
as JSON Schema has them, text that says something, and references by id or name."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict

MAX_ID = 2**63 - 1  # ids are bigint


def _id_or_name(value: Any) -> Any:
    """An id given as digits ("42") or a whole number (42.0) is that id; other text a name."""
    if isinstance(value, bool):
        raise ValueError("give an id or a name")
    if isinstance(value, str) and value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_ID:
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def as_number(value: Any) -> Any:
    """`value` unless it is text or a boolean (pydantic alone would read "5" and true as
    numbers); limits go before it in `Annotated`, so that the schema shows them."""
    if isinstance(value, bool | str):
        raise ValueError("give a number")
    return value


Whole = Annotated[int, BeforeValidator(as_number)]
"""An integer as JSON Schema has it: 5 or 5.0, never "5" or true."""
Real = Annotated[float, BeforeValidator(as_number)]
"""A number: never "5" or true."""


Flag = Annotated[bool, Strict()]
"""A boolean as JSON has it: true or false, never 1 or "yes"."""


def _said(value: str) -> str:
    """`value`, unless it is only white space (as Python's `str.strip` has it, which counts
    more characters as space than a regex's \\s: "\\x1c" is refused)."""
    if not value.strip():
        raise ValueError("only white space: say something")
    return value


Said = Annotated[str, AfterValidator(_said)]
"""Text that is not only white space."""

Ref = Annotated[
    Annotated[int, Field(ge=1, le=MAX_ID)]
    | Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")],
    BeforeValidator(_id_or_name),
]
"""Something of the owner's by id or by name (an agent, a pipeline)."""

"""Text fields of request bodies and parameters, each with its rule in the OpenAPI schema.

The server enforces these patterns itself (pydantic), so a client generated from the schema
knows exactly what is accepted. "Blank" means what Python's `str.strip()` removes, which is
how the domain layer trims names and text.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Field, Strict, WithJsonSchema

from gathering.db import fields as domain

# Every character `str.isspace()` calls whitespace.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROL = r"\x00-\x1f\x7f-\x9f"
# A single line of printable text that is not blank: names, titles, tags, categories, ids.
LINE_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"
# Free text (newlines and tabs allowed) that is not blank and holds no NUL.
TEXT_PATTERN = f"^[^\\x00]*[^\\x00{_SPACE}][^\\x00]*$"
# Any text without NUL (PostgreSQL's text cannot hold it), empty included.
NO_NUL_PATTERN = r"^[^\x00]*$"
# A decimal id, as `scope_id` of the agent scope.
DIGITS_PATTERN = r"^[0-9]{1,19}$"


def line(max_length: int, **field: Any) -> Any:
    """A `Field` for one printable, non-blank line of at most `max_length` characters."""
    return Field(min_length=1, max_length=max_length, pattern=LINE_PATTERN, **field)


def text(max_length: int, **field: Any) -> Any:
    """A `Field` for non-blank text without NUL, of at most `max_length` characters."""
    return Field(min_length=1, max_length=max_length, pattern=TEXT_PATTERN, **field)


# RFC 3339 as Python's datetime holds it: no year 0000 and no leap second (:60), which the
# schema's pattern says too.
DATE_TIME_PATTERN = (
    r"^(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_DATE_TIME = re.compile(DATE_TIME_PATTERN)


def _rfc3339_only(value: Any) -> Any:
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        raise ValueError(
            "give a date, time and offset (RFC 3339, years 0001-9999, no leap second): "
            '"2026-11-30T08:00:00Z"'
        )
    return value


# A date and time with its offset ("2026-11-30T08:00:00Z"), as the schema's `format: date-time`
# says; pydantic alone would also take a number of seconds, a date alone or no offset.
IsoDatetime = Annotated[
    datetime,
    BeforeValidator(_rfc3339_only),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN}),
]


def _integral_text(value: Any) -> Any:
    """ "19.0" as 19: the schema's integers may come written as a whole decimal; `true` is
    not one (pydantic alone would take it as 1)."""
    if isinstance(value, bool):
        raise ValueError("give a whole number")
    if isinstance(value, str) and (whole := _WHOLE_DECIMAL.fullmatch(value)):
        return int(whole.group(1))
    return value


_WHOLE_DECIMAL = re.compile(r"([+-]?[0-9]+)\.0*")


def _flush_tiny(value: float) -> float:
    """0.0 for a number too small for PostgreSQL's `real` (it refuses, say, 1e-313)."""
    return 0.0 if abs(value) < TINY else value


TINY = 1e-30
# JSON numbers and booleans as the schema types them: pydantic alone would also take `true`
# for a number, `1` for a boolean, "3" for an integer and 1e400 (infinite) for a number.
Integer = domain.Whole
Number = Annotated[float, Strict(), AllowInfNan(False), AfterValidator(_flush_tiny)]
Flag = domain.Flag
# An integer in a path, a query string or a body, where "19.0" is the same whole number as "19".
WholeNumber = Annotated[int, BeforeValidator(_integral_text)]

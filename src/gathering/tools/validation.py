"""Tool arguments are checked against the tool's JSON Schema before the tool runs.

The errors name each field by its path (`config.level`), so the model can fix its call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from gathering.errors import InvalidInputError, ToolArgumentsError

MAX_ERRORS = 10  # field errors reported for one call
_SHOWN_CHARS = 200  # echoed values are cut to this


def schema_validator(name: str, schema: Mapping[str, Any]) -> Validator:
    """A validator for the tool `name`'s parameters; `InvalidInputError` for a bad schema."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInputError(
            f"tool {name!r} has an invalid JSON Schema: {exc.message}",
            hint="fix the tool's parameters schema (JSON Schema 2020-12)",
        ) from None
    return Draft202012Validator(schema)


def field_path(path: Any) -> str:
    """`["config", "level"]` as `config.level`, list positions as `[0]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(arguments)"


def check_arguments(name: str, validator: Validator, arguments: Mapping[str, Any]) -> None:
    """Raise `ToolArgumentsError` listing each field of `arguments` the schema refuses."""
    found = sorted(validator.iter_errors(dict(arguments)), key=lambda e: list(e.absolute_path))
    if not found:
        return
    errors = [
        {"path": field_path(error.absolute_path), "message": _cut(error.message)}
        for error in found[:MAX_ERRORS]
    ]
    listed = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
    raise ToolArgumentsError(
        f"invalid arguments for tool {name!r}: {listed}",
        hint="fix the named fields and call the tool again",
        details={"tool": name, "errors": errors},
    )


def _cut(message: str) -> str:
    return message if len(message) <= _SHOWN_CHARS else message[:_SHOWN_CHARS] + "…"

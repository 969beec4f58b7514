"""Tool arguments are checked against the tool's JSON Schema before the tool runs.

The errors name each field by its path (`config.level`), so the model can fix its call. The
validator is `jsonschema-rs` (Rust): linear-time checks (`uniqueItems` by hashing, patterns
with a bounded regex engine), so a large or hostile argument cannot stall the event loop the
way a pure-Python validator's quadratic or backtracking checks could.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema_rs import Draft202012Validator, ValidationError, meta

from gathering.errors import InvalidInputError, ToolArgumentsError

MAX_ERRORS = 10  # field errors reported for one call
_SHOWN_CHARS = 200  # each message is cut to this

Validator = Draft202012Validator


def schema_validator(name: str, schema: Mapping[str, Any]) -> Validator:
    """A validator for the tool `name`'s parameters; `InvalidInputError` for a bad schema."""
    try:
        meta.validate(dict(schema))
        return Draft202012Validator(dict(schema))
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(
            f"tool {name!r} has an invalid JSON Schema: {_cut(first)}",
            hint="fix the tool's parameters schema (JSON Schema 2020-12)",
        ) from None


def field_path(path: Any) -> str:
    """`["config", "level"]` as `config.level`, list positions as `[0]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(arguments)"


def refusal(name: str, errors: list[dict[str, str]]) -> ToolArgumentsError:
    """The error listing the refused fields of a call of `name` (at most `MAX_ERRORS`)."""
    shown = [{"path": e["path"], "message": _cut(e["message"])} for e in errors[:MAX_ERRORS]]
    more = len(errors) - len(shown)
    listed = "; ".join(f"{e['path']}: {e['message']}" for e in shown)
    if more > 0:
        listed += f"; and {more} more"
    return ToolArgumentsError(
        f"invalid arguments for tool {name!r}: {listed}",
        hint="fix the named fields and call the tool again",
        details={"tool": name, "errors": shown},
    )


def check_arguments(name: str, validator: Validator, arguments: Mapping[str, Any]) -> None:
    """Raise `ToolArgumentsError` listing each field of `arguments` the schema refuses."""
    found = []
    for error in validator.iter_errors(dict(arguments)):
        found.append({"path": field_path(error.instance_path), "message": error.message})
        if len(found) > MAX_ERRORS:
            break
    if found:
        found.sort(key=lambda e: e["path"])
        raise refusal(name, found)


def _cut(message: str) -> str:
    return message if len(message) <= _SHOWN_CHARS else message[:_SHOWN_CHARS] + "…"

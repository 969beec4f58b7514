"""Text as PostgreSQL can store it: `text` and `jsonb` refuse NUL characters, and JSON refuses
lone surrogates, which a model, a tool or a client may produce. Both become U+FFFD."""

from __future__ import annotations

from typing import Any


def storable_text(text: str) -> str:
    """`text` with NUL characters and lone surrogates replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def storable_value(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, text, numbers) with every text made storable,
    keys included."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list | tuple):
        return [storable_value(item) for item in value]
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_value(v) for k, v in value.items()}
    return value

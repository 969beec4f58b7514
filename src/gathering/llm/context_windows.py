"""How many tokens (prompt plus reply) each model can take: a small table by model-name prefix.

A provider's `context_window=` argument wins over this table. The longest matching prefix
applies, so dated snapshots ("gpt-4o-2024-08-06", "claude-sonnet-4-20250514") find their
family. Any model missing here gets `FALLBACK_CONTEXT_WINDOW`, a deliberately small value.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

FALLBACK_CONTEXT_WINDOW = 8_192
"""Unknown models, e.g. those of an OpenAI-compatible server: small on purpose, so a
conversation is trimmed early rather than refused by the server."""

# Published context windows, checked against the providers' model pages in 2025-08.
# They change: this table is the one place to update.
CONTEXT_WINDOWS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "anthropic": MappingProxyType({"claude-": 200_000}),
        "openai": MappingProxyType(
            {
                "gpt-5": 400_000,
                "gpt-4.1": 1_047_576,
                "gpt-4o": 128_000,
                "gpt-4-turbo": 128_000,
                "gpt-3.5-turbo": 16_385,
                "o1": 200_000,
                "o1-mini": 128_000,
                "o1-preview": 128_000,
                "o3": 200_000,
                "o4": 200_000,
            }
        ),
        # Ollama runs every model with num_ctx 4096 unless told otherwise (the provider sends
        # num_ctx when given `context_window=`).
        "ollama": MappingProxyType({"": 4_096}),
        "scripted": MappingProxyType({"": 128_000}),
    }
)


def default_context_window(provider: str, model: str) -> int:
    """The context window (tokens) of `model` on `provider` from the table, else the fallback."""
    prefixes = CONTEXT_WINDOWS.get(provider, {})
    matches = [prefix for prefix in prefixes if model.startswith(prefix)]
    if not matches:
        return FALLBACK_CONTEXT_WINDOW
    return prefixes[max(matches, key=len)]

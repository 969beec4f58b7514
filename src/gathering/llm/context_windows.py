"""How many tokens (prompt plus reply) each model can take, a small table by model-name prefix,
and the most tokens one reply may have, for the models whose limit is published.

A provider's `context_window=` argument wins over this table. The longest matching prefix
applies, so dated snapshots ("gpt-4o-2024-08-06", "claude-sonnet-4-20250514") find their
family. Any model missing here gets `FALLBACK_CONTEXT_WINDOW`, a deliberately small value.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gathering.llm.pricing import base_model_name

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
    known = known_context_window(provider, model)
    return FALLBACK_CONTEXT_WINDOW if known is None else known


def known_context_window(provider: str, model: str) -> int | None:
    """The table's context window for `model` on `provider`, or None when no entry matches (then
    providers use `FALLBACK_CONTEXT_WINDOW`)."""
    prefixes = CONTEXT_WINDOWS.get(provider, {})
    matches = [prefix for prefix in prefixes if model.startswith(prefix)]
    return prefixes[max(matches, key=len)] if matches else None


# The most output tokens one reply may have, by exact model name (a dated snapshot finds its
# base name), from the providers' model pages; checked 2026-12-01. Models missing here: unknown.
MAX_OUTPUT_TOKENS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "anthropic": MappingProxyType(
            {
                "claude-opus-4-5": 64_000,
                "claude-opus-4-1": 32_000,
                "claude-opus-4": 32_000,
                "claude-sonnet-4-5": 64_000,
                "claude-sonnet-4": 64_000,
                "claude-3-7-sonnet": 64_000,
                "claude-haiku-4-5": 64_000,
                "claude-3-5-haiku": 8_192,
            }
        ),
        "openai": MappingProxyType(
            {
                "gpt-5": 128_000,
                "gpt-5-mini": 128_000,
                "gpt-5-nano": 128_000,
                "gpt-4.1": 32_768,
                "gpt-4.1-mini": 32_768,
                "gpt-4.1-nano": 32_768,
                "gpt-4o": 16_384,
                "gpt-4o-mini": 16_384,
                "o3": 100_000,
                "o4-mini": 100_000,
            }
        ),
    }
)


def known_max_output(provider: str, model: str) -> int | None:
    """The most output tokens of one reply of `model` on `provider`, or None when unknown."""
    table = MAX_OUTPUT_TOKENS.get(provider, {})
    return table.get(model) or table.get(base_model_name(model))

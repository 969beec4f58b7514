"""Small pieces the provider modules share: constructor options and settings look-ups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from gathering.config import get_settings
from gathering.llm.retry import RetryPolicy


class ProviderOptions(TypedDict, total=False):
    """Keyword options every provider constructor accepts."""

    retry: RetryPolicy | Mapping[str, Any] | None
    timeout: float
    max_tokens: int
    temperature: float | None
    context_window: int | None


def configured_secret(field: str) -> str | None:
    """The value of a `SecretStr` setting (e.g. "openai_api_key"), or None when unset/blank."""
    secret = getattr(get_settings(), field, None)
    if secret is None:
        return None
    value = secret.get_secret_value().strip()
    return value or None


def configured_value(field: str) -> Any:
    """A plain setting, or None when this version of `Settings` has no such field."""
    return getattr(get_settings(), field, None)

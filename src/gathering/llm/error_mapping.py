"""Turning a provider's HTTP failure into the matching `gathering.errors` class."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from gathering.errors import (
    ContextTooLongError,
    LLMError,
    ProviderAuthenticationError,
    ProviderNotConfiguredError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from gathering.observability import mask_secrets

LOCAL_HINT = 'or use provider="local" to run the bundled model without any key'

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "exceeds the context",
    "request_too_large",
)


def missing_key_error(provider: str, env_var: str) -> ProviderNotConfiguredError:
    """The error for a provider called without its API key."""
    return ProviderNotConfiguredError(
        f"the {provider} provider needs an API key and none is configured",
        hint=f"set {env_var} (or GATHERING_{env_var}), {LOCAL_HINT}",
        details={"provider": provider, "env_var": env_var},
    )


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def looks_like_context_overflow(*texts: str | None) -> bool:
    """Whether an error message or code says the prompt is longer than the context window."""
    blob = " ".join(text for text in texts if text).lower()
    return any(marker in blob for marker in _CONTEXT_MARKERS)


def error_from_status(
    provider: str,
    status: int,
    message: str,
    *,
    env_var: str | None = None,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
    model: str | None = None,
) -> LLMError:
    """Map an HTTP error status (plus the provider's message and code) to an `LLMError`."""
    details = {"provider": provider, "status": status}
    text = f"{provider} returned HTTP {status}: {mask_secrets(message)}"  # it may quote the key
    if status in (401, 403):
        hint = (
            f"check {env_var}"
            if env_var
            else "check the key this provider was given (a catalog provider's stored key: "
            "PATCH /providers/{id} with a new one)"
        )
        return ProviderAuthenticationError(text, hint=hint, details=details)
    if status == 429:
        if code == "insufficient_quota":
            error = ProviderRateLimitError(text, hint="the account's quota is used up")
            error.retryable = False
            return error
        return ProviderRateLimitError(text, retry_after=parse_retry_after(headers))
    if status in (400, 413, 422) and looks_like_context_overflow(message, code):
        return ContextTooLongError(
            text,
            hint="shorten the conversation or use a model with a larger context window",
            details=details,
        )
    if status in (408, 504):
        return ProviderTimeoutError(text, details=details)
    if status >= 500:
        return ProviderUnavailableError(text, details=details)
    if status == 404:
        hint = f"check that the model {model!r} exists" if model else "check the model name"
        return LLMError(text, hint=hint, details=details)
    return LLMError(text, details=details)

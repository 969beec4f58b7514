"""Small pieces the provider modules share: constructor options and settings look-ups."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypedDict
from urllib.parse import urlsplit

from gathering.config import get_settings, is_loopback
from gathering.errors import ConfigurationError
from gathering.llm.retry import RetryPolicy
from gathering.observability import mask_in_logs

AddressPin = Callable[[str, int], Awaitable[Sequence[str]]]
"""`pin(host, port)`: the checked addresses a request to `host` connects to (see
`gathering.llm.pinning`). It raises `ProviderAddressRefusedError` to refuse them, and another
`LLMError` (`ProviderUnavailableError`, `ProviderTimeoutError`) when the name has none."""


class ProviderOptions(TypedDict, total=False):
    """Keyword options every provider constructor accepts."""

    retry: RetryPolicy | Mapping[str, Any] | None
    timeout: float
    max_tokens: int
    temperature: float | None
    context_window: int | None
    pin: AddressPin | None


def configured_secret(field: str) -> str | None:
    """The value of a `SecretStr` setting (e.g. "openai_api_key"), or None when unset/blank."""
    secret = getattr(get_settings(), field, None)
    if secret is None:
        return None
    value = secret.get_secret_value().strip()
    if value:
        mask_in_logs(value)  # a key: never in a log line, whatever quotes it
    return value or None


def configured_value(field: str) -> Any:
    """A plain setting, or None when this version of `Settings` has no such field."""
    return getattr(get_settings(), field, None)


def ensure_model_requests_allowed(provider: str, url: str) -> None:
    """Refuse a client for a model endpoint off this machine when
    `GATHERING_MODEL_REQUESTS=loopback` (the test suite's setting): a test that forgot its stub
    fails loudly instead of calling a real provider."""
    if get_settings().model_requests != "loopback":
        return
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if not is_loopback(host):
        raise ConfigurationError(
            f"GATHERING_MODEL_REQUESTS=loopback refuses {provider} at {host or url!r}: only "
            "model servers on this machine may be called",
            hint="point the provider at a local server (in tests: the llm_stub_env fixture), "
            "or set GATHERING_MODEL_REQUESTS=any",
        )

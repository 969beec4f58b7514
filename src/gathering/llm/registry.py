"""Providers by name: `get_provider`, `get_embedding_provider`, default models and the
default provider for new agents.

Building a provider needs neither a key nor the network; its first call does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from gathering.errors import InvalidInputError, UnknownProviderError
from gathering.llm import anthropic, local, ollama, openai, scripted
from gathering.llm.base import LLMProvider
from gathering.llm.common import configured_secret, configured_value
from gathering.llm.embeddings import (
    LOCAL_EMBEDDING_MODEL,
    OLLAMA_DEFAULT_EMBEDDING_MODEL,
    OPENAI_DEFAULT_EMBEDDING_MODEL,
    EmbeddingProvider,
    LocalEmbeddingProvider,
    OllamaEmbeddingProvider,
    OpenAIEmbeddingProvider,
)

ProviderFactory = Callable[..., LLMProvider]
EmbeddingFactory = Callable[..., EmbeddingProvider]

# Used when neither the call nor the settings (GATHERING_<PROVIDER>_MODEL) name a model.
DEFAULT_MODELS: Mapping[str, str] = MappingProxyType(
    {
        "anthropic": anthropic.DEFAULT_MODEL,
        "openai": openai.DEFAULT_MODEL,
        "ollama": ollama.DEFAULT_MODEL,
        "local": local.DEFAULT_MODEL,
        "scripted": scripted.DEFAULT_MODEL,
    }
)

DEFAULT_EMBEDDING_MODELS: Mapping[str, str] = MappingProxyType(
    {
        "openai": OPENAI_DEFAULT_EMBEDDING_MODEL,
        "ollama": OLLAMA_DEFAULT_EMBEDDING_MODEL,
        "local": LOCAL_EMBEDDING_MODEL,
    }
)

_providers: dict[str, ProviderFactory] = {
    "anthropic": anthropic.AnthropicProvider,
    "openai": openai.OpenAIProvider,
    "ollama": ollama.OllamaProvider,
    "local": local.LocalProvider,
    "scripted": scripted.echo_provider,
}

_embedding_providers: dict[str, EmbeddingFactory] = {
    "openai": OpenAIEmbeddingProvider,
    "ollama": OllamaEmbeddingProvider,
    "local": LocalEmbeddingProvider,
}


# Providers for tests and demos: the API accepts them only with GATHERING_ENV=development.
TEST_PROVIDERS = frozenset({"scripted"})


def known_providers() -> list[str]:
    """The names `get_provider` accepts, sorted."""
    return sorted(_providers)


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make `get_provider(name, model, **config)` call `factory(model, **config)`."""
    _providers[_normalise(name)] = factory


def default_model(provider: str) -> str:
    """The model used when none is given: `GATHERING_<PROVIDER>_MODEL`, else the built-in one."""
    key = _normalise(provider)
    configured = configured_value(f"{key}_model")
    if configured:
        return str(configured)
    if key in DEFAULT_MODELS:
        return DEFAULT_MODELS[key]
    raise InvalidInputError(f"no default model for provider {provider!r}; pass model=...")


def get_provider(
    name: str, model: str | None = None, *, client: Any = None, **config: Any
) -> LLMProvider:
    """The provider called `name`, for `model` (default: `default_model(name)`).

    `client` is an SDK client built by the caller (anthropic.AsyncAnthropic,
    openai.AsyncOpenAI, ollama.AsyncClient), used as-is. `config` goes to the provider's
    constructor (api_key, base_url, host, timeout, retry, max_tokens, temperature,
    context_window, ...). An unknown name raises `UnknownProviderError`.
    """
    key = _normalise(name)
    factory = _providers.get(key)
    if factory is None:
        raise UnknownProviderError(
            f"unknown LLM provider {name!r}",
            hint=f"known providers: {', '.join(known_providers())}",
            details={"provider": name, "known": known_providers()},
        )
    if client is not None:
        config["client"] = client
    try:
        return factory(model or default_model(key), **config)
    except TypeError as exc:
        raise InvalidInputError(f"invalid configuration for the {key} provider: {exc}") from None


def default_provider_name() -> str:
    """The provider for a new agent that names none.

    `GATHERING_DEFAULT_PROVIDER` when set; otherwise the first provider with an API key
    (Anthropic, then OpenAI); otherwise "local", which needs no key.
    """
    configured = configured_value("default_provider")
    if configured:
        key = _normalise(str(configured))
        if key not in _providers:
            raise UnknownProviderError(
                f"GATHERING_DEFAULT_PROVIDER names an unknown provider {configured!r}",
                hint=f"known providers: {', '.join(known_providers())}",
            )
        return key
    if configured_secret("anthropic_api_key"):
        return "anthropic"
    if configured_secret("openai_api_key"):
        return "openai"
    return "local"


def get_embedding_provider(name: str, model: str | None = None, **config: Any) -> EmbeddingProvider:
    """The embedding provider called `name` ("openai", "ollama" or "local")."""
    key = _normalise(name)
    factory = _embedding_providers.get(key)
    if factory is None:
        raise UnknownProviderError(
            f"unknown embedding provider {name!r}",
            hint=f"known embedding providers: {', '.join(sorted(_embedding_providers))}",
        )
    try:
        return factory(model or DEFAULT_EMBEDDING_MODELS[key], **config)
    except TypeError as exc:
        raise InvalidInputError(f"invalid configuration for {key} embeddings: {exc}") from None


def _normalise(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UnknownProviderError(
            "the provider name is empty", hint=f"known providers: {', '.join(known_providers())}"
        )
    return name.strip().lower()

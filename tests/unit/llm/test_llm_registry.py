"""get_provider, default models, the default provider, and the client factories."""

from __future__ import annotations

from unittest.mock import MagicMock, patch

import pytest

from gathering.errors import InvalidInputError, UnknownProviderError
from gathering.llm import (
    AnthropicProvider,
    LLMProvider,
    LocalProvider,
    OllamaProvider,
    OpenAIProvider,
    ScriptedProvider,
    default_model,
    default_provider_name,
    get_provider,
    known_providers,
    register_provider,
    registry,
)


@pytest.mark.parametrize(
    ("provider", "model", "expected_class"),
    [
        ("openai", "gpt-4o", "OpenAIProvider"),
        ("anthropic", "claude-sonnet-4-20250514", "AnthropicProvider"),
        ("ollama", "llama3.2", "OllamaProvider"),
        ("local", None, "LocalProvider"),
        ("scripted", None, "ScriptedProvider"),
    ],
)
def test_building_needs_no_key_and_no_network(no_keys, provider, model, expected_class):
    built = get_provider(provider, model)
    assert built.__class__.__name__ == expected_class
    assert isinstance(built, LLMProvider)
    assert built.name == provider
    assert built.model == (model or default_model(provider))


def test_default_models(no_keys):
    assert get_provider("anthropic").model == registry.DEFAULT_MODELS["anthropic"]
    assert get_provider("OpenAI ").model == registry.DEFAULT_MODELS["openai"]
    assert get_provider("ollama").model == "llama3.2"
    assert get_provider("local").model == "smollm2-135m-instruct"


def test_default_model_from_settings(monkeypatch):
    settings = {"openai_model": "gpt-6-sol"}
    monkeypatch.setattr(registry, "configured_value", settings.get)
    assert default_model("openai") == "gpt-6-sol"
    assert get_provider("openai").model == "gpt-6-sol"
    assert default_model("anthropic") == registry.DEFAULT_MODELS["anthropic"]


def test_config_is_passed_to_the_constructor(no_keys):
    provider = get_provider(
        "openai", "gpt-4o", base_url="http://127.0.0.1:9/v1", timeout=5, retry={"max_attempts": 1}
    )
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "http://127.0.0.1:9/v1"
    assert provider.timeout == 5
    assert provider.retry.max_attempts == 1


def test_unknown_provider_lists_the_known_ones():
    with pytest.raises(UnknownProviderError) as caught:
        get_provider("gpt")
    for name in ("anthropic", "local", "ollama", "openai", "scripted"):
        assert name in caught.value.hint
    assert caught.value.details["known"] == known_providers()
    assert caught.value.http_status == 422


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_provider_name(name):
    with pytest.raises(UnknownProviderError):
        get_provider(name)


def test_bad_config_is_invalid_input():
    with pytest.raises(InvalidInputError, match="openai"):
        get_provider("openai", "gpt-4o", colour="blue")


def test_default_model_for_unregistered_name():
    with pytest.raises(InvalidInputError):
        default_model("nobody")


def test_register_provider():
    register_provider("Echo", lambda model, **config: ScriptedProvider(["echo"], model=model))
    try:
        provider = get_provider("echo", "e1")
        assert isinstance(provider, ScriptedProvider)
        assert provider.model == "e1"
        assert "echo" in known_providers()
    finally:
        registry._providers.pop("echo")


class TestDefaultProvider:
    def test_no_key_means_local(self, no_keys):
        assert default_provider_name() == "local"

    def test_anthropic_key_first(self, no_keys, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-o")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-a")
        assert default_provider_name() == "anthropic"

    def test_openai_key(self, no_keys, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-o")
        assert default_provider_name() == "openai"

    def test_blank_key_counts_as_none(self, no_keys, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "  ")
        assert default_provider_name() == "local"

    def test_configured_default(self, monkeypatch):
        monkeypatch.setattr(registry, "configured_value", {"default_provider": "Ollama"}.get)
        assert default_provider_name() == "ollama"

    def test_configured_default_must_exist(self, monkeypatch):
        monkeypatch.setattr(registry, "configured_value", {"default_provider": "nope"}.get)
        with pytest.raises(UnknownProviderError):
            default_provider_name()


def test_patching_the_client_factory_swaps_the_client(settings_env):
    settings_env(model_requests="any")  # the client is built, never called
    fake_client = MagicMock(name="AsyncAnthropic")
    with patch("gathering.llm.anthropic_client", return_value=fake_client) as factory:
        provider = AnthropicProvider(api_key="sk-ant")
        assert provider.client is fake_client
    factory.assert_called_once_with(api_key="sk-ant", base_url=None, timeout=provider.timeout)


def test_real_client_factories_build_sdk_clients_without_network(settings_env):
    settings_env(model_requests="any")  # clients for the real endpoints are built, not called
    from anthropic import AsyncAnthropic
    from ollama import AsyncClient
    from openai import AsyncOpenAI

    assert isinstance(AnthropicProvider(api_key="k").client, AsyncAnthropic)
    openai_client = OpenAIProvider(api_key="k").client
    assert isinstance(openai_client, AsyncOpenAI)
    assert openai_client.max_retries == 0
    assert isinstance(OllamaProvider(host="http://127.0.0.1:1").client, AsyncClient)


def test_local_provider_rejects_unknown_model_names():
    with pytest.raises(InvalidInputError, match="smollm2"):
        LocalProvider("llama3.2")
    assert LocalProvider("/models/x.gguf").model_path.name == "x.gguf"

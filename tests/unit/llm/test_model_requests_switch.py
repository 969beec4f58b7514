"""GATHERING_MODEL_REQUESTS=loopback, on in this suite: a provider that would call a model
server off this machine refuses to, loudly, before any request leaves."""

from __future__ import annotations

import pytest

from gathering.config import get_settings
from gathering.errors import ConfigurationError
from gathering.llm import Message
from gathering.llm.anthropic import AnthropicProvider
from gathering.llm.common import ensure_model_requests_allowed
from gathering.llm.ollama import OllamaProvider
from gathering.llm.openai import OpenAIProvider


def test_the_suite_runs_with_the_switch_on():
    assert get_settings().model_requests == "loopback"


async def test_a_provider_left_on_its_real_endpoint_is_refused(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    provider = AnthropicProvider(api_key="sk-ant-not-real")
    with pytest.raises(ConfigurationError) as refused:
        await provider.generate([Message.user("hello")])
    assert "refuses anthropic at 'api.anthropic.com'" in refused.value.message
    assert "llm_stub_env" in (refused.value.hint or "")


@pytest.mark.parametrize(
    "provider",
    [
        OpenAIProvider(api_key="k", base_url="http://10.1.2.3:8000/v1"),
        OpenAIProvider(api_key="k", base_url="https://api.openai.com/v1"),
        OllamaProvider(host="http://ollama.example:11434"),
    ],
    ids=["openai-compatible-lan", "openai", "ollama-remote"],
)
def test_every_remote_endpoint_is_refused(provider):
    with pytest.raises(ConfigurationError, match="only model servers on this machine"):
        ensure_model_requests_allowed(provider.provider_name, provider.endpoint())


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:11434", "http://localhost:8000/v1", "http://[::1]:1", "127.0.0.1:9"]
)
def test_loopback_endpoints_pass(url):
    ensure_model_requests_allowed("openai", url)


def test_any_lets_every_endpoint_through(settings_env):
    settings_env(model_requests="any")
    ensure_model_requests_allowed("anthropic", "https://api.anthropic.com")

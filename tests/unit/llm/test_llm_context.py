"""Context windows and token counting on every provider (no model loaded, no network)."""

from __future__ import annotations

import math

import pytest

from gathering.config import get_settings
from gathering.errors import InvalidInputError
from gathering.llm import (
    AnthropicProvider,
    LLMProvider,
    LocalProvider,
    Message,
    OllamaProvider,
    OpenAIProvider,
    RetryPolicy,
    ScriptedProvider,
    default_context_window,
    estimate_tokens,
    get_provider,
)
from gathering.llm.context_windows import FALLBACK_CONTEXT_WINDOW
from gathering.llm.token_estimate import MESSAGE_FRAMING_TOKENS


@pytest.mark.parametrize(
    ("provider", "model", "window"),
    [
        ("anthropic", "claude-sonnet-5-5", 200_000),
        ("anthropic", "claude-3-5-haiku-20241022", 200_000),
        ("openai", "gpt-4o", 128_000),
        ("openai", "gpt-4o-mini-2024-07-18", 128_000),
        ("openai", "gpt-4.1-nano", 1_047_576),
        ("openai", "gpt-5-mini", 400_000),
        ("openai", "o1", 200_000),
        ("openai", "o1-mini", 128_000),
        ("openai", "o3-mini", 200_000),
        ("openai", "o4-mini", 200_000),
        ("openai", "deepseek-chat", FALLBACK_CONTEXT_WINDOW),
        ("ollama", "llama3.2", 4_096),
        ("scripted", "scripted", 128_000),
        ("someone-else", "any", FALLBACK_CONTEXT_WINDOW),
    ],
)
def test_table_of_context_windows(provider, model, window):
    assert default_context_window(provider, model) == window


def test_fallback_is_8k():
    assert FALLBACK_CONTEXT_WINDOW == 8_192


@pytest.mark.parametrize(
    ("provider", "window"),
    [
        (AnthropicProvider("claude-opus-5", api_key="k"), 200_000),
        (OpenAIProvider("gpt-4o", api_key="k"), 128_000),
        (OpenAIProvider("qwen2.5-coder", base_url="http://127.0.0.1:9/v1"), 8_192),
        (OllamaProvider("llama3.2"), 4_096),
        (ScriptedProvider(), 128_000),
    ],
)
def test_providers_report_their_window(provider, window):
    assert provider.context_window == window


def test_context_window_argument_wins(no_keys):
    assert OpenAIProvider("my-model", context_window=32_768).context_window == 32_768
    assert ScriptedProvider(context_window=1_000).context_window == 1_000
    assert get_provider("anthropic", context_window=50_000).context_window == 50_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, "8k", True])
def test_context_window_must_be_a_positive_integer(bad):
    with pytest.raises(InvalidInputError, match="context_window"):
        ScriptedProvider(context_window=bad)


class TestLocalWindow:
    def test_default_is_the_local_context_setting(self, monkeypatch):
        monkeypatch.delenv("GATHERING_LOCAL_CONTEXT", raising=False)
        get_settings.cache_clear()
        try:
            provider = LocalProvider()
            assert provider.context_window == provider.n_ctx == 8192
        finally:
            get_settings.cache_clear()

    def test_setting_changes_it(self, monkeypatch):
        monkeypatch.setenv("GATHERING_LOCAL_CONTEXT", "4096")
        get_settings.cache_clear()
        try:
            assert LocalProvider().context_window == 4096
        finally:
            get_settings.cache_clear()

    def test_n_ctx_and_context_window_are_one_thing(self):
        assert LocalProvider(n_ctx=1024).context_window == 1024
        assert LocalProvider(context_window=2048).n_ctx == 2048
        with pytest.raises(InvalidInputError, match="n_ctx"):
            LocalProvider(n_ctx=1024, context_window=2048)


class TestEstimate:
    @pytest.mark.parametrize("text", ["", "a", "abcd", "abcde", "word " * 100, "é" * 9])
    def test_characters_over_four_rounded_up_plus_framing(self, text):
        assert estimate_tokens(text) == math.ceil(len(text) / 4) + MESSAGE_FRAMING_TOKENS

    async def test_providers_without_a_tokenizer_count_the_estimate(self, no_keys):
        texts = ["Hello, world!", "", "x" * 4001]
        for provider in (ScriptedProvider(), AnthropicProvider(), OllamaProvider()):
            assert await provider.count_tokens(texts) == [estimate_tokens(t) for t in texts]
        assert await ScriptedProvider().count_tokens([]) == []

    @pytest.mark.parametrize("bad", ["one string", [1, 2], [b"bytes"]])
    async def test_count_tokens_takes_a_list_of_strings(self, bad):
        with pytest.raises(InvalidInputError, match="count_tokens"):
            await ScriptedProvider().count_tokens(bad)


def test_every_provider_class_satisfies_the_protocol(no_keys):
    for name in ("anthropic", "openai", "ollama", "local", "scripted"):
        provider = get_provider(name)
        assert isinstance(provider, LLMProvider)
        assert provider.context_window > 0


async def test_ollama_is_told_an_explicit_window(stub, recorded):
    stub.add_json(recorded.json("ollama_chat.json"))
    stub.add_json(recorded.json("ollama_chat.json"))
    retry = RetryPolicy(max_attempts=1)

    await OllamaProvider(host=stub.url, context_window=16_384, retry=retry).generate(
        [Message.user("Hi")]
    )
    assert stub.last.json["options"]["num_ctx"] == 16_384

    await OllamaProvider(host=stub.url, retry=retry).generate([Message.user("Hi")])
    assert "num_ctx" not in stub.last.json["options"]

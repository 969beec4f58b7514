"""Providers given `client=`: a real SDK client built by the test, pointed at the stub server,
is used as-is (no key looked up, nothing rebuilt), for generate and for stream."""

from __future__ import annotations

import asyncio

import pytest
from anthropic import AsyncAnthropic
from ollama import AsyncClient
from openai import AsyncOpenAI

from gathering.errors import InvalidInputError
from gathering.llm import (
    AnthropicProvider,
    Message,
    OllamaEmbeddingProvider,
    OllamaProvider,
    OpenAIEmbeddingProvider,
    OpenAIProvider,
    RetryPolicy,
    StreamDone,
    TextDelta,
    get_provider,
)

ONCE = RetryPolicy(max_attempts=1)


def anthropic_client(stub) -> AsyncAnthropic:
    return AsyncAnthropic(api_key="sk-ant-dummy", base_url=stub.url, max_retries=0)


def openai_client(stub) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-dummy", base_url=f"{stub.url}/v1", max_retries=0)


def ollama_client(stub) -> AsyncClient:
    return AsyncClient(host=stub.url)


CASES = [
    ("anthropic", "claude-sonnet-5-5", anthropic_client, "/v1/messages"),
    ("openai", "gpt-4o", openai_client, "/v1/chat/completions"),
    ("ollama", "llama3.2", ollama_client, "/api/chat"),
]


@pytest.mark.parametrize(("name", "model", "build", "path"), CASES)
async def test_generate_goes_through_the_injected_client(stub, no_keys, name, model, build, path):
    client = build(stub)
    provider = get_provider(name, model, client=client, retry=ONCE)

    completion = await provider.generate([Message.user("Hello there")])

    assert completion.text == "Echo: Hello there"
    assert provider.client is client
    [request] = stub.requests
    body = request.json
    assert request.path == path
    assert body["model"] == model
    assert body["messages"][-1]["role"] == "user"


@pytest.mark.parametrize(("name", "model", "build", "path"), CASES)
async def test_stream_goes_through_the_injected_client(stub, no_keys, name, model, build, path):
    client = build(stub)
    provider = get_provider(name, model, client=client, retry=ONCE)

    events = [event async for event in provider.stream([Message.user("Stream me")])]

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: Stream me"
    assert isinstance(events[-1], StreamDone)
    assert [request.path for request in stub.requests] == [path]
    assert stub.requests[0].json["stream"] is True


async def test_an_injected_client_needs_no_key(stub, no_keys):
    provider = AnthropicProvider(client=anthropic_client(stub), retry=ONCE)

    completion = await provider.generate([Message.user("Hi")])

    assert completion.text == "Echo: Hi"


async def test_an_injected_client_is_not_rebuilt_in_another_event_loop(stub, no_keys):
    client = openai_client(stub)
    provider = OpenAIProvider("gpt-4o", client=client, retry=ONCE)
    seen = []

    def in_a_new_loop() -> str:
        async def call() -> str:
            seen.append(provider.client)
            return (await provider.generate([Message.user("Hi")])).text

        return asyncio.run(call())

    # Only the first loop may use the client: its connection pool belongs to that loop.
    assert await asyncio.to_thread(in_a_new_loop) == "Echo: Hi"
    assert provider.client is client
    assert seen == [client]


def test_an_injected_openai_client_decides_the_server(stub):
    compatible = OpenAIProvider(client=openai_client(stub))
    assert compatible.base_url == f"{stub.url}/v1"
    assert OpenAIProvider(client=AsyncOpenAI(api_key="k")).base_url is None


async def test_openai_compatible_client_gets_max_tokens(stub, no_keys):
    provider = OpenAIProvider("gpt-4o", client=openai_client(stub), retry=ONCE)

    await provider.generate([Message.user("Hi")], max_tokens=7)

    body = stub.last.json
    assert body["max_tokens"] == 7
    assert "max_completion_tokens" not in body


async def test_embedding_providers_use_the_injected_client(stub, no_keys):
    stub.add_json(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
    )
    stub.add_json({"model": "nomic-embed-text", "embeddings": [[0.25, 0.75]]})
    openai = AsyncOpenAI(api_key="sk-dummy", base_url=f"{stub.url}/v1", max_retries=0)

    assert await OpenAIEmbeddingProvider(client=openai).embed(["a"]) == [[0.5, 0.5]]
    assert await OllamaEmbeddingProvider(client=AsyncClient(host=stub.url)).embed(["b"]) == [
        [0.25, 0.75]
    ]
    assert [request.path for request in stub.requests] == ["/v1/embeddings", "/api/embed"]


def test_local_provider_takes_no_client():
    with pytest.raises(InvalidInputError, match="local"):
        get_provider("local", client=object())
    assert isinstance(get_provider("ollama", client=AsyncClient()), OllamaProvider)

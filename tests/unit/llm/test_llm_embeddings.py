"""Embedding providers: OpenAI and Ollama at the HTTP wire, the local one with the real model."""

from __future__ import annotations

import math

import pytest

from gathering.errors import (
    InvalidInputError,
    LLMError,
    ProviderAuthenticationError,
    ProviderUnavailableError,
    UnknownProviderError,
)
from gathering.llm import (
    EmbeddingProvider,
    LocalEmbeddingProvider,
    OllamaEmbeddingProvider,
    OpenAIEmbeddingProvider,
    RetryPolicy,
    get_embedding_provider,
)

FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.001)


def openai_embeddings(vectors: list[list[float]], model: str = "text-embedding-3-small") -> dict:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector}
            for index, vector in reversed(list(enumerate(vectors)))
        ],
        "model": model,
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }


async def test_openai_embeddings(stub):
    stub.add_json(openai_embeddings([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]))
    provider = OpenAIEmbeddingProvider(
        api_key="sk-test", base_url=f"{stub.url}/v1", dimensions=3, retry=FAST
    )

    vectors = await provider.embed(["hello", "world"])

    assert vectors == [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    assert await provider.dimension() == 3
    assert isinstance(provider, EmbeddingProvider)
    assert (provider.name, provider.model) == ("openai", "text-embedding-3-small")
    request = stub.last
    assert request.path == "/v1/embeddings"
    assert request.json == {
        "input": ["hello", "world"],
        "model": "text-embedding-3-small",
        "encoding_format": "float",
        "dimensions": 3,
    }


async def test_openai_known_dimension_needs_no_call(stub):
    provider = OpenAIEmbeddingProvider("text-embedding-3-large", api_key="k")
    assert await provider.dimension() == 3072
    assert stub.requests == []


async def test_openai_embedding_errors_are_mapped(stub):
    stub.add_json(
        {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}}, status=401
    )
    provider = OpenAIEmbeddingProvider(api_key="bad", base_url=f"{stub.url}/v1", retry=FAST)

    with pytest.raises(ProviderAuthenticationError):
        await provider.embed(["x"])


async def test_openai_embedding_retries_server_errors(stub):
    stub.add_json({"error": {"message": "overloaded", "type": "server_error"}}, status=503)
    stub.add_json(openai_embeddings([[1.0, 0.0]], model="custom-embedder"))
    provider = OpenAIEmbeddingProvider(
        "custom-embedder", api_key="k", base_url=f"{stub.url}/v1", retry=FAST
    )

    assert await provider.embed(["x"]) == [[1.0, 0.0]]
    assert await provider.dimension() == 2
    assert len(stub.requests) == 2


async def test_ollama_embeddings(stub):
    stub.add_json(
        {
            "model": "nomic-embed-text",
            "embeddings": [[0.01, -0.02], [0.03, 0.04]],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": 8,
        }
    )
    provider = OllamaEmbeddingProvider(host=stub.url, retry=FAST)

    vectors = await provider.embed(["a", "b"])

    assert vectors == [[0.01, -0.02], [0.03, 0.04]]
    assert stub.last.path == "/api/embed"
    assert stub.last.json == {"model": "nomic-embed-text", "input": ["a", "b"]}
    assert await provider.dimension() == 768


async def test_unknown_dimension_is_probed_once(stub):
    stub.add_json({"model": "my-embedder", "embeddings": [[0.5, 0.5, 0.5, 0.5]]})
    provider = OllamaEmbeddingProvider("my-embedder", host=stub.url)

    assert await provider.dimension() == 4
    assert await provider.dimension() == 4
    assert len(stub.requests) == 1


async def test_wrong_vector_count_is_an_error(stub):
    stub.add_json({"model": "m", "embeddings": [[0.1]]})
    provider = OllamaEmbeddingProvider("m", host=stub.url)

    with pytest.raises(LLMError, match="1 vectors for 2 texts"):
        await provider.embed(["a", "b"])


async def test_ollama_embedding_unreachable():
    provider = OllamaEmbeddingProvider(host="http://127.0.0.1:1", retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ProviderUnavailableError):
        await provider.embed(["a"])


async def test_input_checks():
    provider = OllamaEmbeddingProvider(host="http://127.0.0.1:1")
    assert await provider.embed([]) == []
    with pytest.raises(InvalidInputError):
        await provider.embed("not a list")
    with pytest.raises(InvalidInputError):
        await provider.embed(["ok", 3])  # type: ignore[list-item]


def test_registry():
    assert isinstance(get_embedding_provider("openai", api_key="k"), OpenAIEmbeddingProvider)
    assert get_embedding_provider("ollama").model == "nomic-embed-text"
    assert isinstance(get_embedding_provider("local"), LocalEmbeddingProvider)
    with pytest.raises(UnknownProviderError, match="embedding"):
        get_embedding_provider("anthropic")
    with pytest.raises(InvalidInputError):
        get_embedding_provider("ollama", colour="red")


@pytest.mark.slow
async def test_local_embeddings_with_the_shipped_model():
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: pip install 'gathering[local]'"
    )
    provider = LocalEmbeddingProvider()

    vectors = await provider.embed(["The cat sat on the mat.", "A kitten rests on a rug."])

    assert await provider.dimension() == 576
    assert [len(v) for v in vectors] == [576, 576]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)

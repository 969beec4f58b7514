"""Text embeddings: the `EmbeddingProvider` protocol and its OpenAI, Ollama and local versions.

The local one runs the bundled SmolLM2 GGUF through llama.cpp in embedding mode (mean
pooling, unit-length vectors): nothing to download, but a small chat model's embeddings are
coarser than a dedicated embedding model's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Unpack, runtime_checkable

from gathering.errors import InvalidInputError, LLMError
from gathering.llm.base import BaseProvider
from gathering.llm.common import ProviderOptions
from gathering.llm.local import DEFAULT_THREADS, LocalProvider
from gathering.llm.ollama import OllamaProvider
from gathering.llm.openai import OpenAIProvider
from gathering.llm.retry import RetryPolicy, retry_async

if TYPE_CHECKING:
    from llama_cpp import Llama
    from ollama import AsyncClient
    from openai import AsyncOpenAI

OPENAI_DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
OLLAMA_DEFAULT_EMBEDDING_MODEL = "nomic-embed-text"
LOCAL_EMBEDDING_MODEL = "smollm2-135m-instruct"
# Embedding inputs are chunks, and llama.cpp embeds a whole input in one batch of n_ctx
# tokens: a smaller context than chat's keeps that batch's memory small.
LOCAL_EMBEDDING_CONTEXT = 2048

KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
    "bge-m3": 1024,
    "snowflake-arctic-embed": 1024,
}


SINGLE_ATTEMPT = RetryPolicy(max_attempts=1)


@runtime_checkable
class EmbeddingProvider(Protocol):
    """Anything that turns texts into vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """The provider's registry name."""
        ...

    @property
    def model(self) -> str:
        """The embedding model."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...

    async def dimension(self) -> int:
        """The length of every vector (learnt with one probe call when not known up front)."""
        ...


class BaseEmbeddingProvider(ABC):
    """Input checks, retries and dimension tracking shared by the embedding providers."""

    def __init__(self, provider: BaseProvider, dimension: int | None) -> None:
        self._provider = provider
        self._dimension = dimension or KNOWN_DIMENSIONS.get(provider.model.split(":")[0])

    @property
    def name(self) -> str:
        """The provider's registry name."""
        return self._provider.name

    @property
    def model(self) -> str:
        """The embedding model."""
        return self._provider.model

    async def embed(self, texts: Sequence[str], *, retry: bool = True) -> list[list[float]]:
        """One vector per text, in order; transient failures are retried unless `retry` is
        False (a query on a hot path that has a fallback)."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise InvalidInputError("embed() takes a list of strings")
        if not texts:
            return []
        batch = list(texts)

        async def attempt() -> list[list[float]]:
            return await self._provider._translated(self._embed(batch))

        policy = self._provider.retry if retry else SINGLE_ATTEMPT
        vectors = await retry_async(attempt, policy, what=f"{self.name} embed")
        if len(vectors) != len(batch):
            raise LLMError(f"{self.name} returned {len(vectors)} vectors for {len(batch)} texts")
        self._dimension = self._dimension or len(vectors[0])
        return vectors

    async def dimension(self) -> int:
        """The vectors' length."""
        if self._dimension is None:
            await self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    @abstractmethod
    async def _embed(self, texts: list[str]) -> list[list[float]]:
        """One attempt at embedding `texts`."""


class OpenAIEmbeddingProvider(BaseEmbeddingProvider):
    """OpenAI's embeddings endpoint, or that of an OpenAI-compatible server (`base_url`)."""

    def __init__(
        self,
        model: str = OPENAI_DEFAULT_EMBEDDING_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        dimensions: int | None = None,
        client: AsyncOpenAI | None = None,
        **options: Unpack[ProviderOptions],
    ) -> None:
        self._openai = OpenAIProvider(
            model, api_key=api_key, base_url=base_url, client=client, **options
        )
        self._requested_dimensions = dimensions
        super().__init__(self._openai, dimensions)

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        extra: dict[str, Any] = {}
        if self._requested_dimensions:
            extra["dimensions"] = self._requested_dimensions
        reply = await (await self._openai.loop_client()).embeddings.create(
            model=self.model,
            input=texts,
            encoding_format="float",
            timeout=self._openai.timeout,
            **extra,
        )
        ordered = sorted(reply.data, key=lambda item: item.index)
        return [list(item.embedding) for item in ordered]


class OllamaEmbeddingProvider(BaseEmbeddingProvider):
    """An embedding model served by Ollama (`/api/embed`)."""

    def __init__(
        self,
        model: str = OLLAMA_DEFAULT_EMBEDDING_MODEL,
        *,
        host: str | None = None,
        dimensions: int | None = None,
        client: AsyncClient | None = None,
        **options: Unpack[ProviderOptions],
    ) -> None:
        self._ollama = OllamaProvider(model, host=host, client=client, **options)
        super().__init__(self._ollama, dimensions)

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        reply = await (await self._ollama.loop_client()).embed(model=self.model, input=texts)
        return [list(vector) for vector in reply.embeddings]


class LocalEmbeddingProvider(BaseEmbeddingProvider):
    """Embeddings from the bundled SmolLM2 model (or another GGUF file), run in-process on
    the embedding model's own thread, behind the same bounded queue as local chat."""

    def __init__(
        self,
        model: str = LOCAL_EMBEDDING_MODEL,
        *,
        model_path: str | Path | None = None,
        n_ctx: int = LOCAL_EMBEDDING_CONTEXT,
        n_threads: int = DEFAULT_THREADS,
        **options: Unpack[ProviderOptions],
    ) -> None:
        self._local = LocalProvider(
            model, model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, **options
        )
        super().__init__(self._local, None)

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        def embed(llama: Llama) -> list[list[float]]:
            self._dimension = llama.n_embd()
            vectors = llama.embed(texts, normalize=True, truncate=True)
            return [[float(x) for x in vector] for vector in vectors]

        model = await self._local.local_model_off_loop(embedding=True)
        return await model.run(embed)

"""One adapter from any model-like object to the `LLMProvider` protocol, so the turn loop only
ever sees providers.

It wraps an agent's `llm=` object and the module-level `gathering.agents.llm_client` when a test
or a user replaced it: their `generate()` may be sync or async and may return a `str`, a
`Completion` or an Anthropic-style message with content blocks. A stream from such an object
is its whole reply as one delta.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from typing import Any

from gathering.errors import InvalidInputError
from gathering.llm import (
    BaseProvider,
    Completion,
    LLMProvider,
    Message,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    estimate_tokens,
)
from gathering.llm.base import DEFAULT_MAX_TOKENS

DEFAULT_CONTEXT_WINDOW = 128_000


def as_completion(reply: Any) -> Completion:
    """Read a `generate()` reply: a `Completion`, a `str`, or an Anthropic-style message
    whose `content` blocks carry `.text` (and `tool_use` blocks)."""
    if isinstance(reply, Completion):
        return reply
    if isinstance(reply, str):
        return Completion(text=reply)
    content = getattr(reply, "content", None)
    if isinstance(content, str):
        return Completion(text=content)
    if isinstance(content, Sequence):
        texts, calls = [], []
        for block in content:
            if getattr(block, "type", None) == "tool_use":
                calls.append(
                    ToolCall(
                        id=str(block.id), name=str(block.name), arguments=dict(block.input or {})
                    )
                )
            elif isinstance(getattr(block, "text", None), str):
                texts.append(block.text)
        return Completion(
            text="".join(texts),
            tool_calls=tuple(calls),
            stop_reason="tool_calls" if calls else "end",
        )
    raise InvalidInputError(
        f"the LLM client returned {type(reply).__name__}, which is not a reply",
        hint="return a str, a gathering.llm.Completion, or a message with content blocks",
    )


def is_provider(value: Any) -> bool:
    """Whether `value` is a real provider (ours, or a class with async generate and stream)."""
    if isinstance(value, BaseProvider):
        return True
    cls = type(value)
    return inspect.iscoroutinefunction(getattr(cls, "generate", None)) and (
        inspect.isasyncgenfunction(getattr(cls, "stream", None))
    )


class ClientProvider:
    """An `LLMProvider` over an object with a `generate()` method.

    With `provider` (the `llm_client` case) the client is called as
    `client.generate(messages, tools=..., provider=provider, **options)`, else as
    `client.generate(messages, tools=..., **options)`.
    """

    def __init__(
        self, client: Any, *, name: str, model: str, provider: LLMProvider | None = None
    ) -> None:
        self.client = client
        self._name = name
        self._model = model
        self._provider = provider

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    @property
    def context_window(self) -> int:
        """The wrapped provider's window, else a large default."""
        return int(getattr(self._provider, "context_window", DEFAULT_CONTEXT_WINDOW))

    @property
    def max_tokens(self) -> int:
        """The reply budget reserved in the window."""
        defaults = getattr(self._provider, "defaults", None)
        return int(getattr(defaults, "max_tokens", DEFAULT_MAX_TOKENS))

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of `texts` (the wrapped provider's, else an estimate)."""
        if self._provider is not None:
            return await self._provider.count_tokens(texts)
        return [estimate_tokens(text) for text in texts]

    async def generate(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None, **options: Any
    ) -> Completion:
        if self._provider is not None:
            reply = self.client.generate(messages, tools=tools, provider=self._provider, **options)
        else:
            reply = self.client.generate(messages, tools=tools, **options)
        if inspect.isawaitable(reply):
            reply = await reply
        return as_completion(reply)

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None, **options: Any
    ) -> AsyncIterator[StreamEvent]:
        completion = await self.generate(messages, tools, **options)
        if completion.text:
            yield TextDelta(completion.text)
        yield StreamDone(completion)

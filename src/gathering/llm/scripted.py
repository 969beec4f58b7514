"""`ScriptedProvider`: a provider that answers from a script, for tests, demos and docs.

It speaks no wire format; it goes through the same option checks, retries, timing and
accounting as every other provider, and records each call it receives.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from gathering.errors import LLMError
from gathering.llm.base import BaseProvider, GenerationOptions, Request, StreamAssembler
from gathering.llm.common import ProviderOptions
from gathering.llm.retry import RetryPolicy
from gathering.llm.types import (
    Completion,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
    new_call_id,
)

ScriptedReply = str | ToolCall | Sequence[ToolCall] | Completion | BaseException
"""Text, one or more tool calls, a whole `Completion`, or an exception to raise."""

ReplyFunction = Callable[[Sequence[Message]], ScriptedReply | Awaitable[ScriptedReply]]

DEFAULT_MODEL = "scripted"

_TOKEN = re.compile(r"\S+\s*|\s+")


def tool_call(
    name: str, arguments: Mapping[str, Any] | None = None, *, call_id: str | None = None
) -> ToolCall:
    """A tool call for a script, with a fresh id unless one is given."""
    return ToolCall(id=call_id or new_call_id(), name=name, arguments=dict(arguments or {}))


def word_count(text: str) -> int:
    """A rough token count (words and whitespace runs), used for scripted usage."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One call the provider received."""

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    options: GenerationOptions
    streamed: bool


class ScriptedProvider(BaseProvider):
    """Replies from a list (one per call, in order) or from a function of the messages.

    >>> provider = ScriptedProvider(["Hello!", tool_call("search", {"q": "cats"}), "Done."])

    Every call is appended to `calls`. Unless `retry=` is given, nothing is retried, so a
    scripted exception reaches the caller at once. `context_window=` sets the window it
    reports (default 128_000); `count_tokens` is the estimate every provider has.
    """

    provider_name = "scripted"

    def __init__(
        self,
        replies: Sequence[ScriptedReply] | ReplyFunction = (),
        model: str = DEFAULT_MODEL,
        *,
        delay: float = 0.0,
        **options: Unpack[ProviderOptions],
    ) -> None:
        options.setdefault("retry", RetryPolicy(max_attempts=1))
        super().__init__(model, **options)
        if callable(replies):
            self._function: ReplyFunction | None = replies
            self._replies: list[ScriptedReply] = []
        else:
            self._function = None
            self._replies = list(replies)
        self._delay = delay
        self._used = 0
        self.calls: list[ScriptedCall] = []

    @property
    def last_call(self) -> ScriptedCall:
        """The most recent call; raises `LookupError` before the first."""
        if not self.calls:
            raise LookupError("the scripted provider has not been called")
        return self.calls[-1]

    @property
    def remaining(self) -> int:
        """Replies not used yet (0 for a reply function)."""
        return len(self._replies) - self._used

    def add_replies(self, *replies: ScriptedReply) -> None:
        """Append replies to the script."""
        self._replies.extend(replies)

    async def _next_reply(self, request: Request, *, streamed: bool) -> Completion:
        self.calls.append(ScriptedCall(request.messages, request.tools, request.options, streamed))
        if self._delay:
            await asyncio.sleep(self._delay)
        if self._function is not None:
            reply = self._function(request.messages)
            if inspect.isawaitable(reply):
                reply = await reply
        else:
            if self._used >= len(self._replies):
                raise LLMError(
                    f"the scripted provider has no reply left for call #{len(self.calls)}",
                    hint="give ScriptedProvider more replies, or a function",
                )
            reply = self._replies[self._used]
            self._used += 1
        return self._as_completion(reply, request)

    def _as_completion(self, reply: Any, request: Request) -> Completion:
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        input_tokens = sum(
            word_count(message.content)
            + sum(word_count(result.content) for result in message.tool_results)
            for message in request.messages
        )
        if isinstance(reply, str):
            return Completion(
                text=reply,
                usage=Usage(input_tokens, word_count(reply)),
                model=self.model,
            )
        calls = (reply,) if isinstance(reply, ToolCall) else tuple(reply)
        if not calls or not all(isinstance(call, ToolCall) for call in calls):
            raise TypeError(f"not a scripted reply: {reply!r}")
        output_tokens = sum(1 + len(call.arguments) for call in calls)
        return Completion(
            text="",
            tool_calls=calls,
            stop_reason="tool_calls",
            usage=Usage(input_tokens, output_tokens),
            model=self.model,
        )

    async def _complete(self, request: Request) -> Completion:
        return await self._next_reply(request, streamed=False)

    async def _stream_events(
        self, request: Request, assembler: StreamAssembler
    ) -> AsyncGenerator[StreamEvent, None]:
        completion = await self._next_reply(request, streamed=True)
        assembler.model = completion.model or self.model
        assembler.stop_reason = completion.stop_reason
        for token in _TOKEN.findall(completion.text):
            yield TextDelta(token)
            await asyncio.sleep(0)
        for index, call in enumerate(completion.tool_calls):
            arguments = call.invalid_arguments or json.dumps(dict(call.arguments))
            yield ToolCallDelta(index, id=call.id, name=call.name, arguments_delta=arguments)
        yield UsageEvent(completion.usage)

    def _translate_error(self, exc: Exception) -> LLMError | None:
        return None


def _echo(messages: Sequence[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def echo_provider(
    model: str = DEFAULT_MODEL, **options: Unpack[ProviderOptions]
) -> ScriptedProvider:
    """The scripted provider as the registry builds it (an agent made by the API or the CLI):
    with no script to follow, it answers each turn with the user's last message."""
    return ScriptedProvider(_echo, model, **options)

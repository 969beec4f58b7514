"""Claude through the official `anthropic` async client (Messages API)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from gathering.errors import LLMError, ProviderTimeoutError, ProviderUnavailableError
from gathering.llm.base import BaseProvider, Request, StreamAssembler
from gathering.llm.common import ProviderOptions, configured_secret
from gathering.llm.error_mapping import error_from_status, missing_key_error
from gathering.llm.types import (
    Completion,
    Message,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
)

if TYPE_CHECKING:
    import httpx2
    from anthropic import AsyncAnthropic

ENV_VAR = "ANTHROPIC_API_KEY"
KEY_SETTING = "anthropic_api_key"  # the setting (and variable) its key comes from
ANTHROPIC_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-sonnet-5-5"

_STOP_REASONS: dict[str | None, StopReason] = {
    "end_turn": "end",
    "tool_use": "tool_calls",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filter",
}

# The status an error event in the middle of a stream (sent with HTTP 200) stands for.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def create_anthropic_client(
    *,
    api_key: str,
    base_url: str | None,
    timeout: float,
    http_client: httpx2.AsyncClient | None = None,
) -> AsyncAnthropic:
    """The SDK client `AnthropicProvider` uses; its own retries are off (we retry). With
    `http_client`, its requests go through that client (pinned addresses)."""
    from anthropic import AsyncAnthropic

    return AsyncAnthropic(
        api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http_client
    )


def anthropic_messages(
    messages: Sequence[Message], *, with_tools: bool = True
) -> tuple[str | None, list[dict[str, Any]]]:
    """Neutral messages as Anthropic's `system` prompt and `messages` list.

    Tool results become `tool_result` blocks of a user turn; consecutive turns of one role
    are merged, as the API expects alternating roles. Without tools in the request
    (`with_tools=False`), earlier tool calls and results are told as text: the API refuses
    `tool_use` and `tool_result` blocks in a request that defines no tools.
    """
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system_parts.append(message.content)
            continue
        blocks: list[dict[str, Any]]
        if message.role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": result.call_id,
                    "content": result.content,
                    **({"is_error": True} if result.is_error else {}),
                }
                if with_tools
                else {"type": "text", "text": f"[tool result {result.call_id}] {result.content}"}
                for result in message.tool_results
            ]
        elif message.role == "assistant":
            role = "assistant"
            blocks = [{"type": "text", "text": message.content}] if message.content else []
            blocks.extend(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": dict(call.arguments),
                }
                if with_tools
                else {
                    "type": "text",
                    "text": f"[called tool {call.name} ({call.id}) with "
                    f"{json.dumps(dict(call.arguments), ensure_ascii=False)}]",
                }
                for call in message.tool_calls
            )
        else:
            role = "user"
            blocks = [{"type": "text", "text": message.content}]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    system = "\n\n".join(part for part in system_parts if part) or None
    return system, turns


def anthropic_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Neutral tool specs in Anthropic's `tools` format."""
    return [
        {"name": tool.name, "description": tool.description, "input_schema": dict(tool.parameters)}
        for tool in tools
    ]


def _input_tokens(usage: Any) -> int:
    return int(
        (usage.input_tokens or 0)
        + (getattr(usage, "cache_creation_input_tokens", None) or 0)
        + (getattr(usage, "cache_read_input_tokens", None) or 0)
    )


class AnthropicProvider(BaseProvider):
    """Anthropic's Messages API. Needs `ANTHROPIC_API_KEY` (or `api_key=`) at the first call,
    unless given `client=`: an `anthropic.AsyncAnthropic` built by the caller, used as-is."""

    provider_name = "anthropic"
    _key_setting = KEY_SETTING

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: AsyncAnthropic | None = None,
        **options: Unpack[ProviderOptions],
    ) -> None:
        super().__init__(model, **options)
        self._api_key = api_key
        self._base_url = base_url
        self._inject_client(client)

    @property
    def client(self) -> AsyncAnthropic:
        """The injected SDK client, or one built at first use (raises if no key is set)."""
        return self._client_for_this_loop(self._build_client)

    async def loop_client(self) -> AsyncAnthropic:
        """`client` for a call in the event loop (a new client is built on a worker thread)."""
        return await self._client_built_off_loop(self._build_client)

    def endpoint(self) -> str:
        # The SDK reads ANTHROPIC_BASE_URL itself when no base_url is given.
        return self._base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL

    def _build_client(self) -> AsyncAnthropic:
        api_key = self._api_key or configured_secret(KEY_SETTING)
        if not api_key:
            raise missing_key_error(self.provider_name, ENV_VAR)
        from gathering import llm

        pinned = self._http_client()
        extra = {} if pinned is None else {"http_client": pinned}
        return llm.anthropic_client(
            api_key=api_key, base_url=self._base_url, timeout=self.timeout, **extra
        )

    def _params(self, request: Request) -> dict[str, Any]:
        system, turns = anthropic_messages(request.messages, with_tools=bool(request.tools))
        options = request.options
        params: dict[str, Any] = {
            "model": self.model,
            "messages": turns,
            "max_tokens": options.max_tokens,
            "timeout": self._timeout(options),
        }
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = anthropic_tools(request.tools)
        if options.stop:
            params["stop_sequences"] = list(options.stop)
        extra = dict(options.extra)
        if options.temperature is not None:
            extra.setdefault("temperature", options.temperature)
        if options.top_p is not None:
            extra.setdefault("top_p", options.top_p)
        if extra:
            params["extra_body"] = extra
        return params

    async def _complete(self, request: Request) -> Completion:
        client = await self.loop_client()
        reply = await client.messages.create(**self._params(request))
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in reply.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
        return Completion(
            text="".join(texts),
            tool_calls=tuple(calls),
            stop_reason=_STOP_REASONS.get(reply.stop_reason, "other"),
            usage=Usage(_input_tokens(reply.usage), reply.usage.output_tokens),
            model=reply.model,
        )

    async def _stream_events(
        self, request: Request, assembler: StreamAssembler
    ) -> AsyncGenerator[StreamEvent, None]:
        client = await self.loop_client()
        stream = await client.messages.create(**self._params(request), stream=True)
        tool_index_of_block: dict[int, int] = {}
        input_tokens = output_tokens = 0
        try:
            async for event in stream:
                if event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        yield TextDelta(delta.text)
                    elif delta.type == "input_json_delta" and event.index in tool_index_of_block:
                        yield ToolCallDelta(
                            tool_index_of_block[event.index], arguments_delta=delta.partial_json
                        )
                elif event.type == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        index = len(tool_index_of_block)
                        tool_index_of_block[event.index] = index
                        yield ToolCallDelta(index, id=block.id, name=block.name)
                    elif block.type == "text" and block.text:
                        yield TextDelta(block.text)
                elif event.type == "message_start":
                    assembler.model = event.message.model
                    input_tokens = _input_tokens(event.message.usage)
                    output_tokens = event.message.usage.output_tokens
                elif event.type == "message_delta":
                    assembler.stop_reason = _STOP_REASONS.get(event.delta.stop_reason, "other")
                    output_tokens = event.usage.output_tokens
                    if event.usage.input_tokens is not None:
                        input_tokens = _input_tokens(event.usage)
        finally:
            await stream.close()
        yield UsageEvent(Usage(input_tokens, output_tokens))

    def _translate_error(self, exc: Exception) -> LLMError | None:
        import anthropic

        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderTimeoutError(
                f"anthropic did not answer within {self.timeout:g}s",
                hint="raise the provider's timeout or try again",
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderUnavailableError(f"cannot reach anthropic: {exc}")
        if isinstance(exc, anthropic.APIStatusError):
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            error_type = error.get("type") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            status = exc.status_code
            if status < 400:
                status = _ERROR_TYPE_STATUS.get(str(error_type), 500)
            return error_from_status(
                self.provider_name,
                status,
                str(message or exc.message),
                env_var=ENV_VAR if self._api_key is None else None,  # else: the key given
                headers=exc.response.headers,
                code=error_type,
                model=self.model,
            )
        if isinstance(exc, anthropic.AnthropicError):
            return LLMError(f"anthropic client error: {exc}")
        return None

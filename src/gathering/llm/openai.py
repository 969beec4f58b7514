"""OpenAI, and any OpenAI-compatible server, through the official `openai` async client.

With `base_url` this talks to DeepSeek, Mistral, vLLM, the llama.cpp server, LM Studio and
the like. Such servers often need no key: with a `base_url` a missing key is not an error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from gathering.errors import LLMError, ProviderTimeoutError, ProviderUnavailableError
from gathering.llm.base import BaseProvider, Request, StreamAssembler
from gathering.llm.common import ProviderOptions, configured_secret, configured_value
from gathering.llm.error_mapping import error_from_status, missing_key_error
from gathering.llm.types import (
    Completion,
    Message,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
    parse_tool_arguments,
)

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI

ENV_VAR = "OPENAI_API_KEY"
KEY_SETTING = "openai_api_key"  # the setting (and variable) its key comes from
DEFAULT_MODEL = "gpt-6-luna"
# Sent as the bearer token to OpenAI-compatible servers that need none.
NO_KEY = "not-needed"
OPENAI_URL = "https://api.openai.com/v1"

_STOP_REASONS: dict[str | None, StopReason] = {
    "stop": "end",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "max_tokens",
    "content_filter": "content_filter",
}


def create_openai_client(
    *,
    api_key: str,
    base_url: str | None,
    timeout: float,
    http_client: httpx2.AsyncClient | None = None,
) -> AsyncOpenAI:
    """The SDK client `OpenAIProvider` uses; its own retries are off (we retry). With
    `http_client`, its requests go through that client (pinned addresses)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http_client
    )


def openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages in Chat Completions format: assistant `tool_calls`, and one `tool`
    message per result, linked by `tool_call_id`."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            out.extend(
                {"role": "tool", "tool_call_id": result.call_id, "content": result.content}
                for result in message.tool_results
            )
        elif message.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": message.content or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": call.invalid_arguments
                                if call.invalid_arguments is not None
                                else _json(call.arguments),
                            },
                        }
                        for call in message.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Neutral tool specs in OpenAI's `tools` (function) format."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in tools
    ]


def _json(value: Any) -> str:
    return json.dumps(dict(value), ensure_ascii=False, separators=(",", ":"))


class OpenAIProvider(BaseProvider):
    """OpenAI Chat Completions, or an OpenAI-compatible server given by `base_url`.

    `client=` takes an `openai.AsyncOpenAI` built by the caller, used as-is (its own
    `base_url` then decides where requests go).
    """

    provider_name = "openai"
    _key_setting = KEY_SETTING

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: AsyncOpenAI | None = None,
        **options: Unpack[ProviderOptions],
    ) -> None:
        super().__init__(model, **options)
        self._api_key = api_key
        self._base_url = base_url
        self._inject_client(client)

    @property
    def base_url(self) -> str | None:
        """The server this provider talks to (None: OpenAI itself, or `OPENAI_BASE_URL`);
        with an injected client, that client's."""
        if self._injected_client is not None:
            url = str(self._injected_client.base_url).rstrip("/")
            return None if url == OPENAI_URL else url
        return self._base_url or configured_value("openai_base_url")

    @property
    def client(self) -> AsyncOpenAI:
        """The injected SDK client, or one built at first use (raises if OpenAI itself is
        used without a key)."""
        return self._client_for_this_loop(self._build_client)

    async def loop_client(self) -> AsyncOpenAI:
        """`client` for a call in the event loop (a new client is built on a worker thread)."""
        return await self._client_built_off_loop(self._build_client)

    def endpoint(self) -> str:
        return self.base_url or OPENAI_URL

    def _build_client(self) -> AsyncOpenAI:
        base_url = self.base_url
        api_key = self._api_key or configured_secret(KEY_SETTING)
        if not api_key:
            if base_url is None:
                raise missing_key_error(self.provider_name, ENV_VAR)
            api_key = NO_KEY
        from gathering import llm

        pinned = self._http_client()
        extra = {} if pinned is None else {"http_client": pinned}
        return llm.openai_client(api_key=api_key, base_url=base_url, timeout=self.timeout, **extra)

    def _params(self, request: Request) -> dict[str, Any]:
        options = request.options
        params: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(request.messages),
            "timeout": self._timeout(options),
        }
        # OpenAI's newer models only accept max_completion_tokens; compatible servers
        # generally only know max_tokens.
        if self.base_url is None:
            params["max_completion_tokens"] = options.max_tokens
        else:
            params["max_tokens"] = options.max_tokens
        if request.tools:
            params["tools"] = openai_tools(request.tools)
        if options.temperature is not None:
            params["temperature"] = options.temperature
        if options.top_p is not None:
            params["top_p"] = options.top_p
        if options.stop:
            params["stop"] = list(options.stop)
        if options.seed is not None:
            params["seed"] = options.seed
        if options.extra:
            params["extra_body"] = dict(options.extra)
        return params

    async def _complete(self, request: Request) -> Completion:
        client = await self.loop_client()
        reply = await client.chat.completions.create(**self._params(request))
        if not reply.choices:
            raise ProviderUnavailableError(f"{self.provider_name} returned no choices")
        choice = reply.choices[0]
        calls = tuple(
            parse_tool_arguments(call.id, call.function.name, call.function.arguments)
            for call in choice.message.tool_calls or ()
            if call.type == "function"
        )
        usage = reply.usage
        return Completion(
            text=choice.message.content or "",
            tool_calls=calls,
            stop_reason=_STOP_REASONS.get(choice.finish_reason, "other"),
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            model=reply.model,
        )

    async def _stream_events(
        self, request: Request, assembler: StreamAssembler
    ) -> AsyncGenerator[StreamEvent, None]:
        client = await self.loop_client()
        stream = await client.chat.completions.create(
            **self._params(request), stream=True, stream_options={"include_usage": True}
        )
        usage: Usage | None = None
        try:
            async for chunk in stream:
                if chunk.model:
                    assembler.model = chunk.model
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        yield TextDelta(delta.content)
                    for call in delta.tool_calls or ():
                        function = call.function
                        yield ToolCallDelta(
                            call.index,
                            id=call.id,
                            name=function.name if function else None,
                            arguments_delta=(function.arguments or "") if function else "",
                        )
                    if choice.finish_reason is not None:
                        assembler.stop_reason = _STOP_REASONS.get(choice.finish_reason, "other")
        finally:
            await stream.close()
        if usage is not None:
            yield UsageEvent(usage)

    def _translate_error(self, exc: Exception) -> LLMError | None:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeoutError(
                f"{self.provider_name} did not answer within {self.timeout:g}s",
                hint="raise the provider's timeout or try again",
            )
        if isinstance(exc, openai.APIConnectionError):
            where = self.base_url or "api.openai.com"
            return ProviderUnavailableError(f"cannot reach {where}: {exc}")
        if isinstance(exc, openai.APIStatusError):
            body = exc.body
            error = body.get("error", body) if isinstance(body, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            return error_from_status(
                self.provider_name,
                exc.status_code,
                str(message or exc.message),
                env_var=ENV_VAR if self._api_key is None else None,  # else: the key given
                headers=exc.response.headers,
                code=str(code) if code else None,
                model=self.model,
            )
        if isinstance(exc, openai.APIError):
            # An error object inside an otherwise successful (HTTP 200) stream.
            return ProviderUnavailableError(f"{self.provider_name} stream failed: {exc.message}")
        if isinstance(exc, openai.OpenAIError):
            return LLMError(f"openai client error: {exc}")
        return None

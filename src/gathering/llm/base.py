"""The `LLMProvider` protocol and `BaseProvider`, which gives every provider the same
option checking, error mapping, retries, timing and cost accounting."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

import structlog

from gathering.errors import InvalidInputError, LLMError
from gathering.llm.common import AddressPin, configured_secret, ensure_model_requests_allowed
from gathering.llm.context_windows import default_context_window
from gathering.llm.pricing import Price, price_for
from gathering.llm.retry import RetryPolicy, retry_async
from gathering.llm.token_estimate import estimate_tokens
from gathering.llm.types import (
    Completion,
    Message,
    StopReason,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
    parse_tool_arguments,
)
from gathering.observability import (
    end_llm_span,
    mask_in_logs,
    record_llm_usage,
    start_llm_span,
)


def _our_error_within(exc: BaseException) -> LLMError | None:
    """An `LLMError` of ours that `exc` (an SDK's error) was raised from, if any (only the
    explicit causes: an error raised while another was handled is not wrapping it)."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, LLMError):
            return cause
        cause = cause.__cause__
    return None


def _cause(error: LLMError, exc: BaseException) -> BaseException | None:
    """What `error` is raised from: `exc`, unless `exc` wraps `error` itself (raising it from
    its wrapper would make the chain a loop)."""
    return None if _our_error_within(exc) is error else exc


if TYPE_CHECKING:
    import httpx2

T = TypeVar("T")

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_TOKENS = 1024


@runtime_checkable
class LLMProvider(Protocol):
    """Anything that turns a conversation into a completion."""

    @property
    def name(self) -> str:
        """The provider's registry name ("anthropic", "openai", ...)."""
        ...

    @property
    def model(self) -> str:
        """The model this provider calls."""
        ...

    @property
    def context_window(self) -> int:
        """The most tokens (prompt plus reply) one call can take."""
        ...

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The tokens each text costs as one message of a prompt (framing included)."""
        ...

    async def generate(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None, **options: Any
    ) -> Completion:
        """The model's whole reply to `messages`."""
        ...

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None, **options: Any
    ) -> AsyncIterator[StreamEvent]:
        """The reply as it is produced; the last event is always `StreamDone`."""
        ...


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """The options every provider understands; `extra` is sent as-is in the request body."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    timeout: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KNOWN: ClassVar[frozenset[str]] = frozenset(
        {"max_tokens", "temperature", "top_p", "stop", "seed", "timeout", "extra"}
    )

    def merged(self, options: Mapping[str, Any]) -> GenerationOptions:
        """These options overridden by `options` (a call's keyword arguments), checked."""
        if not options:
            return self
        unknown = options.keys() - self.KNOWN
        if unknown:
            raise InvalidInputError(
                f"unknown generation options: {sorted(unknown)}",
                hint=f"known: {sorted(self.KNOWN)}; provider-specific fields go in extra={{...}}",
            )
        values = dict(options)
        if "stop" in values:
            values["stop"] = _stop_sequences(values["stop"])
        if "extra" in values:
            extra = values["extra"] or {}
            if not isinstance(extra, Mapping):
                raise InvalidInputError(f"extra must be a mapping, got {extra!r}")
            values["extra"] = {**self.extra, **extra}
        result = replace(self, **values)
        result.check()
        return result

    def check(self) -> None:
        """Raise `InvalidInputError` for an option of the wrong type or out of range."""
        if not _is_number(self.max_tokens, integer=True) or self.max_tokens < 1:
            raise InvalidInputError(
                f"max_tokens must be a positive integer, got {self.max_tokens!r}"
            )
        if self.temperature is not None and not (
            _is_number(self.temperature) and 0 <= self.temperature <= 2
        ):
            raise InvalidInputError(f"temperature must be in [0, 2], got {self.temperature!r}")
        if self.top_p is not None and not (_is_number(self.top_p) and 0 < self.top_p <= 1):
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.timeout is not None and not (_is_number(self.timeout) and self.timeout > 0):
            raise InvalidInputError(f"timeout must be positive, got {self.timeout!r}")
        if self.seed is not None and not _is_number(self.seed, integer=True):
            raise InvalidInputError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.extra, Mapping):
            raise InvalidInputError(f"extra must be a mapping, got {self.extra!r}")


def _is_number(value: object, *, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidInputError(f"stop must be a string or a list of strings, got {value!r}")


@dataclass(frozen=True, slots=True)
class Request:
    """A checked generate/stream call, as handed to a provider's wire code."""

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    options: GenerationOptions


def check_texts(texts: Sequence[str], what: str) -> list[str]:
    """`texts` as a list, or `InvalidInputError` unless it is a sequence of strings."""
    if isinstance(texts, (str, bytes)) or not all(isinstance(text, str) for text in texts):
        raise InvalidInputError(f"{what}() takes a list of strings")
    return list(texts)


def check_conversation(
    messages: Sequence[Message], tools: Sequence[ToolSpec] | None
) -> tuple[tuple[Message, ...], tuple[ToolSpec, ...]]:
    """Validate a call's messages and tools; every tool result must answer an earlier call."""
    if isinstance(messages, (str, bytes)) or not messages:
        raise InvalidInputError("messages must be a non-empty list of Message")
    seen_calls: set[str] = set()
    for message in messages:
        if not isinstance(message, Message):
            raise InvalidInputError(f"expected a Message, got {type(message).__name__}")
        for call in message.tool_calls:
            seen_calls.add(call.id)
        for result in message.tool_results:
            if result.call_id not in seen_calls:
                raise InvalidInputError(
                    f"tool result for unknown call id {result.call_id!r}",
                    hint="a tool result must follow the assistant message that made the call",
                )
    tool_tuple = tuple(tools or ())
    names = [tool.name for tool in tool_tuple]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"duplicate tool names in {names}")
    return tuple(messages), tool_tuple


class StreamAssembler:
    """Collects stream events into the `Completion` that ends the stream."""

    __slots__ = ("_calls", "_text", "model", "stop_reason", "usage")

    def __init__(self, model: str) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self.model = model
        self.stop_reason: StopReason = "end"
        self.usage = Usage()

    def add(self, event: StreamEvent) -> None:
        """Take one event into account."""
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.setdefault(event.index, ["", "", ""])
            if event.id:
                call[0] = event.id
            if event.name:
                call[1] = event.name
            call[2] += event.arguments_delta
        elif isinstance(event, UsageEvent):
            self.usage = event.usage

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls assembled so far, in index order."""
        return tuple(
            parse_tool_arguments(call_id, name, arguments)
            for _, (call_id, name, arguments) in sorted(self._calls.items())
        )

    def completion(self) -> Completion:
        """Everything received, as a completion (timing and cost are added by the provider)."""
        return Completion(
            text="".join(self._text),
            tool_calls=self.tool_calls(),
            stop_reason=self.stop_reason,
            usage=self.usage,
            model=self.model,
        )


MAX_REPORTED_MODEL = 200
"""The longest model name a reply may report (`gathering.catalog.models.MAX_MODEL_CHARS`)."""


class BaseProvider(ABC):
    """Shared behaviour of the providers; a subclass only speaks its wire format.

    Subclasses implement `_complete` (one attempt of `generate`), `_stream_events` (one
    attempt of `stream`, feeding stop reason and model into the assembler) and
    `_translate_error` (SDK exception to `LLMError`). A wire provider given `client=` calls
    `_inject_client` and then always uses that SDK client.
    """

    provider_name: ClassVar[str]
    _api_key: str | None = None  # a key given to a wire provider, masked again at each failure
    _key_setting: ClassVar[str | None] = None  # else the setting it reads its key from

    def __init__(
        self,
        model: str,
        *,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        context_window: int | None = None,
        pin: AddressPin | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError(f"{self.provider_name}: model must be a non-empty string")
        if timeout <= 0:
            raise InvalidInputError(f"timeout must be positive, got {timeout!r}")
        if context_window is not None and not (
            _is_number(context_window, integer=True) and context_window > 0
        ):
            raise InvalidInputError(
                f"context_window must be a positive number of tokens, got {context_window!r}"
            )
        self._name = self.provider_name
        self._model = model
        self.retry = RetryPolicy.coerce(retry)
        self.timeout = timeout
        self.defaults = GenerationOptions(max_tokens=max_tokens, temperature=temperature)
        self.defaults.check()
        self._context_window = context_window
        self._sdk_client: Any = None
        self._sdk_client_loop: asyncio.AbstractEventLoop | None = None
        self._injected_client: Any = None
        self._pin = pin  # each request's host resolved and checked just before it is sent

    @property
    def name(self) -> str:
        """The provider's registry name."""
        return self._name

    @property
    def model(self) -> str:
        """The model this provider calls."""
        return self._model

    @property
    def context_window(self) -> int:
        """The most tokens (prompt plus reply) one call can take: `context_window=` when
        given, else the model's published window (`gathering.llm.context_windows`)."""
        if self._context_window is not None:
            return self._context_window
        return default_context_window(self.provider_name, self._model)

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The tokens each text costs as one message of a prompt; without a tokenizer this is
        `estimate_tokens` (characters / 4, rounded up, plus the message framing)."""
        return [estimate_tokens(text) for text in check_texts(texts, "count_tokens")]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self._model!r})"

    async def generate(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None, **options: Any
    ) -> Completion:
        """The model's whole reply, retried on transient errors."""
        request = self._request(messages, tools, options)
        started = time.perf_counter()

        async def attempt() -> Completion:
            return await self._translated(self._complete(request))

        span = start_llm_span("generate", self._name, self._model)
        try:
            completion = self._finish(
                await retry_async(attempt, self.retry, what=f"{self._name} generate"), started
            )
        except BaseException as exc:
            end_llm_span(span, error=exc)
            raise
        end_llm_span(
            span,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
        )
        return completion

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None, **options: Any
    ) -> AsyncIterator[StreamEvent]:
        """The reply as it arrives, ending with `StreamDone`.

        A transient failure is retried only while nothing has been yielded yet.
        """
        request = self._request(messages, tools, options)
        started = time.perf_counter()
        span = start_llm_span("stream", self._name, self._model)
        try:
            async for event in self._stream_attempts(request, started):
                if isinstance(event, StreamDone):
                    usage = event.completion.usage
                    end_llm_span(
                        span, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
                    )
                yield event
        except BaseException as exc:
            end_llm_span(span, error=exc)
            raise

    async def _stream_attempts(
        self, request: Request, started: float
    ) -> AsyncIterator[StreamEvent]:
        attempt = 1
        while True:
            assembler = StreamAssembler(self._model)
            yielded = False
            try:
                async with aclosing(self._stream_events(request, assembler)) as events:
                    async for event in events:
                        assembler.add(event)
                        yielded = True
                        yield event
            except Exception as exc:
                error = exc if isinstance(exc, LLMError) else self._mapped(exc)
                if error is None:
                    raise
                delay = None if yielded else self.retry.delay_before_retry(attempt, error)
                if delay is None:
                    if error is exc:
                        raise
                    raise error from _cause(error, exc)
                log.warning(
                    "llm_retry",
                    what=f"{self._name} stream",
                    attempt=attempt,
                    error=error.code,
                    detail=error.message,
                    wait_seconds=round(delay, 3),
                )
                await asyncio.sleep(delay)
                attempt += 1
                continue
            break
        yield StreamDone(self._finish(assembler.completion(), started))

    def _request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None,
        options: Mapping[str, Any],
    ) -> Request:
        checked_messages, checked_tools = check_conversation(messages, tools)
        return Request(checked_messages, checked_tools, self.defaults.merged(options))

    def _finish(self, completion: Completion, started: float) -> Completion:
        reported = completion.model
        # What the server says answered, when it is a plausible name (a buggy or hostile
        # OpenAI-compatible server may send a number, an object, a megabyte).
        plausible = isinstance(reported, str) and 0 < len(reported) <= MAX_REPORTED_MODEL
        model = reported if plausible else self._model
        price = self._price_of(model)
        finished = replace(
            completion,
            provider=self._name,
            model=model,
            latency=time.perf_counter() - started,
            cost_usd=price.cost(completion.usage) if price is not None else None,
        )
        record_llm_usage(
            self._name,
            # A metric label per name a server reports would grow without end: a name the
            # price data does not know is counted under the model asked for.
            model if model == self._model or price_for(self.provider_name, model) else self._model,
            finished.usage.input_tokens,
            finished.usage.output_tokens,
            finished.cost_usd,
        )
        return finished

    def _price_of(self, reported_model: str) -> Price | None:
        """The price now of the model the provider says answered, else of the one asked for
        (looked up at each call: prices change on their day, some by the hour)."""
        price = price_for(self.provider_name, reported_model)
        if price is None and reported_model != self._model:
            price = price_for(self.provider_name, self._model)
        return price

    async def _translated(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except LLMError:
            raise
        except Exception as exc:
            error = self._mapped(exc)
            if error is None:
                raise
            raise error from _cause(error, exc)

    def _mapped(self, exc: Exception) -> LLMError | None:
        """`_translate_error(exc)`, the key given to this provider masked in the log lines that
        may quote it (a provider's error text can: a traceback logged later). Our own error
        raised inside the SDK (the pinned transport's: an address refused, a name that does not
        resolve) is that error, which the SDK wrapped as a connection error."""
        key = self._api_key
        if key is None and self._key_setting is not None:
            key = configured_secret(self._key_setting)  # the environment's key
        if key:
            mask_in_logs(key)
        ours = _our_error_within(exc)
        return ours if ours is not None else self._translate_error(exc)

    def _http_client(self) -> httpx2.AsyncClient | None:
        """The httpx client an SDK client is built with when requests are pinned (`pin`);
        None: the SDK's own."""
        if self._pin is None:
            return None
        from gathering.llm.pinning import pinned_http_client

        return pinned_http_client(self._pin, self.timeout)

    def _inject_client(self, client: object | None) -> None:
        """Use `client` (an SDK client built by the caller) as-is for every call."""
        self._injected_client = client

    def endpoint(self) -> str:
        """The address the client this provider builds will call (an injected client's own
        address is the caller's business)."""
        raise NotImplementedError(f"{type(self).__name__} builds no network client")

    def _client_for_this_loop(self, build: Callable[[], T]) -> T:
        """The injected SDK client; else the one built by `build` at first use and again in
        each new event loop (an async HTTP client's pooled connections belong to the loop
        that opened them)."""
        if self._injected_client is not None:
            return cast(T, self._injected_client)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if not self._has_client_for(loop):
            self._adopt_client(build(), loop)  # no request yet; a missing key is reported first
        return cast(T, self._sdk_client)

    async def _client_built_off_loop(self, build: Callable[[], T]) -> T:
        """`_client_for_this_loop` for a call in the event loop: a new client is built on a
        worker thread, since building one reads files (the CA bundle, the settings, modules
        the SDK imports lazily)."""
        if self._injected_client is not None:
            return cast(T, self._injected_client)
        loop = asyncio.get_running_loop()
        if not self._has_client_for(loop):
            client = await asyncio.to_thread(build)
            if not self._has_client_for(loop):  # else a call beside this one built it first
                self._adopt_client(client, loop)
        return cast(T, self._sdk_client)

    def _has_client_for(self, loop: asyncio.AbstractEventLoop | None) -> bool:
        return self._sdk_client is not None and (loop is None or loop is self._sdk_client_loop)

    def _adopt_client(self, client: object, loop: asyncio.AbstractEventLoop | None) -> None:
        ensure_model_requests_allowed(self.provider_name, self.endpoint())
        self._sdk_client = client
        self._sdk_client_loop = loop

    def _timeout(self, options: GenerationOptions) -> float:
        return options.timeout if options.timeout is not None else self.timeout

    @abstractmethod
    async def _complete(self, request: Request) -> Completion:
        """One attempt at the whole reply."""

    @abstractmethod
    def _stream_events(
        self, request: Request, assembler: StreamAssembler
    ) -> AsyncGenerator[StreamEvent, None]:
        """One attempt at streaming; sets `assembler.stop_reason` (and `.model`) as learnt."""

    @abstractmethod
    def _translate_error(self, exc: Exception) -> LLMError | None:
        """The `LLMError` for an SDK exception, or None to let it through unchanged."""

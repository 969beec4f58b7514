"""The turn loop: one user message in, model calls and tools until the model answers, every
step stored before the next, under the agent's turn lock.

It needs no long-lived object: `run_turn(agent, text)` works from an `Agent` freshly built from
its stored record on any instance, because the conversation is read from the database at the
start of each turn (the process keeps only a cache that a cheap sequence check validates).

Bounds: each tool call has its tool's timeout (default `GATHERING_TOOL_TIMEOUT`), each model call
`GATHERING_MODEL_CALL_TIMEOUT`, the whole turn `GATHERING_TURN_DEADLINE`; waiting for a busy
agent is bounded by `GATHERING_AGENT_BUSY_WAIT` (then `AgentBusyError`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import structlog

from gathering.agents.context_window import build_messages
from gathering.agents.conversation_store import (
    Conversation,
    HistoryEntry,
    StoredTurn,
    TurnStart,
    storable_text,
)
from gathering.config import get_settings
from gathering.errors import (
    ConflictError,
    ContextTooLongError,
    DatabaseError,
    GatheringError,
    InvalidInputError,
    LLMError,
    NotFoundError,
    ProviderTimeoutError,
    TurnFailedError,
    TurnTimeoutError,
)
from gathering.events import Event, EventBus
from gathering.llm import (
    Completion,
    LLMProvider,
    Message,
    StreamDone,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from gathering.llm.types import new_call_id
from gathering.observability import record_tool_call, record_turn
from gathering.tools.context import ToolContext
from gathering.tools.function import FunctionTool, ToolRetry
from gathering.tools.registry import tool_seconds

if TYPE_CHECKING:
    from gathering.agents.agent import Agent

log = structlog.get_logger(__name__)

Outcome = Literal["completed", "max_iterations"]
IDEMPOTENCY_KEY_PATTERN = r"[\x21-\x7e]{1,255}"  # printable ASCII, no spaces
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
NOT_RUN_RESULT = "error: not run: the turn's deadline had passed"
DELTA_FLUSH_SECONDS = 0.1  # `turn.delta` events are coalesced over this long
EVENT_PREVIEW_CHARS = 2_000  # a tool result in a `tool.finished` event is cut to this


@dataclass
class TurnResult:
    """What one turn produced: the reply, how it ended, and what it cost."""

    text: str
    outcome: Outcome = "completed"
    iterations: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    session_id: str | None = None
    turn_id: str | None = None
    replayed: bool = False  # returned again for a repeated idempotency key

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, read back by `TurnResult.from_dict`."""
        return {
            "text": self.text,
            "outcome": self.outcome,
            "iterations": self.iterations,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "cost_usd": self.cost_usd,
            "tool_calls": [call.to_dict() for call in self.tool_calls],
            "session_id": self.session_id,
            "turn_id": self.turn_id,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> TurnResult:
        """The result stored by `to_dict`."""
        usage = body.get("usage") or {}
        return cls(
            text=body["text"],
            outcome=body.get("outcome", "completed"),
            iterations=int(body.get("iterations", 0)),
            usage=Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
            cost_usd=body.get("cost_usd"),
            tool_calls=[
                ToolCall(c["id"], c["name"], c.get("arguments") or {})
                for c in body.get("tool_calls", [])
            ],
            session_id=body.get("session_id"),
            turn_id=body.get("turn_id"),
        )


@dataclass(frozen=True)
class ToolStarted:
    """Stream event: the model asked for a tool and it is running."""

    call: ToolCall


@dataclass(frozen=True)
class ToolFinished:
    """Stream event: a tool returned (or failed; `result.is_error`)."""

    result: ToolResult


AgentEvent = TextDelta | ToolStarted | ToolFinished | TurnResult


@dataclass(frozen=True)
class TurnLimits:
    """The time bounds of a turn, in seconds (a tool call's own is `tool_seconds`)."""

    model_call_timeout: float
    turn_deadline: float
    busy_wait: float

    @classmethod
    def from_settings(cls) -> TurnLimits:
        """The bounds configured by `GATHERING_*` settings."""
        settings = get_settings()
        return cls(
            settings.model_call_timeout,
            settings.turn_deadline,
            settings.agent_busy_wait,
        )


def failure_body(exc: BaseException) -> dict[str, Any]:
    """What is stored (and told to clients) about why a turn failed."""
    if isinstance(exc, GatheringError):
        if isinstance(exc, DatabaseError):
            return {"code": exc.code, "message": "a database error stopped the turn"}
        if isinstance(exc, LLMError) and exc.public_message is not None:
            # The provider's own text may name internal endpoints: that goes to the log only.
            return {"code": exc.code, "message": exc.public_message}
        return {"code": exc.code, "message": exc.message}
    return {"code": "internal_error", "message": "an unexpected error stopped the turn"}


@dataclass(frozen=True)
class _Finished:
    """The end of an exchange: the result and the entries to store with it."""

    result: TurnResult
    entries: list[HistoryEntry]


class _Publisher:
    """Turn events on the bus, for the subjects `agent:<id>` and `user:<owner>`.

    Durable events cross instances through the outbox; text deltas stay in this process and
    are coalesced. A failure to publish is logged and never fails the turn.
    """

    def __init__(
        self, bus: EventBus | None, agent: Agent, turn_id: str, conversation: Conversation
    ) -> None:
        self.bus = bus
        # Durable events are written on the turn's own connection: a turn never needs a
        # second pooled connection while it holds one (a full pool would stall every turn).
        self.queries = conversation.queries
        session_id = conversation.session_id
        self.subjects = [f"agent:{agent.id}"]
        if agent.owner_id is not None:
            self.subjects.append(f"user:{agent.owner_id}")
        self.base = {"agent_id": agent.id, "turn_id": turn_id, "session_id": session_id}
        self._pending: list[str] = []
        self._flushed_at = 0.0

    async def emit(self, kind: str, data: Mapping[str, Any], *, durable: bool = True) -> None:
        if self.bus is None:
            return
        body = {**self.base, **data}
        events = [Event(kind, body, subject=s, source="agent") for s in self.subjects]
        try:
            if durable:
                await self.bus.publish_many(events, tx=self.queries, durable=True)
            else:
                await self.bus.publish_many(events)
        except Exception:  # never a cancellation: that is a BaseException
            log.warning("could not publish a turn event", event_type=kind, exc_info=True)

    async def delta(self, text: str) -> None:
        if self.bus is None:
            return
        self._pending.append(text)
        now = asyncio.get_running_loop().time()
        if now - self._flushed_at >= DELTA_FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        if self._pending:
            text, self._pending = "".join(self._pending), []
            self._flushed_at = asyncio.get_running_loop().time()
            await self.emit("turn.delta", {"text": text}, durable=False)


async def run_turn(
    agent: Agent,
    text: str,
    *,
    streaming: bool = False,
    idempotency_key: str | None = None,
    new_session: bool = False,
) -> AsyncIterator[AgentEvent]:
    """One turn of `agent`: yields text deltas (when `streaming`) and tool events, then the
    `TurnResult`. The user message is stored before the first model call and every reply
    before it is yielded; a failed turn is stored as failed (its messages leave the window)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("the message is empty")
    text = storable_text(text)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidInputError(
            "an idempotency key is 1 to 255 printable ASCII characters without spaces"
        )
    limits = TurnLimits.from_settings()
    await agent.ensure_saved()
    assert agent.id is not None
    store = await agent.store()
    # The idempotency key is looked up before anything changes: a replay or a refused key
    # leaves the conversation as it was.
    start = TurnStart(text, idempotency_key, new_session or agent.wants_new_session())
    async with store.conversation(agent.id, wait=limits.busy_wait, turn=start) as conversation:
        if conversation.interrupted:
            log.warning(
                "closed turns left running by a stopped process",
                agent=agent.name,
                turns=list(conversation.interrupted),
            )
        if conversation.replay is not None:
            yield _replay(conversation.replay, text)
            record_turn("replayed")
            return
        turn_id = conversation.turn_id
        assert turn_id is not None
        agent.session_id = conversation.session_id
        events = _Publisher(agent.event_bus, agent, turn_id, conversation)
        await events.emit("turn.started", {"text": text[:EVENT_PREVIEW_CHARS]})
        until = asyncio.get_running_loop().time() + limits.turn_deadline
        # No timeout scope spans a `yield`: each model and tool call is bounded by its own
        # limit and what is left of the turn's. A cancelled turn (shutdown, a dropped caller)
        # stays `running`, and the next turn of the agent, on any instance, closes it as
        # interrupted.
        finished = False
        try:
            async for event in _exchange(
                agent, conversation, turn_id, text, streaming, limits, until, events
            ):
                if not isinstance(event, _Finished):
                    yield event
                    continue
                result = event.result
                await conversation.finish_turn(
                    turn_id, event.entries, result.to_dict() if idempotency_key else None
                )
                finished = True  # stored as completed: nothing after this may undo it
                agent.remember_window(await conversation.window(agent.history_window))
                record_turn(result.outcome)
                await events.emit(
                    "turn.finished",
                    {
                        "status": "completed",
                        "outcome": result.outcome,
                        "iterations": result.iterations,
                        "usage": result.to_dict()["usage"],
                    },
                )
                yield result
        except Exception as exc:
            if not finished:
                await _fail(conversation, turn_id, exc, events)
            raise


def _replay(stored: StoredTurn, text: str) -> TurnResult:
    if stored.request_text is not None and stored.request_text != text:
        raise ConflictError(
            "this idempotency key was used for another message",
            hint="send a new Idempotency-Key for a new message",
        )
    if stored.status == "completed" and stored.result is not None:
        result = TurnResult.from_dict(stored.result)
        result.replayed = True
        return result
    error = stored.error or {"code": stored.status, "message": f"the turn {stored.status}"}
    raise TurnFailedError(
        f"the turn with this idempotency key did not complete: {error.get('message')}",
        hint="send the message again with a new Idempotency-Key to try again",
        details={"status": stored.status, "error": dict(error)},
    )


async def _fail(
    conversation: Conversation, turn_id: str, error: BaseException, events: _Publisher
) -> None:
    body = failure_body(error)
    if not isinstance(error, GatheringError):
        log.error("turn failed", turn_id=turn_id, exc_info=error)
    record_turn("failed")
    try:
        await conversation.fail_turn(turn_id, body)
    except GatheringError:
        log.warning("could not store a failed turn; the next turn closes it", turn_id=turn_id)
        return
    await events.emit("turn.finished", {"status": "failed", "error": body})


async def _exchange(
    agent: Agent,
    conversation: Conversation,
    turn_id: str,
    text: str,
    streaming: bool,
    limits: TurnLimits,
    until: float,
    events: _Publisher,
) -> AsyncIterator[AgentEvent | _Finished]:
    provider = agent.model_provider()
    system = await agent.system_prompt(text, conversation.queries, recall=conversation.has_memories)
    tools = await agent.turn_tools(conversation.queries)
    specs = [tool.spec for tool in tools.values()]
    usage, cost = Usage(), None
    calls: list[ToolCall] = []
    loop = asyncio.get_running_loop()
    for iteration in range(1, agent.max_iterations + 1):
        if loop.time() >= until:
            raise _turn_timeout(limits)
        # The window always holds the whole current turn (its user message and every model
        # call and tool result since), whatever `history_window` is.
        entries = await conversation.window(agent.history_window + 2 * iteration)
        if not any(entry.message.role == "user" for entry in entries):
            raise NotFoundError(
                f"agent {agent.id}'s conversation is gone (the agent was deleted)",
                hint="create the agent again to talk to it",
            )
        completion: Completion | None = None
        call_until = min(until, loop.time() + limits.model_call_timeout)
        calling = _call_model(provider, system, entries, specs, agent.options, streaming)
        async for event in _bounded(calling, call_until, until, limits):
            if isinstance(event, Completion):
                completion = event
            else:
                await events.delta(event.text)
                yield event
        await events.flush()
        assert completion is not None
        completion = _unique_call_ids(completion, entries)
        usage = usage + completion.usage
        if completion.cost_usd is not None:
            cost = (cost or 0.0) + completion.cost_usd
        model = completion.model or agent.model
        entry = HistoryEntry(completion.message, model, completion.usage, completion.cost_usd)
        if not completion.tool_calls:
            reply = TurnResult(
                completion.text,
                "completed",
                iteration,
                usage,
                cost,
                calls,
                conversation.session_id,
                turn_id,
            )
            yield _Finished(reply, [entry])
            return
        # The calls are recorded as started before any runs: after a crash, recovery knows a
        # side effect may have happened.
        await conversation.tools_started(turn_id, entry)
        results = []
        for call in completion.tool_calls:
            calls.append(call)
            yield ToolStarted(call)
            await events.emit("tool.started", {"call": call.to_dict()})
            if loop.time() >= until:  # never start a side effect past the turn's deadline
                result = ToolResult(call.id, NOT_RUN_RESULT, True, call.name)
            else:
                seconds = until - loop.time()
                result = await run_tool(tools, call, seconds, agent.tool_context(call.id))
            await conversation.tool_finished(turn_id, result)
            results.append(result)
            yield ToolFinished(result)
            await events.emit(
                "tool.finished",
                {
                    "call_id": call.id,
                    "name": call.name,
                    "is_error": result.is_error,
                    "content": result.content[:EVENT_PREVIEW_CHARS],
                },
            )
        await conversation.append(turn_id, [HistoryEntry(Message.tool_outputs(results))])
    note = (
        f"Stopped after {agent.max_iterations} model calls without a final answer "
        "(max iterations reached)."
    )
    log.warning("agent reached max iterations", agent=agent.name, limit=agent.max_iterations)
    stopped = TurnResult(
        note,
        "max_iterations",
        agent.max_iterations,
        usage,
        cost,
        calls,
        conversation.session_id,
        turn_id,
    )
    yield _Finished(stopped, [])


def _unique_call_ids(completion: Completion, entries: Sequence[HistoryEntry]) -> Completion:
    """`completion` with fresh ids for calls whose id is empty or already used in the window
    or in the same reply (some OpenAI-compatible servers number calls per reply)."""
    seen = {call.id for entry in entries for call in entry.message.tool_calls}
    calls = []
    for call in completion.tool_calls:
        if not call.id or call.id in seen:
            call = replace(call, id=new_call_id())
        seen.add(call.id)
        calls.append(call)
    if calls == list(completion.tool_calls):
        return completion
    return replace(completion, tool_calls=tuple(calls))


def _turn_timeout(limits: TurnLimits) -> TurnTimeoutError:
    return TurnTimeoutError(
        f"the turn took longer than {limits.turn_deadline:g}s and was stopped",
        hint="raise GATHERING_TURN_DEADLINE, or ask for less work per message",
    )


async def _bounded(
    events: AsyncIterator[TextDelta | Completion],
    call_until: float,
    until: float,
    limits: TurnLimits,
) -> AsyncIterator[TextDelta | Completion]:
    """`events`, each awaited before `call_until` (the model call's limit, or the turn's)."""
    end = object()
    try:
        while True:
            timer = asyncio.timeout_at(call_until)
            try:
                async with timer:
                    event = await anext(events, end)
            except TimeoutError:
                if not timer.expired():
                    raise  # the provider's own, not ours
                if call_until >= until:
                    raise _turn_timeout(limits) from None
                raise ProviderTimeoutError(
                    f"the model call took longer than {limits.model_call_timeout:g}s",
                    hint="raise GATHERING_MODEL_CALL_TIMEOUT or check the provider",
                ) from None
            if event is end:
                return
            assert isinstance(event, TextDelta | Completion)
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _call_model(
    provider: LLMProvider,
    system: str,
    entries: list[HistoryEntry],
    specs: list[ToolSpec],
    agent_options: Mapping[str, Any],
    streaming: bool,
) -> AsyncIterator[TextDelta | Completion]:
    """One model call; when the provider says the prompt is too long, once more with half the
    window."""
    options = dict(agent_options)
    tools = specs or None
    for shrink in (1.0, 0.5):
        messages = await build_messages(provider, system, entries, specs, options, shrink=shrink)
        try:
            if not streaming:
                yield await provider.generate(messages, tools, **options)
                return
            async for event in provider.stream(messages, tools, **options):
                if isinstance(event, TextDelta):
                    yield event
                elif isinstance(event, StreamDone):
                    yield event.completion
            return
        except ContextTooLongError:
            if shrink < 1.0:
                raise
            log.warning("the prompt was too long for the model; retrying with less history")


async def run_tool(
    tools: Mapping[str, FunctionTool], call: ToolCall, left: float, context: ToolContext
) -> ToolResult:
    """Run one tool call within its timeout and the `left` seconds of the turn. What the model
    can act on comes back as its message (a `ToolRetry`, arguments the schema refuses, a
    refused path); a timeout or any other exception is a failure (logged with its traceback);
    cancellation propagates."""
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        record_tool_call("(unknown)", "unknown_tool")  # a model's names are not metric labels
        return ToolResult(
            call.id, f"error: no tool named {call.name!r} (tools: {known})", True, call.name
        )
    if call.invalid_arguments is not None:
        record_tool_call(call.name, "retry")
        return ToolResult(
            call.id,
            f"error: the arguments are not a JSON object: {call.invalid_arguments[:200]}",
            True,
            call.name,
        )
    seconds = min(tool_seconds(tool), left)
    timer = asyncio.timeout(max(seconds, 0.0))
    try:
        async with timer:
            output = await tool.run(call.arguments, context)
    except ToolRetry as retry:
        record_tool_call(call.name, "retry")
        return ToolResult(call.id, f"error: {retry}", True, call.name)
    except InvalidInputError as refused:  # bad arguments, a path outside the workspace, ...
        record_tool_call(call.name, "retry")
        return ToolResult(call.id, f"error: {refused}", True, call.name)
    except TimeoutError as exc:
        if not timer.expired():  # the tool's own timeout (a socket, ...): a plain failure
            return _tool_failed(call, exc)
        record_tool_call(call.name, "timeout")
        log.warning("tool timed out", tool=call.name, seconds=seconds)
        return ToolResult(
            call.id,
            f"error: the tool did not finish within {seconds:g}s and was stopped",
            True,
            call.name,
        )
    except Exception as exc:
        return _tool_failed(call, exc)
    record_tool_call(call.name, "ok")
    return ToolResult(call.id, output, name=call.name)


def _tool_failed(call: ToolCall, exc: Exception) -> ToolResult:
    record_tool_call(call.name, "failed")
    log.error("tool failed", tool=call.name, exc_info=exc)
    return ToolResult(call.id, f"error: {type(exc).__name__}: {exc}", True, call.name)

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
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID, uuid4

import structlog

from gathering.agents.context_window import build_messages
from gathering.agents.conversation_store import (
    Conversation,
    HistoryEntry,
    ResumedTurn,
    StoredTurn,
    TurnStart,
)
from gathering.agents.tool_calls import (
    BatchDone,
    StoredCalls,
    Suspended,
    ToolFinished,
    ToolStarted,
    run_batch,
)
from gathering.agents.turn_events import EVENT_PREVIEW_CHARS, TurnEvents
from gathering.config import get_settings
from gathering.db.database import Queries
from gathering.db.storable import storable_text
from gathering.errors import (
    AgentBusyError,
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
from gathering.llm import (
    Completion,
    LLMProvider,
    Message,
    StreamDone,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from gathering.llm.base import DEFAULT_MAX_TOKENS
from gathering.llm.types import new_call_id
from gathering.observability import record_turn
from gathering.tools.approvals import approvals_of_turn
from gathering.usage import (
    Attribution,
    LedgerEntry,
    attributed,
    current_attribution,
    estimated_input_tokens,
    model_call_entry,
    record_failed_call,
    reserve_model_call,
)
from gathering.usage import (
    record as record_usage,
)

if TYPE_CHECKING:
    from gathering.agents.agent import Agent

log = structlog.get_logger(__name__)

Outcome = Literal["completed", "max_iterations", "waiting_approval"]
IDEMPOTENCY_KEY_PATTERN = r"[\x21-\x7e]{1,255}"  # printable ASCII, no spaces
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


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
    approval_id: int | None = None  # the approval a `waiting_approval` turn waits for

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
            "approval_id": self.approval_id,
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
            approval_id=body.get("approval_id"),
        )


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


@dataclass(frozen=True)
class _Waiting:
    """An exchange that stopped at a call waiting for a person."""

    result: TurnResult
    suspended: Suspended


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
    before it is yielded; a failed turn is stored as failed (its messages leave the window).
    A call that needs a person's approval leaves the turn waiting (outcome
    `waiting_approval`); `resume_turn` takes it up once the approval is answered."""
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
        if conversation.turn_id is None and conversation.waiting is not None:
            raise await _still_waiting(agent, conversation, conversation.waiting)
        turn_id = conversation.turn_id
        assert turn_id is not None
        agent.session_id = conversation.session_id
        events = TurnEvents(agent.event_bus, agent, turn_id, conversation)
        await events.emit("turn.started", {"text": text[:EVENT_PREVIEW_CHARS]})
        exchange = _exchange(agent, conversation, turn_id, text, streaming, limits, events)
        async for event in _ended(agent, conversation, turn_id, exchange, events, idempotency_key):
            yield event


async def resume_turn(
    agent: Agent, turn_id: str, *, streaming: bool = False
) -> AsyncIterator[AgentEvent]:
    """Take up a turn that waited for approvals, once they are all answered, on whichever
    instance calls this first (the others find it taken and yield nothing): an approved call
    runs, a denied or expired one is reported to the model as not run, and the turn goes on
    as `run_turn` would. Yields the same events, then the `TurnResult`."""
    limits = TurnLimits.from_settings()
    assert agent.id is not None
    store = await agent.store()
    async with store.conversation(agent.id, wait=limits.busy_wait) as conversation:
        resumed = await conversation.resume(turn_id)
        if resumed is None:
            return
        agent.session_id = conversation.session_id
        events = TurnEvents(agent.event_bus, agent, turn_id, conversation)
        await events.emit("turn.resumed", {})
        exchange = _exchange(
            agent, conversation, turn_id, resumed.text, streaming, limits, events, resumed
        )
        key = "resumed" if resumed.keyed else None  # the result is kept for a replay
        async for event in _ended(agent, conversation, turn_id, exchange, events, key):
            yield event


async def _ended(
    agent: Agent,
    conversation: Conversation,
    turn_id: str,
    exchange: AsyncIterator[AgentEvent | _Finished | _Waiting],
    events: TurnEvents,
    idempotency_key: str | None,
) -> AsyncIterator[AgentEvent]:
    """The exchange's events, and its end stored: completed, waiting or failed."""
    # No timeout scope spans a `yield`: each model and tool call is bounded by its own
    # limit and what is left of the turn's. A cancelled turn (shutdown, a dropped caller)
    # stays `running`, and the next turn of the agent, on any instance, closes it as
    # interrupted.
    finished = False
    try:
        async for event in exchange:
            if isinstance(event, _Waiting):
                result = event.result
                await conversation.suspend_turn(
                    turn_id,
                    event.suspended.approval.call_id,
                    event.suspended.queued,
                    result.to_dict(),
                )
                finished = True  # stored as waiting: nothing after this may undo it
                record_turn(result.outcome)
                await events.emit("turn.waiting", {"approval_id": event.suspended.approval.id})
                yield result
                continue
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


async def _still_waiting(agent: Agent, conversation: Conversation, turn_id: str) -> ConflictError:
    """The refusal of a new message while a turn of the agent waits for an approval."""
    pending = []
    if conversation.queries is not None:
        pending = [
            a.id
            for a in await approvals_of_turn(conversation.queries, turn_id)
            if a.state == "pending"
        ]
    if not pending:  # answered: the turn is about to go on, here or on another instance
        return AgentBusyError(
            f"agent {agent.name!r} is finishing a turn that waited for an approval",
            hint="send the message again in a few seconds",
            retry_after=2,
        )
    return ConflictError(
        f"agent {agent.name!r} is waiting for a person to approve a tool call "
        f"(approval {', '.join(str(n) for n in pending)}); it takes no new message until then",
        hint=f"answer it: POST /approvals/{pending[0]}/approve or /deny "
        "(or `gathering approvals list`)",
        details={"turn_id": turn_id, "approval_ids": pending},
    )


def _replay(stored: StoredTurn, text: str) -> TurnResult:
    if stored.request_text is not None and stored.request_text != text:
        raise ConflictError(
            "this idempotency key was used for another message",
            hint="send a new Idempotency-Key for a new message",
        )
    if stored.status in ("completed", "waiting") and stored.result is not None:
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
    conversation: Conversation, turn_id: str, error: BaseException, events: TurnEvents
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


@dataclass
class _Run:
    """What one exchange has done so far: its calls and what its model calls cost."""

    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    calls: list[ToolCall] = field(default_factory=list)

    def result(
        self, text: str, outcome: Outcome, iterations: int, conversation: Conversation, turn_id: str
    ) -> TurnResult:
        return TurnResult(
            text,
            outcome,
            iterations,
            self.usage,
            self.cost,
            self.calls,
            conversation.session_id,
            turn_id,
        )


async def _exchange(
    agent: Agent,
    conversation: Conversation,
    turn_id: str,
    text: str,
    streaming: bool,
    limits: TurnLimits,
    events: TurnEvents,
    resumed: ResumedTurn | None = None,
) -> AsyncIterator[AgentEvent | _Finished | _Waiting]:
    loop = asyncio.get_running_loop()
    until = loop.time() + limits.turn_deadline
    provider = await agent.model_provider(conversation.queries)
    with attributed(**charged_to(agent).as_dict()):  # the recall's embedding, too
        system = await agent.system_prompt(
            text, conversation.queries, recall=conversation.has_memories
        )
    box = await agent.turn_tools(conversation.queries)
    specs = [tool.spec for tool in box.tools.values()]
    run = _Run()
    first = 1
    if resumed is not None:
        first = resumed.iterations + 1
        entries = await conversation.window(agent.history_window + 2 * first)
        pending = entries[-1].message.tool_calls if entries else ()
        if not pending or resumed.iterations < 1:
            raise TurnFailedError(
                "the waiting turn's stored state has no tool calls to resume",
                hint="send the message again",
            )
        stored = await _stored_calls(conversation, turn_id, resumed)
        batch = run_batch(agent, conversation, turn_id, box, pending, events, until, stored)
        async for step in _batch(batch, run, pending, resumed.iterations, conversation, turn_id):
            yield step
            if isinstance(step, _Waiting):
                return
    for iteration in range(first, agent.max_iterations + 1):
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
        charged = charged_to(agent)
        tokens = estimated_input_tokens(system, [e.message for e in entries], specs)
        reservation = await _reserve(agent, conversation, provider, tokens)
        call_id = reservation or uuid4()  # the ledger row's: written once
        call_until = min(until, loop.time() + limits.model_call_timeout)
        calling = call_model(provider, system, entries, specs, agent.options, streaming)
        started = loop.time()
        try:
            async for event in _bounded(calling, call_until, until, limits):
                if isinstance(event, Completion):
                    completion = event
                else:
                    await events.delta(event.text)
                    yield event
        except BaseException as exc:
            # Any end of the call without its answer (an error, a cancelled turn, a closed
            # stream) still gets its row, which gives the reservation back.
            ledger = ledger_queries(conversation)
            if ledger is not None and completion is None:
                failed = record_failed_call(
                    ledger,
                    charged,
                    provider.name,
                    provider.model or agent.model,
                    exc,
                    round((loop.time() - started) * 1000),
                    reservation,
                    call_id=call_id,
                )
                await _shielded(failed)
            elif ledger is not None and completion is not None:  # answered, then cut
                answered = model_call_entry(
                    ledger,
                    charged,
                    completion,
                    provider.name,
                    completion.model or agent.model,
                    reservation,
                    estimated_input=tokens,
                    call_id=call_id,
                )
                await _shielded(_record_entry(ledger, answered))
            raise
        await events.flush()
        assert completion is not None
        completion = _unique_call_ids(completion, entries)
        model = completion.model or agent.model
        charge = None
        cost = completion.cost_usd
        if conversation.queries is not None:
            charge = await _priced_entry(
                conversation,
                charged,
                completion,
                provider.name,
                model,
                reservation,
                tokens,
                call_id,
            )
            cost = charge.cost_usd  # the catalog's price now, as the ledger has it
        completion = _storable_usage(completion)
        run.usage = run.usage + completion.usage
        if cost is not None:
            run.cost = (run.cost or 0.0) + cost
        entry = HistoryEntry(completion.message, model, completion.usage, cost, charge=charge)
        if not completion.tool_calls:
            reply = run.result(completion.text, "completed", iteration, conversation, turn_id)
            yield _Finished(reply, [entry])
            return
        # The calls are recorded as started before any runs: after a crash, recovery knows a
        # side effect may have happened.
        await conversation.tools_started(turn_id, entry)
        calls = completion.tool_calls
        batch = run_batch(agent, conversation, turn_id, box, calls, events, until)
        async for step in _batch(batch, run, calls, iteration, conversation, turn_id):
            yield step
            if isinstance(step, _Waiting):
                return
    note = (
        f"Stopped after {agent.max_iterations} model calls without a final answer "
        "(max iterations reached)."
    )
    log.warning("agent reached max iterations", agent=agent.name, limit=agent.max_iterations)
    stopped = run.result(note, "max_iterations", agent.max_iterations, conversation, turn_id)
    yield _Finished(stopped, [])


def charged_to(agent: Agent) -> Attribution:
    """Who and what `agent`'s model calls are charged to: the caller's attribution, the
    agent, and (when no caller named a user) the agent's owner."""
    attribution = current_attribution().merged(agent_id=agent.id)
    if attribution.user_id is None:
        attribution = attribution.merged(user_id=agent.owner_id)
    return attribution


def ledger_queries(conversation: Conversation) -> Queries | None:
    """Where a model call's row is written apart from the turn's own statements: the pool
    (the turn's connection may be the reason the call ended), else the turn's connection."""
    pool: Queries | None = getattr(conversation, "pool", None)
    return pool or conversation.queries


async def _shielded(write: Coroutine[Any, Any, None]) -> None:
    """Run `write` to its end even when the turn is being cancelled."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.shield(task)  # cancelled again: the row is still written
    except Exception as exc:
        log.warning("model call not written to the usage ledger", error=str(exc))


async def _record_entry(q: Queries, entry: Awaitable[LedgerEntry]) -> None:
    """Write the ledger row of `entry` (a call answered, whose turn then ended)."""
    await record_usage(q, await entry)


async def _priced_entry(
    conversation: Conversation,
    charged: Attribution,
    completion: Completion,
    provider: str,
    model: str,
    reservation: UUID | None,
    estimated_input: int,
    call_id: UUID,
) -> LedgerEntry:
    """The ledger entry of an answered call, priced on the turn's connection, else (when it
    died during the call) on the pool's."""
    turn, apart = conversation.queries, ledger_queries(conversation)
    assert turn is not None and apart is not None
    args = (charged, completion, provider, model, reservation)
    try:
        return await model_call_entry(turn, *args, estimated_input=estimated_input, call_id=call_id)
    except DatabaseError:
        if apart is turn:
            raise
    return await model_call_entry(apart, *args, estimated_input=estimated_input, call_id=call_id)


_MAX_STORED_TOKENS = 2**31 - 1


def _storable_usage(completion: Completion) -> Completion:
    """`completion` with its reported usage clamped to what a message row stores (a provider
    may report anything; the ledger keeps the reported value)."""
    usage = completion.usage
    if max(usage.input_tokens, usage.output_tokens) <= _MAX_STORED_TOKENS:
        return completion
    clamped = Usage(
        min(usage.input_tokens, _MAX_STORED_TOKENS), min(usage.output_tokens, _MAX_STORED_TOKENS)
    )
    return replace(completion, usage=clamped)


async def _reserve(
    agent: Agent, conversation: Conversation, provider: LLMProvider, tokens: int
) -> UUID | None:
    """The budget reservation of the next model call, of `tokens` estimated input tokens
    (None: no database, or no budget)."""
    if conversation.queries is None:
        return None
    max_tokens = agent.options.get("max_tokens")
    if not isinstance(max_tokens, int):
        defaults = getattr(provider, "defaults", None)
        max_tokens = getattr(defaults, "max_tokens", None) or DEFAULT_MAX_TOKENS
    return await reserve_model_call(
        conversation.queries,
        charged_to(agent),
        provider.name,
        provider.model or agent.model,
        tokens,
        max_tokens,
        TurnLimits.from_settings().model_call_timeout,
    )


async def _batch(
    batch: AsyncIterator[ToolStarted | ToolFinished | Suspended | BatchDone],
    run: _Run,
    calls: Sequence[ToolCall],
    iteration: int,
    conversation: Conversation,
    turn_id: str,
) -> AsyncIterator[AgentEvent | _Waiting]:
    """The events of one reply's tool calls; their results stored as one message when all
    are done, or `_Waiting` when a call waits for a person."""
    run.calls.extend(calls)
    async for event in batch:
        if isinstance(event, Suspended):
            approval = event.approval
            text = f"Waiting for a person to approve {approval.tool_name} (approval {approval.id})."
            waiting = run.result(text, "waiting_approval", iteration, conversation, turn_id)
            waiting.approval_id = approval.id
            yield _Waiting(waiting, event)
            return
        if isinstance(event, BatchDone):
            outputs = HistoryEntry(Message.tool_outputs(event.results))
            await conversation.append(turn_id, [outputs])
            return
        yield event


async def _stored_calls(
    conversation: Conversation, turn_id: str, resumed: ResumedTurn
) -> StoredCalls:
    """The stored state of a resumed turn's last calls, with the answers to its approvals."""
    decisions = {}
    if conversation.queries is not None:
        for approval in await approvals_of_turn(conversation.queries, turn_id):
            if approval.state != "pending":
                decisions[approval.call_id] = approval
    return StoredCalls(resumed.call_status, resumed.call_results, decisions)


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


async def call_model(
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

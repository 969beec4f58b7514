"""The conversation runtime through its Python API, on a real PostgreSQL: sessions and the turn
lock, the context window, failed turns, idempotency, embedding outages, time bounds, tool
errors, bounded memory, knowledge in prompts and turn events.

Models are `ScriptedProvider`s (often a function of the messages, to watch what each call
sees); slow steps wait on events the test sets, never on the clock.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest

from gathering.agents import Agent, PostgresAgentStore, TurnResult
from gathering.agents.knowledge import KnowledgeBase
from gathering.agents.long_term_memory import LongTermMemory
from gathering.db import Database
from gathering.errors import (
    AgentBusyError,
    ConflictError,
    ContextTooLongError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    TurnFailedError,
    TurnTimeoutError,
)
from gathering.events import Event, EventBus
from gathering.llm import Message, ScriptedProvider, ToolSpec, tool_call
from gathering.tools import ToolRetry

WAIT = 10.0  # bound of every wait on another task (a hang fails instead of blocking)
KNOWLEDGE_HEADING = "## From the knowledge base"

NUMBER = ToolSpec(
    "number",
    "Use a number",
    {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
)


@pytest.fixture
def store(db: Database) -> PostgresAgentStore:
    return PostgresAgentStore(db)


class Overlap:
    """Counts model calls in progress; `most` is the highest count seen at once."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0

    def __enter__(self) -> None:
        self.active += 1
        self.most = max(self.most, self.active)

    def __exit__(self, *exc: object) -> None:
        self.active -= 1


def last_user(messages: Sequence[Message]) -> str:
    return next(m.content for m in reversed(messages) if m.role == "user")


def non_system(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if m.role != "system"]


async def stored_rows(db: Database, agent_id: int) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT m.session_id::text AS session_id, m.seq, m.role, m.content,"
        " m.turn_id::text AS turn_id FROM agent.messages m"
        " JOIN agent.sessions s ON s.id = m.session_id WHERE s.agent_id = $1"
        " ORDER BY s.created_at, m.seq",
        agent_id,
    )


async def turns(db: Database, agent_id: int) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT id::text AS id, status, error FROM agent.turns WHERE agent_id = $1"
        " ORDER BY started_at",
        agent_id,
    )


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# --- sessions and the turn lock ----------------------------------------------------------------


async def test_new_session_waits_for_the_running_turn(store, db):
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[list[str]] = []

    async def reply(messages: Sequence[Message]) -> str:
        seen.append(non_system(messages))
        if last_user(messages) == "slow":
            started.set()
            await release.wait()
        return f"re: {last_user(messages)}"

    agent = Agent("Sessions", "scripted", llm=ScriptedProvider(reply), store=store)
    await agent.run("first")
    old = agent.session_id
    running = asyncio.create_task(agent.run("slow"))
    await asyncio.wait_for(started.wait(), WAIT)
    renewing = asyncio.create_task(agent.new_session())
    await asyncio.sleep(0.05)
    assert not renewing.done(), "new_session() did not wait for the turn in progress"
    release.set()
    slow = await asyncio.wait_for(running, WAIT)
    new = await asyncio.wait_for(renewing, WAIT)
    assert slow.session_id == old and new != old
    assert [e.message.content for e in await store.history(old)] == [
        "first",
        "re: first",
        "slow",
        "re: slow",
    ]
    assert await store.history(new) == []

    after = await agent.run("next")
    assert after.session_id == new == agent.session_id
    assert [e.message.content for e in await store.history(new)] == ["next", "re: next"]
    assert seen[-1] == ["next"]  # nothing of the old session reaches the model


async def test_two_agent_objects_of_one_stored_agent_never_overlap(store, db):
    await Agent("Shared", "scripted", llm=ScriptedProvider([]), store=store).save()
    overlap = Overlap()

    async def slow_echo(messages: Sequence[Message]) -> str:
        with overlap:
            for _ in range(3):
                await asyncio.sleep(0.01)
        return f"re: {last_user(messages)}"

    other_db = Database(url=db.url, min_size=1, max_size=4)
    async with other_db:
        one = await Agent.load("Shared", store=store, llm=ScriptedProvider(slow_echo))
        again = await Agent.load("Shared", store=store, llm=ScriptedProvider(slow_echo))
        elsewhere = await Agent.load(
            "shared", store=PostgresAgentStore(other_db), llm=ScriptedProvider(slow_echo)
        )
        assert one.id == again.id == elsewhere.id
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    agent.run(f"{label}{i}")
                    for i in range(3)
                    for label, agent in (("a", one), ("b", again), ("c", elsewhere))
                )
            ),
            WAIT,
        )
    assert overlap.most == 1
    rows = await stored_rows(db, one.id)
    assert [r["role"] for r in rows] == ["user", "assistant"] * 9
    for asked, answered in zip(rows[::2], rows[1::2], strict=True):
        assert answered["content"] == f"re: {asked['content']}"
        assert answered["turn_id"] == asked["turn_id"]
    assert [r["seq"] for r in rows] == list(range(1, 19))


# --- the context window -----------------------------------------------------------------------


def test_scripted_provider_takes_a_context_window():
    assert ScriptedProvider([], context_window=2_000).context_window == 2_000


async def test_200_long_turns_fit_a_small_context(store):
    window = 2_000
    sizes: list[int] = []
    history_seen: list[int] = []

    async def long_reply(messages: Sequence[Message]) -> str:
        counts = await provider.count_tokens([m.content for m in messages])
        sizes.append(sum(counts))
        history_seen.append(len(messages))
        return f"{last_user(messages)}: " + "lorem ipsum " * 83  # about 1,000 characters

    provider = ScriptedProvider(long_reply, context_window=window)
    agent = Agent("Long", "scripted", llm=provider, store=store)
    for i in range(200):
        result = await agent.run(f"turn {i}")
        assert result.outcome == "completed" and result.text.startswith(f"turn {i}: ")
    budget = window - provider.defaults.max_tokens
    assert len(sizes) == 200 and max(sizes) <= budget
    # The window is used, not just the current message: earlier turns still come along.
    assert min(history_seen[10:]) >= 3


async def _history_of_long_turns(agent: Agent, turns_before: int) -> None:
    for i in range(turns_before):
        await agent.run(f"warm-up {i}")


async def _retry_after_too_long(store: PostgresAgentStore, db: Database, window: int) -> None:
    """12 turns of long replies, then a call the provider refuses as too long once: the turn
    must complete after exactly one more call, with fewer messages."""
    calls: list[Sequence[Message]] = []
    refuse = {"next": False}

    def reply(messages: Sequence[Message]) -> Any:
        calls.append(messages)
        if refuse["next"]:
            refuse["next"] = False
            return ContextTooLongError("prompt is too long")
        return "x" * 1_000

    provider = ScriptedProvider(reply, context_window=window)
    agent = Agent(f"Shrink{window}", "scripted", llm=provider, store=store)
    await _history_of_long_turns(agent, 12)
    calls.clear()
    refuse["next"] = True
    result = await agent.run("and now?")
    assert result.outcome == "completed"
    assert len(calls) == 2
    assert len(calls[1]) < len(calls[0])
    assert calls[1][-1].content == "and now?"
    rows = await stored_rows(db, agent.id)
    assert [r["content"] for r in rows].count("and now?") == 1


async def test_a_too_long_prompt_is_retried_once_with_fewer_messages(store, db):
    await _retry_after_too_long(store, db, 8_000)


async def test_a_too_long_prompt_is_retried_even_when_max_tokens_is_over_half_the_window(store, db):
    # 2,000 tokens with the default max_tokens of 1,024: the first call fits, so a retry
    # with less history must fit too (halving the history, not the reply's reserve).
    await _retry_after_too_long(store, db, 2_000)


async def test_a_prompt_refused_twice_fails_the_turn_after_one_retry(store, db):
    calls: list[int] = []

    def reply(messages: Sequence[Message]) -> Any:
        calls.append(len(messages))
        if last_user(messages) == "too long":
            return ContextTooLongError("prompt is too long")
        return "y" * 1_000

    agent = Agent(
        "Refused", "scripted", llm=ScriptedProvider(reply, context_window=8_000), store=store
    )
    await _history_of_long_turns(agent, 12)
    calls.clear()
    with pytest.raises(ContextTooLongError):
        await agent.run("too long")
    assert len(calls) == 2
    assert (await turns(db, agent.id))[-1]["status"] == "failed"


async def test_a_message_larger_than_the_window_fails_without_a_model_call(store, db):
    provider = ScriptedProvider(lambda messages: "never", context_window=2_000)
    agent = Agent("Tiny", "scripted", llm=provider, store=store)
    with pytest.raises(ContextTooLongError):
        await agent.run("word " * 2_000)
    assert provider.calls == []
    [turn] = await turns(db, agent.id)
    assert turn["status"] == "failed" and turn["error"]["code"] == "context_too_long"


# --- failed turns -------------------------------------------------------------------------------


async def test_a_failed_turn_is_stored_and_leaves_the_window(store, db):
    seen: list[list[str]] = []

    def reply(messages: Sequence[Message]) -> Any:
        seen.append(non_system(messages))
        if last_user(messages) == "boom":
            return ProviderUnavailableError("the model is down")
        return f"re: {last_user(messages)}"

    agent = Agent("Fails", "scripted", llm=ScriptedProvider(reply), store=store)
    await agent.run("before")
    with pytest.raises(ProviderUnavailableError):
        await agent.run("boom")
    after = await agent.run("after")
    assert after.text == "re: after"

    stored = await turns(db, agent.id)
    assert [t["status"] for t in stored] == ["completed", "failed", "completed"]
    assert stored[1]["error"]["code"] == "provider_unavailable"
    rows = await stored_rows(db, agent.id)
    assert [(r["role"], r["content"]) for r in rows if r["turn_id"] == stored[1]["id"]] == [
        ("user", "boom"),
        ("error", "the model provider could not be reached or failed"),  # its text is logged
    ]
    assert sum(r["content"] == "boom" for r in rows) == 1
    assert seen[-1] == ["before", "re: before", "after"]
    assert "boom" not in [m.content for m in agent.memory.get_history()]


async def test_a_turn_failed_mid_tool_loop_leaves_no_tool_messages_in_the_window(store, db):
    seen: list[list[Message]] = []

    def reply(messages: Sequence[Message]) -> Any:
        seen.append([m for m in messages if m.role != "system"])
        if last_user(messages) == "use the tool":
            if messages[-1].role == "tool":
                return ProviderUnavailableError("down after the tool")
            return tool_call("number", {"n": 7})
        return f"re: {last_user(messages)}"

    agent = Agent(
        "ToolFail",
        "scripted",
        llm=ScriptedProvider(reply),
        store=store,
        tools=[(NUMBER, lambda n: str(n))],
    )
    await agent.run("hello")
    with pytest.raises(ProviderUnavailableError):
        await agent.run("use the tool")
    await agent.run("next")
    assert [(m.role, m.content) for m in seen[-1]] == [
        ("user", "hello"),
        ("assistant", "re: hello"),
        ("user", "next"),
    ]
    assert all(not m.tool_calls and not m.tool_results for m in seen[-1])


async def test_a_turn_failed_on_another_instance_leaves_this_ones_window(store, db):
    seen: list[list[str]] = []

    def reply(messages: Sequence[Message]) -> Any:
        seen.append(non_system(messages))
        if last_user(messages) == "boom":
            return ProviderUnavailableError("down")
        return f"re: {last_user(messages)}"

    here = Agent("TwoPlaces", "scripted", llm=ScriptedProvider(reply), store=store)
    await here.run("one")
    async with Database(url=db.url, min_size=1, max_size=2) as other_db:
        there = await Agent.load(
            here.id, store=PostgresAgentStore(other_db), llm=ScriptedProvider(reply)
        )
        with pytest.raises(ProviderUnavailableError):
            await there.run("boom")
        await there.run("two")
    await here.run("three")
    assert seen[-1] == ["one", "re: one", "two", "re: two", "three"]


# --- idempotency --------------------------------------------------------------------------------


async def test_a_repeated_idempotency_key_replays_the_stored_reply(store, db):
    provider = ScriptedProvider(lambda messages: f"re: {last_user(messages)}")
    agent = Agent("Once", "scripted", llm=provider, store=store)
    first = await agent.run("pay the invoice", idempotency_key="key-1")
    again = await agent.run("pay the invoice", idempotency_key="key-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert (again.text, again.turn_id, again.session_id) == (
        first.text,
        first.turn_id,
        first.session_id,
    )
    assert len(provider.calls) == 1
    with pytest.raises(ConflictError) as conflict:
        await agent.run("pay another invoice", idempotency_key="key-1")
    assert conflict.value.code == "conflict"
    rows = await stored_rows(db, agent.id)
    assert [r["content"] for r in rows if r["role"] == "user"] == ["pay the invoice"]

    # Another agent may use the same key for its own turn.
    other = Agent("Other", "scripted", llm=ScriptedProvider(["mine"]), store=store)
    assert (await other.run("pay the invoice", idempotency_key="key-1")).replayed is False


async def test_a_key_whose_turn_failed_gives_turn_failed_until_a_new_key(store, db):
    outcomes: list[Any] = [ProviderUnavailableError("down"), "done"]
    provider = ScriptedProvider(lambda messages: outcomes.pop(0))
    agent = Agent("Retry", "scripted", llm=provider, store=store)
    with pytest.raises(ProviderUnavailableError):
        await agent.run("do it", idempotency_key="key-a")
    with pytest.raises(TurnFailedError) as failed:
        await agent.run("do it", idempotency_key="key-a")
    assert failed.value.code == "turn_failed"
    assert failed.value.details["error"]["code"] == "provider_unavailable"
    assert len(provider.calls) == 1
    assert (await agent.run("do it", idempotency_key="key-b")).text == "done"


# --- embeddings down -------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def embeddings_down(settings_env) -> Iterator[None]:
    from gathering.agents import long_term_memory

    settings_env(
        embedding_provider="openai",
        OPENAI_API_KEY="sk-test-embeddings",
        OPENAI_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1",
    )
    long_term_memory._embedder.cache_clear()  # it is built once per provider name
    yield
    long_term_memory._embedder.cache_clear()


@pytest.fixture
async def bus(db: Database) -> AsyncIterator[EventBus]:
    events = EventBus(db, poll_interval=0.05)
    await events.start()
    yield events
    await events.close(grace=1.0)


@pytest.mark.parametrize("stored", ["nothing", "memories", "knowledge"])
async def test_chat_goes_on_while_embeddings_are_down(store, db, bus, embeddings_down, stored):
    provider = ScriptedProvider(lambda messages: "noted")
    agent = Agent(
        "Degraded",
        "scripted",
        llm=provider,
        store=store,
        knowledge="all" if stored == "knowledge" else None,
    )
    await agent.save()
    if stored == "memories":  # written before the outage: no embedder here
        await LongTermMemory(db, agent_id=agent.id).remember("User prefers green tea")
    if stored == "knowledge":
        await KnowledgeBase(db).add_document("Tea guide", "Green tea is brewed at 80 C.")
    degraded: list[Event] = []
    bus.subscribe("memory.degraded", degraded.append, subjects=[f"agent:{agent.id}"])
    agent.event_bus = bus

    result = await agent.run("how do I brew green tea?")
    assert result.text == "noted"
    system = provider.last_call.messages[0].content
    assert ("green tea" in system.lower()) is (stored != "nothing")  # found by full text
    if stored != "nothing":  # with no memories and no knowledge, nothing is searched at all
        await until(lambda: bool(degraded))
        assert degraded[0].data["agent_id"] == agent.id
        assert "embeddings unavailable" in degraded[0].data["reason"]
    assert (await agent.run("and after that?")).text == "noted"


# --- time bounds -------------------------------------------------------------------------------------


async def test_a_hanging_tool_is_stopped_and_reported_to_the_model(store, db, settings_env):
    settings_env(tool_timeout=0.2)

    async def hang(n: int) -> str:
        await asyncio.sleep(60)
        return "never"

    provider = ScriptedProvider([tool_call("number", {"n": 1}), "gave up on it"])
    agent = Agent("Hang", "scripted", llm=provider, store=store, tools=[(NUMBER, hang)])
    result = await asyncio.wait_for(agent.run("go"), WAIT)
    assert result.text == "gave up on it"
    [tool_result] = provider.calls[1].messages[-1].tool_results
    assert tool_result.is_error and "did not finish" in tool_result.content
    status = await db.fetch_val(
        "SELECT c.status FROM agent.tool_calls c JOIN agent.turns t ON t.id = c.turn_id"
        " WHERE t.agent_id = $1",
        agent.id,
    )
    assert status == "failed"


async def test_a_hanging_model_call_fails_the_turn_with_provider_timeout(store, db, settings_env):
    settings_env(model_call_timeout=0.2)

    async def hang(messages: Sequence[Message]) -> str:
        await asyncio.sleep(60)
        return "never"

    agent = Agent("Mute", "scripted", llm=ScriptedProvider(hang), store=store)
    with pytest.raises(ProviderTimeoutError) as timeout:
        await asyncio.wait_for(agent.run("hello?"), WAIT)
    assert timeout.value.code == "provider_timeout"
    [turn] = await turns(db, agent.id)
    assert turn["status"] == "failed" and turn["error"]["code"] == "provider_timeout"


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_hanging_streamed_or_plain_model_call_is_bounded(store, settings_env, streaming):
    settings_env(model_call_timeout=0.2)

    async def hang(messages: Sequence[Message]) -> str:
        await asyncio.sleep(60)
        return "never"

    agent = Agent("MuteStream", "scripted", llm=ScriptedProvider(hang), store=store)

    async def consume() -> None:
        if streaming:
            async for _ in agent.stream("hello?"):
                pass
        else:
            await agent.run("hello?")

    with pytest.raises(ProviderTimeoutError):
        await asyncio.wait_for(consume(), WAIT)


async def test_the_turn_deadline_stops_a_tool_loop(store, db, settings_env):
    settings_env(turn_deadline=0.5, tool_timeout=5)

    async def slow(n: int) -> str:
        await asyncio.sleep(0.1)
        return str(n)

    provider = ScriptedProvider(lambda messages: tool_call("number", {"n": 1}))
    agent = Agent(
        "Deadline", "scripted", llm=provider, store=store, tools=[(NUMBER, slow)], max_iterations=50
    )
    with pytest.raises(TurnTimeoutError) as timeout:
        await asyncio.wait_for(agent.run("loop"), WAIT)
    assert timeout.value.code == "turn_timeout"
    assert 1 < len(provider.calls) < 50
    [turn] = await turns(db, agent.id)
    assert turn["status"] == "failed" and turn["error"]["code"] == "turn_timeout"


async def test_a_message_to_a_busy_agent_waits_then_is_refused(store, db, settings_env):
    settings_env(agent_busy_wait=0.2)
    started, release = asyncio.Event(), asyncio.Event()

    async def reply(messages: Sequence[Message]) -> str:
        if last_user(messages) == "long job":
            started.set()
            await release.wait()
        return "ok"

    agent = Agent("Busy", "scripted", llm=ScriptedProvider(reply), store=store)
    await agent.save()
    running = asyncio.create_task(agent.run("long job"))
    await asyncio.wait_for(started.wait(), WAIT)
    # The same object, and another object of the same agent (as another request would).
    twin = await Agent.load(agent.id, store=store, llm=ScriptedProvider(reply))
    for who in (agent, twin):
        with pytest.raises(AgentBusyError) as busy:
            await asyncio.wait_for(who.run("me too"), WAIT)
        assert busy.value.code == "agent_busy"
        assert busy.value.details["retry_after"] > 0
    release.set()
    assert (await asyncio.wait_for(running, WAIT)).text == "ok"
    rows = await stored_rows(db, agent.id)
    assert "me too" not in [r["content"] for r in rows]
    assert (await twin.run("me too")).text == "ok"


# --- tool errors ------------------------------------------------------------------------------------


async def test_tool_retry_goes_back_to_the_model_and_the_turn_goes_on(store):
    def positive(n: int) -> str:
        if n <= 0:
            raise ToolRetry("use a positive number")
        return f"used {n}"

    provider = ScriptedProvider(
        [tool_call("number", {"n": -1}), tool_call("number", {"n": 3}), "used 3"]
    )
    agent = Agent("Retrying", "scripted", llm=provider, store=store, tools=[(NUMBER, positive)])
    result = await agent.run("pick a number")
    assert result.text == "used 3" and result.iterations == 3
    [first] = provider.calls[1].messages[-1].tool_results
    assert first.is_error and "use a positive number" in first.content
    assert "ToolRetry" not in first.content
    [second] = provider.calls[2].messages[-1].tool_results
    assert (second.is_error, second.content) == (False, "used 3")


async def test_other_tool_exceptions_are_reported_with_their_type(store):
    async def broken(n: int) -> str:
        raise KeyError("missing")

    provider = ScriptedProvider([tool_call("number", {"n": 1}), "sorry"])
    agent = Agent("Broken", "scripted", llm=provider, store=store, tools=[(NUMBER, broken)])
    assert (await agent.run("go")).text == "sorry"
    [result] = provider.calls[1].messages[-1].tool_results
    assert result.is_error and "KeyError" in result.content


async def test_cancelled_error_from_a_tool_is_not_swallowed(store, db):
    async def cancelling(n: int) -> str:
        raise asyncio.CancelledError()

    provider = ScriptedProvider([tool_call("number", {"n": 1}), "recovered"])
    agent = Agent("Cancel", "scripted", llm=provider, store=store, tools=[(NUMBER, cancelling)])
    task = asyncio.create_task(agent.run("go"))
    await asyncio.wait({task}, timeout=WAIT)
    assert task.cancelled()
    assert len(provider.calls) == 1
    # The next turn closes the cut-off one as interrupted and goes on.
    assert (await agent.run("again")).text == "recovered"
    assert [t["status"] for t in await turns(db, agent.id)] == ["interrupted", "completed"]


async def test_cancelling_a_turn_during_a_tool_cancels_it(store, db):
    started = asyncio.Event()

    async def hang(n: int) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    provider = ScriptedProvider([tool_call("number", {"n": 1}), "after"])
    agent = Agent("CancelMid", "scripted", llm=provider, store=store, tools=[(NUMBER, hang)])
    task = asyncio.create_task(agent.run("go"))
    await asyncio.wait_for(started.wait(), WAIT)
    task.cancel()
    await asyncio.wait({task}, timeout=WAIT)
    assert task.cancelled()
    [turn] = await turns(db, agent.id)
    assert turn["status"] == "running"  # closed by the next turn, on any instance
    assert (await agent.run("again")).text == "after"
    second_call = provider.calls[1].messages
    assert any("outcome is unknown" in r.content for m in second_call for r in m.tool_results)


# --- bounded memory ----------------------------------------------------------------------------------


async def test_history_in_memory_stays_within_the_window_over_300_turns(store):
    from gathering.agents import turn_lock

    agent = Agent(
        "Chatty", "scripted", llm=ScriptedProvider(lambda m: "ok"), store=store, history_window=20
    )
    most = 0
    for i in range(300):
        await agent.run(f"m{i}")
        most = max(most, len(agent.history()))
    assert most <= agent.history_window
    assert [m.content for m in agent.memory.get_history()][-2:] == ["m299", "ok"]
    # No per-agent lock is left behind once no turn waits.
    loop = asyncio.get_running_loop()
    assert not [key for key in turn_lock._slots.get(loop, {}) if agent.id in key]


# --- knowledge in the prompt --------------------------------------------------------------------------

RUNBOOK = (
    "To roll back a release, run `deploy rollback --to previous` from the ops host. "
    "Watch the error rate dashboard while it runs."
)


async def test_knowledge_passages_reach_the_system_prompt(store, db):
    kb = KnowledgeBase(db)
    await kb.add_document("Deployment runbook", RUNBOOK, category="ops")
    await kb.add_document("Vacation policy", "Everyone gets 25 days of leave.", category="hr")
    provider = ScriptedProvider(lambda m: "ok")
    agent = Agent("Librarian", "scripted", llm=provider, store=store, knowledge="all")
    await agent.run("How do I roll back a release?")
    system = provider.last_call.messages[0]
    assert system.role == "system"
    assert KNOWLEDGE_HEADING in system.content
    section = system.content.split(KNOWLEDGE_HEADING, 1)[1]
    assert "Deployment runbook" in section and "deploy rollback --to previous" in section

    plain_provider = ScriptedProvider(lambda m: "ok")
    plain = Agent("NoLibrary", "scripted", llm=plain_provider, store=store)
    await plain.run("How do I roll back a release?")
    assert KNOWLEDGE_HEADING not in plain_provider.last_call.messages[0].content


# --- turn events ----------------------------------------------------------------------------------


async def test_a_turn_publishes_its_events(store, db, bus):
    def double(n: int) -> str:
        return str(2 * n)

    provider = ScriptedProvider([tool_call("number", {"n": 21}), "it is 42 indeed"])
    agent = Agent("Herald", "scripted", llm=provider, store=store, tools=[(NUMBER, double)])
    await agent.save()
    agent.event_bus = bus
    subjects = [f"agent:{agent.id}", f"user:{agent.owner_id}"]
    seen: list[Event] = []
    bus.subscribe(["turn.*", "tool.*"], seen.append, subjects=subjects)

    events = [event async for event in agent.stream("double 21")]
    result = events[-1]
    assert isinstance(result, TurnResult)
    durable = ["turn.started", "tool.started", "tool.finished", "turn.finished"]
    await until(lambda: sum(e.type in durable for e in seen) == 2 * len(durable))
    for subject in subjects:
        mine = [e for e in seen if e.subject == subject]
        assert [e.type for e in mine if e.type in durable] == durable
        assert all(e.data["turn_id"] == result.turn_id for e in mine)
        deltas = [e for e in mine if e.type == "turn.delta"]
        assert deltas and all(e.cursor is None for e in deltas)  # in-process only
        assert "".join(e.data["text"] for e in deltas) == "it is 42 indeed"
        finished = next(e for e in mine if e.type == "tool.finished")
        assert (finished.data["name"], finished.data["content"]) == ("number", "42")
        assert next(e for e in mine if e.type == "turn.finished").data["status"] == "completed"
    stored = await bus.replay(0, subjects=subjects[0])
    assert [e.type for e in stored] == durable


async def test_a_failed_turn_publishes_turn_finished_failed(store, bus):
    agent = Agent(
        "Sad", "scripted", llm=ScriptedProvider([ProviderUnavailableError("down")]), store=store
    )
    await agent.save()
    agent.event_bus = bus
    seen: list[Event] = []
    bus.subscribe("turn.finished", seen.append, subjects=[f"agent:{agent.id}"])
    with pytest.raises(ProviderUnavailableError):
        await agent.run("hi")
    await until(lambda: bool(seen))
    assert seen[0].data["status"] == "failed"
    assert seen[0].data["error"]["code"] == "provider_unavailable"

"""Regression tests for what a hostile review of the conversation runtime broke: a full pool,
cancels around the lock, long and malformed text, failing event publishes, replays, deadlines,
hung tools, deleted agents, repeated call ids."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from gathering.agents import Agent, PostgresAgentStore
from gathering.api.app import create_app
from gathering.config import load_settings
from gathering.db import Database
from gathering.errors import NotFoundError, TurnTimeoutError
from gathering.events import EventBus
from gathering.llm import Completion, ScriptedProvider, ToolCall, ToolSpec, tool_call


@pytest.fixture
def store(db):
    return PostgresAgentStore(db)


async def _advisory_locks(db: Database) -> int:
    """The advisory locks held, once the server has ended the sessions the client closed.

    A cancelled wait closes its connection; the server frees that session's locks when its
    backend exits, a moment after the client hung up, so a lock still listed is looked at again
    for up to five seconds before it counts.
    """
    count = 0
    for _ in range(50):
        count = await db.fetch_val("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        if count == 0:
            break
        await asyncio.sleep(0.1)
    return count


async def test_as_many_agents_as_pooled_connections_all_get_their_turn(db):
    # Each turn holds one connection; recall and durable events must use it, not a second.
    pool = Database(url=db.url, min_size=0, max_size=3)
    await pool.connect()
    bus = EventBus(pool)
    await bus.start()
    release = asyncio.Event()

    async def slow(messages):
        await release.wait()
        return "done"

    try:
        agents = []
        for i in range(3):
            agent = Agent(f"Pool{i}", llm=ScriptedProvider(slow), store=PostgresAgentStore(pool))
            agent.event_bus = bus
            await agent.memory.remember(f"fact {i}")
            agents.append(agent)
        turns = [asyncio.create_task(a.run(f"hello {i}")) for i, a in enumerate(agents)]
        await asyncio.sleep(0.3)  # all three hold their connection now
        release.set()
        assert [r.text for r in await asyncio.wait_for(asyncio.gather(*turns), 10)] == ["done"] * 3
    finally:
        await bus.close()
        await pool.disconnect()


async def test_a_cancel_around_the_lock_never_leaves_the_agent_locked(store, db, settings_env):
    settings_env(agent_busy_wait="2")
    agent = Agent("Cancelled", llm=ScriptedProvider(lambda m: "ok"), store=store)
    await agent.run("warm up")
    for delay in (0, 0.0005, 0.001, 0.002, 0.004):
        task = asyncio.create_task(agent.run("cancel me"))
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await _advisory_locks(db) == 0
    other_pool = Database(url=db.url, min_size=0, max_size=2)
    async with other_pool:
        other = await Agent.load(
            agent.id, store=PostgresAgentStore(other_pool), llm=ScriptedProvider(["from elsewhere"])
        )
        assert (await other.run("still there?")).text == "from elsewhere"


async def test_a_long_message_is_answered(store):
    agent = Agent("Verbose", llm=ScriptedProvider(lambda m: "read it"), store=store)
    await agent.memory.remember("the user writes long messages")
    assert (await agent.run("x " * 5_000)).text == "read it"


async def test_a_failing_event_bus_never_fails_the_turn(store, db):
    bus = EventBus(db)
    await bus.start()
    await bus.close()  # publishing now raises
    agent = Agent("Unheard", llm=ScriptedProvider(lambda m: "fine"), store=store)
    agent.event_bus = bus
    events = [event async for event in agent.stream("hello")]
    assert events[-1].text == "fine"
    status = await db.fetch_val("SELECT status FROM agent.turns WHERE agent_id = $1", agent.id)
    assert status == "completed"


async def test_a_replayed_key_with_new_session_changes_nothing(store, db):
    agent = Agent("Replayed", llm=ScriptedProvider(lambda m: f"re: {m[-1].content}"), store=store)
    first = await agent.run("fresh", idempotency_key="k-1", new_session=True)
    for _ in range(3):
        again = await agent.run("fresh", idempotency_key="k-1", new_session=True)
        assert again.replayed and again.session_id == first.session_id
    sessions = await db.fetch_val(
        "SELECT count(*) FROM agent.sessions WHERE agent_id = $1", agent.id
    )
    assert sessions == 1  # opened for the first turn; `new_session` on it had nothing to end


async def test_no_tool_starts_after_the_turn_deadline(store, db, settings_env):
    settings_env(turn_deadline="0.5")
    ran: list[int] = []

    async def transfer(n: int) -> str:
        ran.append(n)
        await asyncio.sleep(0.3)
        return f"transferred {n}"

    spec = ToolSpec(
        "transfer", "Move money", {"type": "object", "properties": {"n": {"type": "integer"}}}
    )
    provider = ScriptedProvider([[tool_call("transfer", {"n": i}) for i in range(5)], "never"])
    agent = Agent("Banker", llm=provider, store=store, tools=[(spec, transfer)])
    with pytest.raises(TurnTimeoutError):
        await agent.run("pay everyone")
    assert ran == [0, 1]  # the third would have started at 0.6 s, past the deadline
    rows = await db.fetch_all(
        "SELECT c.status, c.result FROM agent.tool_calls c JOIN agent.turns t ON t.id = c.turn_id"
        " WHERE t.agent_id = $1",
        agent.id,
    )
    not_run = [r for r in rows if "not run" in (r["result"] or "")]
    assert len(not_run) == 3 and all(r["status"] == "failed" for r in not_run)


async def test_hung_plain_tools_do_not_starve_the_process(store, settings_env):
    from gathering.tools.function import TOOL_THREADS

    settings_env(tool_timeout="0.2")
    gate = threading.Event()

    def hang() -> str:
        gate.wait(30)
        return "late"

    agent = Agent(
        "Hanger",
        llm=ScriptedProvider(
            lambda m: tool_call("hang", {}) if m[-1].role == "user" else "gave up"
        ),
        store=store,
        tools=[(ToolSpec("hang"), hang)],
    )
    try:
        for i in range(TOOL_THREADS):
            await agent.run(f"hang {i}")
        # The default executor is untouched: name lookups and password hashing still run.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
        provider = ScriptedProvider([tool_call("hang", {}), "ok"])
        refused = Agent("Hanger2", llm=provider, store=store, tools=[(ToolSpec("hang"), hang)])
        await refused.run("one more")
        result = provider.calls[1].messages[-1].tool_results[0]
        assert result.is_error and "tool threads are busy" in result.content
    finally:
        gate.set()


async def test_a_deleted_agent_is_never_sent_an_empty_conversation(store):
    calls: list[list[str]] = []

    async def answer(messages):
        calls.append([m.role for m in messages])
        return "hi"

    agent = Agent("Doomed", llm=ScriptedProvider(answer), store=store)
    await agent.run("first")
    await store.delete_agent(agent.id)
    with pytest.raises(NotFoundError):
        await agent.run("second")
    assert all("user" in roles for roles in calls)


async def test_text_postgres_cannot_store_is_replaced_not_refused(store, db):
    def tool() -> str:
        return "out\x00put \udc80"

    provider = ScriptedProvider(
        [
            Completion(
                text="",
                tool_calls=(ToolCall("c1", "tool", {"x": "a\x00b"}),),
                stop_reason="tool_calls",
            ),
            "bad\x00reply \udc80",
            "next",
        ]
    )
    agent = Agent("Messy", llm=provider, store=store, tools=[(ToolSpec("tool"), tool)])
    await agent.run("hello\x00there")
    assert (await agent.run("again")).text == "next"
    contents = [
        r["content"]
        for r in await db.fetch_all(
            "SELECT content FROM agent.messages m JOIN agent.sessions s ON s.id = m.session_id"
            " WHERE s.agent_id = $1 AND m.role IN ('user', 'assistant') ORDER BY seq",
            agent.id,
        )
    ]
    assert contents[0] == "hello\ufffdthere"
    assert contents[2].startswith("bad\ufffdreply")


async def test_repeated_tool_call_ids_are_renamed(store, db):
    provider = ScriptedProvider(
        [
            [
                tool_call("add", {"a": 1}, call_id="call_0"),
                tool_call("add", {"a": 2}, call_id="call_0"),
            ],
            tool_call("add", {"a": 3}, call_id="call_0"),
            "sum done",
        ]
    )
    spec = ToolSpec("add", "", {"type": "object", "properties": {"a": {"type": "integer"}}})
    agent = Agent("Counter", llm=provider, store=store, tools=[(spec, lambda a: a)])
    assert (await agent.run("add them")).text == "sum done"
    ids = [
        r["call_id"]
        for r in await db.fetch_all(
            "SELECT c.call_id FROM agent.tool_calls c JOIN agent.turns t ON t.id = c.turn_id"
            " WHERE t.agent_id = $1",
            agent.id,
        )
    ]
    assert len(ids) == 3 and len(set(ids)) == 3


async def test_a_queued_chat_to_a_deleted_agent_is_404(migrated_database_url, llm_stub_env):
    app = create_app(settings=load_settings(database_url=migrated_database_url, env="development"))
    release = asyncio.Event()

    async def slow(messages):
        await release.wait()
        return "done"

    from unittest.mock import patch

    class Client:
        async def generate(self, messages, tools=None, **options):
            return await slow(messages)

    transport = httpx.ASGITransport(app=app)
    with patch("gathering.agents.llm_client", Client()):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            agent = (await api.post("/agents", json={"name": "Gone", "provider": "openai"})).json()
            first = asyncio.create_task(
                api.post(f"/agents/{agent['id']}/chat", json={"message": "a"})
            )
            await asyncio.sleep(0.3)
            queued = asyncio.create_task(
                api.post(f"/agents/{agent['id']}/chat", json={"message": "b"})
            )
            await asyncio.sleep(0.2)
            assert (await api.delete(f"/agents/{agent['id']}")).status_code == 204
            release.set()
            responses = await asyncio.gather(first, queued)
    await app.state.gathering.close()
    assert responses[1].status_code == 404, responses[1].text
    assert responses[0].status_code in (200, 404)


async def test_an_idempotent_turn_stores_and_replays_a_messy_reply(store):
    agent = Agent("MessyKey", llm=ScriptedProvider(["bad\x00reply \udc80"]), store=store)
    first = await agent.run("hello", idempotency_key="messy-1")
    again = await agent.run("hello", idempotency_key="messy-1")
    assert again.replayed and again.text.startswith("bad\ufffdreply")
    assert first.turn_id == again.turn_id


async def test_a_turn_waits_for_the_last_reply_of_the_turn_before_to_commit(store, db):
    # A turn's last statement releases the lock before it commits: the next turn, from another
    # process, must wait for that commit and see the reply.
    from psycopg.conninfo import make_conninfo

    from gathering.agents.conversation_store import HistoryEntry, TurnStart
    from gathering.llm import Message

    seen: list[list[str]] = []

    def record(messages):
        seen.append([m.content for m in messages])
        return "second reply"

    agent = Agent("Ordered", llm=ScriptedProvider(["first"]), store=store)
    await agent.run("warm up")
    async with store.conversation(agent.id, wait=5, turn=TurnStart("first question")) as conv:
        conn = conv.queries.connection
        await conn.execute("BEGIN")
        await conv.finish_turn(
            conv.turn_id, [HistoryEntry(Message.assistant("first answer"))], None
        )
        assert conv.released  # the lock is free, the reply not yet committed
        # Another URL for the same database: its turns queue on PostgreSQL's lock only, as
        # another process's would.
        other_url = make_conninfo(db.url, application_name="other")
        other_pool = Database(url=other_url, min_size=0, max_size=2)
        async with other_pool:
            other_store = PostgresAgentStore(other_pool)

            async def window() -> list[str]:
                async with other_store.conversation(agent.id, wait=5) as other_conv:
                    return [e.message.content for e in await other_conv.window(10)]

            opening = asyncio.create_task(window())
            other = await Agent.load(agent.id, store=other_store, llm=ScriptedProvider(record))
            turn = asyncio.create_task(other.run("second question"))
            await asyncio.sleep(0.5)
            assert not opening.done() and not turn.done() and seen == []
            await conn.execute("COMMIT")
            assert (await asyncio.wait_for(opening, 10))[-2:] == ["first question", "first answer"]
            assert (await asyncio.wait_for(turn, 10)).text == "second reply"
    assert seen[0][-3:] == ["first question", "first answer", "second question"]
    rows = await db.fetch_all(
        "SELECT m.role, m.content, t.status FROM agent.messages m JOIN agent.turns t"
        " ON t.id = m.turn_id ORDER BY m.seq"
    )
    assert [(r["content"], r["status"]) for r in rows][-4:] == [
        ("first question", "completed"),
        ("first answer", "completed"),
        ("second question", "completed"),
        ("second reply", "completed"),
    ]
    assert await _advisory_locks(db) == 0


async def test_deleting_an_agent_as_its_turn_begins_never_deadlocks(store, db):
    # A turn beginning waits for the session row (held here as by the last turn's final
    # statement while it commits) while the agent is deleted: both must finish, neither fail.
    agent = Agent("Doomed", llm=ScriptedProvider(lambda m: "ok"), store=store)
    await agent.run("warm up")
    async with db.connection() as holder:
        await holder.execute("BEGIN")
        await holder.execute(
            "SELECT 1 FROM agent.sessions WHERE agent_id = $1 FOR UPDATE", (agent.id,)
        )
        turn = asyncio.create_task(agent.run("one more"))
        await asyncio.sleep(0.3)
        deletion = asyncio.create_task(
            db.execute("DELETE FROM agent.agents WHERE id = $1", agent.id)
        )
        await asyncio.sleep(0.3)
        await holder.execute("COMMIT")
    done = await asyncio.wait_for(asyncio.gather(turn, deletion, return_exceptions=True), 20)
    assert not isinstance(done[1], Exception), done[1]
    assert not isinstance(done[0], Exception) or isinstance(done[0], NotFoundError), done[0]
    assert await db.fetch_val("SELECT count(*) FROM agent.agents WHERE id = $1", agent.id) == 0

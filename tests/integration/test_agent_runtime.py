"""Agents on a real database: persistence, reload, tool loop, ordering, streaming, prompts."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from gathering.agents import (
    Agent,
    InMemoryAgentStore,
    Persona,
    PostgresAgentStore,
    PromptBuilder,
    ToolFinished,
    ToolStarted,
    TurnResult,
    as_completion,
)
from gathering.errors import ConflictError, InvalidInputError, NotFoundError
from gathering.llm import Completion, ScriptedProvider, TextDelta, ToolSpec, tool_call
from gathering.tools.function import FunctionTool

ADD = ToolSpec(
    "add",
    "Add two integers",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


def _add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def store(db):
    return PostgresAgentStore(db)


async def test_every_message_is_stored_before_the_reply_returns(store, db):
    agent = Agent("Scribe", "scripted", llm=ScriptedProvider(["Hi there"]), store=store)
    assert await agent.process_message("Hello") == "Hi there"
    rows = await db.fetch_all(
        "SELECT m.seq, m.role, m.content FROM agent.messages m"
        " JOIN agent.sessions s ON s.id = m.session_id JOIN agent.agents a ON a.id = s.agent_id"
        " WHERE a.name = $1 ORDER BY m.seq",
        "Scribe",
    )
    assert [(r["seq"], r["role"], r["content"]) for r in rows] == [
        (1, "user", "Hello"),
        (2, "assistant", "Hi there"),
    ]


async def test_agent_loaded_again_continues_its_session(store, db):
    first = Agent(
        "Keeper",
        "scripted",
        llm=ScriptedProvider(["one", "two"]),
        store=store,
        persona={"role": "archivist", "traits": ["careful"]},
    )
    await first.process_message("remember 42")
    # A new process: a fresh pool on the same database, nothing shared in memory.
    from gathering.db import Database

    other_db = Database(url=db.url)
    async with other_db:
        provider = ScriptedProvider(["you said 42"])
        again = await Agent.load("keeper", store=PostgresAgentStore(other_db), llm=provider)
        assert again.session_id == first.session_id
        assert again.persona.role == "archivist"
        assert [m.content for m in again.memory.get_history()] == ["remember 42", "one"]
        await again.process_message("what did I say?")
        sent = [m.content for m in provider.last_call.messages if m.role != "system"]
        assert sent == ["remember 42", "one", "what did I say?"]


async def test_same_name_is_the_same_agent_with_a_new_session(store):
    a = Agent("Twin", "scripted", llm=ScriptedProvider(["x"]), store=store)
    await a.process_message("hi")
    b = Agent("twin", "scripted", llm=ScriptedProvider(["y"]), store=store)
    await b.save()
    assert b.id == a.id and b.session_id != a.session_id
    assert len(await store.list_agents()) == 1


async def test_tool_loop_keeps_call_ids_and_returns_final_text(store):
    provider = ScriptedProvider(
        [
            tool_call("add", {"a": 2, "b": 3}, call_id="call_1"),
            "The sum is 5.",
        ]
    )
    agent = Agent("Calc", "scripted", llm=provider, store=store, tools=[(ADD, _add)])
    result = await agent.run("What is 2 + 3?")
    assert (result.text, result.outcome, result.iterations) == ("The sum is 5.", "completed", 2)
    second_call = provider.calls[1].messages
    tool_message = second_call[-1]
    assert tool_message.role == "tool"
    assert tool_message.tool_results[0].call_id == "call_1"
    assert tool_message.tool_results[0].content == "5"
    assert [t.name for t in provider.calls[0].tools] == ["add"]


async def test_tool_errors_go_back_to_the_model(store):
    def broken(**_: object) -> str:
        raise RuntimeError("disk on fire")

    provider = ScriptedProvider(
        [
            [tool_call("add", {"a": 1}), tool_call("nope", {}), tool_call("broken", {})],
            "I could not do it.",
        ]
    )
    agent = Agent(
        "Oops",
        "scripted",
        llm=provider,
        store=store,
        tools=[FunctionTool(ADD, _add), (ToolSpec("broken"), broken)],
    )
    result = await agent.run("try")
    results = provider.calls[1].messages[-1].tool_results
    assert all(r.is_error for r in results)
    # Checked against the schema before the call: the model is told which field to fix.
    assert '"b" is a required property' in results[0].content
    assert "no tool named 'nope'" in results[1].content
    assert "disk on fire" in results[2].content
    assert result.text == "I could not do it."


async def test_max_iterations_is_an_explicit_outcome(store):
    provider = ScriptedProvider(lambda messages: tool_call("add", {"a": 1, "b": 1}))
    agent = Agent(
        "Loopy", "scripted", llm=provider, store=store, tools=[(ADD, _add)], max_iterations=3
    )
    result = await agent.run("loop forever")
    assert result.outcome == "max_iterations"
    assert "max iterations reached" in result.text
    assert len(provider.calls) == 3


async def test_concurrent_messages_are_queued_in_order(store, db):
    async def slow_echo(messages):
        await asyncio.sleep(0.05)
        return f"re: {messages[-1].content}"

    agent = Agent("Queue", "scripted", llm=ScriptedProvider(slow_echo), store=store)
    replies = await asyncio.gather(*(agent.process_message(f"m{i}") for i in range(5)))
    assert replies == [f"re: m{i}" for i in range(5)]
    contents = [m.content for m in agent.memory.get_history()]
    assert contents == [x for i in range(5) for x in (f"m{i}", f"re: m{i}")]
    stored = await db.fetch_all(
        "SELECT content FROM agent.messages WHERE session_id = $1 ORDER BY seq", agent.session_id
    )
    assert [r["content"] for r in stored] == contents


async def test_stream_yields_deltas_tool_events_and_result(store):
    provider = ScriptedProvider([tool_call("add", {"a": 1, "b": 2}), "three it is"])
    agent = Agent("Streamer", "scripted", llm=provider, store=store, tools=[(ADD, _add)])
    events = [event async for event in agent.stream("1+2?")]
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["ToolStarted", "ToolFinished"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "three it is"
    assert isinstance(events[-1], TurnResult) and events[-1].text == "three it is"
    assert isinstance(events[0], ToolStarted) and isinstance(events[1], ToolFinished)


async def test_stream_through_the_provider_path(store, llm_stub_env):
    agent = Agent("Wire", "openai", "gpt-4o", store=store)
    deltas = [e.text async for e in agent.stream("ping") if isinstance(e, TextDelta)]
    assert "".join(deltas) == "Echo: ping"
    assert agent.memory.get_history()[-1].content == "Echo: ping"


async def test_system_prompt_sections_in_order_without_repeats(store):
    provider = ScriptedProvider(["ok"])
    agent = Agent(
        "Sophie",
        "scripted",
        llm=provider,
        store=store,
        project="GatheRing API",
        persona=Persona(role="lead architect", traits=("rigorous",), language="fr"),
    )
    agent.task = "Review the migration runner"
    agent.resume_note = "You were halfway through the review."
    await agent.process_message("go")
    system = provider.last_call.messages[0]
    assert system.role == "system"
    text = system.content
    assert text.index("You are Sophie, lead architect.") < text.index("## Project")
    assert text.index("## Project") < text.index("## Current task") < text.index("## Where you")
    assert "Always answer in this language: fr." in text
    assert text.count("## Project") == 1


def test_prompt_builder_respects_budget_and_rejects_unknown_sections():
    builder = PromptBuilder(budget_tokens=20)
    builder.set("persona", "p" * 40).set("task", "t" * 200).set("project", "")
    prompt = builder.build()
    assert len(prompt) <= 20 * 4 + 2
    assert prompt.startswith("p" * 40)
    with pytest.raises(ValueError):
        builder.set("gossip", "x")


def test_persona_defaults_to_english_and_rejects_unknown_fields():
    assert Persona().language == "en"
    with pytest.raises(ValueError):
        Persona.from_value({"role": "x", "mood": "grumpy"})


def test_from_config_rejects_unknown_keys_and_needs_a_name():
    with pytest.raises(InvalidInputError, match="unknown agent settings"):
        Agent.from_config({"name": "x", "colour": "blue"})
    with pytest.raises(InvalidInputError):
        Agent.from_config({"provider": "openai"})


def test_unknown_provider_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="known providers"):
        Agent("x", provider="skynet")


def test_replies_of_every_shape_are_understood():
    assert as_completion("plain").text == "plain"
    assert as_completion(Completion(text="c")).text == "c"
    blocks = SimpleNamespace(
        content=[
            SimpleNamespace(type="text", text="Let me check. "),
            SimpleNamespace(type="tool_use", id="toolu_1", name="add", input={"a": 1, "b": 2}),
        ]
    )
    completion = as_completion(blocks)
    assert completion.text == "Let me check. "
    assert completion.tool_calls[0].id == "toolu_1"
    with pytest.raises(InvalidInputError):
        as_completion(42)


async def test_in_memory_store_needs_no_database():
    store = InMemoryAgentStore()
    agent = Agent("Scratch", "scripted", llm=ScriptedProvider(["a", "b"]), store=store)
    await agent.process_message("1")
    again = await Agent.load("scratch", store=store, llm=ScriptedProvider([]))
    assert len(again.memory.get_history()) == 2
    await store.delete_agent(agent.id)
    with pytest.raises(NotFoundError):
        await store.load_agent("scratch")


async def test_clear_in_async_code_is_awaited(store, db):
    agent = Agent("Forgetful", "scripted", llm=ScriptedProvider(["a"]), store=store)
    await agent.process_message("x")
    await agent.memory.clear()
    assert agent.memory.get_history() == []
    assert (
        await db.fetch_val(
            "SELECT count(*) FROM agent.messages WHERE session_id = $1", agent.session_id
        )
        == 0
    )


async def test_empty_message_is_refused(store):
    agent = Agent("Quiet", "scripted", llm=ScriptedProvider([]), store=store)
    with pytest.raises(InvalidInputError):
        await agent.process_message("   ")


async def test_delete_and_load_unknown(store):
    agent = Agent("Gone", "scripted", llm=ScriptedProvider(["a"]), store=store)
    await agent.save()
    await store.delete_agent(agent.id)
    with pytest.raises(NotFoundError):
        await Agent.load(agent.id, store=store)
    with pytest.raises(NotFoundError):
        await store.delete_agent(agent.id)


async def test_long_term_memories_are_recalled_into_the_prompt(store):
    provider = ScriptedProvider(["noted", "Green tea, as you like it."])
    agent = Agent("Barista", "scripted", llm=provider, store=store)
    tea = await agent.memory.remember(
        "The user prefers green tea", kind="preference", importance=0.9, tags=["drinks"]
    )
    await agent.memory.remember("The user lives in Paris", kind="fact")
    await agent.process_message("hello")
    hits = await agent.memory.recall("what tea does the user prefer?")
    assert hits[0].id == tea.id
    await agent.process_message("What should I drink? I prefer tea.")
    system = provider.last_call.messages[0].content
    assert "## What you remember" in system and "green tea" in system
    await agent.memory.forget(tea.id)
    assert all(h.id != tea.id for h in await agent.memory.recall("green tea"))


async def test_long_term_memory_needs_postgres():
    from gathering.errors import FeatureUnavailableError

    agent = Agent("Scratchy", "scripted", llm=ScriptedProvider(["a"]), store=InMemoryAgentStore())
    with pytest.raises(FeatureUnavailableError):
        await agent.memory.remember("x")
    assert await agent.memory.recall_for_prompt("x") is None


async def test_save_recovers_after_a_failed_new_session():
    from gathering.errors import DatabaseUnavailableError

    class FlakyStore(InMemoryAgentStore):
        failures = 1

        def conversation(self, agent_id: int, *, wait: float, turn=None):
            if self.failures:
                self.failures -= 1
                raise DatabaseUnavailableError("blip")
            return super().conversation(agent_id, wait=wait, turn=turn)

    agent = Agent("Flaky", "scripted", llm=ScriptedProvider(["ok"]), store=FlakyStore())
    with pytest.raises(DatabaseUnavailableError):
        await agent.save()
    assert await agent.process_message("again") == "ok"


async def test_clearing_waits_for_the_turn_in_progress(store):
    in_turn = asyncio.Event()

    async def slow(messages):
        in_turn.set()  # the turn holds the agent's lock from here to its end
        await asyncio.sleep(0.1)
        return "done"

    agent = Agent("Patient", "scripted", llm=ScriptedProvider(slow), store=store)
    turn = asyncio.create_task(agent.process_message("long task"))
    await asyncio.wait_for(in_turn.wait(), 10)
    await agent.memory.clear()
    assert await turn == "done"
    assert agent.memory.get_history() == []


async def test_blocking_tools_run_off_the_event_loop(store):
    import threading

    seen: list[str] = []

    def blocking_tool() -> str:
        seen.append(threading.current_thread().name)
        return "ok"

    provider = ScriptedProvider([tool_call("blocking_tool", {}), "fine"])
    agent = Agent(
        "Offloader",
        "scripted",
        llm=provider,
        store=store,
        tools=[(ToolSpec("blocking_tool"), blocking_tool)],
    )
    await agent.run("go")
    assert seen and seen[0] != threading.main_thread().name


@pytest.mark.parametrize(
    "provider,model", [("anthropic", "claude-sonnet-4-20250514"), ("openai", "gpt-4o")]
)
async def test_a_conversation_with_tool_calls_goes_on_without_the_tools(
    store, llm_stub_env, provider, model
):
    # The API and the CLI rebuild agents from their stored record, without Python tools: the
    # history's tool traffic must still be accepted by the (strict) wire stub.
    agent = Agent(f"Toolful-{provider}", provider, model, store=store, tools=[(ADD, _add)])
    result = await agent.run('CALL add {"a": 2, "b": 3}')
    assert result.tool_calls and result.tool_calls[0].name == "add"
    again = await Agent.load(agent.id, store=store)
    reply = await again.run("and now?")
    assert reply.text == "Echo: and now?"


@pytest.mark.parametrize("stored_in", ["postgres", "memory"])
async def test_a_new_agent_object_never_overwrites_a_stored_namesake(db, stored_in):
    store = PostgresAgentStore(db) if stored_in == "postgres" else InMemoryAgentStore()
    first = Agent(
        "Ada",
        "scripted",
        "m1",
        persona={"role": "reviewer"},
        store=store,
        llm=ScriptedProvider(["first reply"]),
    )
    await first.process_message("hello")
    # The same definition takes over the stored agent (a script run twice continues it).
    again = Agent("ada", "scripted", "m1", persona={"role": "reviewer"}, store=store)
    await again.save()
    assert again.id == first.id
    # Another definition under the same name is refused, with the way out.
    other = Agent("Ada", "scripted", "m2", store=store)
    with pytest.raises(ConflictError, match="defined differently") as refused:
        await other.save()
    assert "Agent.load('Ada')" in (refused.value.hint or "")
    stored = await store.load_agent(first.id or 0)
    assert (stored.model, stored.persona["role"]) == ("m1", "reviewer")
    loaded = await Agent.load("Ada", store=store)
    loaded.model = "m2"  # the explicit way to change it
    await loaded.save()
    assert (await store.load_agent(first.id or 0)).model == "m2"

"""The agent's memory tools (`remember`, `recall`, `knowledge_search`) on a real PostgreSQL:
called through the registry with a real agent's context, as a direct invocation, and in an
agent's turn; each agent sees only its own memories and its owner's documents."""

from __future__ import annotations

import json

import httpx
import pytest
from db_rows import new_user

from gathering.agents import Agent
from gathering.agents.agent_store import InMemoryAgentStore, PostgresAgentStore
from gathering.agents.knowledge import KnowledgeBase
from gathering.api.app import create_app
from gathering.config import load_settings
from gathering.db import Database
from gathering.errors import (
    ConfigurationError,
    FeatureUnavailableError,
    NotFoundError,
    ToolArgumentsError,
)
from gathering.llm import ScriptedProvider, tool_call
from gathering.tools import loaded_registry
from gathering.tools.agent_tools import change_agent_tool, invoke_for_agent
from gathering.tools.context import ToolContext
from gathering.tools.registry import PLUGIN_GROUP, invoke

MEMORY_TOOLS = ("remember", "recall", "knowledge_search")
RUNBOOK = (
    "Deployments go out every Tuesday.\n\n"
    "To roll back a release, run `deploy rollback --to previous` and watch the error rate "
    "for ten minutes. Tell the on-call engineer in #ops."
)


async def stored_agent(db: Database, name: str, owner_id: int | None = None) -> Agent:
    agent = Agent(name, provider="ollama", store=PostgresAgentStore(db), owner_id=owner_id)
    await agent.save()
    return agent


async def call(agent: Agent, tool: str, **arguments: object) -> dict:
    """One call of `tool` as the agent's own call would run (its context, the registry)."""
    tools = await loaded_registry()
    output = await invoke(tools.require(tool), arguments, agent.tool_context("call-1"))
    return json.loads(output)


# --- registration -----------------------------------------------------------------------------


async def test_the_memory_tools_come_from_our_own_entry_point():
    tools = await loaded_registry()
    found = {name: tools.require(name) for name in MEMORY_TOOLS}
    assert {name: t.effect for name, t in found.items()} == {
        "remember": "write",
        "recall": "read",
        "knowledge_search": "read",
    }
    assert all(t.plugin == "gathering" and t.category == "memory" for t in found.values())
    assert all(t.default_policy == "allow" for t in found.values())
    assert PLUGIN_GROUP == "gathering.tools"


async def test_their_arguments_are_bounded_in_the_schema():
    tools = await loaded_registry()
    remember = tools.require("remember").spec.parameters["properties"]
    assert remember["content"]["maxLength"] == 8_000 and remember["content"]["minLength"] == 1
    assert (remember["importance"]["minimum"], remember["importance"]["maximum"]) == (0, 1)
    assert remember["tags"]["maxItems"] == 32 and remember["tags"]["items"]["maxLength"] == 64
    assert "preference" in remember["kind"]["enum"]
    recall = tools.require("recall").spec.parameters["properties"]
    assert (recall["limit"]["minimum"], recall["limit"]["maximum"]) == (1, 20)
    assert recall["query"]["maxLength"] == 4_000
    search = tools.require("knowledge_search").spec.parameters
    assert search["required"] == ["query"] and "ctx" not in search["properties"]


async def test_out_of_bounds_arguments_are_refused_by_field(db):
    agent = await stored_agent(db, "Bounded")
    for tool, arguments, field in [
        ("remember", {"content": ""}, "content"),
        ("remember", {"content": "x", "importance": 1.5}, "importance"),
        ("remember", {"content": "x", "kind": "gossip"}, "kind"),
        ("remember", {"content": "x", "tags": ["t"] * 33}, "tags"),
        ("recall", {"query": "x", "limit": 21}, "limit"),
        ("knowledge_search", {"query": "x" * 4_001}, "query"),
    ]:
        with pytest.raises(ToolArgumentsError) as refused:
            await call(agent, tool, **arguments)
        assert refused.value.details["errors"][0]["path"] == field, (tool, arguments)


# --- remember and recall --------------------------------------------------------------------


async def test_remember_then_recall_finds_it(db):
    agent = await stored_agent(db, "Mnemo")
    stored = await call(
        agent,
        "remember",
        content="The user prefers green tea in the morning",
        kind="preference",
        importance=0.8,
        tags=["Drinks", "morning"],
    )
    assert stored["remembered"] is True and stored["id"] > 0
    assert (stored["kind"], stored["importance"], stored["tags"]) == (
        "preference",
        0.8,
        ["drinks", "morning"],
    )
    await call(agent, "remember", content="The deploy window is on Tuesdays")
    found = await call(agent, "recall", query="what tea does the user drink?", limit=1)
    assert [m["content"] for m in found["memories"]] == [
        "The user prefers green tea in the morning"
    ]
    first = found["memories"][0]
    assert first["id"] == stored["id"] and 0 < first["score"] <= 1 and first["scope"] == "agent"
    assert await call(agent, "recall", query="zebra migration") == {"memories": []}
    # It is the agent's long-term memory, as the agent itself reads it.
    assert [m.id for m in await agent.memory.recall("green tea")] == [stored["id"]]


async def test_another_agent_or_owner_cannot_see_it(db):
    mine = await stored_agent(db, "Keeper")
    await call(mine, "remember", content="The vault code is kept in the blue binder")
    sibling = await stored_agent(db, "Sibling")  # same owner, another agent
    assert await call(sibling, "recall", query="vault code binder") == {"memories": []}
    stranger = await stored_agent(db, "Stranger", owner_id=await new_user(db))
    assert await call(stranger, "recall", query="vault code binder") == {"memories": []}
    # A context claiming the agent for another owner is refused, not answered.
    spoofed = ToolContext(mine.id, stranger.owner_id, db=db)
    tools = await loaded_registry()
    with pytest.raises(NotFoundError):
        await invoke(tools.require("recall"), {"query": "vault"}, spoofed)
    assert len((await call(mine, "recall", query="vault code binder"))["memories"]) == 1


async def test_without_an_agent_or_a_database_the_tools_say_why(db):
    tools = await loaded_registry()
    with pytest.raises(ConfigurationError) as no_agent:
        await invoke(tools.require("remember"), {"content": "x"}, ToolContext(db=db))
    assert "names no agent" in no_agent.value.message
    assert "POST /tools/remember/invoke" in (no_agent.value.hint or "")
    with pytest.raises(FeatureUnavailableError) as no_db:
        await invoke(tools.require("recall"), {"query": "x"}, ToolContext(agent_id=1))
    assert "InMemoryAgentStore" in (no_db.value.hint or "")
    in_memory = Agent("Volatile", provider="ollama", store=InMemoryAgentStore())
    assert in_memory.tool_context().db is None


# --- knowledge_search -----------------------------------------------------------------------


async def test_knowledge_search_finds_a_document_added_to_the_knowledge_base(db):
    agent = await stored_agent(db, "Operator")
    document = await KnowledgeBase(db).add_document(
        "Deployment runbook", RUNBOOK, category="ops", source="https://wiki.example/runbook"
    )
    await KnowledgeBase(db).add_document("Lunch menu", "Soup on Mondays.", category="canteen")
    found = await call(agent, "knowledge_search", query="how do I roll back a release?")
    best = found["passages"][0]
    assert best["document_id"] == document.id and best["title"] == "Deployment runbook"
    assert best["source"] == "https://wiki.example/runbook" and best["category"] == "ops"
    assert "deploy rollback --to previous" in best["passage"] and 0 < best["score"] <= 1
    in_canteen = await call(agent, "knowledge_search", query="roll back", category="canteen")
    assert in_canteen == {"passages": []}
    stranger = await stored_agent(db, "Outsider", owner_id=await new_user(db))
    assert await call(stranger, "knowledge_search", query="roll back a release") == {"passages": []}


async def test_knowledge_scoped_to_one_agent_is_not_anothers(db):
    agent = await stored_agent(db, "Scoped")
    other = await stored_agent(db, "Other")
    await KnowledgeBase(db, agent_id=agent.id).add_document(
        "Private notes", "The staging password rotates monthly.", scope="agent"
    )
    assert len((await call(agent, "knowledge_search", query="staging password"))["passages"]) == 1
    assert await call(other, "knowledge_search", query="staging password") == {"passages": []}


# --- as a direct invocation and in a turn ---------------------------------------------------


async def test_a_direct_invocation_runs_on_the_agents_memory(db):
    agent = await stored_agent(db, "Invoked")
    tools = await loaded_registry()
    assert agent.id is not None
    for name in ("remember", "recall"):
        await change_agent_tool(db, agent.id, tools.require(name), {"enabled": True})
    invoked = await invoke_for_agent(
        db,
        tools,
        agent.id,
        agent.owner_id,
        "remember",
        {"content": "Invoices are due on the 5th"},
        created_at=agent.created_at,
    )
    assert not invoked.is_error, invoked.error
    recalled = await invoke_for_agent(
        db, tools, agent.id, agent.owner_id, "recall", {"query": "invoices due"}, created_at=None
    )
    assert json.loads(recalled.output or "")["memories"][0]["content"] == (
        "Invoices are due on the 5th"
    )


async def test_an_agent_remembers_in_its_turn_and_recalls_later(db):
    tools = await loaded_registry()
    provider = ScriptedProvider(
        [
            tool_call("remember", {"content": "Ada's favourite colour is teal"}),
            "Noted.",
            tool_call("recall", {"query": "favourite colour"}),
            "Teal.",
        ]
    )
    agent = Agent("Turner", llm=provider, store=PostgresAgentStore(db))
    await agent.save()
    assert agent.id is not None
    for name in ("remember", "recall"):
        await change_agent_tool(db, agent.id, tools.require(name), {"enabled": True})
    assert await agent.process_message("My favourite colour is teal.") == "Noted."
    assert await agent.process_message("What is my favourite colour?") == "Teal."
    (result,) = provider.calls[-1].messages[-1].tool_results  # the recall's, as sent
    assert not result.is_error, result.content
    recalled = json.loads(result.content)
    assert recalled["memories"][0]["content"] == "Ada's favourite colour is teal"


# --- over HTTP ----------------------------------------------------------------------------


async def test_get_tools_lists_the_memory_tools_and_sql_query(migrated_database_url):
    app = create_app(settings=load_settings(database_url=migrated_database_url))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/tools")
        assert response.status_code == 200, response.text
        listed = {tool["name"]: tool for tool in response.json()}
    finally:
        await app.state.gathering.close()
    assert set(MEMORY_TOOLS) | {"sql_query"} <= listed.keys()
    assert listed["remember"]["effect"] == "write" and listed["recall"]["effect"] == "read"
    assert listed["knowledge_search"]["plugin"] == "gathering"
    assert listed["sql_query"]["effect"] == "read" and listed["sql_query"]["plugin"] is None
    assert listed["sql_query"]["category"] == "data"
    assert listed["recall"]["parameters"]["properties"]["limit"]["maximum"] == 20

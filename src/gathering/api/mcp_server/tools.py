"""The tools GatheRing offers MCP clients, on one `MCPServer`.

- `list_agents`: the caller's agents;
- `chat_with_agent`: one turn with one of them (stored, as `POST /agents/{id}/chat` stores it);
- `search_knowledge`: passages of the caller's knowledge base;
- `recall_memories`: an agent's long-term memories that answer a query.

Each acts for the caller (see `runtime`) on the caller's own agents only, with the scopes and
role checks of the matching API route. Our errors reach the client as a tool error with what
happened and what to do; anything else is logged and reaches it as a bare failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from gathering import __version__
from gathering.agents import KnowledgeBase, LongTermMemory, PostgresAgentStore
from gathering.agents.knowledge import MAX_CATEGORY_CHARS
from gathering.agents.long_term_memory import embedder_from_settings
from gathering.agents.retrieval import MAX_QUERY_CHARS
from gathering.api.errors import public_error
from gathering.api.fields import line, text
from gathering.api.mcp_server.runtime import McpRuntime
from gathering.api.routers.agents import MAX_MESSAGE_CHARS
from gathering.auth.principal import Principal
from gathering.errors import GatheringError

log = structlog.get_logger(__name__)

T = TypeVar("T")

CallerOf = Callable[[Context], Awaitable[Principal]]
"""How a tool learns who calls (see `command`: per HTTP request, or the stdio process's)."""

INSTRUCTIONS = (
    "GatheRing runs AI agents with memory and a knowledge base. Call list_agents to see the "
    "agents you own, chat_with_agent to talk with one (the conversation is stored and goes "
    "on at the next message), search_knowledge to find passages in your documents, and "
    "recall_memories for what an agent remembers."
)

AgentRef = Annotated[
    str,
    line(100, description='The agent\'s id (e.g. "12") or name, as list_agents shows it'),
]
Query = Annotated[str, text(MAX_QUERY_CHARS, description="What to look for, in words")]
Limit = Annotated[int, Field(ge=1, le=50, description="How many results at most")]


class AgentSummary(BaseModel):
    """One of the caller's agents."""

    id: int
    name: str
    provider: str
    model: str
    role: str = Field(description="The persona's role, e.g. 'code reviewer' (may be empty)")


class KnowledgePassage(BaseModel):
    """A passage of a document of the knowledge base, with its source and score."""

    document_id: int
    document_title: str
    category: str
    source: str | None
    content: str
    score: float = Field(description="Relevance from 0 to 1")


class RecalledMemory(BaseModel):
    """A memory of an agent, with how well it answers the query."""

    id: int
    kind: str
    content: str
    importance: float
    tags: list[str]
    scope: str
    created_at: datetime
    score: float = Field(description="Relevance from 0 to 1")


async def _reported(work: Awaitable[T]) -> T:
    """`work`'s result; our errors become a tool error the client (and its model) can act on:
    the public message (never a database's or provider's internals) and the hint."""
    try:
        return await work
    except GatheringError as exc:
        public = public_error(exc)
        hint = public.get("hint")
        message = str(public["message"]) + (f" (hint: {hint})" if hint else "")
        log.info("MCP tool refused", code=exc.code, message=exc.message)
        raise ToolError(message) from None


def build_server(runtime: McpRuntime, caller_of: CallerOf) -> MCPServer[Any]:
    """The MCP server of `runtime`, whose tools act for the caller `caller_of` names."""
    server: MCPServer[Any] = MCPServer(
        "gathering",
        title="GatheRing",
        instructions=INSTRUCTIONS,
        version=__version__,
    )
    settings = runtime.settings

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def list_agents(ctx: Context) -> list[AgentSummary]:
        """List the agents you own: id, name, model provider, model and role."""

        async def work() -> list[AgentSummary]:
            principal = await caller_of(ctx)
            runtime.require_scope(principal, "agents:read")
            store = PostgresAgentStore(await runtime.database())
            return [
                AgentSummary(
                    id=record.id or 0,
                    name=record.name,
                    provider=record.provider,
                    model=record.model,
                    role=str(record.persona.get("role") or ""),
                )
                for record in await store.list_agents(owner_id=principal.user_id)
            ]

        return await _reported(work())

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, open_world_hint=True))
    async def chat_with_agent(
        agent: AgentRef,
        message: Annotated[str, text(MAX_MESSAGE_CHARS, description="Your message to the agent")],
        ctx: Context,
        new_session: Annotated[
            bool, Field(description="Start a fresh conversation first (the old one is kept)")
        ] = False,
    ) -> str:
        """Send a message to one of your agents and get its reply. The agent answers with its
        model, tools, memory and knowledge, and the exchange is stored in its conversation
        (the next message continues it), exactly as a chat through GatheRing's API."""

        async def work() -> str:
            principal = await caller_of(ctx)
            runtime.require_scope(principal, "agents:write")
            runtime.require_writer(principal)
            talker = await runtime.live_agent(await runtime.own_agent(principal, agent))
            with await runtime.admit_turn(principal):
                result = await talker.run(message, new_session=new_session)
            if result.outcome == "waiting_approval":
                return (
                    f"{result.text} The reply comes once a person answers it (dashboard, "
                    f"POST /approvals/{result.approval_id}/approve or `gathering approvals "
                    f"approve {result.approval_id}`); it is then in the agent's conversation."
                )
            return result.text

        return await _reported(work())

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def search_knowledge(
        query: Query,
        ctx: Context,
        limit: Limit = 5,
        category: Annotated[
            str | None, line(MAX_CATEGORY_CHARS, description="Only documents of this category")
        ] = None,
        agent: Annotated[
            str | None,
            line(
                100,
                description="Search as this agent of yours sees the knowledge base (your "
                "shared documents and its own); left out: all your documents",
            ),
        ] = None,
    ) -> list[KnowledgePassage]:
        """Search your knowledge base (the documents you added to GatheRing) for passages that
        answer a query, best first."""

        async def work() -> list[KnowledgePassage]:
            principal = await caller_of(ctx)
            runtime.require_scope(principal, "memories:read")
            agent_id = (await runtime.own_agent(principal, agent)).id if agent else None
            knowledge = KnowledgeBase(
                await runtime.database(),
                owner_id=principal.user_id,
                agent_id=agent_id,
                embedder=embedder_from_settings(settings),
            )
            hits = await knowledge.search(query, limit, category=category)
            return [
                KnowledgePassage(
                    document_id=hit.document_id,
                    document_title=hit.document_title,
                    category=hit.category,
                    source=hit.source,
                    content=hit.content,
                    score=hit.score,
                )
                for hit in hits
            ]

        return await _reported(work())

    # Recall is not read-only: it counts each recalled memory's use (the API refuses it to a
    # viewer for that reason).
    @server.tool(annotations=ToolAnnotations(read_only_hint=False, open_world_hint=False))
    async def recall_memories(
        agent: AgentRef, query: Query, ctx: Context, limit: Limit = 5
    ) -> list[RecalledMemory]:
        """Recall what one of your agents remembers (its long-term memory, and your memories
        shared with all your agents) that answers a query, best first."""

        async def work() -> list[RecalledMemory]:
            principal = await caller_of(ctx)
            runtime.require_scope(principal, "memories:read")
            runtime.require_writer(principal)
            record = await runtime.own_agent(principal, agent)
            memory = LongTermMemory(
                await runtime.database(),
                agent_id=record.id,
                owner_id=principal.user_id,
                embedder=embedder_from_settings(settings),
            )
            return [
                RecalledMemory(
                    id=item.id,
                    kind=item.kind,
                    content=item.content,
                    importance=item.importance,
                    tags=list(item.tags),
                    scope=item.scope,
                    created_at=item.created_at,
                    score=item.score,
                )
                for item in await memory.recall(query, limit)
            ]

        return await _reported(work())

    return server

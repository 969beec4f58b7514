"""The agent's own memory as tools: `remember`, `recall` and `knowledge_search`.

They work on the memory of the agent that calls them (`ToolContext.agent_id`, of its owner),
in GatheRing's database (`ToolContext.db`): an agent never reads or writes another agent's
memories, nor another owner's documents. They reach the registry through our own entry point
(`gathering.tools` in pyproject.toml: `memory = "gathering.agents.memory_tools:memory_tools"`),
since `tools/` does not import `agents/`. A model calls them with JSON arguments:

    remember    {"content": "The user prefers green tea", "kind": "preference"}
    recall      {"query": "what does the user drink?", "limit": 3}
    knowledge_search   {"query": "how do I roll back a release?", "category": "ops"}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from gathering.agents.knowledge import MAX_CATEGORY_CHARS, KnowledgeBase, KnowledgeHit
from gathering.agents.long_term_memory import (
    MAX_MEMORY_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    LongTermMemory,
    Memory,
    MemoryKind,
    embedder_from_settings,
)
from gathering.agents.retrieval import MAX_QUERY_CHARS
from gathering.db.database import Queries
from gathering.errors import ConfigurationError
from gathering.tools.context import ToolContext
from gathering.tools.function import FunctionTool
from gathering.tools.signature import function_tool

MAX_RESULTS = 20
SCORE_DIGITS = 4

Content = Annotated[str, Field(min_length=1, max_length=MAX_MEMORY_CHARS)]
Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
Limit = Annotated[int, Field(ge=1, le=MAX_RESULTS)]
Importance = Annotated[float, Field(ge=0, le=1)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]
Tags = Annotated[tuple[Tag, ...], Field(max_length=MAX_TAGS)]
Category = Annotated[str, Field(min_length=1, max_length=MAX_CATEGORY_CHARS)]


def _agent(ctx: ToolContext, tool: str) -> tuple[Queries, int]:
    """The database and the agent of the call; the tools work on an agent's own memory."""
    if ctx.agent_id is None:
        raise ConfigurationError(
            f"{tool} works on an agent's own memory, and this call names no agent",
            hint=f"call it in an agent's turn, or with POST /tools/{tool}/invoke and an agent_id",
        )
    return ctx.require_db(), ctx.agent_id


def _memory(ctx: ToolContext, tool: str) -> LongTermMemory:
    db, agent_id = _agent(ctx, tool)
    return LongTermMemory(
        db, agent_id=agent_id, owner_id=ctx.owner_id, embedder=embedder_from_settings()
    )


def _memory_out(memory: Memory) -> dict[str, Any]:
    return {
        "id": memory.id,
        "content": memory.content,
        "kind": memory.kind,
        "importance": memory.importance,
        "tags": list(memory.tags),
        "scope": memory.scope,
        "created_at": memory.created_at.isoformat(),
    }


async def remember(
    ctx: ToolContext,
    content: Content,
    kind: MemoryKind = "fact",
    importance: Importance = 0.5,
    tags: Tags = (),
) -> dict[str, Any]:
    """Store something in your long-term memory, to recall it in later conversations.

    Args:
        content: What to remember, as a self-contained sentence (e.g. "The user's name is Ada").
        kind: fact, preference, event, instruction, summary, note or skill.
        importance: From 0 to 1: how much it matters (ranks it when recalled).
        tags: Words to file it under (lower-cased).
    """
    memory = await _memory(ctx, "remember").remember(content, kind, importance, tags)
    return {"remembered": True, **_memory_out(memory)}


async def recall(ctx: ToolContext, query: Query, limit: Limit = 5) -> dict[str, Any]:
    """Search your long-term memory: the memories that best match the query, best first.

    Args:
        query: What to look for, in words (e.g. "what does the user like to drink?").
        limit: At most this many memories.
    """
    found = await _memory(ctx, "recall").recall(query, limit)
    return {"memories": [{**_memory_out(m), "score": round(m.score, SCORE_DIGITS)} for m in found]}


def _hit_out(hit: KnowledgeHit) -> dict[str, Any]:
    return {
        "document_id": hit.document_id,
        "title": hit.document_title,
        "source": hit.source,
        "category": hit.category,
        "chunk_id": hit.chunk_id,
        "passage": hit.content,
        "score": round(hit.score, SCORE_DIGITS),
    }


async def knowledge_search(
    ctx: ToolContext, query: Query, limit: Limit = 5, category: Category | None = None
) -> dict[str, Any]:
    """Search the knowledge base (documents your owner added, for everyone or for you): the
    passages that best answer the query, best first, with their document and source.

    Args:
        query: The question or words to look for.
        limit: At most this many passages.
        category: Only documents of this category (e.g. "ops").
    """
    db, agent_id = _agent(ctx, "knowledge_search")
    kb = KnowledgeBase(
        db, agent_id=agent_id, owner_id=ctx.owner_id, embedder=embedder_from_settings()
    )
    hits = await kb.search(query, limit, category=category)
    return {"passages": [_hit_out(hit) for hit in hits]}


def memory_tools() -> list[FunctionTool]:
    """The memory tools (the `gathering.tools` entry point `memory`)."""
    return [
        function_tool(remember, effect="write", category="memory"),
        function_tool(recall, effect="read", category="memory"),
        function_tool(knowledge_search, effect="read", category="memory"),
    ]

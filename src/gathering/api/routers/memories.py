"""`/memories`: agents' long-term memories (remember, list, recall, forget). See
docs/memory.md. The knowledge base has its own router (`/knowledge`, routers/knowledge.py),
which also answers its deprecated paths here, `/memories/knowledge...`.

Someone else's agent or memory answers 404, like one that does not exist; admins see
everything. API keys need the scopes `memories:read` / `memories:write`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Discriminator, Field
from pydantic import Tag as Variant

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.agents import PostgresAgentStore
from gathering.agents.long_term_memory import (
    MAX_MEMORY_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    LongTermMemory,
    MemoryKind,
    delete_memory,
    embedder_from_settings,
    get_memory,
)
from gathering.agents.retrieval import MAX_QUERY_CHARS, MAX_SCOPE_ID_CHARS, Scope
from gathering.api.deps import (
    MAX_ID,
    AgentId,
    DbDep,
    MemoriesReader,
    MemoriesWriter,
    app_state,
)
from gathering.api.fields import (
    DIGITS_PATTERN,
    Integer,
    Number,
    WholeNumber,
    line,
    text,
)
from gathering.api.security import (
    Principal,
    ensure_owner,
    not_found,
    rate_limit,
)
from gathering.db import Database
from gathering.llm.embeddings import EmbeddingProvider

router = APIRouter(prefix="/memories", tags=["memories"])

MemoryId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The memory's id")]
ScopeId = Annotated[str, line(MAX_SCOPE_ID_CHARS)]
AgentScopeId = Annotated[
    str, Field(pattern=DIGITS_PATTERN, description='The agent\'s id, e.g. "12"')
]
Tag = Annotated[str, line(MAX_TAG_CHARS)]


def get_embedder(request: Request) -> EmbeddingProvider | None:
    """The embedding provider from the settings (None: full-text search only)."""
    return embedder_from_settings(app_state(request).settings)


Embedder = Annotated[EmbeddingProvider | None, Depends(get_embedder)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bodies -----------------------------------------------------------------------------------


class _Memory(_Body):
    content: str = text(MAX_MEMORY_CHARS)
    kind: MemoryKind = "fact"
    importance: Number = Field(default=0.5, ge=0, le=1)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class AgentMemoryIn(_Memory):
    """A memory private to the agent (the default scope)."""

    scope: Literal["agent"] = "agent"
    scope_id: None = Field(default=None, description="Left out: the agent is the scope")


class SharedMemoryIn(_Memory):
    """A memory shared with a circle or a project, named by `scope_id`."""

    scope: Literal["circle", "project"]
    scope_id: ScopeId


class GlobalMemoryIn(_Memory):
    """A memory shared with all the owner's agents."""

    scope: Literal["global"]
    scope_id: None = None


def scope_variant(default: str) -> Any:
    """A discriminator on `scope` (`default` when left out): agent, shared or global."""

    def variant(value: Any) -> str | None:
        if isinstance(value, dict):
            scope = value.get("scope", default)
        else:  # a model already built, or not an object at all (pydantic refuses it)
            scope = getattr(value, "scope", None)
        if not isinstance(scope, str):
            return None  # pydantic answers that no variant matches
        return {"circle": "shared", "project": "shared"}.get(scope, scope)

    return Discriminator(variant)


RememberRequest = Annotated[
    Annotated[AgentMemoryIn, Variant("agent")]
    | Annotated[SharedMemoryIn, Variant("shared")]
    | Annotated[GlobalMemoryIn, Variant("global")],
    scope_variant("agent"),
]


class RecallRequest(_Body):
    """What to recall. `circle_ids` / `project_ids` name the circles and projects whose shared
    memories the agent may read."""

    query: str = text(MAX_QUERY_CHARS)
    limit: Integer = Field(default=5, ge=1, le=100)
    scopes: list[Scope] | None = Field(default=None, max_length=4)
    kinds: list[MemoryKind] | None = Field(default=None, max_length=16)
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)
    min_score: Number = Field(default=0.0, ge=0, le=1)
    circle_ids: list[ScopeId] = Field(default_factory=list, max_length=100)
    project_ids: list[ScopeId] = Field(default_factory=list, max_length=100)


# --- responses --------------------------------------------------------------------------------


class MemoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner_id: int
    agent_id: int | None
    source_agent_id: int | None
    scope: Scope
    scope_id: str | None
    kind: MemoryKind
    content: str
    importance: float
    tags: list[str]
    embedding_model: str | None
    created_at: datetime
    last_accessed_at: datetime | None
    access_count: int


class ScoreOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    score: float
    relevance: float
    text: float
    semantic: float | None
    importance: float
    recency: float
    match: Literal["strict", "loose", "semantic"]


class RecalledMemoryOut(MemoryOut):
    score: float
    parts: ScoreOut


class RecallResponse(BaseModel):
    results: list[RecalledMemoryOut]
    semantic: bool = Field(description="Whether embeddings took part in the search")


# --- helpers ----------------------------------------------------------------------------------


async def agent_owner(request: Request, principal: Principal, db: Database, agent_id: int) -> int:
    """The owner of agent `agent_id`; 404 when it does not exist or is not the caller's."""
    owner = await PostgresAgentStore(db).owner_of(agent_id)
    if owner is None:
        raise not_found("agent", agent_id)
    await ensure_owner(request, principal, owner, resource="agent", resource_id=agent_id)
    return owner


async def _agent_memory(
    request: Request,
    principal: Principal,
    db: Database,
    agent_id: int,
    embedder: EmbeddingProvider | None,
    *,
    circle_ids: Sequence[str] = (),
    project_ids: Sequence[str] = (),
) -> LongTermMemory:
    owner = await agent_owner(request, principal, db, agent_id)
    return LongTermMemory(
        db,
        agent_id=agent_id,
        owner_id=owner,
        embedder=embedder,
        circle_ids=circle_ids,
        project_ids=project_ids,
    )


# --- agents' memories -------------------------------------------------------------------------


@router.post(
    "/agents/{agent_id}",
    status_code=status.HTTP_201_CREATED,
    summary="Remember something for an agent",
)
async def remember(
    agent_id: AgentId,
    body: RememberRequest,
    request: Request,
    principal: MemoriesWriter,
    db: DbDep,
    embedder: Embedder,
) -> MemoryOut:
    memory = await _agent_memory(request, principal, db, agent_id, embedder)
    stored = await memory.remember(
        body.content,
        kind=body.kind,
        importance=body.importance,
        tags=body.tags,
        scope=body.scope,
        scope_id=body.scope_id,
    )
    return MemoryOut.model_validate(stored)


@router.get(
    "/agents/{agent_id}",
    summary="List the memories an agent sees, newest first",
    dependencies=[rate_limit("relaxed")],
)
async def list_memories(
    agent_id: AgentId,
    request: Request,
    principal: MemoriesReader,
    db: DbDep,
    scope: Annotated[list[Scope] | None, Query(max_length=4)] = None,
    kind: Annotated[list[MemoryKind] | None, Query(max_length=16)] = None,
    tag: Annotated[list[Tag] | None, Query(max_length=MAX_TAGS)] = None,
    circle_id: Annotated[list[ScopeId] | None, Query(max_length=100)] = None,
    project_id: Annotated[list[ScopeId] | None, Query(max_length=100)] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 50,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[MemoryOut]:
    memory = await _agent_memory(
        request,
        principal,
        db,
        agent_id,
        None,
        circle_ids=circle_id or [],
        project_ids=project_id or [],
    )
    memories = await memory.list(scopes=scope, kinds=kind, tags=tag, limit=limit, offset=offset)
    return [MemoryOut.model_validate(item) for item in memories]


@router.post(
    "/agents/{agent_id}/recall",
    summary="Recall the memories that answer a query (counts each recalled memory's use)",
)
async def recall(
    agent_id: AgentId,
    body: RecallRequest,
    request: Request,
    principal: MemoriesReader,
    db: DbDep,
    embedder: Embedder,
) -> RecallResponse:
    memory = await _agent_memory(
        request,
        principal,
        db,
        agent_id,
        embedder,
        circle_ids=body.circle_ids,
        project_ids=body.project_ids,
    )
    recalled = await memory.recall(
        body.query,
        body.limit,
        scopes=body.scopes,
        kinds=body.kinds,
        tags=body.tags,
        min_score=body.min_score,
    )
    return RecallResponse(
        results=[RecalledMemoryOut.model_validate(item) for item in recalled],
        semantic=embedder is not None,
    )


@router.get("/{memory_id:id}", summary="One memory", dependencies=[rate_limit("relaxed")])
async def read_memory(
    memory_id: MemoryId,
    request: Request,
    principal: MemoriesReader,
    db: DbDep,
) -> MemoryOut:
    memory = await get_memory(db, memory_id, owner_id=None)
    await ensure_owner(
        request, principal, memory.owner_id, resource="memory", resource_id=memory_id
    )
    return MemoryOut.model_validate(memory)


@router.delete("/{memory_id:id}", status_code=status.HTTP_204_NO_CONTENT, summary="Forget a memory")
async def forget(
    memory_id: MemoryId,
    request: Request,
    principal: MemoriesWriter,
    db: DbDep,
) -> Response:
    memory = await get_memory(db, memory_id, owner_id=None)
    await ensure_owner(
        request, principal, memory.owner_id, resource="memory", resource_id=memory_id
    )
    await delete_memory(db, memory_id, owner_id=memory.owner_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

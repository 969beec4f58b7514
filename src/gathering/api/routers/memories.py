"""`/memories`: agents' long-term memories (remember, list, recall, forget) and the knowledge
base (add, list, read, delete and search documents). See docs/memory.md.

Someone else's agent, memory or document answers 404, like one that does not exist; admins
see everything. API keys need the scopes `memories:read` / `memories:write`.
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
from gathering.agents.knowledge import (
    MAX_CATEGORY_CHARS,
    MAX_DOCUMENT_CHARS,
    MAX_METADATA_BYTES,
    MAX_SOURCE_CHARS,
    MAX_TITLE_CHARS,
    KnowledgeBase,
)
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
from gathering.agents.persona import NO_NUL
from gathering.agents.retrieval import MAX_QUERY_CHARS, MAX_SCOPE_ID_CHARS, Scope, ScopeRef
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
    LINE_PATTERN,
    Flag,
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
    viewer_allowed,
)
from gathering.db import Database
from gathering.llm.embeddings import EmbeddingProvider

router = APIRouter(prefix="/memories", tags=["memories"])

MemoryId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The memory's id")]
DocumentId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The document's id")]
ScopeId = Annotated[str, line(MAX_SCOPE_ID_CHARS)]
AgentScopeId = Annotated[
    str, Field(pattern=DIGITS_PATTERN, description='The agent\'s id, e.g. "12"')
]
Tag = Annotated[str, line(MAX_TAG_CHARS)]
Category = Annotated[str, line(MAX_CATEGORY_CHARS)]


def get_embedder(request: Request) -> EmbeddingProvider | None:
    """The embedding provider from the settings (None: full-text search only)."""
    return embedder_from_settings(app_state(request).settings)


# Query parameters take their rules as keywords (a `Field` cannot go inside `Query`).
CATEGORY = {"min_length": 1, "max_length": MAX_CATEGORY_CHARS, "pattern": LINE_PATTERN}
SCOPE_ID = {"min_length": 1, "max_length": MAX_SCOPE_ID_CHARS, "pattern": LINE_PATTERN}
NoNul = Annotated[str, Field(max_length=10_000, pattern=NO_NUL)]
MetaKey = Annotated[str, Field(max_length=200, pattern=NO_NUL)]
MetaScalar = NoNul | Integer | Number | Flag | None
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


def _variant(default: str) -> Any:
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
    _variant("agent"),
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


class AgentRefIn(_Body):
    """One agent's scope, or (without `scope_id`) every agent's."""

    scope: Literal["agent"]
    scope_id: AgentScopeId | None = None


class CircleRefIn(_Body):
    """One circle, or (without `scope_id`) every one."""

    scope: Literal["circle"]
    scope_id: ScopeId | None = None


class ProjectRefIn(_Body):
    """One project, or (without `scope_id`) every one."""

    scope: Literal["project"]
    scope_id: ScopeId | None = None


class GlobalRefIn(_Body):
    scope: Literal["global"]
    scope_id: None = None


# One variant per `scope` value. Once, schemathesis 4.32 reported valid circle scopes as
# violating the enum of a variant shared by circle and project; this removes that variant.
ScopeRefIn = Annotated[
    AgentRefIn | CircleRefIn | ProjectRefIn | GlobalRefIn, Field(discriminator="scope")
]


class _Document(_Body):
    """A document for the knowledge base; it is cut into chunks and indexed."""

    title: str = line(MAX_TITLE_CHARS)
    content: str = text(MAX_DOCUMENT_CHARS)
    category: Category = "general"
    source: str | None = text(MAX_SOURCE_CHARS, default=None)
    metadata: dict[MetaKey, MetaScalar | list[MetaScalar]] = Field(
        default_factory=dict,
        max_length=50,
        description=f"Flat key/value data kept with the document; at most "
        f"{MAX_METADATA_BYTES // 1000} KB as JSON",
    )


class GlobalDocumentIn(_Document):
    """A document every agent of the owner may use (the default scope)."""

    scope: Literal["global"] = "global"
    scope_id: None = None


class AgentDocumentIn(_Document):
    """A document for one agent, named by its id."""

    scope: Literal["agent"]
    scope_id: AgentScopeId


class SharedDocumentIn(_Document):
    """A document for a circle or a project, named by `scope_id`."""

    scope: Literal["circle", "project"]
    scope_id: ScopeId


DocumentCreate = Annotated[
    Annotated[GlobalDocumentIn, Variant("global")]
    | Annotated[AgentDocumentIn, Variant("agent")]
    | Annotated[SharedDocumentIn, Variant("shared")],
    _variant("global"),
]


class KnowledgeSearchRequest(_Body):
    query: str = text(MAX_QUERY_CHARS)
    limit: Integer = Field(default=5, ge=1, le=100)
    category: Category | None = None
    scopes: list[ScopeRefIn] | None = Field(default=None, max_length=100)
    min_score: Number = Field(default=0.0, ge=0, le=1)


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


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner_id: int
    title: str
    category: str
    scope: Scope
    scope_id: str | None
    source: str | None
    metadata: dict[str, Any]
    size_chars: int
    chunk_count: int
    embedding_model: str | None
    created_at: datetime
    content: str | None = None


class KnowledgeHitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    document_id: int
    document_title: str
    category: str
    scope: Scope
    scope_id: str | None
    source: str | None
    chunk_id: int
    seq: int
    start: int
    end: int
    content: str
    score: float
    parts: ScoreOut


class KnowledgeSearchResponse(BaseModel):
    results: list[KnowledgeHitOut]
    semantic: bool = Field(description="Whether embeddings took part in the search")


# --- helpers ----------------------------------------------------------------------------------


async def _agent_owner(request: Request, principal: Principal, db: Database, agent_id: int) -> int:
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
    owner = await _agent_owner(request, principal, db, agent_id)
    return LongTermMemory(
        db,
        agent_id=agent_id,
        owner_id=owner,
        embedder=embedder,
        circle_ids=circle_ids,
        project_ids=project_ids,
    )


# --- knowledge (declared first: `/memories/knowledge` is not a memory id) --------------------


@router.get("/knowledge", summary="List documents", dependencies=[rate_limit("relaxed")])
async def list_documents(
    principal: MemoriesReader,
    db: DbDep,
    category: Annotated[str | None, Query(**CATEGORY)] = None,
    scope: Annotated[Scope | None, Query()] = None,
    scope_id: Annotated[
        str | None, Query(**SCOPE_ID, description="With `scope`: only that one")
    ] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 50,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[DocumentOut]:
    if scope == "global" and scope_id is not None:
        return []  # global documents have no scope id: none matches
    scopes = None if scope is None else [ScopeRef(scope, scope_id)]
    documents = await KnowledgeBase(db, owner_id=principal.owner_filter).list_documents(
        category=category, scopes=scopes, limit=limit, offset=offset
    )
    return [DocumentOut.model_validate(document) for document in documents]


@router.post(
    "/knowledge",
    status_code=status.HTTP_201_CREATED,
    summary="Add a document (chunked and indexed)",
    dependencies=[rate_limit("bulk")],
    responses={404: {"description": "The agent of an agent-scoped document is not found"}},
)
async def add_document(
    body: DocumentCreate,
    request: Request,
    principal: MemoriesWriter,
    db: DbDep,
    embedder: Embedder,
) -> DocumentOut:
    owner = principal.user_id
    if body.scope == "agent":
        owner = await _agent_owner(request, principal, db, int(body.scope_id or 0))
    document = await KnowledgeBase(db, owner_id=owner, embedder=embedder).add_document(
        body.title,
        body.content,
        category=body.category,
        scope=body.scope,
        scope_id=body.scope_id,
        source=body.source,
        metadata=body.metadata,
    )
    return DocumentOut.model_validate(document)


@router.post(
    "/knowledge/search",
    summary="Search the knowledge base",
    dependencies=[Depends(viewer_allowed)],  # a POST that only reads
)
async def search_knowledge(
    body: KnowledgeSearchRequest,
    principal: MemoriesReader,
    db: DbDep,
    embedder: Embedder,
) -> KnowledgeSearchResponse:
    scopes = (
        None if body.scopes is None else [ScopeRef(ref.scope, ref.scope_id) for ref in body.scopes]
    )
    knowledge = KnowledgeBase(db, owner_id=principal.owner_filter, embedder=embedder)
    hits = await knowledge.search(
        body.query, body.limit, category=body.category, scopes=scopes, min_score=body.min_score
    )
    return KnowledgeSearchResponse(
        results=[KnowledgeHitOut.model_validate(hit) for hit in hits], semantic=embedder is not None
    )


@router.get(
    "/knowledge/{document_id:id}", summary="One document", dependencies=[rate_limit("relaxed")]
)
async def get_document(
    document_id: DocumentId,
    request: Request,
    principal: MemoriesReader,
    db: DbDep,
) -> DocumentOut:
    document = await KnowledgeBase(db).get_document(document_id)
    await ensure_owner(
        request, principal, document.owner_id, resource="document", resource_id=document_id
    )
    return DocumentOut.model_validate(document)


@router.delete(
    "/knowledge/{document_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a document and its chunks",
)
async def delete_document(
    document_id: DocumentId,
    request: Request,
    principal: MemoriesWriter,
    db: DbDep,
) -> Response:
    knowledge = KnowledgeBase(db)
    document = await knowledge.get_document(document_id, include_content=False)
    await ensure_owner(
        request, principal, document.owner_id, resource="document", resource_id=document_id
    )
    await knowledge.delete_document(document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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

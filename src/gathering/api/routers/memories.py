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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gathering.agents import PostgresAgentStore
from gathering.agents.knowledge import (
    MAX_CATEGORY_CHARS,
    MAX_DOCUMENT_CHARS,
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
from gathering.agents.retrieval import MAX_QUERY_CHARS, MAX_SCOPE_ID_CHARS, Scope, ScopeRef
from gathering.api.deps import (
    MAX_ID,
    AgentId,
    DbDep,
    MemoriesReader,
    MemoriesWriter,
    app_state,
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

MemoryId = Annotated[int, Path(ge=1, le=MAX_ID, description="The memory's id")]
DocumentId = Annotated[int, Path(ge=1, le=MAX_ID, description="The document's id")]
ScopeId = Annotated[str, Field(min_length=1, max_length=MAX_SCOPE_ID_CHARS, pattern=r"\S")]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS, pattern=r"\S")]


def get_embedder(request: Request) -> EmbeddingProvider | None:
    """The embedding provider from the settings (None: full-text search only)."""
    return embedder_from_settings(app_state(request).settings)


Embedder = Annotated[EmbeddingProvider | None, Depends(get_embedder)]


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bodies -----------------------------------------------------------------------------------


class RememberRequest(_Body):
    """A memory to store. Scope "agent" keeps it private to the agent; "circle" and "project"
    share it with that circle or project (`scope_id` required), "global" with all the owner's
    agents."""

    content: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS, pattern=r"\S")
    kind: MemoryKind = "fact"
    importance: float = Field(default=0.5, ge=0, le=1)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    scope: Scope = "agent"
    scope_id: ScopeId | None = None

    _check_content = field_validator("content")(_no_nul)

    @model_validator(mode="after")
    def _scope_id_matches_scope(self) -> RememberRequest:
        if self.scope == "global" and self.scope_id is not None:
            raise ValueError("scope_id must be left out for the global scope")
        if self.scope in ("circle", "project") and self.scope_id is None:
            raise ValueError(f"scope_id is required for the {self.scope} scope")
        if self.scope == "agent" and self.scope_id is not None:
            raise ValueError("scope_id must be left out for the agent scope (it is the agent)")
        return self


class RecallRequest(_Body):
    """What to recall. `circle_ids` / `project_ids` name the circles and projects whose shared
    memories the agent may read."""

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S")
    limit: int = Field(default=5, ge=1, le=100)
    scopes: list[Scope] | None = Field(default=None, max_length=4)
    kinds: list[MemoryKind] | None = Field(default=None, max_length=16)
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)
    min_score: float = Field(default=0.0, ge=0, le=1)
    circle_ids: list[ScopeId] = Field(default_factory=list, max_length=100)
    project_ids: list[ScopeId] = Field(default_factory=list, max_length=100)

    _check_query = field_validator("query")(_no_nul)


class ScopeRefIn(_Body):
    """A scope to search in; without `scope_id`, every scope of that kind."""

    scope: Scope
    scope_id: ScopeId | None = None

    @model_validator(mode="after")
    def _global_has_no_id(self) -> ScopeRefIn:
        if self.scope == "global" and self.scope_id is not None:
            raise ValueError("scope_id must be left out for the global scope")
        if self.scope == "agent" and self.scope_id is not None and not self.scope_id.isdigit():
            raise ValueError("scope_id of the agent scope is an agent id")
        return self


class DocumentCreate(_Body):
    """A document for the knowledge base; it is cut into chunks and indexed."""

    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS, pattern=r"\S")
    content: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS, pattern=r"\S")
    category: str = Field(
        default="general", min_length=1, max_length=MAX_CATEGORY_CHARS, pattern=r"\S"
    )
    scope: Scope = "global"
    scope_id: ScopeId | None = None
    source: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _check_text = field_validator("title", "content", "category", "source")(_no_nul)

    @model_validator(mode="after")
    def _scope_id_matches_scope(self) -> DocumentCreate:
        if self.scope == "global" and self.scope_id is not None:
            raise ValueError("scope_id must be left out for the global scope")
        if self.scope != "global" and self.scope_id is None:
            raise ValueError(f"scope_id is required for the {self.scope} scope")
        if self.scope == "agent" and not (self.scope_id or "").isdigit():
            raise ValueError("scope_id of the agent scope is an agent id")
        return self


class KnowledgeSearchRequest(_Body):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S")
    limit: int = Field(default=5, ge=1, le=100)
    category: str | None = Field(default=None, min_length=1, max_length=MAX_CATEGORY_CHARS)
    scopes: list[ScopeRefIn] | None = Field(default=None, max_length=100)
    min_score: float = Field(default=0.0, ge=0, le=1)

    _check_query = field_validator("query")(_no_nul)


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
    category: Annotated[str | None, Query(min_length=1, max_length=MAX_CATEGORY_CHARS)] = None,
    scope: Annotated[Scope | None, Query()] = None,
    scope_id: Annotated[str | None, Query(min_length=1, max_length=MAX_SCOPE_ID_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[DocumentOut]:
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
    "/knowledge/{document_id}", summary="One document", dependencies=[rate_limit("relaxed")]
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
    "/knowledge/{document_id}",
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
    tag: Annotated[list[str] | None, Query(max_length=MAX_TAGS)] = None,
    circle_id: Annotated[list[str] | None, Query(max_length=100)] = None,
    project_id: Annotated[list[str] | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
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


@router.get("/{memory_id}", summary="One memory", dependencies=[rate_limit("relaxed")])
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


@router.delete("/{memory_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Forget a memory")
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

"""`/knowledge`: the knowledge base. Add documents (as JSON, or as files: Markdown, text, CSV,
HTML, PDF, indexed by a job), list, read, edit, delete and search them, and index them again
when the embedding model changes. See docs/memory.md.

Someone else's document answers 404, like one that does not exist; admins see everything. A
project's document is also open to the project's members: to read with `read`, to change with
`write` (and uploading into a project needs `write`). API keys need the scopes
`memories:read` / `memories:write` (and `projects:write` to add, upload, change or delete a
project's document).

The paths of the previous release, `/memories/knowledge...`, answer as before through the same
handlers; they are deprecated and go in the next release.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from pydantic import BaseModel, ConfigDict, Field
from pydantic import Tag as Variant

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.agents.knowledge import (
    MAX_CATEGORY_CHARS,
    MAX_DOCUMENT_CHARS,
    MAX_METADATA_BYTES,
    MAX_SOURCE_CHARS,
    MAX_TITLE_CHARS,
    Document,
    DocumentStatus,
    KnowledgeBase,
)
from gathering.agents.persona import NO_NUL
from gathering.agents.retrieval import MAX_QUERY_CHARS, MAX_SCOPE_ID_CHARS, Scope, ScopeRef
from gathering.api.deps import MAX_ID, AdminPrincipal, DbDep, MemoriesReader, MemoriesWriter
from gathering.api.fields import LINE_PATTERN, Flag, Integer, Number, WholeNumber, line, text
from gathering.api.routers.memories import (
    AgentScopeId,
    Embedder,
    ScopeId,
    ScoreOut,
    agent_owner,
    scope_variant,
)
from gathering.api.routers.projects import project_access
from gathering.api.security import Principal, ensure_owner, rate_limit, viewer_allowed
from gathering.db import Database
from gathering.errors import NotFoundError, PermissionDeniedError
from gathering.projects.documents import SUPPORTED
from gathering.projects.ingestion import (
    MAX_FILES,
    Upload,
    current_model,
    queue_reindexing,
    store_uploads,
)

router = APIRouter(prefix="/knowledge", tags=["knowledge"])
# The previous release's paths, kept one release: the same handlers, marked deprecated.
deprecated_router = APIRouter(prefix="/memories/knowledge", tags=["memories"])

DocumentId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The document's id")]
Category = Annotated[str, line(MAX_CATEGORY_CHARS)]
CATEGORY = {"min_length": 1, "max_length": MAX_CATEGORY_CHARS, "pattern": LINE_PATTERN}
SCOPE_ID = {"min_length": 1, "max_length": MAX_SCOPE_ID_CHARS, "pattern": LINE_PATTERN}
NoNul = Annotated[str, Field(max_length=10_000, pattern=NO_NUL)]
MetaKey = Annotated[str, Field(max_length=200, pattern=NO_NUL)]
MetaScalar = NoNul | Integer | Number | Flag | None
Metadata = dict[MetaKey, MetaScalar | list[MetaScalar]]
_METADATA_HELP = (
    f"Flat key/value data kept with the document; at most {MAX_METADATA_BYTES // 1000} KB as JSON"
)
_PROJECT_NOT_FOUND = {404: {"description": "The project is not found (or not yours)"}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bodies -----------------------------------------------------------------------------------


class _Document(_Body):
    """A document for the knowledge base; it is cut into chunks and indexed."""

    title: str = line(MAX_TITLE_CHARS)
    content: str = text(MAX_DOCUMENT_CHARS)
    category: Category = "general"
    source: str | None = text(MAX_SOURCE_CHARS, default=None)
    metadata: Metadata = Field(default_factory=dict, max_length=50, description=_METADATA_HELP)


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
    scope_variant("global"),
]


class DocumentChange(_Body):
    """What to change in a document (what is left out or null stays). A new title or content
    cuts and embeds it again."""

    title: str | None = line(MAX_TITLE_CHARS, default=None)
    content: str | None = text(MAX_DOCUMENT_CHARS, default=None)
    category: Category | None = None
    metadata: Metadata | None = Field(
        default=None, max_length=50, description=_METADATA_HELP + " (replaces the old)"
    )


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


class KnowledgeSearchRequest(_Body):
    query: str = text(MAX_QUERY_CHARS)
    limit: Integer = Field(default=5, ge=1, le=100)
    category: Category | None = None
    scopes: list[ScopeRefIn] | None = Field(default=None, max_length=100)
    project_id: Integer | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="Search that project's documents (of every member): needs `read` on it",
    )
    min_score: Number = Field(default=0.0, ge=0, le=1)


# --- responses --------------------------------------------------------------------------------


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
    embedding_model: str | None = Field(description="The model its chunks were embedded with")
    status: DocumentStatus = Field(
        description="ready: indexed; pending: a job indexes it; failed: see `error`"
    )
    error: str | None = Field(description="Why indexing failed")
    chunks_done: int = Field(description="Chunks embedded so far by the indexing job")
    chunks_total: int | None = Field(description="Chunks to embed (null: not counted yet)")
    created_at: datetime
    updated_at: datetime | None
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


class ReembedOut(BaseModel):
    queued: int = Field(description="Documents queued to be indexed again")
    document_ids: list[int]
    embedding_model: str | None = Field(
        description="The model now configured (null: none, full-text search only)"
    )


# --- helpers ----------------------------------------------------------------------------------


def _route(
    path: str, methods: list[str], *, deprecated_alias: bool = False, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a handler at `/knowledge<path>` and, with `deprecated_alias`, at the deprecated
    `/memories/knowledge<path>` too."""

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, handler, methods=methods, **options)
        if deprecated_alias:
            deprecated_router.add_api_route(
                path, handler, methods=methods, deprecated=True, **options
            )
        return handler

    return register


async def _project_reader(
    request: Request, principal: Principal, db: Database, project_id: int
) -> list[ScopeRef]:
    """The scope of project `project_id`'s documents, once the caller may read the project."""
    await project_access(request, principal, db, project_id, "read")
    return [ScopeRef("project", str(project_id))]


def _project_id(scope: str, scope_id: str | None) -> int | None:
    """The project a `project` scope id names (None: another scope, or an id that is no
    project's: free text, as scope ids were before projects existed)."""
    if scope != "project" or scope_id is None:
        return None
    if not (scope_id.isascii() and scope_id.isdigit() and len(scope_id) <= 19):
        return None
    return int(scope_id) if 1 <= int(scope_id) <= MAX_ID else None


def _require_projects_write(principal: Principal) -> None:
    """Adding a document to a project changes the project: an API key needs
    `projects:write` for it too."""
    if not principal.has_scope("projects:write"):
        raise PermissionDeniedError("this API key lacks the scope 'projects:write'")


def _within(scopes: list[ScopeRef], project_id: int) -> bool:
    """Whether `scopes` take in project `project_id`'s documents."""
    return any(ref.scope == "project" and ref.id in (None, str(project_id)) for ref in scopes)


async def _document(
    request: Request,
    principal: Principal,
    db: Database,
    document_id: int,
    need: Literal["read", "write"],
    *,
    include_content: bool = False,
) -> Document:
    """The document, once the caller may `need` it: its owner, an admin, or (for a project's
    document) a member with that permission; 404 (audited) for anyone else. Writing a
    project's document takes an API key's `projects:write` scope too."""
    document = await KnowledgeBase(db).get_document(document_id, include_content=include_content)
    project_id = _project_id(document.scope, document.scope_id)
    if need == "write" and project_id is not None:
        _require_projects_write(principal)  # changing a project's document changes the project
    if principal.owns(document.owner_id):
        return document
    if project_id is not None:
        try:
            await project_access(request, principal, db, project_id, need)
            return document
        except NotFoundError:
            pass  # not a member: as for anyone else's document
    await ensure_owner(
        request, principal, document.owner_id, resource="document", resource_id=document_id
    )
    return document


# --- routes -----------------------------------------------------------------------------------


@_route(
    "",
    ["GET"],
    deprecated_alias=True,
    summary="List documents",
    dependencies=[rate_limit("relaxed")],
    responses=_PROJECT_NOT_FOUND,
)
async def list_documents(
    request: Request,
    principal: MemoriesReader,
    db: DbDep,
    category: Annotated[str | None, Query(**CATEGORY)] = None,
    scope: Annotated[Scope | None, Query()] = None,
    scope_id: Annotated[
        str | None, Query(**SCOPE_ID, description="With `scope`: only that one")
    ] = None,
    project_id: Annotated[
        WholeNumber | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="That project's documents, of every member (needs `read` on it)",
        ),
    ] = None,
    status_is: Annotated[
        DocumentStatus | None, Query(alias="status", description="Only documents in this state")
    ] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 50,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[DocumentOut]:
    owner = principal.owner_filter
    if scope == "global" and scope_id is not None:
        return []  # global documents have no scope id: none matches
    scopes = None if scope is None else [ScopeRef(scope, scope_id)]
    if project_id is not None:
        project_scope = await _project_reader(request, principal, db, project_id)
        if scopes is not None and not _within(scopes, project_id):
            return []  # another scope than the project's: none matches both
        scopes, owner = project_scope, None
    documents = await KnowledgeBase(db, owner_id=owner).list_documents(
        category=category, scopes=scopes, status=status_is, limit=limit, offset=offset
    )
    return [DocumentOut.model_validate(document) for document in documents]


@_route(
    "",
    ["POST"],
    deprecated_alias=True,
    status_code=status.HTTP_201_CREATED,
    summary="Add a document (chunked and indexed)",
    dependencies=[rate_limit("bulk")],
    responses={
        404: {"description": "The agent or project the document is for is not found"},
    },
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
        owner = await agent_owner(request, principal, db, int(body.scope_id or 0))
    scope_id = body.scope_id
    project_id = _project_id(body.scope, scope_id)
    if project_id is not None:  # a project's members will read it: only its writers add one
        _require_projects_write(principal)
        await project_access(request, principal, db, project_id, "write")
        scope_id = str(project_id)  # one spelling of the project: "7", not "007"
    document = await KnowledgeBase(db, owner_id=owner, embedder=embedder).add_document(
        body.title,
        body.content,
        category=body.category,
        scope=body.scope,
        scope_id=scope_id,
        source=body.source,
        metadata=body.metadata,
    )
    return DocumentOut.model_validate(document)


@_route(
    "/upload",
    ["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload files (Markdown, text, CSV, HTML, PDF): stored now, indexed by a job",
    dependencies=[rate_limit("bulk")],
    responses={
        **_PROJECT_NOT_FOUND,
        415: {"description": f"A file is not one of {SUPPORTED}"},
    },
)
async def upload_documents(
    request: Request,
    principal: MemoriesWriter,
    db: DbDep,
    files: Annotated[
        list[UploadFile],
        File(
            min_length=1,
            max_length=MAX_FILES,
            description=f"Up to {MAX_FILES} files: {SUPPORTED}; each becomes a document",
        ),
    ],
    project_id: Annotated[
        WholeNumber | None,
        Form(ge=1, le=MAX_ID, description="Add them to this project (needs `write` on it)"),
    ] = None,
    category: Annotated[str, Form(**CATEGORY)] = "general",
) -> list[DocumentOut]:
    project = None
    if project_id is not None:
        _require_projects_write(principal)
        project = await project_access(request, principal, db, project_id, "write")
    uploads = [Upload(item.filename, await item.read(), item.content_type) for item in files]
    documents = await store_uploads(
        db, uploads, owner_id=principal.user_id, category=category, project=project
    )
    return [DocumentOut.model_validate(document) for document in documents]


@_route(
    "/search",
    ["POST"],
    deprecated_alias=True,
    summary="Search the knowledge base",
    dependencies=[Depends(viewer_allowed)],  # a POST that only reads
    responses=_PROJECT_NOT_FOUND,
)
async def search_knowledge(
    body: KnowledgeSearchRequest,
    request: Request,
    principal: MemoriesReader,
    db: DbDep,
    embedder: Embedder,
) -> KnowledgeSearchResponse:
    owner = principal.owner_filter
    scopes = (
        None if body.scopes is None else [ScopeRef(ref.scope, ref.scope_id) for ref in body.scopes]
    )
    if body.project_id is not None:
        project_scope = await _project_reader(request, principal, db, body.project_id)
        if scopes is not None and not _within(scopes, body.project_id):
            return KnowledgeSearchResponse(results=[], semantic=embedder is not None)
        scopes, owner = project_scope, None
    knowledge = KnowledgeBase(db, owner_id=owner, embedder=embedder)
    hits = await knowledge.search(
        body.query, body.limit, category=body.category, scopes=scopes, min_score=body.min_score
    )
    return KnowledgeSearchResponse(
        results=[KnowledgeHitOut.model_validate(hit) for hit in hits], semantic=embedder is not None
    )


@_route(
    "/reembed",
    ["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Index again, as jobs, the documents embedded with another model than the one now "
    "configured (or with none), and those that failed (admins)",
    dependencies=[rate_limit("bulk")],
)
async def reembed_documents(principal: AdminPrincipal, db: DbDep, embedder: Embedder) -> ReembedOut:
    model = current_model(embedder)
    ids = await queue_reindexing(db, model)
    return ReembedOut(queued=len(ids), document_ids=ids, embedding_model=model)


@_route(
    "/{document_id:id}",
    ["GET"],
    deprecated_alias=True,
    summary="One document",
    dependencies=[rate_limit("relaxed")],
)
async def get_document(
    document_id: DocumentId,
    request: Request,
    principal: MemoriesReader,
    db: DbDep,
) -> DocumentOut:
    document = await _document(request, principal, db, document_id, "read", include_content=True)
    return DocumentOut.model_validate(document)


@_route(
    "/{document_id:id}",
    ["PATCH"],
    summary="Change a document (a new title or content cuts and embeds it again)",
    responses={409: {"description": "It changed while it was being indexed again"}},
)
async def change_document(
    document_id: DocumentId,
    body: DocumentChange,
    request: Request,
    principal: MemoriesWriter,
    db: DbDep,
    embedder: Embedder,
) -> DocumentOut:
    await _document(request, principal, db, document_id, "write")
    document = await KnowledgeBase(db, embedder=embedder).update_document(
        document_id,
        title=body.title,
        content=body.content,
        category=body.category,
        metadata=body.metadata,
    )
    return DocumentOut.model_validate(document)


@_route(
    "/{document_id:id}",
    ["DELETE"],
    deprecated_alias=True,
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a document and its chunks",
)
async def delete_document(
    document_id: DocumentId,
    request: Request,
    principal: MemoriesWriter,
    db: DbDep,
) -> Response:
    await _document(request, principal, db, document_id, "write")
    await KnowledgeBase(db).delete_document(document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

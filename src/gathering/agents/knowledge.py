"""The knowledge base: documents cut into overlapping chunks, searched like memories.

```python
kb = KnowledgeBase(db, embedder=embedder)            # embedder is optional
doc = await kb.add_document("Deployment runbook", text, category="ops")
for hit in await kb.search("how do I roll back a release?", category="ops"):
    print(hit.score, hit.document_title, hit.content)
```

A document has a category and a scope ("global" by default; "agent", "circle" or "project"
with a scope id). `owner_id` is whose knowledge it is: writes go to that owner (the local owner
when None), reads see that owner's documents (everyone's when None). With `agent_id`, the
knowledge base is that agent's view: its owner's global documents and those scoped to it.

An agent's prompt draws on the part of that view its `KnowledgeScope` selects:

```python
scope = KnowledgeScope.from_value({"categories": ["ops"], "documents": [12]})  # or "all"
section = await knowledge_for_prompt(
    KnowledgeBase(db, agent_id=agent.id, embedder=embedder), scope, user_message,
    budget_chars=2_000,
)
```
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias, cast

from psycopg import sql

# Chunking was part of this module: its names stay importable from here.
from gathering.agents.chunking import DEFAULT_OVERLAP_CHARS as DEFAULT_OVERLAP_CHARS
from gathering.agents.chunking import DEFAULT_TARGET_CHARS as DEFAULT_TARGET_CHARS
from gathering.agents.chunking import TextChunk as TextChunk
from gathering.agents.chunking import chunk_text as chunk_text
from gathering.agents.knowledge_index import EmbeddedChunks, embed_chunks, replace_chunks
from gathering.agents.retrieval import (
    DEFAULT_EMBED_TIMEOUT,
    MAX_QUERY_CHARS,
    CandidateSearch,
    DegradedCallback,
    QueryParams,
    RankingWeights,
    Scope,
    ScopeLike,
    ScopeRef,
    ScoreParts,
    check_embed_timeout,
    check_language,
    check_limit,
    check_text,
    embed_query,
    ensure_language,
    local_owner_id,
    require_vectors,
    scope_filter,
    scope_refs,
    scope_target,
    score_candidates,
)
from gathering.agents.system_prompt import format_knowledge_for_prompt
from gathering.db.database import Database, Queries, Row
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, DatabaseError, InvalidInputError, NotFoundError
from gathering.llm.embeddings import EmbeddingProvider

MAX_DOCUMENT_CHARS = 2_000_000
MAX_TITLE_CHARS = 500
MAX_CATEGORY_CHARS = 100
MAX_SOURCE_CHARS = 2_000
MAX_METADATA_BYTES = 64_000
MAX_SCOPE_ITEMS = 50  # categories, and documents, a `KnowledgeScope` may name
_MAX_BIGINT = 2**63 - 1
_SQL = queries_of("gathering.agents")

# Knowledge does not go stale the way memories do, and documents carry no importance.
DEFAULT_KNOWLEDGE_WEIGHTS = RankingWeights(relevance=1.0, importance=0.0, recency=0.0)

# --- documents ------------------------------------------------------------------------------


DocumentStatus: TypeAlias = Literal["pending", "ready", "failed"]
DOCUMENT_STATUSES: tuple[DocumentStatus, ...] = ("pending", "ready", "failed")


@dataclass(frozen=True)
class Document:
    """A document of the knowledge base (`content` only from `get_document`).

    `status` is `ready` once its chunks are indexed; `pending` while a job indexes it
    (`chunks_done` of `chunks_total` embedded so far; the chunks it had stay searchable until
    then); `failed` when that job could not (`error` says why).
    """

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
    status: DocumentStatus = "ready"
    error: str | None = None
    chunks_done: int = 0
    chunks_total: int | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Row) -> Document:
        return cls(
            id=int(row["id"]),
            owner_id=int(row["owner_id"]),
            title=row["title"],
            category=row["category"],
            scope=row["scope"],
            scope_id=row["scope_id"],
            source=row["source"],
            metadata=dict(row["metadata"] or {}),
            size_chars=int(row["size_chars"]),
            chunk_count=int(row["chunk_count"]),
            embedding_model=row["embedding_model"],
            created_at=row["created_at"],
            content=row.get("content"),
            status=row["status"],
            error=row["error"],
            chunks_done=int(row["chunks_done"]),
            chunks_total=row["chunks_total"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class KnowledgeHit:
    """A chunk found by `KnowledgeBase.search`, with its document and score."""

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
    parts: ScoreParts


_DOCUMENT_COLUMNS = sql.SQL(
    "d.id, d.owner_id, d.title, d.category, d.scope, d.scope_id, d.source, d.metadata,"
    " length(d.content) AS size_chars, d.embedding_model, d.created_at, d.status, d.error,"
    " d.chunks_done, d.chunks_total, d.updated_at,"
    " (SELECT count(*) FROM agent.chunks c WHERE c.document_id = d.id) AS chunk_count"
)
_HIT_COLUMNS = sql.SQL(
    "t.id, t.document_id, t.seq, t.start_char, t.end_char, t.content, d.title, d.category,"
    " d.scope, d.scope_id, d.source, d.created_at"
)


def _check_title(title: str) -> str:
    return " ".join(check_text(title, "the title", max_chars=MAX_TITLE_CHARS).split())


def _check_content(content: str) -> None:
    check_text(content, "the document content", max_chars=MAX_DOCUMENT_CHARS)


def _check_category(category: str) -> str:
    category = check_text(category, "the category", max_chars=MAX_CATEGORY_CHARS)
    return " ".join(category.split()).lower()


def _check_categories(categories: Iterable[str], *, maximum: int | None) -> tuple[str, ...]:
    """Category names as stored (lower-case, whitespace collapsed), without duplicates."""
    if isinstance(categories, str) or not isinstance(categories, Iterable):
        raise InvalidInputError(
            "categories must be a list of category names", hint='e.g. ["ops", "hr"]'
        )
    items = list(categories)
    if maximum is not None and len(items) > maximum:
        raise InvalidInputError(f"at most {maximum} categories", hint='use "all" instead')
    for item in items:
        if not isinstance(item, str):
            raise InvalidInputError(f"category {item!r:.80} is not text", hint='e.g. ["ops", "hr"]')
    return tuple(dict.fromkeys(_check_category(category) for category in items))


def _check_document_ids(document_ids: Iterable[int], *, maximum: int | None) -> tuple[int, ...]:
    """Document ids (positive integers), without duplicates."""
    if isinstance(document_ids, str | bytes) or not isinstance(document_ids, Iterable):
        raise InvalidInputError("documents must be a list of document ids", hint="e.g. [12, 40]")
    items = list(document_ids)
    if maximum is not None and len(items) > maximum:
        raise InvalidInputError(
            f"at most {maximum} documents", hint="put them in a category and name it instead"
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= _MAX_BIGINT:
            raise InvalidInputError(
                f"document id {item!r} is not a positive integer", hint="e.g. [12, 40]"
            )
    return tuple(dict.fromkeys(items))


KnowledgeScopeValue: TypeAlias = str | dict[str, list[str] | list[int]]
_SCOPE_HINT = 'use "all", {"categories": ["ops"], "documents": [12]}, or null for no knowledge'


@dataclass(frozen=True)
class KnowledgeScope:
    """The knowledge an agent's prompt draws on: documents in one of `categories` or among
    `document_ids` (either may be empty); both empty means every document the agent sees.

    Stored in the agent's settings as its JSON form (`to_value()`): "all", or
    `{"categories": [...], "documents": [...]}`. Categories are stored lower-case.
    """

    categories: tuple[str, ...] = ()
    document_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        categories = _check_categories(self.categories, maximum=MAX_SCOPE_ITEMS)
        document_ids = _check_document_ids(self.document_ids, maximum=MAX_SCOPE_ITEMS)
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "document_ids", document_ids)

    @property
    def is_all(self) -> bool:
        """Whether this is every document the agent sees."""
        return not self.categories and not self.document_ids

    @classmethod
    def from_value(cls, value: object) -> KnowledgeScope | None:
        """The scope from its JSON form: None (no knowledge: returns None), "all", or a mapping
        with "categories" and/or "documents" (not both empty); `InvalidInputError` otherwise."""
        if value is None or isinstance(value, KnowledgeScope):
            return value
        if value == "all":
            return cls()
        if not isinstance(value, Mapping):
            raise InvalidInputError(
                f"knowledge {value!r:.80} is not a knowledge scope", hint=_SCOPE_HINT
            )
        unknown = sorted(str(key) for key in value if key not in ("categories", "documents"))
        if unknown:
            raise InvalidInputError(
                f"unknown knowledge settings: {', '.join(unknown)}", hint=_SCOPE_HINT
            )
        categories, documents = value.get("categories"), value.get("documents")
        try:
            scope = cls(
                categories=() if categories is None else categories,
                document_ids=() if documents is None else documents,
            )
        except InvalidInputError as error:
            error.hint = error.hint or _SCOPE_HINT
            raise
        if scope.is_all:
            raise InvalidInputError(
                "knowledge names no categories and no documents", hint=_SCOPE_HINT
            )
        return scope

    def to_value(self) -> KnowledgeScopeValue:
        """The JSON form `from_value` reads back."""
        if self.is_all:
            return "all"
        return {"categories": list(self.categories), "documents": list(self.document_ids)}


def _check_metadata(metadata: Mapping[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a JSON object")
    try:
        encoded = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata is not JSON-serialisable: {exc}") from None
    if "\\u0000" in encoded:
        raise InvalidInputError("metadata must not contain NUL characters")
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return encoded


class KnowledgeBase:
    """Documents, chunked and searched by full text (and by meaning with an `embedder`).

    With `agent_id`, this is that agent's knowledge: reads see only its owner's global
    documents and those scoped to the agent (an agent of another `owner_id` is not found), and
    an agent-scoped document added without a scope id is the agent's. `search` gives the
    query's embedding `embed_timeout` seconds; when the provider fails or is slower, it ranks
    by full text alone and awaits `on_degraded(reason)`.
    """

    def __init__(
        self,
        db: Queries,
        *,
        owner_id: int | None = None,
        agent_id: int | None = None,
        embedder: EmbeddingProvider | None = None,
        language: str = "english",
        weights: RankingWeights = DEFAULT_KNOWLEDGE_WEIGHTS,
        target_chars: int = DEFAULT_TARGET_CHARS,
        overlap_chars: int = DEFAULT_OVERLAP_CHARS,
        embed_timeout: float = DEFAULT_EMBED_TIMEOUT,
        on_degraded: DegradedCallback | None = None,
    ) -> None:
        self.db = db
        self.owner_id = owner_id
        self.agent_id = agent_id
        self.embedder = embedder
        self.language = check_language(language)
        self.weights = weights
        chunk_text("x", target_chars, overlap_chars)  # validates the sizes
        self.target_chars = target_chars
        self.overlap_chars = overlap_chars
        self.embed_timeout = check_embed_timeout(embed_timeout)
        self.on_degraded = on_degraded
        self._agent_owner: int | None = None
        self._checked_language = False
        self._checked_vectors = False

    def __repr__(self) -> str:
        agent = f" agent={self.agent_id}" if self.agent_id is not None else ""
        return f"<KnowledgeBase owner={self._agent_owner or self.owner_id}{agent}>"

    async def _reader_owner(self) -> int | None:
        """Whose documents this sees: the agent's owner with `agent_id`, else `owner_id`."""
        if self.agent_id is None:
            return self.owner_id
        if self._agent_owner is None:
            owner = await self.db.fetch_val(_SQL["agent_owner"], self.agent_id)
            if owner is None or (self.owner_id is not None and int(owner) != self.owner_id):
                raise NotFoundError(f"agent {self.agent_id} not found")
            self._agent_owner = int(owner)
        return self._agent_owner

    async def _prepare(self) -> EmbeddingProvider | None:
        if not self._checked_language:
            await ensure_language(self.db, self.language)
            self._checked_language = True
        if self.embedder is not None and not self._checked_vectors:
            await require_vectors(self.db)
            self._checked_vectors = True
        return self.embedder

    async def add_document(
        self,
        title: str,
        content: str,
        category: str = "general",
        scope: str = "global",
        scope_id: str | None = None,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        index: bool = True,
    ) -> Document:
        """Store a document and its chunks (with their vectors, when there is an embedder).

        With `index=False` it is stored `pending`, without chunks, for a job to index (see
        `gathering.agents.knowledge_index`)."""
        title = _check_title(title)
        _check_content(content)
        category = _check_category(category)
        target_scope, target_id, agent_id = scope_target(
            scope, scope_id, default_agent_id=self.agent_id
        )
        if target_scope == "project" and target_id and target_id.isascii() and target_id.isdigit():
            target_id = str(int(target_id))  # a project's id has one spelling: "7", not "007"
        if self.agent_id is not None and target_scope == "agent" and agent_id != self.agent_id:
            raise InvalidInputError(
                f"this knowledge base belongs to agent {self.agent_id}, not agent {agent_id}"
            )
        if source is not None:
            source = check_text(source, "the source", max_chars=MAX_SOURCE_CHARS).strip()
        encoded_metadata = _check_metadata(metadata)
        embedder = await self._prepare()
        owner = await self._reader_owner()
        if agent_id is not None:
            agent_owner = await self.db.fetch_val(_SQL["agent_owner"], agent_id)
            if agent_owner is None or (owner is not None and int(agent_owner) != owner):
                raise NotFoundError(f"agent {agent_id} not found")
            owner = int(agent_owner)
        if owner is None:
            owner = await local_owner_id(self.db)
        embedded = await self._embedded(title, content, embedder) if index else None
        async with self._within_limits(), self._atomic() as tx:
            document = await tx.fetch_one(
                _SQL["insert_document"],
                owner,
                agent_id,
                title,
                category,
                target_scope,
                target_id,
                source,
                encoded_metadata,
                content,
                self.language,
                None,
                "pending" if embedded is None else "ready",
            )
            assert document is not None
            if embedded is not None:
                await replace_chunks(
                    tx, document["id"], language=self.language, title=title, embedded=embedded
                )
        return await self.get_document(int(document["id"]), include_content=False)

    async def _embedded(
        self, title: str, content: str, embedder: EmbeddingProvider | None
    ) -> EmbeddedChunks:
        chunks = await asyncio.to_thread(chunk_text, content, self.target_chars, self.overlap_chars)
        return await embed_chunks(embedder, title, chunks, ledger=self.db)

    async def update_document(
        self,
        document_id: int,
        *,
        title: str | None = None,
        content: str | None = None,
        category: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Document:
        """Change a document (what is None stays). A new title or content cuts and embeds it
        again, and its new chunks replace the old ones at once: it is `ready` after, and a job
        still indexing it finds its work outdated. `NotFoundError` when this cannot see it;
        `ConflictError` when it changed while its new chunks were being made."""
        title = None if title is None else _check_title(title)
        if content is not None:
            _check_content(content)
        category = None if category is None else _check_category(category)
        encoded_metadata = None if metadata is None else _check_metadata(metadata)
        current = await self.get_document(document_id)
        assert current.content is not None
        new_title = current.title if title is None else title
        new_content = current.content if content is None else content
        reindex = new_title != current.title or new_content != current.content
        embedded = None
        if reindex:
            embedded = await self._embedded(new_title, new_content, await self._prepare())
        async with self._within_limits(), self._atomic() as tx:
            row = await tx.fetch_one(_SQL["lock_document"], document_id)
            if row is None:
                raise NotFoundError(f"document {document_id} not found")
            # What is not given is kept as it is now (the locked row), not as it was read
            # before the lock: an edit that raced this one is not undone. The chunks after
            # this are the new ones (made from what was read) or the row's: the title and
            # content written must be the ones they were made from.
            locked_title = row["title"] if title is None else title
            locked_content = row["content"] if content is None else content
            indexed = (new_title, new_content) if reindex else (row["title"], row["content"])
            if (locked_title, locked_content) != indexed:
                raise ConflictError(
                    f"document {document_id} changed while this change was being made",
                    hint="read it again and repeat your change",
                )
            await tx.execute(
                _SQL["update_document"],
                document_id,
                locked_title,
                row["category"] if category is None else category,
                json.dumps(row["metadata"]) if encoded_metadata is None else encoded_metadata,
                locked_content,
            )
            if embedded is not None:
                await replace_chunks(
                    tx, document_id, language=row["language"], title=new_title, embedded=embedded
                )
        return await self.get_document(document_id, include_content=False)

    @staticmethod
    @asynccontextmanager
    async def _within_limits() -> AsyncIterator[None]:
        """PostgreSQL's program limits (SQLSTATE class 54, e.g. a text too rich for a
        tsvector) hit by a document: `InvalidInputError` (422), not a server fault."""
        try:
            yield
        except DatabaseError as error:
            if not str(error.details.get("sqlstate", "")).startswith("54"):
                raise
            raise InvalidInputError(
                f"the document is beyond what the database can index: {error.message}"[:500],
                hint="split it into smaller documents",
            ) from error

    @asynccontextmanager
    async def _atomic(self) -> AsyncIterator[Queries]:
        if isinstance(self.db, Database):
            async with self.db.transaction() as tx:
                yield tx
        else:  # already a transaction
            yield self.db

    async def get_document(self, document_id: int, *, include_content: bool = True) -> Document:
        """One document; `NotFoundError` when it does not exist or this cannot see it."""
        params = QueryParams()
        select = sql.SQL(
            "SELECT {columns}{content} FROM agent.documents d WHERE d.id = {id} AND {where}"
        ).format(
            columns=_DOCUMENT_COLUMNS,
            content=sql.SQL(", d.content" if include_content else ""),
            id=params(document_id),
            where=self._where(params, await self._reader_owner()),
        )
        row = await self.db.fetch_one(select.as_string(), *params.values)
        if row is None:
            raise NotFoundError(f"document {document_id} not found")
        return Document.from_row(row)

    async def delete_document(self, document_id: int) -> None:
        """Delete a document and its chunks; `NotFoundError` when there is none."""
        params = QueryParams()
        delete = sql.SQL(
            "DELETE FROM agent.documents AS d WHERE d.id = {id} AND {where} RETURNING d.id"
        ).format(id=params(document_id), where=self._where(params, await self._reader_owner()))
        deleted = await self.db.fetch_val(delete.as_string(), *params.values)
        if deleted is None:
            raise NotFoundError(f"document {document_id} not found")

    async def list_documents(
        self,
        *,
        category: str | None = None,
        scopes: Iterable[ScopeLike] | None = None,
        status: DocumentStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Document]:
        """Documents (without their content), newest first; only those in `status` with it."""
        limit = check_limit(limit, maximum=500)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError("offset must be an integer >= 0")
        params = QueryParams()
        select = sql.SQL(
            "SELECT {columns} FROM agent.documents d WHERE {where}"
            " ORDER BY d.created_at DESC, d.id DESC LIMIT {limit} OFFSET {offset}"
        ).format(
            columns=_DOCUMENT_COLUMNS,
            where=self._where(
                params, await self._reader_owner(), category=category, scopes=scopes, status=status
            ),
            limit=params(limit),
            offset=params(offset),
        )
        rows = await self.db.fetch_all(select.as_string(), *params.values)
        return [Document.from_row(row) for row in rows]

    def _where(
        self,
        params: QueryParams,
        owner: int | None,
        *,
        category: str | None = None,
        scopes: Iterable[ScopeLike] | None = None,
        categories: tuple[str, ...] | None = None,
        document_ids: tuple[int, ...] | None = None,
        status: DocumentStatus | None = None,
    ) -> sql.Composed:
        """Conditions on the documents `d` this sees, of `owner` (None: anyone's), in
        `category` and `scopes`, and in one of `categories` or among `document_ids`."""
        conditions: list[sql.Composable] = [
            sql.SQL("({owner}::bigint IS NULL OR d.owner_id = {owner})").format(
                owner=params(owner)
            ),
            sql.SQL(
                "(({categories}::text[] IS NULL AND {ids}::bigint[] IS NULL)"
                " OR coalesce(d.category = ANY({categories}::text[]), false)"
                " OR coalesce(d.id = ANY({ids}::bigint[]), false))"
            ).format(
                categories=params(None if categories is None else list(categories)),
                ids=params(None if document_ids is None else list(document_ids)),
            ),
        ]
        if self.agent_id is not None:
            visible = [ScopeRef("global"), ScopeRef("agent", str(self.agent_id))]
            conditions.append(scope_filter(params, visible, alias="d"))
        if category is not None:
            conditions.append(
                sql.SQL("d.category = {category}").format(
                    category=params(_check_category(category))
                )
            )
        if status is not None:
            if status not in DOCUMENT_STATUSES:
                raise InvalidInputError(
                    f"unknown status {status!r}", hint=f"one of {', '.join(DOCUMENT_STATUSES)}"
                )
            conditions.append(sql.SQL("d.status = {status}").format(status=params(status)))
        if scopes is not None:
            # A single scope name is taken as that one scope, not as its letters.
            refs = scope_refs([cast(Scope, scopes)] if isinstance(scopes, str) else scopes)
            conditions.append(scope_filter(params, refs, alias="d") if refs else sql.SQL("false"))
        return sql.SQL(" AND ").join(conditions)

    async def search(
        self,
        query: str,
        limit: int = 5,
        category: str | None = None,
        scopes: Iterable[ScopeLike] | None = None,
        *,
        categories: Iterable[str] | None = None,
        document_ids: Iterable[int] | None = None,
        min_score: float = 0.0,
    ) -> list[KnowledgeHit]:
        """The chunks that best answer `query`, best first.

        `scopes` (e.g. `["global", ("circle", "c-1"), ScopeRef("agent", "7")]`) keeps only
        documents in those scopes; None searches every scope of the owner. `categories` and
        `document_ids` select documents: those in one of the categories or among the ids
        (None: no selection; an empty list selects nothing). An embedding failure or timeout
        does not fail the search: it ranks by full text alone (see `embed_query`).
        """
        query = check_text(query, "the query", max_chars=MAX_QUERY_CHARS)
        limit = check_limit(limit)
        if not isinstance(min_score, int | float) or not 0 <= min_score <= 1:
            raise InvalidInputError("min_score must be a number from 0 to 1")
        selected_categories = (
            None if categories is None else _check_categories(categories, maximum=None)
        )
        selected_ids = (
            None if document_ids is None else _check_document_ids(document_ids, maximum=None)
        )
        embedder = await self._prepare()
        owner = await self._reader_owner()
        semantic = None
        if embedder is not None:
            semantic = await embed_query(
                embedder,
                query,
                time_limit=self.embed_timeout,
                on_degraded=self.on_degraded,
                fallback="full-text search only",
                ledger=self.db,
            )
        params = QueryParams()
        where = self._where(
            params,
            owner,
            category=category,
            scopes=scopes,
            categories=selected_categories,
            document_ids=selected_ids,
        )
        search = CandidateSearch(
            source=sql.SQL("agent.chunks t JOIN agent.documents d ON d.id = t.document_id"),
            where=where,
            select=_HIT_COLUMNS,
            created_column=sql.SQL("d.created_at"),
            params=params,
            language=self.language,
            query=query,
            semantic=semantic,
            weights=self.weights,
        )
        ranked = score_candidates(await search.run(self.db), self.weights)
        hits = []
        for candidate, parts in ranked:
            if parts.score < min_score:
                continue
            row = candidate.row
            hits.append(
                KnowledgeHit(
                    document_id=int(row["document_id"]),
                    document_title=row["title"],
                    category=row["category"],
                    scope=row["scope"],
                    scope_id=row["scope_id"],
                    source=row["source"],
                    chunk_id=int(row["id"]),
                    seq=int(row["seq"]),
                    start=int(row["start_char"]),
                    end=int(row["end_char"]),
                    content=row["content"],
                    score=parts.score,
                    parts=parts,
                )
            )
            if len(hits) == limit:
                break
        return hits


# --- in an agent's prompt -------------------------------------------------------------------


async def knowledge_for_prompt(
    kb: KnowledgeBase,
    scope: KnowledgeScope,
    query: str,
    *,
    budget_chars: int,
    limit: int = 5,
) -> str | None:
    """The passages of `scope` that best answer `query`, as a prompt section of at most
    `budget_chars` characters (each quoted after its document title and part, no heading); None
    when the query is blank or nothing matches.

    `kb` decides what may be seen (pass `agent_id` for an agent: its owner's global documents
    and its own). Only the first 4,000 characters of the query are searched. While embeddings
    are down this searches by full text alone (and `kb.on_degraded` hears why).
    """
    if not isinstance(query, str):
        raise InvalidInputError("the query must be text")
    if isinstance(budget_chars, bool) or not isinstance(budget_chars, int) or budget_chars < 0:
        raise InvalidInputError("budget_chars must be an integer >= 0")
    text = " ".join(query.replace("\x00", " ").split())[:MAX_QUERY_CHARS]
    if not text or budget_chars == 0:
        return None
    hits = await kb.search(
        text,
        limit,
        categories=scope.categories or None,
        document_ids=scope.document_ids or None,
    )
    return format_knowledge_for_prompt(hits, budget_chars, heading="") or None

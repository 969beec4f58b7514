"""The knowledge base: documents cut into overlapping chunks, searched like memories.

```python
kb = KnowledgeBase(db, embedder=embedder)            # embedder is optional
doc = await kb.add_document("Deployment runbook", text, category="ops")
for hit in await kb.search("how do I roll back a release?", category="ops"):
    print(hit.score, hit.document_title, hit.content)
```

A document has a category and a scope ("global" by default; "agent", "circle" or "project"
with a scope id). `owner_id` is whose knowledge it is: writes go to that owner (the local owner
when None), reads see that owner's documents (everyone's when None).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from psycopg import sql

from gathering.agents.retrieval import (
    CandidateSearch,
    QueryParams,
    RankingWeights,
    Scope,
    ScopeLike,
    ScoreParts,
    SemanticQuery,
    check_language,
    check_limit,
    check_text,
    embed_texts,
    embedding_model_name,
    ensure_language,
    local_owner_id,
    require_vectors,
    scope_filter,
    scope_refs,
    scope_target,
    score_candidates,
    vector_literal,
)
from gathering.db.database import Database, Queries, Row
from gathering.errors import InvalidInputError, NotFoundError
from gathering.llm.embeddings import EmbeddingProvider

DEFAULT_TARGET_CHARS = 1_200
DEFAULT_OVERLAP_CHARS = 200
MAX_DOCUMENT_CHARS = 2_000_000
MAX_TITLE_CHARS = 500
MAX_CATEGORY_CHARS = 100
MAX_SOURCE_CHARS = 2_000
MAX_METADATA_BYTES = 64_000

# Knowledge does not go stale the way memories do, and documents carry no importance.
DEFAULT_KNOWLEDGE_WEIGHTS = RankingWeights(relevance=1.0, importance=0.0, recency=0.0)

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# Whitespace after . ! ? or an ellipsis, and after up to two closing quotes or brackets there
# (which stay with their sentence). Lookbehinds need a fixed width: one alternative per width.
_END = "[.!?\u2026]"
_CLOSE = "[\"'\u201d\u2019)\\]]"
_SENTENCE_BREAK = re.compile(
    f"(?<={_END})\\s+|(?<={_END}{_CLOSE})\\s+|(?<={_END}{_CLOSE}{_CLOSE})\\s+"
)
_WORD = re.compile(r"\S+")


# --- chunking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextChunk:
    """A piece of a text: `text[start:end] == content`."""

    seq: int
    start: int
    end: int
    content: str


def _pieces(text: str, start: int, end: int, separator: re.Pattern[str]) -> Iterator[range]:
    """The non-blank stretches of `text[start:end]` between matches of `separator`, trimmed."""
    position = start
    for match in separator.finditer(text, start, end):
        yield from _trimmed(text, position, match.start())
        position = match.end()
    yield from _trimmed(text, position, end)


def _trimmed(text: str, start: int, end: int) -> Iterator[range]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        yield range(start, end)


def _units(text: str, target: int) -> list[range]:
    """Paragraphs that fit in `target`; longer ones as sentences; longer sentences as words."""
    units: list[range] = []
    for paragraph in _pieces(text, 0, len(text), _PARAGRAPH_BREAK):
        if len(paragraph) <= target:
            units.append(paragraph)
            continue
        for sentence in _pieces(text, paragraph.start, paragraph.stop, _SENTENCE_BREAK):
            if len(sentence) <= target:
                units.append(sentence)
            else:
                units.extend(
                    range(m.start(), m.end())
                    for m in _WORD.finditer(text, sentence.start, sentence.stop)
                )
    return units


def chunk_text(
    text: str,
    target_chars: int = DEFAULT_TARGET_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
) -> list[TextChunk]:
    """Cut `text` into chunks of at most `target_chars`, each a slice of the text.

    Chunks end on paragraph boundaries where they can, else on sentence boundaries, else
    between words; only a single word longer than `target_chars` makes a longer chunk. A chunk
    repeats up to `overlap_chars` of the end of the previous one, in whole pieces (the
    paragraphs, sentences or words the text was cut into), so that a passage cut in two can
    still be found; a chunk that ends a long paragraph is not repeated. Whitespace-only text
    gives no chunks.
    """
    if isinstance(target_chars, bool) or not isinstance(target_chars, int) or target_chars < 1:
        raise InvalidInputError("target_chars must be an integer >= 1")
    if (
        isinstance(overlap_chars, bool)
        or not isinstance(overlap_chars, int)
        or not 0 <= overlap_chars < target_chars
    ):
        raise InvalidInputError("overlap_chars must be an integer from 0 to target_chars - 1")
    units = _units(text, target_chars)
    chunks: list[TextChunk] = []
    first = 0
    while first < len(units):
        last = first  # the chunk is units[first..last]
        while last + 1 < len(units) and units[last + 1].stop - units[first].start <= target_chars:
            last += 1
        start, end = units[first].start, units[last].stop
        chunks.append(TextChunk(len(chunks), start, end, text[start:end]))
        following = last + 1
        if following >= len(units):
            break
        # The next chunk starts at the earliest unit of this one's tail that keeps the overlap
        # within bounds and still leaves room for the first unit not yet covered.
        next_first = following
        while (
            next_first - 1 > first
            and end - units[next_first - 1].start <= overlap_chars
            and units[following].stop - units[next_first - 1].start <= target_chars
        ):
            next_first -= 1
        first = next_first
    return chunks


# --- documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A document of the knowledge base (`content` only from `get_document`)."""

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
    " length(d.content) AS size_chars, d.embedding_model, d.created_at,"
    " (SELECT count(*) FROM agent.chunks c WHERE c.document_id = d.id) AS chunk_count"
)
_HIT_COLUMNS = sql.SQL(
    "t.id, t.document_id, t.seq, t.start_char, t.end_char, t.content, d.title, d.category,"
    " d.scope, d.scope_id, d.source, d.created_at"
)


def _check_category(category: str) -> str:
    category = check_text(category, "the category", max_chars=MAX_CATEGORY_CHARS)
    return " ".join(category.split()).lower()


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
    """Documents, chunked and searched by full text (and by meaning with an `embedder`)."""

    def __init__(
        self,
        db: Queries,
        *,
        owner_id: int | None = None,
        embedder: EmbeddingProvider | None = None,
        language: str = "english",
        weights: RankingWeights = DEFAULT_KNOWLEDGE_WEIGHTS,
        target_chars: int = DEFAULT_TARGET_CHARS,
        overlap_chars: int = DEFAULT_OVERLAP_CHARS,
    ) -> None:
        self.db = db
        self.owner_id = owner_id
        self.embedder = embedder
        self.language = check_language(language)
        self.weights = weights
        chunk_text("x", target_chars, overlap_chars)  # validates the sizes
        self.target_chars = target_chars
        self.overlap_chars = overlap_chars
        self._checked_language = False
        self._checked_vectors = False

    def __repr__(self) -> str:
        return f"<KnowledgeBase owner={self.owner_id}>"

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
    ) -> Document:
        """Store a document and its chunks (with their vectors, when there is an embedder)."""
        title = " ".join(check_text(title, "the title", max_chars=MAX_TITLE_CHARS).split())
        check_text(content, "the document content", max_chars=MAX_DOCUMENT_CHARS)
        category = _check_category(category)
        target_scope, target_id, agent_id = scope_target(scope, scope_id)
        if source is not None:
            source = check_text(source, "the source", max_chars=MAX_SOURCE_CHARS).strip()
        encoded_metadata = _check_metadata(metadata)
        embedder = await self._prepare()
        owner = self.owner_id
        if agent_id is not None:
            agent_owner = await self.db.fetch_val(
                "SELECT owner_id FROM agent.agents WHERE id = $1", agent_id
            )
            if agent_owner is None or (owner is not None and int(agent_owner) != owner):
                raise NotFoundError(f"agent {agent_id} not found")
            owner = int(agent_owner)
        if owner is None:
            owner = await local_owner_id(self.db)
        chunks = await asyncio.to_thread(chunk_text, content, self.target_chars, self.overlap_chars)
        vectors: list[str | None] = [None] * len(chunks)
        model = None
        if embedder is not None:
            embedded = await embed_texts(
                embedder, [f"{title}\n\n{chunk.content}" for chunk in chunks]
            )
            vectors = [vector_literal(vector) for vector in embedded]
            model = embedding_model_name(embedder)
        async with self._atomic() as tx:
            document = await tx.fetch_one(
                "INSERT INTO agent.documents AS d (owner_id, agent_id, title, category, scope,"
                " scope_id, source, metadata, content, language, embedding_model)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::regconfig, $11)"
                " RETURNING d.id, d.created_at",
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
                model,
            )
            assert document is not None
            with_vectors = model is not None
            insert = sql.SQL(
                "INSERT INTO agent.chunks (document_id, seq, start_char, end_char, content,"
                " tsv, embedding_model{embedding_column})"
                " SELECT $1, c.seq, c.start_char, c.end_char, c.content,"
                " setweight(to_tsvector($2::regconfig, $3), 'A')"
                " || to_tsvector($2::regconfig, c.content), $4{embedding_value}"
                " FROM unnest($5::int[], $6::int[], $7::int[], $8::text[], $9::text[])"
                " AS c(seq, start_char, end_char, content, embedding)"
            ).format(
                embedding_column=sql.SQL(", embedding" if with_vectors else ""),
                embedding_value=sql.SQL(", c.embedding::vector" if with_vectors else ""),
            )
            await tx.execute(
                insert.as_string(),
                document["id"],
                self.language,
                title,
                model,
                [chunk.seq for chunk in chunks],
                [chunk.start for chunk in chunks],
                [chunk.end for chunk in chunks],
                [chunk.content for chunk in chunks],
                vectors,
            )
        return await self.get_document(int(document["id"]), include_content=False)

    @asynccontextmanager
    async def _atomic(self) -> AsyncIterator[Queries]:
        if isinstance(self.db, Database):
            async with self.db.transaction() as tx:
                yield tx
        else:  # already a transaction
            yield self.db

    async def get_document(self, document_id: int, *, include_content: bool = True) -> Document:
        """One document; `NotFoundError` when it does not exist or belongs to someone else."""
        select = sql.SQL(
            "SELECT {columns}{content} FROM agent.documents d"
            " WHERE d.id = $1 AND ($2::bigint IS NULL OR d.owner_id = $2)"
        ).format(
            columns=_DOCUMENT_COLUMNS,
            content=sql.SQL(", d.content" if include_content else ""),
        )
        row = await self.db.fetch_one(select.as_string(), document_id, self.owner_id)
        if row is None:
            raise NotFoundError(f"document {document_id} not found")
        return Document.from_row(row)

    async def delete_document(self, document_id: int) -> None:
        """Delete a document and its chunks; `NotFoundError` when there is none."""
        deleted = await self.db.fetch_val(
            "DELETE FROM agent.documents WHERE id = $1 AND ($2::bigint IS NULL OR owner_id = $2)"
            " RETURNING id",
            document_id,
            self.owner_id,
        )
        if deleted is None:
            raise NotFoundError(f"document {document_id} not found")

    async def list_documents(
        self,
        *,
        category: str | None = None,
        scopes: Iterable[ScopeLike] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Document]:
        """Documents (without their content), newest first."""
        limit = check_limit(limit, maximum=500)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError("offset must be an integer >= 0")
        params = QueryParams()
        select = sql.SQL(
            "SELECT {columns} FROM agent.documents d WHERE {where}"
            " ORDER BY d.created_at DESC, d.id DESC LIMIT {limit} OFFSET {offset}"
        ).format(
            columns=_DOCUMENT_COLUMNS,
            where=self._where(params, category, scopes),
            limit=params(limit),
            offset=params(offset),
        )
        rows = await self.db.fetch_all(select.as_string(), *params.values)
        return [Document.from_row(row) for row in rows]

    def _where(
        self, params: QueryParams, category: str | None, scopes: Iterable[ScopeLike] | None
    ) -> sql.Composed:
        """Conditions on the documents `d` of this owner, category and scopes."""
        conditions: list[sql.Composable] = [
            sql.SQL("({owner}::bigint IS NULL OR d.owner_id = {owner})").format(
                owner=params(self.owner_id)
            )
        ]
        if category is not None:
            conditions.append(
                sql.SQL("d.category = {category}").format(
                    category=params(_check_category(category))
                )
            )
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
        min_score: float = 0.0,
    ) -> list[KnowledgeHit]:
        """The chunks that best answer `query`, best first.

        `scopes` (e.g. `["global", ("circle", "c-1"), ScopeRef("agent", "7")]`) keeps only
        documents in those scopes; None searches every scope of the owner.
        """
        query = check_text(query, "the query", max_chars=4_000)
        limit = check_limit(limit)
        if not isinstance(min_score, int | float) or not 0 <= min_score <= 1:
            raise InvalidInputError("min_score must be a number from 0 to 1")
        embedder = await self._prepare()
        semantic = None
        if embedder is not None:
            (vector,) = await embed_texts(embedder, [query])
            semantic = SemanticQuery(vector, embedding_model_name(embedder))
        params = QueryParams()
        search = CandidateSearch(
            source=sql.SQL("agent.chunks t JOIN agent.documents d ON d.id = t.document_id"),
            where=self._where(params, category, scopes),
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


def format_knowledge_for_prompt(
    hits: Sequence[KnowledgeHit],
    budget_chars: int = 4_000,
    *,
    heading: str = "Relevant knowledge (most relevant first):",
) -> str:
    """Search hits as a prompt section of at most `budget_chars` characters: a `heading` line
    (none when empty), then each passage quoted after its document title and part number;
    "" when nothing fits."""
    if budget_chars < 0:
        raise InvalidInputError("budget_chars must be >= 0")
    parts = [heading] if heading else []
    used = len(heading)
    for hit in hits:
        text = " ".join(hit.content.split())
        block = f'\n[{hit.document_title}, part {hit.seq + 1}]\n"{text}"'
        if used + len(block) <= budget_chars:
            parts.append(block)
            used += len(block)
            continue
        room = budget_chars - used
        header = f'\n[{hit.document_title}, part {hit.seq + 1}]\n"'
        if room - len(header) >= 80:
            parts.append(header + text[: room - len(header) - 2].rstrip() + '…"')
        break
    if len(parts) <= (1 if heading else 0):
        return ""
    return "".join(parts) if heading else "".join(parts).removeprefix("\n")

"""A document's chunks: cut, embedded and written in one go, or indexed later by a job.

`KnowledgeBase.add_document(..., index=False)` stores a document `pending`, with its text and
no chunks. `set_indexing_job` names the job that indexes it; that job calls `index_document`,
which cuts the text, embeds the chunks batch by batch (reporting progress), then replaces the
document's chunks and makes it `ready` in one transaction. Only the named job may do so: an
edit or a newer job in the meantime makes an older job's work a no-op. A worker killed before
that transaction leaves the document `pending` with the chunks it had before (none for a new
one); the job, run again, starts over. Search therefore never sees half of a document.

```python
async with db.transaction() as tx:
    document = await KnowledgeBase(tx).add_document("Handbook", text, index=False)
    await set_indexing_job(tx, document.id, job_id)
...  # in the job
result = await index_document(db, document.id, job_id=job_id, embedder=embedder)
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog
from psycopg import sql

from gathering.agents.chunking import (
    DEFAULT_OVERLAP_CHARS,
    DEFAULT_TARGET_CHARS,
    TextChunk,
    chunk_text,
)
from gathering.agents.retrieval import (
    EMBEDDING_BATCH_SIZE,
    embed_texts,
    embedding_model_name,
    require_vectors,
    vector_literal,
)
from gathering.db.database import Database, Queries
from gathering.db.named_queries import queries_of
from gathering.errors import GatheringError, LLMError
from gathering.llm.embeddings import EmbeddingProvider

_SQL = queries_of("gathering.agents")
log = structlog.get_logger(__name__)
MAX_ERROR_CHARS = 2_000

# Told the chunks embedded so far and their total, after each batch (and once at 0).
ProgressCallback = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class EmbeddedChunks:
    """Chunks with their vectors (pgvector's text form; all None without an embedder)."""

    chunks: list[TextChunk]
    vectors: list[str | None]
    model: str | None


@dataclass(frozen=True)
class IndexResult:
    """What `index_document` did: `ready` (with its chunk count and model), `failed` (with
    why), or `skipped` (the document is gone, edited, or another job's)."""

    outcome: Literal["ready", "failed", "skipped"]
    chunks: int = 0
    model: str | None = None
    error: str | None = None


async def embed_chunks(
    embedder: EmbeddingProvider | None,
    title: str,
    chunks: Sequence[TextChunk],
    *,
    on_batch: Callable[[int], Awaitable[None]] | None = None,
    ledger: Queries | None = None,
) -> EmbeddedChunks:
    """Vectors of "title, blank line, chunk" for each chunk, in batches; `on_batch(done)` after
    each (each batch written to the usage ledger of `ledger`). Without an embedder, no
    vectors."""
    if embedder is None:
        return EmbeddedChunks(list(chunks), [None] * len(chunks), None)
    vectors: list[str | None] = []
    dimensions: set[int] = set()
    for start in range(0, len(chunks), EMBEDDING_BATCH_SIZE):
        batch = chunks[start : start + EMBEDDING_BATCH_SIZE]
        texts = [f"{title}\n\n{chunk.content}" for chunk in batch]
        embedded = await embed_texts(embedder, texts, ledger=ledger)
        dimensions.update(len(vector) for vector in embedded)
        if len(dimensions) > 1:
            raise LLMError(f"{embedder.name} returned vectors of unequal length")
        vectors.extend(vector_literal(vector) for vector in embedded)
        if on_batch is not None:
            await on_batch(len(vectors))
    return EmbeddedChunks(list(chunks), vectors, embedding_model_name(embedder))


async def replace_chunks(
    tx: Queries, document_id: int, *, language: str, title: str, embedded: EmbeddedChunks
) -> None:
    """Delete the document's chunks and write `embedded` instead (inside the caller's
    transaction, so that no reader sees the document without its chunks)."""
    await tx.execute(_SQL["delete_chunks"], document_id)
    with_vectors = embedded.model is not None
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
    chunks = embedded.chunks
    await tx.execute(
        insert.as_string(),
        document_id,
        language,
        title,
        embedded.model,
        [chunk.seq for chunk in chunks],
        [chunk.start for chunk in chunks],
        [chunk.end for chunk in chunks],
        [chunk.content for chunk in chunks],
        embedded.vectors,
    )
    await tx.execute(_SQL["document_indexed"], document_id, embedded.model, len(chunks))


async def set_indexing_job(db: Queries, document_id: int, job_id: int) -> None:
    """Make the document `pending` on job `job_id` (call it in the transaction that queues the
    job): only that job's `index_document` may make it ready."""
    await db.execute(_SQL["set_indexing_job"], document_id, job_id)


async def documents_to_reindex(
    tx: Queries, model: str | None, *, owner_id: int | None = None, limit: int = 10_000
) -> list[int]:
    """The documents to index again, locked (call it in the transaction that queues their jobs;
    documents another such transaction holds are left to it): those that failed, those pending
    on a job that no longer runs, and (with `model`, the embedding model now configured) the
    ready ones embedded with another model or with none. Of `owner_id` (everyone's: None)."""
    rows = await tx.fetch_all(_SQL["documents_to_reindex"], model, owner_id, limit)
    return [int(row["id"]) for row in rows]


async def index_document(
    db: Database,
    document_id: int,
    *,
    job_id: int,
    embedder: EmbeddingProvider | None,
    target_chars: int = DEFAULT_TARGET_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
    on_progress: ProgressCallback | None = None,
) -> IndexResult:
    """Index document `document_id` for job `job_id` (see the module's docstring).

    A `GatheringError` on the way (the embedding provider down, pgvector missing) makes the
    document `failed` with its message; any other error too, and is raised. Cancellation
    leaves it `pending` for the job's next run.
    """
    row = await db.fetch_one(_SQL["document_to_index"], document_id)
    if row is None or row["status"] != "pending" or row["job_id"] != job_id:
        return IndexResult("skipped")
    title, content, language = row["title"], row["content"], row["language"]
    try:
        if embedder is not None:
            await require_vectors(db)
        chunks = await asyncio.to_thread(chunk_text, content, target_chars, overlap_chars)
        total = len(chunks)

        async def progress(done: int) -> None:
            await db.execute(_SQL["index_progress"], document_id, job_id, done, total)
            if on_progress is not None:
                await on_progress(done, total)

        await progress(0)
        embedded = await embed_chunks(embedder, title, chunks, on_batch=progress, ledger=db)
        async with db.transaction() as tx:
            if await tx.fetch_one(_SQL["lock_indexing_document"], document_id, job_id) is None:
                return IndexResult("skipped")  # edited, deleted or taken over meanwhile
            await replace_chunks(tx, document_id, language=language, title=title, embedded=embedded)
        return IndexResult("ready", chunks=total, model=embedded.model)
    except GatheringError as error:
        return await _failed(db, document_id, job_id, error.message)
    except Exception as error:
        log.exception("indexing a document failed", document_id=document_id, job_id=job_id)
        await _failed(db, document_id, job_id, f"an unexpected error ({type(error).__name__})")
        raise


async def _failed(db: Database, document_id: int, job_id: int, message: str) -> IndexResult:
    message = message[:MAX_ERROR_CHARS]
    marked = await db.fetch_val(_SQL["document_index_failed"], document_id, job_id, message)
    return IndexResult("failed", error=message) if marked else IndexResult("skipped")

"""Document ingestion: files into the knowledge base, indexed by jobs, with progress events.

```python
documents = await store_uploads(db, [Upload("handbook.pdf", data)], owner_id=user_id)
# each is `pending`; the job `knowledge:ingest` cuts, embeds and indexes it, then it is `ready`
queued = await queue_reindexing(db, model="openai/text-embedding-3-small")
```

Storing a file extracts its text (in a thread), stores the document `pending` and queues its
job in one transaction: a document is never left without the job that indexes it. The job
(`ingest`) publishes `knowledge.document.progress` (chunks embedded of the total) after each
batch, then `knowledge.document.ready` or `knowledge.document.failed`, durably, on the
owner's subject `user:<owner id>` and, for a project's document, on `project:<id>`. A job
killed with its worker runs again (stalled-job recovery) and starts over; the document
becomes `ready` only with all its chunks (see `gathering.agents.knowledge_index`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from gathering.agents.knowledge import Document, KnowledgeBase
from gathering.agents.knowledge_index import (
    IndexResult,
    documents_to_reindex,
    index_document,
    set_indexing_job,
)
from gathering.agents.long_term_memory import embedder_from_settings
from gathering.agents.retrieval import embedding_model_name
from gathering.db.database import Database, Queries
from gathering.errors import GatheringError, InvalidInputError, NotFoundError
from gathering.events import Event, EventBus
from gathering.jobs import enqueue
from gathering.llm.embeddings import EmbeddingProvider
from gathering.projects.documents import ExtractedDocument, extract_document
from gathering.projects.store import ProjectRecord

log = structlog.get_logger(__name__)
QUEUE = "knowledge"
INGEST_TASK = "knowledge:ingest"
MAX_FILES = 50  # per upload


@dataclass(frozen=True)
class Upload:
    """A file to add: its name as the client gave it, its bytes and declared media type."""

    filename: str | None
    data: bytes
    content_type: str | None = None


async def extract_uploads(uploads: Sequence[Upload]) -> list[ExtractedDocument]:
    """The text of each file (on a worker thread: a large PDF takes a while); the first file
    that cannot be read raises its error, naming it."""
    if not uploads:
        raise InvalidInputError("no file to add", hint="send one or more files")
    if len(uploads) > MAX_FILES:
        raise InvalidInputError(
            f"{len(uploads)} files at once; at most {MAX_FILES}", hint="send them in batches"
        )
    return [
        await asyncio.to_thread(extract_document, item.filename, item.data, item.content_type)
        for item in uploads
    ]


async def store_extracted(
    db: Database,
    extracted: Sequence[ExtractedDocument],
    *,
    owner_id: int | None,
    category: str = "general",
    project: ProjectRecord | None = None,
) -> list[Document]:
    """Store the documents `pending` (for `project`, scoped to it; else global) of `owner_id`
    (the local owner: None) and queue their jobs, all in one transaction."""
    scope, scope_id = ("project", str(project.id)) if project is not None else ("global", None)
    ids = []
    async with db.transaction() as tx:
        knowledge = KnowledgeBase(tx, owner_id=owner_id)
        for item in extracted:
            document = await knowledge.add_document(
                item.title,
                item.text,
                category=category,
                scope=scope,
                scope_id=scope_id,
                source=item.filename,
                metadata=item.metadata(),
                index=False,
            )
            await queue_indexing(tx, document.id)
            ids.append(document.id)
    return [await KnowledgeBase(db).get_document(i, include_content=False) for i in ids]


async def store_uploads(
    db: Database,
    uploads: Sequence[Upload],
    *,
    owner_id: int | None,
    category: str = "general",
    project: ProjectRecord | None = None,
) -> list[Document]:
    """Read every file, then store them all (none when one cannot be read)."""
    extracted = await extract_uploads(uploads)
    return await store_extracted(
        db, extracted, owner_id=owner_id, category=category, project=project
    )


async def queue_indexing(tx: Queries, document_id: int) -> int:
    """Queue the job that indexes document `document_id` (in the caller's transaction); its
    id. Jobs of one document run one at a time."""
    job_id = await enqueue(
        tx,
        INGEST_TASK,
        {"document_id": document_id},
        queue=QUEUE,
        lock=f"knowledge-document-{document_id}",
    )
    await set_indexing_job(tx, document_id, job_id)
    return job_id


async def queue_reindexing(
    db: Database, model: str | None, *, owner_id: int | None = None
) -> list[int]:
    """Queue a job for each document to index again (see `documents_to_reindex`: failed,
    stuck, or embedded with another model than `model`); their ids."""
    async with db.transaction() as tx:
        ids = await documents_to_reindex(tx, model, owner_id=owner_id)
        for document_id in ids:
            await queue_indexing(tx, document_id)
    return ids


def current_model(embedder: EmbeddingProvider | None) -> str | None:
    """The model name documents embedded by `embedder` record (None: no embeddings)."""
    return None if embedder is None else embedding_model_name(embedder)


def document_events(document: Document, kind: str, body: dict[str, Any]) -> list[Event]:
    """`knowledge.document.<kind>` for the document's owner and, for a project's document,
    for the project."""
    data = {
        "document_id": document.id,
        "title": document.title,
        "scope": document.scope,
        "scope_id": document.scope_id,
        **body,
    }
    subjects = [f"user:{document.owner_id}"]
    if document.scope == "project" and document.scope_id is not None:
        subjects.append(f"project:{document.scope_id}")
    return [
        Event(f"knowledge.document.{kind}", data, subject=subject, source="knowledge")
        for subject in subjects
    ]


async def ingest(db: Database, bus: EventBus | None, document_id: int, job_id: int) -> IndexResult:
    """The job: index document `document_id` if it still waits for job `job_id`, with the
    embedding model of this process's settings, publishing its progress."""
    try:
        document = await KnowledgeBase(db).get_document(document_id, include_content=False)
    except NotFoundError:
        return IndexResult("skipped")

    async def publish(kind: str, body: dict[str, Any]) -> None:
        if bus is None:
            return
        try:
            await bus.publish_many(document_events(document, kind, body), durable=True)
        except GatheringError as error:  # progress not told is no reason to fail the indexing
            log.warning("a knowledge event was not published", kind=kind, error=error.message)

    async def progress(done: int, total: int) -> None:
        await publish("progress", {"chunks_done": done, "chunks_total": total})

    try:
        result = await index_document(
            db, document_id, job_id=job_id, embedder=embedder_from_settings(), on_progress=progress
        )
    except Exception:  # a bug: the document is failed; the job fails with the error
        await publish("failed", {"error": "an unexpected error (logged)"})
        raise
    if result.outcome == "ready":
        await publish(
            "ready",
            {"chunks_done": result.chunks, "chunks_total": result.chunks, "model": result.model},
        )
    elif result.outcome == "failed":
        await publish("failed", {"error": result.error})
    return result

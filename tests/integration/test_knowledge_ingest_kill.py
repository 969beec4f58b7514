"""A `gathering worker` killed (SIGKILL) while it embeds a document: the document stays
`pending` with no chunk (never half-indexed, never ready), the stalled job is queued again,
another worker indexes it from the start, and it ends `ready` with every chunk, embedded by
the real `openai` provider at the wire of a local server."""

from __future__ import annotations

import asyncio

import pytest
from embedding_wire import embedding_wire
from job_processes import Worker, scratch_database, wait_until

from gathering.agents.chunking import chunk_text
from gathering.db import Database
from gathering.projects.ingestion import Upload, store_uploads

pytestmark = pytest.mark.slow

TEXT = "\n\n".join(f"Paragraph {n} of the pilot's guide. " * 30 for n in range(160))


async def upload(url: str) -> int:
    database = Database(url)
    await database.connect()
    try:
        [document] = await store_uploads(
            database, [Upload("guide.txt", TEXT.encode())], owner_id=None
        )
    finally:
        await database.disconnect()
    return document.id


def test_a_worker_killed_mid_ingestion_leaves_it_to_the_retried_job(test_server_url: str) -> None:
    expected = len(chunk_text(TEXT))
    assert expected > 64  # more than one batch of embeddings
    with embedding_wire() as wire, scratch_database(test_server_url) as db:
        document_id = asyncio.run(upload(db.url))

        def document() -> tuple[str, int, int | None, int]:
            row = db.sql(
                "SELECT status, chunks_done, chunks_total,"
                " (SELECT count(*) FROM agent.chunks c WHERE c.document_id = d.id)"
                " FROM agent.documents d WHERE id = %s",
                document_id,
            )[0]
            return row[0], row[1], row[2], row[3]

        wire.hold()
        first = Worker(db, **wire.env("bow-a"))
        try:
            assert wire.arrived.wait(60), first.output()
            assert document() == ("pending", 0, expected, 0)
            first.kill()
        finally:
            wire.release()
            first.stop()
        assert document() == ("pending", 0, expected, 0)  # nothing half-written

        second = Worker(db, **wire.env("bow-a"))
        try:
            wait_until(lambda: document()[0] == "ready", 90, "the document is indexed")
        finally:
            second.stop()
        assert document() == ("ready", expected, expected, expected)
        [(model, chunk_models, attempts)] = db.sql(
            "SELECT d.embedding_model, array_agg(DISTINCT c.embedding_model), j.attempts"
            " FROM agent.documents d JOIN agent.chunks c ON c.document_id = d.id"
            " JOIN procrastinate_jobs j ON j.task_name = 'knowledge:ingest'"
            " WHERE d.id = %s GROUP BY d.embedding_model, j.attempts",
            document_id,
        )
        assert model == "openai/bow-a" and chunk_models == ["openai/bow-a"]
        assert attempts >= 2  # the killed run, then the one that finished
        events = [row[0] for row in db.sql("SELECT type FROM events.outbox ORDER BY cursor")]
        assert events[-1] == "knowledge.document.ready"

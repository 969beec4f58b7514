"""Document ingestion's jobs, registered through the `gathering.jobs` entry point `knowledge`:
`knowledge:ingest` indexes one document of the knowledge base (see `ingestion.ingest`)."""

from __future__ import annotations

import procrastinate

from gathering.jobs import ON_SHUTDOWN, services_of
from gathering.projects.ingestion import QUEUE, ingest

blueprint = procrastinate.Blueprint()


@blueprint.task(name="ingest", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def ingest_document(context: procrastinate.JobContext, document_id: int) -> None:
    """Cut, embed and index document `document_id`, if it still waits for this job."""
    services = services_of(context)
    job_id = context.job.id
    assert job_id is not None  # a job being run has been stored
    await ingest(services.db, services.bus, document_id, job_id)

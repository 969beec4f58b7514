"""The job runtime in one process: procrastinate's schema comes with our migrations, a worker
runs jobs and counts them, a job enqueued in a transaction exists exactly when it commits,
failures are published and can be retried, cancel stops a running job within a second, and a
drained worker finishes short jobs and puts long ones back in the queue."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gathering.db import Database, discover_migrations
from gathering.errors import ConflictError, InvalidInputError, NotFoundError
from gathering.events import EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker, enqueue
from gathering.observability import JOBS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_support" / "job_plugin"))
import gathering_test_jobs

BLUEPRINTS = {"testjobs": gathering_test_jobs.blueprint}
MARKS = """CREATE TABLE IF NOT EXISTS job_test_marks (
    key text, what text, pid integer, job_id bigint, at timestamptz DEFAULT clock_timestamp())"""


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    db = Database(migrated_database_url)
    await db.connect()
    await db.execute(MARKS)
    yield db
    await db.disconnect()


@pytest.fixture
async def queue(database: Database) -> AsyncIterator[JobQueue]:
    async with JobQueue(database, blueprints=BLUEPRINTS) as opened:
        yield opened


@pytest.fixture
async def bus(database: Database) -> AsyncIterator[EventBus]:
    events = EventBus(database, poll_interval=0.2)
    await events.start()
    yield events
    await events.close(grace=1)


def worker_for(queue: JobQueue, bus: EventBus | None, **options: float) -> JobWorker:
    return JobWorker(queue, JobServices(queue.db, bus), concurrency=4, **options)  # type: ignore[arg-type]


async def marks(db: Database, key: str) -> list[str]:
    rows = await db.fetch_all("SELECT what FROM job_test_marks WHERE key = $1 ORDER BY at", key)
    return [row["what"] for row in rows]


async def wait_for_status(queue: JobQueue, job_id: int, *statuses: str, limit: float = 15) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = (await queue.job(job_id)).status
        if status in statuses:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} is {status}, not {statuses}, after {limit}s")


async def test_the_job_queue_schema_is_a_checksummed_migration(database: Database) -> None:
    migration = next(m for m in discover_migrations() if m.name == "job_queue")
    assert migration.filename == "0014_job_queue.py"
    assert "CREATE TABLE procrastinate_jobs" in migration.sql
    assert await database.fetch_val("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
    status = await database.migration_status()
    assert status.is_current


async def test_a_worker_runs_deferred_jobs_and_counts_them(queue: JobQueue) -> None:
    before = JOBS.labels(task="testjobs:mark", outcome="succeeded")._value.get()
    worker = worker_for(queue, None)
    await worker.start()
    try:
        ids = [await queue.defer("testjobs:mark", key=f"k{n}") for n in range(5)]
        for job_id in ids:
            await wait_for_status(queue, job_id, "succeeded")
    finally:
        await worker.stop()
    for n in range(5):
        assert await marks(queue.db, f"k{n}") == ["done"]
    assert JOBS.labels(task="testjobs:mark", outcome="succeeded")._value.get() == before + 5
    listed = await queue.list_jobs(task="testjobs:mark")
    assert sorted(job.id for job in listed) == sorted(ids)
    assert (await queue.counts())["succeeded"] == 5


async def test_an_unknown_task_or_status_is_refused(queue: JobQueue) -> None:
    with pytest.raises(NotFoundError, match="no task 'testjobs:nope'"):
        await queue.defer("testjobs:nope")
    with pytest.raises(InvalidInputError, match="unknown job status"):
        await queue.list_jobs(status="exploded")
    with pytest.raises(NotFoundError, match="no job 999999"):
        await queue.job(999999)


async def test_a_job_enqueued_in_a_transaction_exists_only_if_it_commits(queue: JobQueue) -> None:
    db = queue.db
    with pytest.raises(RuntimeError, match="roll back"):
        async with db.transaction():
            await enqueue(db, "testjobs:mark", {"key": "rolled-back"})
            raise RuntimeError("roll back")
    assert await queue.list_jobs() == []
    async with db.transaction():
        job_id = await enqueue(db, "testjobs:mark", {"key": "committed"})
    worker = worker_for(queue, None)
    await worker.start()
    try:
        await wait_for_status(queue, job_id, "succeeded")
    finally:
        await worker.stop()
    assert await marks(db, "committed") == ["done"]
    assert await marks(db, "rolled-back") == []


async def test_a_failed_job_is_published_and_can_be_retried(queue: JobQueue, bus: EventBus) -> None:
    seen: list[dict[str, object]] = []
    subscription = bus.subscribe("job.failed", lambda event: seen.append(dict(event.data)))
    worker = worker_for(queue, bus)
    await worker.start()
    try:
        job_id = await queue.defer("testjobs:fail", key="boom")
        await wait_for_status(queue, job_id, "failed")
        with pytest.raises(ConflictError, match="is failed: there is nothing to cancel"):
            await queue.cancel(job_id)
        retried = await queue.retry(job_id)
        assert retried.status in ("todo", "doing", "failed")
        await wait_for_status(queue, job_id, "failed")
    finally:
        await worker.stop()
        subscription.unsubscribe()
    assert await marks(queue.db, "boom") == ["failed", "failed"]
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [event["job_id"] for event in seen][:2] == [job_id, job_id]
    assert "boom fails on purpose" in str(seen[0]["error"])
    queued = await queue.defer("testjobs:mark", key="fine")
    with pytest.raises(ConflictError, match="is todo: only a failed job can be retried"):
        await queue.retry(queued)


async def test_cancel_stops_a_running_job_within_a_second(queue: JobQueue) -> None:
    worker = worker_for(queue, None)
    await worker.start()
    try:
        job_id = await queue.defer("testjobs:sleep", key="long", seconds=60)
        await wait_for_status(queue, job_id, "doing")
        while await marks(queue.db, "long") != ["started"]:
            await asyncio.sleep(0.02)
        started = time.monotonic()
        await queue.cancel(job_id)
        await wait_for_status(queue, job_id, "aborted", limit=5)
        stopped_in = time.monotonic() - started
    finally:
        await worker.stop()
    assert stopped_in < 1.0, stopped_in
    assert await marks(queue.db, "long") == ["started"]


async def test_cancel_of_a_queued_job_means_it_never_runs(queue: JobQueue) -> None:
    job_id = await queue.defer("testjobs:mark", key="never")
    cancelled = await queue.cancel(job_id)
    assert cancelled.status == "cancelled"
    worker = worker_for(queue, None)
    await worker.start()
    try:
        probe = await queue.defer("testjobs:mark", key="after")
        await wait_for_status(queue, probe, "succeeded")
    finally:
        await worker.stop()
    assert await marks(queue.db, "never") == []


async def test_drain_finishes_short_jobs_and_requeues_long_ones(queue: JobQueue) -> None:
    worker = worker_for(queue, None, shutdown_timeout=1.0)
    await worker.start()
    short = await queue.defer("testjobs:sleep", key="short", seconds=0.3)
    long = await queue.defer("testjobs:sleep", key="long", seconds=60)
    await wait_for_status(queue, short, "doing")
    await wait_for_status(queue, long, "doing")
    await worker.stop()
    assert (await queue.job(short)).status == "succeeded"
    interrupted = await queue.job(long)
    assert (interrupted.status, interrupted.attempts) == ("todo", 1)
    # another worker (here: a new one) takes it up
    again = worker_for(queue, None, shutdown_timeout=0.2)
    await again.start()
    try:
        await wait_for_status(queue, long, "doing")
        assert await marks(queue.db, "long") == ["started", "started"]
    finally:
        await again.stop()

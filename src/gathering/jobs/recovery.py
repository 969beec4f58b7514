"""Stalled jobs: a worker that died (kill -9, a lost machine) stops sending heartbeats; the
jobs it was running are queued again by `retry_stalled`, which one instance runs as a singleton
duty (`stalled_jobs_duty`)."""

from __future__ import annotations

import structlog

from gathering.db.locks import LockKey, SingletonDuty
from gathering.events import Event
from gathering.jobs.queue import JobQueue, JobServices
from gathering.observability import JOBS

log = structlog.get_logger(__name__)
STALLED_LOCK = LockKey("jobs", "stalled")


async def retry_stalled(
    queue: JobQueue, services: JobServices, *, stalled_after: float
) -> list[int]:
    """Queue again every job whose worker has sent no heartbeat for `stalled_after` seconds
    (or is gone), and forget such workers; the ids of the jobs queued again."""
    manager = queue.app.job_manager
    stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after))
    retried = []
    for job in stalled:
        assert job.id is not None
        try:
            await manager.retry_job(job)
        except Exception:  # finished or retried meanwhile by its worker or another instance
            log.info("a stalled job moved on before it was retried", job_id=job.id)
            continue
        retried.append(job.id)
        JOBS.labels(task=job.task_name, outcome="stalled").inc()
        log.warning("a stalled job was queued again", job_id=job.id, task=job.task_name)
        if services.bus is not None:
            body = {"job_id": job.id, "task": job.task_name, "worker_id": job.worker_id}
            await services.bus.publish(
                Event("job.retried", body, subject="jobs", source="jobs"), durable=True
            )
    await manager.prune_stalled_workers(stalled_after)
    return retried


def stalled_jobs_duty(
    queue: JobQueue, services: JobServices, *, stalled_after: float, interval: float
) -> SingletonDuty:
    """A duty that runs `retry_stalled` every `interval` seconds on one instance."""

    async def round_() -> None:
        await retry_stalled(queue, services, stalled_after=stalled_after)

    return SingletonDuty(services.db, STALLED_LOCK, round_, interval=interval)

"""`gathering worker`: a process that runs jobs, and the stalled-jobs duty, until it is told to
stop (SIGTERM, SIGINT); it then drains like `gathering serve` does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from gathering.config import Settings
from gathering.db import Database
from gathering.db.locks import SingletonDuty
from gathering.errors import StartupError
from gathering.events import EventBus
from gathering.jobs.queue import JobQueue, JobServices
from gathering.jobs.recovery import stalled_jobs_duty
from gathering.jobs.worker import JobWorker

log = structlog.get_logger(__name__)


async def run_worker_process(
    settings: Settings,
    stop: asyncio.Event,
    *,
    concurrency: int,
    queues: list[str] | None = None,
    on_ready: Callable[[JobQueue], None] | None = None,
    duties: Sequence[Callable[[JobServices], SingletonDuty]] = (),
) -> None:
    """Run jobs of `queues` (all when None), and `duties` (besides the stalled-jobs duty),
    until `stop` is set or the worker fails; then take no new job and give the running ones
    the shutdown timeout."""
    async with Database(settings=settings) as db:
        if settings.auto_migrate:
            await db.run_migrations()
        elif problem := (await db.migration_status()).problem():
            raise StartupError(
                f"the database is not ready for this worker: {problem}",
                hint="run `gathering db migrate` (or set GATHERING_AUTO_MIGRATE=true)",
            )
        bus = EventBus(
            db,
            poll_interval=settings.events_poll_interval,
            retention=timedelta(days=settings.events_retention_days),
        )
        await bus.start()
        try:
            async with JobQueue(db) as queue:
                services = JobServices(db, bus)
                stalled = stalled_jobs_duty(
                    queue,
                    services,
                    stalled_after=settings.job_stalled_after,
                    interval=settings.job_heartbeat_interval,
                )
                running = [stalled, *(make(services) for make in duties)]
                worker = JobWorker.from_settings(
                    queue, services, settings, concurrency=concurrency, queues=queues
                )
                for duty in running:
                    await duty.start()
                await worker.start()
                if on_ready is not None:
                    on_ready(queue)
                stopping = asyncio.create_task(stop.wait())
                ended = asyncio.create_task(worker.wait())
                try:
                    await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    detail = worker.health()[1]
                    log.info("worker stopping: no new job; running jobs get the shutdown timeout")
                    await worker.stop()
                    for duty in running:
                        await duty.stop()
                    for task in (stopping, ended):
                        task.cancel()
                    await asyncio.gather(stopping, ended, return_exceptions=True)
                if not stop.is_set():
                    raise StartupError(
                        f"the job worker stopped by itself: {detail}",
                        hint="see the log above; the worker's jobs are retried by another",
                    )
        finally:
            await bus.close(grace=settings.shutdown_timeout)

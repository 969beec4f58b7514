"""The job runtime: procrastinate on our PostgreSQL (`JobQueue`), a worker in this process
(`JobWorker`), and the duty that queues again the jobs of a dead worker (`retry_stalled`)."""

from gathering.jobs.queue import (
    DEFAULT_QUEUE,
    JobInfo,
    JobQueue,
    JobServices,
    draining,
    enqueue,
    queued_with,
    services_of,
    task_blueprints,
)
from gathering.jobs.recovery import retry_stalled, stalled_jobs_duty
from gathering.jobs.worker import ON_SHUTDOWN, JobInterruptedError, JobWorker

__all__ = [
    "DEFAULT_QUEUE",
    "ON_SHUTDOWN",
    "JobInfo",
    "JobInterruptedError",
    "JobQueue",
    "JobServices",
    "JobWorker",
    "draining",
    "enqueue",
    "queued_with",
    "retry_stalled",
    "services_of",
    "stalled_jobs_duty",
    "task_blueprints",
]

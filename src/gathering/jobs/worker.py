"""`JobWorker`: a procrastinate worker in this process, as a lifecycle component would run it.

On stop it takes no new job and lets the running ones finish within the shutdown timeout;
those still running then are interrupted and go back to the queue at once, for any worker (this
one after a restart, or another). A worker killed outright stops sending heartbeats, and
`retry_stalled` (a singleton duty) queues its jobs again.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import procrastinate
import structlog
from procrastinate import job_context
from procrastinate import retry as procrastinate_retry
from procrastinate.worker import Worker

from gathering.cancellation import cancel_and_wait
from gathering.config import Settings
from gathering.events import Event
from gathering.jobs.queue import JobQueue, JobServices
from gathering.observability import JOBS

log = structlog.get_logger(__name__)
ABORT_POLL_SECONDS = 1.0  # a cancel whose NOTIFY was missed still lands within this
# New jobs wake the worker by NOTIFY; a job queued for later (a retry's backoff, a delay) or
# queued again has none, so the worker also looks every second.
FETCH_POLL_SECONDS = 1.0


class JobInterruptedError(Exception):
    """The job was stopped because its worker shut down; it runs again (see `ON_SHUTDOWN`)."""


class _RetryInterrupted(procrastinate_retry.BaseRetryStrategy):
    """Queue a job again, at once, when its worker stopped it to shut down; nothing else."""

    def get_retry_decision(
        self, *, exception: BaseException, job: procrastinate.jobs.Job
    ) -> procrastinate_retry.RetryDecision | None:
        if isinstance(exception, JobInterruptedError):
            return procrastinate_retry.RetryDecision(retry_in={"seconds": 0})
        return None


ON_SHUTDOWN = _RetryInterrupted()
"""The retry strategy of every task of ours (`@blueprint.task(retry=ON_SHUTDOWN, ...)`): a
job interrupted by its worker's shutdown runs again elsewhere; a failing one is not repeated
by the queue (the task keeps its own retries, durably, where it has any)."""


def worker_name() -> str:
    """`host:pid`, as logs and `gathering jobs list` show a worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobWorker:
    """Runs the jobs of `queues` (all when None), `concurrency` at a time."""

    def __init__(
        self,
        queue: JobQueue,
        services: JobServices,
        *,
        concurrency: int = 4,
        queues: list[str] | None = None,
        shutdown_timeout: float = 30.0,
        heartbeat_interval: float = 10.0,
        stalled_after: float = 30.0,
    ) -> None:
        self.queue, self.services = queue, services
        self.concurrency, self.queues = concurrency, queues
        self.shutdown_timeout = shutdown_timeout
        self.heartbeat_interval, self.stalled_after = heartbeat_interval, stalled_after
        self.running = 0
        self.finished = 0
        self.restarts = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._worker: Worker | None = None
        self._stopping = asyncio.Event()

    @classmethod
    def from_settings(
        cls,
        queue: JobQueue,
        services: JobServices,
        settings: Settings,
        *,
        concurrency: int | None = None,
        queues: list[str] | None = None,
    ) -> JobWorker:
        """A worker with the settings' concurrency (unless given), shutdown timeout,
        heartbeat interval and stalled-after."""
        return cls(
            queue,
            services,
            concurrency=concurrency or settings.worker_concurrency,
            queues=queues,
            shutdown_timeout=settings.shutdown_timeout,
            heartbeat_interval=settings.job_heartbeat_interval,
            stalled_after=settings.job_stalled_after,
        )

    async def start(self) -> None:
        """Start taking jobs (the queue must be open)."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._supervise(), name="job worker")
        log.info("job worker started", concurrency=self.concurrency, queues=self.queues or "all")

    def _new_worker(self) -> Worker:
        return Worker(
            self.queue.app,
            queues=self.queues,
            name=worker_name(),
            concurrency=self.concurrency,
            shutdown_graceful_timeout=self.shutdown_timeout,
            abort_job_polling_interval=ABORT_POLL_SECONDS,
            fetch_job_polling_interval=FETCH_POLL_SECONDS,
            additional_context={"services": self.services, "stopping": self._stopping.is_set},
            install_signal_handlers=False,
            update_heartbeat_interval=self.heartbeat_interval,
            stalled_worker_timeout=self.stalled_after,
            worker_middleware=[self._observe],
        )

    async def _supervise(self) -> None:
        """Run procrastinate's worker until stopped; when its loop ends by itself (the
        database went away, or it was taken as dead and forgotten), start a new one, after a
        backoff, so that a server's embedded worker never stays down."""
        backoff = 1.0
        while not self._stopping.is_set():
            self._worker = self._new_worker()
            try:
                await self._worker.run()  # type: ignore[no-untyped-call]
            except Exception as exc:  # its loop failed: say so, and start again
                self.last_error = repr(exc)[:300]
                log.error("the job worker failed; starting it again", exc_info=exc)
            if self._stopping.is_set():
                return
            self.restarts += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, 30.0)

    async def stop(self) -> None:
        """Take no new job; wait for the running ones (up to the shutdown timeout), then
        interrupt those left, which go back to the queue."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call] # procrastinate's: unannotated
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.shutdown_timeout + 5)
        except TimeoutError:
            await cancel_and_wait(task)
        except Exception:
            log.exception("the job worker stopped with an error")
        log.info("job worker stopped", finished=self.finished)

    def health(self) -> tuple[bool, str]:
        """(ok, detail): not ok once the worker's loop has ended by itself, or while it is
        being started again after a failure."""
        task = self._task
        if task is None:
            return True, "not started"
        if task.done():
            error = task.exception() if not task.cancelled() else None
            return False, f"the job worker stopped: {error!r}" if error else "stopped"
        detail = f"{self.running} running, {self.finished} finished"
        if self.restarts:
            detail += f"; started again {self.restarts} time(s), last error: {self.last_error}"
        return True, detail

    async def wait(self) -> None:
        """Until the worker's loop ends (for `gathering worker`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _observe(
        self, call_next: Any, context: job_context.JobContext, worker: Worker
    ) -> Any:
        """Count every job by outcome, publish failures, and turn a shutdown's interruption
        into `JobInterruptedError` (which `ON_SHUTDOWN` queues again)."""
        task = context.job.task_name
        self.running += 1
        outcome = "failed"
        try:
            result = await call_next()
            outcome = "succeeded"
            return result
        except asyncio.CancelledError:
            if context.abort_reason() == job_context.AbortReason.SHUTDOWN:
                outcome = "interrupted"
                raise JobInterruptedError("the worker shut down") from None
            outcome = "cancelled"
            raise
        except Exception as exc:
            await self._publish_failure(context, exc)
            raise
        finally:
            self.running -= 1
            self.finished += 1
            JOBS.labels(task=task, outcome=outcome).inc()

    async def _publish_failure(self, context: job_context.JobContext, exc: Exception) -> None:
        bus = self.services.bus
        if bus is None:
            return
        job = context.job
        body = {
            "job_id": job.id,
            "task": job.task_name,
            "error": str(exc)[:2000],
            "attempts": job.attempts,
        }
        try:
            await bus.publish(
                Event("job.failed", body, subject="jobs", source="jobs"), durable=True
            )
        except Exception:  # the job's own outcome must still be stored
            log.warning("could not publish a job's failure", job_id=job.id, exc_info=True)

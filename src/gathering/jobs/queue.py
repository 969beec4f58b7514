"""`JobQueue`: procrastinate on our database, with the tasks every installed part registers.

Tasks come from the `gathering.jobs` entry point group: each entry point names a procrastinate
`Blueprint`, whose tasks are known as `<entry point>:<task>` (`pipelines:run_node`). A job is
added either through procrastinate (`defer`) or, when it must appear exactly when other rows
do, inside the caller's transaction (`enqueue`).
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import procrastinate
import structlog
from procrastinate import exceptions as procrastinate_errors
from psycopg.types.json import Jsonb

from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from gathering.db import Database
    from gathering.db.database import Queries
    from gathering.events import EventBus

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.jobs")
TASK_GROUP = "gathering.jobs"
DEFAULT_QUEUE = "default"
STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")


@dataclass(frozen=True)
class JobServices:
    """What a running task may use: the database and the event bus of its process. Tasks
    declared with `pass_context=True` find it as `context.additional_context["services"]`."""

    db: Database
    bus: EventBus | None


def draining(context: procrastinate.JobContext) -> bool:
    """Whether the worker running `context`'s job has been told to stop (it lets its running
    jobs finish: a job should take on no new work)."""
    stopping = context.additional_context.get("stopping")
    return bool(stopping is not None and stopping())


def services_of(context: procrastinate.JobContext) -> JobServices:
    """The `JobServices` of the worker running `context`'s job."""
    services = context.additional_context.get("services")
    if not isinstance(services, JobServices):
        raise RuntimeError("this job runs on a worker without gathering's services")
    return services


@dataclass(frozen=True)
class JobInfo:
    """One job as `gathering jobs list` shows it."""

    id: int
    queue: str
    task: str
    status: str
    attempts: int
    args: dict[str, Any]
    scheduled_at: datetime | None
    worker_id: int | None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobInfo:
        return cls(
            id=row["id"],
            queue=row["queue_name"],
            task=row["task_name"],
            status=row["status"],
            attempts=row["attempts"],
            args=row["args"] or {},
            scheduled_at=row["scheduled_at"],
            worker_id=row["worker_id"],
            updated_at=row.get("updated_at"),
        )


def task_blueprints() -> dict[str, procrastinate.Blueprint]:
    """The blueprint of every installed `gathering.jobs` entry point, by its name."""
    found: dict[str, procrastinate.Blueprint] = {}
    for entry_point in entry_points(group=TASK_GROUP):
        found[entry_point.name] = _blueprint(entry_point)
    return found


def _blueprint(entry_point: EntryPoint) -> procrastinate.Blueprint:
    loaded = entry_point.load()
    if not isinstance(loaded, procrastinate.Blueprint):
        raise InvalidInputError(
            f"entry point {entry_point.name!r} of {TASK_GROUP} is not a procrastinate Blueprint",
            hint=f"point it at a module-level procrastinate.Blueprint ({entry_point.value})",
        )
    return loaded


def _add_tasks(app: procrastinate.App, blueprint: procrastinate.Blueprint, namespace: str) -> None:
    """`blueprint`'s tasks in `app` as `<namespace>:<task>`. Copies: procrastinate's own
    `add_tasks_from` renames the blueprint's tasks and binds them to one app, and a process may
    open several queues (one per event loop, or per test)."""
    for name, task in blueprint.tasks.items():
        if name != task.name:
            continue  # an alias
        bound = copy.copy(task)
        bound.name = f"{namespace}:{name}"
        bound.aliases = []
        bound.blueprint = app
        app.tasks[bound.name] = bound


class JobQueue:
    """procrastinate's app on `db`'s database.

    It has a pool of its own (procrastinate's queries use psycopg's `%(name)s` placeholders,
    our pool a raw cursor with `$1`), on the same server and with the same statement timeout.
    """

    def __init__(
        self,
        db: Database,
        *,
        blueprints: dict[str, procrastinate.Blueprint] | None = None,
        pool_size: int = 4,
    ) -> None:
        self.db = db
        self.pool_size = pool_size
        self._blueprints = blueprints
        self._app: procrastinate.App | None = None

    @property
    def app(self) -> procrastinate.App:
        """The open procrastinate app (`open()` first)."""
        if self._app is None:
            raise RuntimeError("the job queue is not open: await JobQueue.open() first")
        return self._app

    async def open(self) -> JobQueue:
        """Open procrastinate's pool and register the tasks (reading entry points once)."""
        if self._app is not None:
            return self
        blueprints = self._blueprints
        if blueprints is None:
            blueprints = await asyncio.to_thread(task_blueprints)
        connector = procrastinate.PsycopgConnector(
            conninfo=self.db.url,
            min_size=1,
            max_size=self.pool_size,
            kwargs=self.db.session_options(),
        )
        app = procrastinate.App(connector=connector)
        for namespace, blueprint in sorted(blueprints.items()):
            _add_tasks(app, blueprint, namespace)
        await app.open_async()
        self._app = app
        return self

    async def close(self) -> None:
        """Close procrastinate's pool."""
        app, self._app = self._app, None
        if app is not None:
            await app.close_async()

    async def __aenter__(self) -> JobQueue:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def task_names(self) -> list[str]:
        """The tasks this queue's workers can run (procrastinate's built-ins left out)."""
        return sorted(name for name in self.app.tasks if not name.startswith("builtin:"))

    async def defer(
        self, task: str, *, queue: str | None = None, lock: str | None = None, **args: Any
    ) -> int:
        """Queue a job of `task` with `args` now; its id."""
        if task not in self.app.tasks:
            raise NotFoundError(
                f"no task {task!r}", hint=f"known tasks: {', '.join(self.task_names())}"
            )
        options: dict[str, Any] = {"lock": lock}
        if queue is not None:
            options["queue"] = queue
        configured = self.app.configure_task(task, **options)
        return int(await configured.defer_async(**args))

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int = 50,
    ) -> list[JobInfo]:
        """The newest jobs first, filtered by status, queue and task."""
        if status is not None and status not in STATUSES:
            raise InvalidInputError(
                f"unknown job status {status!r}", hint=f"one of: {', '.join(STATUSES)}"
            )
        rows = await self.db.fetch_all(_SQL["list_jobs"], status, queue, task, limit)
        return [JobInfo.from_row(row) for row in rows]

    async def job(self, job_id: int) -> JobInfo:
        """One job; `NotFoundError` when there is none."""
        row = await self.db.fetch_one(_SQL["job_by_id"], job_id)
        if row is None:
            raise NotFoundError(f"no job {job_id}", hint="`gathering jobs list` shows the jobs")
        return JobInfo.from_row(row)

    async def retry(self, job_id: int) -> JobInfo:
        """Queue a failed job again, now; `ConflictError` when it did not fail."""
        job = await self.job(job_id)
        if job.status != "failed":
            raise ConflictError(
                f"job {job_id} is {job.status}: only a failed job can be retried",
                hint="a job still queued or running goes on by itself",
            )
        try:
            await self.app.job_manager.retry_job_by_id_async(
                job_id, retry_at=procrastinate.utils.utcnow()
            )
        except procrastinate_errors.ConnectorException as exc:  # retried meanwhile
            raise ConflictError(f"job {job_id} could not be retried: {exc}") from exc
        return await self.job(job_id)

    async def cancel(self, job_id: int) -> JobInfo:
        """Cancel a queued job, or ask the worker running it to stop it (within a second)."""
        job = await self.job(job_id)
        if job.status not in ("todo", "doing"):
            raise ConflictError(f"job {job_id} is {job.status}: there is nothing to cancel")
        await self.app.job_manager.cancel_job_by_id_async(job_id, abort=True)
        return await self.job(job_id)

    async def live_workers(self, within: float) -> int:
        """How many workers sent a heartbeat in the last `within` seconds."""
        return int(await self.db.fetch_val(_SQL["live_workers"], within))

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        rows = await self.db.fetch_all(_SQL["count_by_status"])
        return {row["status"]: int(row["jobs"]) for row in rows}


async def queued_with(db: Queries, queueing_lock: str) -> bool:
    """Whether a job that has not started yet holds `queueing_lock` (enqueueing another with
    it would fail, and abort the caller's transaction)."""
    return bool(await db.fetch_val(_SQL["waiting_with_queueing_lock"], queueing_lock))


async def enqueue(
    db: Queries,
    task: str,
    args: dict[str, Any],
    *,
    queue: str = DEFAULT_QUEUE,
    at: datetime | None = None,
    lock: str | None = None,
    queueing_lock: str | None = None,
) -> int:
    """Add a job of `task` inside the caller's current transaction on `db` (so it exists
    exactly when the rows written with it do); it runs at `at` (now when None). Its id."""
    job_id = await db.fetch_val(
        _SQL["enqueue"], queue, task, lock, queueing_lock, Jsonb(args, dumps=json.dumps), at
    )
    return int(job_id)

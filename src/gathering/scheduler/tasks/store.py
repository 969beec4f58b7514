"""Background agent tasks as stored (migration 0018): start, read, list, their step log, and
the controls (pause, resume, cancel). Each control changes the task's row and its job in one
transaction: a running job is asked to abort (procrastinate's NOTIFY, so it stops within a
second on whichever instance runs it), and the lease it held no longer lets it write. A task
starts running, and stops to make room for another, under its owner's lock
(`lock_tasks_of_owner`): the owner's cap on running tasks holds across instances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from psycopg.types.json import Jsonb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gathering.db.database import Database, Queries
from gathering.db.fields import Real, Ref, Said, Whole, as_number
from gathering.db.locks import LockKey
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_text
from gathering.errors import ConflictError, NotFoundError
from gathering.events import Event, EventBus
from gathering.jobs import enqueue

_SQL = queries_of("gathering.scheduler.tasks")
RUN_TASK = "scheduler:run_task"
QUEUE = "tasks"
STATUSES = (
    "queued",
    "running",
    "paused",
    "waiting_approval",
    "waiting_budget",
    "succeeded",
    "failed",
    "cancelled",
)
WAITING = ("waiting_approval", "waiting_budget")  # for a person's answer, for a budget
ENDED = ("succeeded", "failed", "cancelled")
MAX_GOAL_CHARS = 20_000
STRANDED_GRACE = 5.0  # seconds a task's job may have ended before the sweep settles the task


class TaskSpec(BaseModel):
    """What a task is: an agent (id or name), a goal, and budgets."""

    model_config = ConfigDict(extra="forbid")

    agent: Ref = Field(description="The agent's id or name")
    goal: Said = Field(min_length=1, max_length=MAX_GOAL_CHARS, description="What to achieve")
    max_steps: Whole = Field(default=20, ge=1, le=1_000, description="Model calls at most")
    max_tokens: Whole = Field(
        default=200_000, ge=1, le=100_000_000, description="Input and output tokens at most"
    )
    max_seconds: Real = Field(
        default=900, ge=1, le=7 * 86_400, description="Seconds of work at most (pauses excluded)"
    )
    max_cost_usd: (
        Annotated[float, Field(ge=0.000001, le=1e6), BeforeValidator(as_number)] | None
    ) = Field(default=None, description="Dollars at most, for priced models")


@dataclass(frozen=True)
class TaskRecord:
    """A stored task, with what it has used of its budgets."""

    id: int
    owner_id: int
    agent_id: int
    goal: str
    status: str
    max_steps: int
    max_tokens: int
    max_seconds: float
    max_cost_usd: float | None
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    active_seconds: float
    job_id: int | None
    lease: UUID | None  # taken by the job when it started the task; fences its writes
    alive_at: datetime | None  # when the run holding the lease last said it works on it
    approval_id: int | None
    result: str | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TaskRecord:
        return cls(**row)

    @property
    def tokens(self) -> int:
        """Input and output tokens used so far."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class TaskStep:
    """One step: the model's reply (its text, the calls it asked for) and each call's result."""

    task_id: int
    n: int
    thought: str
    tool_calls: list[dict[str, Any]]
    results: dict[str, dict[str, Any]]
    status: str  # acting (calls still to run or store), done
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    duration_ms: int
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TaskStep:
        return cls(**row)


def task_event(kind: str, task: TaskRecord, **extra: Any) -> list[Event]:
    """`task.<kind>` about `task`, for subscribers of `task:<id>` and of its owner."""
    body: dict[str, Any] = {
        "task_id": task.id,
        "agent_id": task.agent_id,
        "status": task.status,
        "steps": task.steps,
        **extra,
    }
    if task.error and kind == "finished":
        body["error"] = task.error
    return [
        Event(f"task.{kind}", body, subject=subject, source="scheduler")
        for subject in (f"task:{task.id}", f"user:{task.owner_id}")
    ]


async def owned_id(queries: Queries, query: str, owner_id: int, ref: int | str, what: str) -> int:
    """The id of `owner_id`'s `what` (agent, pipeline) `ref`, by id or name, looked up with
    `query` (`agent_of_owner`, `pipeline_of_owner`); `NotFoundError` when they have none."""
    by_id, by_name = (ref, None) if isinstance(ref, int) else (None, ref)
    row = await queries.fetch_one(_SQL[query], by_id, by_name, owner_id)
    if row is None:
        raise NotFoundError(f"no {what} {ref!r}", hint=f"list them with `gathering {what}s list`")
    return int(row["id"])


async def start_task(
    db: Database, bus: EventBus | None, owner_id: int, spec: TaskSpec
) -> TaskRecord:
    """Store a task of `owner_id`'s agent and queue its job, in one transaction (a savepoint
    of the caller's, when it has one open on `db`); `NotFoundError` when the owner has no
    such agent."""
    bus = bus if bus is not None else EventBus(db)
    async with db.transaction() as tx:
        agent_id = await owned_id(tx, "agent_of_owner", owner_id, spec.agent, "agent")
        row = await tx.fetch_one(
            _SQL["insert_task"],
            owner_id,
            agent_id,
            storable_text(spec.goal),
            spec.max_steps,
            spec.max_tokens,
            spec.max_seconds,
            spec.max_cost_usd,
        )
        assert row is not None
        task = await queue_task(tx, int(row["id"]))
        await bus.publish_many(task_event("queued", task), tx=tx)
    return task


async def queue_task(queries: Queries, task_id: int) -> TaskRecord:
    """Task `task_id` queued with a new job, both in the caller's transaction on `queries`."""
    job_id = await enqueue(queries, RUN_TASK, {"task_id": task_id}, queue=QUEUE)
    row = await queries.fetch_one(_SQL["queue_task"], task_id, job_id)
    assert row is not None
    return TaskRecord.from_row(row)


async def lock_tasks_of_owner(queries: Queries, owner_id: int) -> None:
    """Until the end of the caller's transaction, no task of `owner_id` starts running in
    another transaction, on any instance (a count of their running tasks holds until then),
    nor stops running in a way that makes room for another (an end, a wait, a pause, a
    cancel: `stopped_running`). Take it before locking any task's row (as every caller
    does)."""
    await queries.execute(
        _SQL["lock_tasks_of_owner"], LockKey("tasks-of-owner", str(owner_id)).value
    )


async def stopped_running(queries: Queries, owner_id: int) -> None:
    """A task of `owner_id` stopped running, in the caller's transaction (which holds
    `lock_tasks_of_owner`): the oldest of their tasks waiting for room to run goes now."""
    await queries.fetch_all(_SQL["wake_task_waiting_for_room"], owner_id)


async def get_task(db: Queries, task_id: int) -> TaskRecord:
    """Task `task_id`; `NotFoundError` when there is none."""
    row = await db.fetch_one(_SQL["task_by_id"], task_id)
    if row is None:
        raise NotFoundError(f"no task {task_id}", hint="list tasks with `gathering tasks list`")
    return TaskRecord.from_row(row)


async def list_tasks(
    db: Queries,
    owner_id: int | None,
    *,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[TaskRecord]:
    """Tasks newest first (of `owner_id`, every owner's when None; of `status` when given)."""
    rows = await db.fetch_all(_SQL["list_tasks"], owner_id, status, limit, offset)
    return [TaskRecord.from_row(row) for row in rows]


async def task_steps(
    db: Queries, task_id: int, *, after: int = 0, limit: int = 100
) -> list[TaskStep]:
    """The steps of `task_id` numbered above `after`, in order, at most `limit`."""
    rows = await db.fetch_all(_SQL["steps_of_task"], task_id, after, limit)
    return [TaskStep.from_row(row) for row in rows]


async def pause_task(db: Database, bus: EventBus | None, task_id: int) -> TaskRecord:
    """Stop a queued, running or waiting task where it is (a running step's call that was
    cut short is reported to the model as interrupted); `resume_task` takes it up again."""
    return await _control(db, bus, task_id, "paused", ("queued", "running", *WAITING))


async def cancel_task(db: Database, bus: EventBus | None, task_id: int) -> TaskRecord:
    """End a task that has not ended, as cancelled (its running job is stopped)."""
    error = {"code": "cancelled", "message": "cancelled by request"}
    return await _control(
        db, bus, task_id, "cancelled", ("queued", "running", "paused", *WAITING), error
    )


async def resume_task(db: Database, bus: EventBus | None, task_id: int) -> TaskRecord:
    """Queue a paused task, or one waiting for a budget (raised meanwhile), again now: it
    goes on from its last stored step."""
    bus = bus if bus is not None else EventBus(db)
    async with db.transaction() as tx:
        task = await _locked(tx, task_id)
        if task.status not in ("paused", "waiting_budget"):
            raise ConflictError(
                f"task {task_id} is {task.status}: only a paused task, or one waiting for a "
                "budget, is resumed",
                hint="pause it first" if task.status not in ENDED else "start a new task",
            )
        if task.job_id is not None:  # the job deferred to the budget's reset
            await tx.fetch_one(_SQL["cancel_task_job"], task.job_id)
        task = await queue_task(tx, task_id)
        await bus.publish_many(task_event("resumed", task), tx=tx)
    return task


async def resume_answered(db: Database, bus: EventBus | None, limit: int = 100) -> int:
    """Queue again each task whose waiting call a person has answered (or whose approval
    expired), once: the answer is marked taken up in the same transaction. A task that no
    longer waits for it (paused, cancelled) reads the answer when it is resumed. How many
    answers were taken up."""
    bus = bus if bus is not None else EventBus(db)
    rows = await db.fetch_all(_SQL["answered_for_tasks"], limit)
    for row in rows:
        async with db.transaction() as tx:
            # The task first, then the approval: the order every locker of both takes.
            locked = await tx.fetch_one(_SQL["lock_task"], row["task_id"])
            if locked is None:
                continue  # deleted with its task meanwhile
            if await tx.fetch_one(_SQL["take_answer"], row["id"]) is None:
                continue  # taken up by another instance
            task = TaskRecord.from_row(locked)
            if task.status == "waiting_approval" and task.approval_id == row["id"]:
                task = await queue_task(tx, task.id)
                await bus.publish_many(task_event("resumed", task, approval_id=row["id"]), tx=tx)
    return len(rows)


async def _control(
    db: Database,
    bus: EventBus | None,
    task_id: int,
    to: str,
    allowed: tuple[str, ...],
    error: dict[str, Any] | None = None,
) -> TaskRecord:
    bus = bus if bus is not None else EventBus(db)
    async with db.transaction() as tx:
        owner_id = await tx.fetch_val(_SQL["task_owner"], task_id)
        if owner_id is not None:  # else _locked says there is no such task
            await lock_tasks_of_owner(tx, owner_id)
        task = await _locked(tx, task_id)
        if task.status not in allowed:
            raise ConflictError(
                f"task {task_id} is {task.status}: it cannot be {to}",
                details={"status": task.status},
            )
        if task.job_id is not None:
            await tx.fetch_one(_SQL["cancel_task_job"], task.job_id)
        if to == "cancelled":
            await tx.execute(_SQL["expire_task_approvals"], task_id)
        row = await tx.fetch_one(
            _SQL["set_task_status"], task_id, to, Jsonb(error) if error else None
        )
        assert row is not None
        if task.status in ("running", "queued"):  # a queued one may hold a wake: pass it on
            await stopped_running(tx, task.owner_id)
        task = TaskRecord.from_row(row)
        kind = "finished" if to in ENDED else to
        await bus.publish_many(task_event(kind, task), tx=tx)
    return task


async def _locked(tx: Queries, task_id: int) -> TaskRecord:
    row = await tx.fetch_one(_SQL["lock_task"], task_id)
    if row is None:
        raise NotFoundError(f"no task {task_id}", hint="list tasks with `gathering tasks list`")
    return TaskRecord.from_row(row)


async def settle_stranded_tasks(db: Database, bus: EventBus | None, limit: int = 100) -> int:
    """End the tasks whose job ended without ending them (it failed on an unexpected error, or
    a person cancelled the job itself): cancelled with a cancelled job, else failed; how
    many."""
    bus = bus if bus is not None else EventBus(db)
    rows = await db.fetch_all(_SQL["stranded_tasks"], limit, STRANDED_GRACE)
    for row in rows:
        async with db.transaction() as tx:
            await lock_tasks_of_owner(tx, row["owner_id"])
            locked = await tx.fetch_one(_SQL["lock_task"], row["id"])
            if locked is None:
                continue  # deleted meanwhile
            task = TaskRecord.from_row(locked)
            if task.status not in ("queued", "running", "waiting_budget") or task.job_id is None:
                continue
            job = await tx.fetch_val(_SQL["job_status"], task.job_id)
            if job in ("cancelled", "aborted"):
                to, error = "cancelled", {"code": "cancelled", "message": "its job was cancelled"}
            elif job in ("succeeded", "failed"):
                to, error = "failed", {"code": "interrupted", "message": "its job ended mid-task"}
            else:
                continue  # queued again meanwhile
            ended = await tx.fetch_one(_SQL["set_task_status"], task.id, to, Jsonb(error))
            assert ended is not None
            if task.status == "running":
                await stopped_running(tx, task.owner_id)
            await bus.publish_many(task_event("finished", TaskRecord.from_row(ended)), tx=tx)
    return len(rows)

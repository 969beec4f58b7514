"""Background agent tasks: one of the caller's agents works on a goal on its own, step after
step, within budgets (steps, tokens, seconds, dollars), on whichever instance's worker takes
its job. Pause, resume and cancel take effect on every instance within a second. The step log
is paged with `after` (the last step number seen). Events of each task go to the WebSocket
subject `task:<id>` (and the owner's `user:<id>`). Owners see only their own tasks, admins
every one. API keys need `tasks:read` to read and `tasks:write` to start or control.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import MAX_ID, BusDep, DbDep
from gathering.api.fields import WholeNumber
from gathering.api.security import ensure_owner, not_found, rate_limit, require_scope
from gathering.auth.principal import Principal
from gathering.db import Database
from gathering.errors import NotFoundError
from gathering.scheduler.tasks import (
    TaskRecord,
    TaskSpec,
    TaskStep,
    cancel_task,
    get_task,
    list_tasks,
    pause_task,
    resume_task,
    start_task,
    task_steps,
)

router = APIRouter(prefix="/tasks", tags=["tasks"])
TasksReader = Annotated[Principal, Depends(require_scope("tasks:read"))]
TasksWriter = Annotated[Principal, Depends(require_scope("tasks:write"))]
TaskId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The task's id")]
TaskStatus = Literal[
    "queued",
    "running",
    "paused",
    "waiting_approval",
    "waiting_budget",
    "succeeded",
    "failed",
    "cancelled",
]


class TaskOut(BaseModel):
    id: int
    owner_id: int
    agent_id: int
    goal: str
    status: TaskStatus
    max_steps: int
    max_tokens: int
    max_seconds: float
    max_cost_usd: float | None
    steps: int = Field(description="Steps taken so far")
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(description="Dollars spent on priced models")
    active_seconds: float = Field(description="Seconds of work so far (pauses excluded)")
    approval_id: int | None = Field(description="The approval it waits for")
    result: str | None = Field(description="The agent's final answer (succeeded)")
    error: dict[str, Any] | None = Field(description="Why it failed or was cancelled")
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None


class CallOut(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]
    status: str = Field(
        description="pending, running, waiting (for a person), finished, failed, "
        "interrupted (cut short; not run again) or not_run"
    )
    result: str | None = Field(description="What the model was told")
    approval_id: int | None = None


class StepOut(BaseModel):
    n: int = Field(description="1, 2, ...: no gap, no repeat")
    thought: str = Field(description="The model's text (the final answer on the last step)")
    calls: list[CallOut]
    status: Literal["acting", "done"]
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    duration_ms: int = Field(description="The model call's and the tools' time")
    created_at: datetime
    finished_at: datetime | None


def _out(task: TaskRecord) -> TaskOut:
    return TaskOut.model_validate(task, from_attributes=True)


def _step_out(step: TaskStep) -> StepOut:
    calls = []
    for call in step.tool_calls:
        state = step.results.get(call["id"]) or {}
        calls.append(
            CallOut(
                id=call["id"],
                name=call["name"],
                arguments=call.get("arguments") or {},
                status=state.get("status", "pending"),
                result=state.get("content"),
                approval_id=state.get("approval_id"),
            )
        )
    return StepOut(
        n=step.n,
        thought=step.thought,
        calls=calls,
        status=step.status,
        model=step.model,
        input_tokens=step.input_tokens,
        output_tokens=step.output_tokens,
        cost_usd=step.cost_usd,
        duration_ms=step.duration_ms,
        created_at=step.created_at,
        finished_at=step.finished_at,
    )


async def _visible(request: Request, principal: Principal, db: Database, task_id: int) -> None:
    try:
        task = await get_task(db, task_id)
    except NotFoundError:
        raise not_found("task", task_id) from None
    await ensure_owner(request, principal, task.owner_id, resource="task", resource_id=task_id)


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The task's status does not allow it (the message says which)"}
}


@router.post(
    "",
    summary="Start a background task",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"description": "The caller has no such agent"}},
)
async def task_start(body: TaskSpec, principal: TasksWriter, db: DbDep, bus: BusDep) -> TaskOut:
    """The task is queued; a worker takes it up at once. Follow it at GET /tasks/{id} and
    /tasks/{id}/steps, or on the WebSocket subject `task:<id>`."""
    return _out(await start_task(db, bus, principal.user_id, body))


@router.get("", summary="List tasks", dependencies=[rate_limit("relaxed")])
async def tasks_list(
    principal: TasksReader,
    db: DbDep,
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[TaskOut]:
    """Newest first, of one status when given. Admins see every owner's."""
    found = await list_tasks(db, principal.owner_filter, status=status_, limit=limit, offset=offset)
    return [_out(task) for task in found]


@router.get("/{task_id:id}", summary="One task", dependencies=[rate_limit("relaxed")])
async def task_get(task_id: TaskId, request: Request, principal: TasksReader, db: DbDep) -> TaskOut:
    await _visible(request, principal, db, task_id)
    return _out(await get_task(db, task_id))


@router.get(
    "/{task_id:id}/steps", summary="A task's steps, in order", dependencies=[rate_limit("relaxed")]
)
async def task_steps_list(
    task_id: TaskId,
    request: Request,
    principal: TasksReader,
    db: DbDep,
    after: Annotated[WholeNumber, Query(ge=0, le=1_000_000, description="The last n seen")] = 0,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 100,
) -> list[StepOut]:
    """Each step: the model's text, the calls it asked for with their state and result, its
    tokens, cost and duration. The next page starts after the last `n` of this one."""
    await _visible(request, principal, db, task_id)
    return [_step_out(step) for step in await task_steps(db, task_id, after=after, limit=limit)]


@router.post("/{task_id:id}/pause", summary="Pause a task", responses=_CONFLICT)
async def task_pause(
    task_id: TaskId, request: Request, principal: TasksWriter, db: DbDep, bus: BusDep
) -> TaskOut:
    """It stops where it is, on whichever instance runs it (a tool call cut short is reported
    to the agent as interrupted, and not run again)."""
    await _visible(request, principal, db, task_id)
    return _out(await pause_task(db, bus, task_id))


@router.post(
    "/{task_id:id}/resume",
    summary="Resume a paused task, or one waiting for a budget",
    responses=_CONFLICT,
)
async def task_resume(
    task_id: TaskId, request: Request, principal: TasksWriter, db: DbDep, bus: BusDep
) -> TaskOut:
    """It goes on from its last stored step."""
    await _visible(request, principal, db, task_id)
    return _out(await resume_task(db, bus, task_id))


@router.post("/{task_id:id}/cancel", summary="Cancel a task", responses=_CONFLICT)
async def task_cancel(
    task_id: TaskId, request: Request, principal: TasksWriter, db: DbDep, bus: BusDep
) -> TaskOut:
    """It ends as cancelled, stopped at once wherever it runs."""
    await _visible(request, principal, db, task_id)
    return _out(await cancel_task(db, bus, task_id))

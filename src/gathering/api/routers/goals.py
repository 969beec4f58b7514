"""Goals: what an owner wants achieved, as a tree of goals and subgoals with blocking
dependencies, success criteria and a progress rolled up from the subgoals. Starting a goal
launches real work (a background task of its agent, or a run of its pipeline) for it, or for
each of its subgoals; the scheduler ends a goal when its work ends and starts the goals that
waited for it. An agent can split a goal into subgoals (`decompose`), which a person may edit.
Owners see only their own goals, admins every one; API keys need `goals:read` and
`goals:write`. Changes are `goal.changed` events on the owner's subject `user:<id>`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import MAX_ID, BusDep, DbDep
from gathering.api.fields import Integer, WholeNumber
from gathering.api.security import ensure_owner, not_found, rate_limit, require_scope
from gathering.auth.principal import Principal
from gathering.db import Database
from gathering.db.fields import Ref
from gathering.errors import NotFoundError
from gathering.scheduler.goals import (
    GoalChange,
    GoalIn,
    GoalNode,
    GoalRecord,
    activities,
    add_dependency,
    cancel_goal,
    change_goal,
    create_goal,
    decompose_goal,
    delete_goal,
    dependencies_of,
    get_goal,
    goal_tree,
    list_goals,
    remove_dependency,
    start_goal,
)

router = APIRouter(prefix="/goals", tags=["goals"])
GoalsReader = Annotated[Principal, Depends(require_scope("goals:read"))]
GoalsWriter = Annotated[Principal, Depends(require_scope("goals:write"))]
GoalId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The goal's id")]


class GoalOut(BaseModel):
    id: int
    owner_id: int
    parent_id: int | None
    title: str
    description: str
    success_criteria: str
    status: str = Field(description="open, waiting, active, done, failed or cancelled")
    agent_id: int | None
    pipeline_id: int | None
    task_id: int | None = Field(description="The background task it launched")
    pipeline_run_id: int | None = Field(description="The pipeline run it launched")
    progress: float = Field(description="0 to 1, rolled up from its subgoals")
    position: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class GoalTreeOut(GoalOut):
    blocked_by: list[int] = Field(description="The goals it waits for")
    subgoals: list[GoalTreeOut]


class ActivityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(description="created, started, task_started, task_succeeded, ...")
    body: dict[str, Any]
    created_at: datetime


class DependencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocked_by: Integer = Field(ge=1, le=MAX_ID, description="The goal to wait for")


class StartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Ref | None = Field(
        default=None, description="Works on the goals that name no agent or pipeline"
    )


class DecomposeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Ref | None = Field(default=None, description="Who splits it (the goal's by default)")


def _out(goal: GoalRecord, progress: float | None = None) -> GoalOut:
    body = {name: getattr(goal, name) for name in GoalOut.model_fields}
    if progress is not None:
        body["progress"] = progress
    return GoalOut(**body)


def _tree_out(node: GoalNode) -> GoalTreeOut:
    return GoalTreeOut(
        **_out(node.goal, node.progress).model_dump(),
        blocked_by=node.blocked_by,
        subgoals=[_tree_out(child) for child in node.children],
    )


async def _visible(
    request: Request, principal: Principal, db: Database, goal_id: int
) -> GoalRecord:
    try:
        goal = await get_goal(db, goal_id)
    except NotFoundError:
        raise not_found("goal", goal_id) from None
    await ensure_owner(request, principal, goal.owner_id, resource="goal", resource_id=goal_id)
    return goal


async def _rolled_up(db: Database, goal: GoalRecord) -> GoalOut:
    return _out(goal, (await goal_tree(db, goal.id)).progress)


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The goal's status (or its subgoals) does not allow it"}
}


@router.post(
    "",
    summary="Create a goal",
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"description": "No such parent goal, agent or pipeline of the caller's"},
        409: {"description": "The parent goal has started or ended"},
    },
)
async def goal_create(body: GoalIn, request: Request, principal: GoalsWriter, db: DbDep) -> GoalOut:
    """A top-level goal, or a subgoal of `parent_id` (a goal the caller may see: the subgoal
    is its owner's)."""
    owner_id = principal.user_id
    if body.parent_id is not None:
        owner_id = (await _visible(request, principal, db, body.parent_id)).owner_id
    async with db.transaction() as tx:
        return _out(await create_goal(tx, owner_id, body))


@router.get("", summary="List top-level goals", dependencies=[rate_limit("relaxed")])
async def goals_list(
    principal: GoalsReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[GoalOut]:
    """Newest first, each with its rolled-up progress. Admins see every owner's."""
    goals = await list_goals(db, principal.owner_filter, limit=limit, offset=offset)
    return [await _rolled_up(db, goal) for goal in goals]


@router.get("/{goal_id:id}", summary="One goal", dependencies=[rate_limit("relaxed")])
async def goal_get(goal_id: GoalId, request: Request, principal: GoalsReader, db: DbDep) -> GoalOut:
    return await _rolled_up(db, await _visible(request, principal, db, goal_id))


@router.get(
    "/{goal_id:id}/tree",
    summary="A goal with its subgoals and dependencies",
    dependencies=[rate_limit("relaxed")],
)
async def goal_tree_get(
    goal_id: GoalId, request: Request, principal: GoalsReader, db: DbDep
) -> GoalTreeOut:
    await _visible(request, principal, db, goal_id)
    return _tree_out(await goal_tree(db, goal_id))


@router.patch("/{goal_id:id}", summary="Change a goal")
async def goal_change(
    goal_id: GoalId, body: GoalChange, request: Request, principal: GoalsWriter, db: DbDep
) -> GoalOut:
    """Only the fields given change (`null` clears the agent or the pipeline)."""
    goal = await _visible(request, principal, db, goal_id)
    async with db.transaction() as tx:
        return _out(await change_goal(tx, goal, body))


@router.delete("/{goal_id:id}", summary="Delete a goal", status_code=status.HTTP_204_NO_CONTENT)
async def goal_delete(
    goal_id: GoalId, request: Request, principal: GoalsWriter, db: DbDep
) -> Response:
    """With its subgoals (the tasks and pipeline runs they started are kept)."""
    await _visible(request, principal, db, goal_id)
    async with db.transaction() as tx:
        await delete_goal(tx, goal_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{goal_id:id}/dependencies",
    summary="The goals a goal waits for",
    dependencies=[rate_limit("relaxed")],
)
async def goal_dependencies(
    goal_id: GoalId, request: Request, principal: GoalsReader, db: DbDep
) -> list[GoalOut]:
    await _visible(request, principal, db, goal_id)
    return [_out(goal) for goal in await dependencies_of(db, goal_id)]


@router.post(
    "/{goal_id:id}/dependencies",
    summary="Make a goal wait for another",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "It would make a cycle"}},
)
async def goal_dependency_add(
    goal_id: GoalId, body: DependencyIn, request: Request, principal: GoalsWriter, db: DbDep
) -> Response:
    """The goal does not start before `blocked_by` is done."""
    goal = await _visible(request, principal, db, goal_id)
    other = await _visible(request, principal, db, body.blocked_by)
    async with db.transaction() as tx:
        await add_dependency(tx, goal, other)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/{goal_id:id}/dependencies/{blocked_by:id}",
    summary="Stop a goal waiting for another",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def goal_dependency_remove(
    goal_id: GoalId,
    blocked_by: Annotated[WholeNumber, Path(ge=1, le=MAX_ID)],
    request: Request,
    principal: GoalsWriter,
    db: DbDep,
) -> Response:
    await _visible(request, principal, db, goal_id)
    async with db.transaction() as tx:
        await remove_dependency(tx, goal_id, blocked_by)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{goal_id:id}/start",
    summary="Start a goal: launch its work",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_CONFLICT,
)
async def goal_start(
    goal_id: GoalId,
    request: Request,
    principal: GoalsWriter,
    db: DbDep,
    bus: BusDep,
    body: StartIn | None = None,
) -> GoalOut:
    """A background task of the goal's agent (or a run of its pipeline), or, for a parent,
    the work of each open subgoal; a goal blocked by another not done yet waits for it."""
    await _visible(request, principal, db, goal_id)
    agent = body.agent if body is not None else None
    return _out(await start_goal(db, bus, goal_id, agent=agent))


@router.post("/{goal_id:id}/cancel", summary="Cancel a goal", responses=_CONFLICT)
async def goal_cancel(
    goal_id: GoalId, request: Request, principal: GoalsWriter, db: DbDep, bus: BusDep
) -> GoalOut:
    """With its subgoals that have not ended; their tasks and pipeline runs are stopped."""
    await _visible(request, principal, db, goal_id)
    return _out(await cancel_goal(db, bus, goal_id))


@router.post(
    "/{goal_id:id}/decompose",
    summary="Ask an agent to split a goal into subgoals",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_CONFLICT,
        402: {"description": "budget_exceeded: a budget cannot take the agent's model call"},
        502: {"description": "The agent's answer was not a usable list of subgoals"},
    },
)
async def goal_decompose(
    goal_id: GoalId,
    request: Request,
    principal: GoalsWriter,
    db: DbDep,
    body: DecomposeIn | None = None,
) -> list[GoalOut]:
    """The subgoals it stored, with the dependencies the agent gave; edit or delete them as
    any goal."""
    await _visible(request, principal, db, goal_id)
    agent = body.agent if body is not None else None
    return [_out(goal) for goal in await decompose_goal(db, goal_id, agent=agent)]


@router.get(
    "/{goal_id:id}/activities",
    summary="What was done about a goal",
    dependencies=[rate_limit("relaxed")],
)
async def goal_activities(
    goal_id: GoalId,
    request: Request,
    principal: GoalsReader,
    db: DbDep,
    after: Annotated[WholeNumber, Query(ge=0, le=MAX_ID, description="The last id seen")] = 0,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 100,
) -> list[ActivityOut]:
    """Oldest first; the next page starts after the last `id` of this one."""
    await _visible(request, principal, db, goal_id)
    found = await activities(db, goal_id, after=after, limit=limit)
    return [ActivityOut.model_validate(row) for row in found]

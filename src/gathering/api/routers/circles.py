"""Circles: teams of agents (and people) that take tasks. A task is offered to the member who
fits best (competencies, workload, past quality), claimed, worked, reviewed by another member
and completed, each move kept with who and why; an illegal move is a 409 that lists the
allowed ones. Agent members act through jobs on any instance; people act here.

The owner (and admins) manage a circle and may act as any of its members (`member_id`); a
person who is a member sees the circle and acts as themselves. A person who is not a member
(the owner, an admin) may approve or reject any attempt (human in the loop). Events go to the
WebSocket `/ws/circles/{name}` (subject `circle:<name>`). API keys need `circles:read` and
`circles:write`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import MAX_ID, BusDep, DbDep
from gathering.api.fields import Integer, WholeNumber
from gathering.api.security import ensure_owner, not_found, rate_limit, require_scope
from gathering.auth.principal import Principal
from gathering.circles import (
    STATUSES,
    Actor,
    CircleChange,
    CircleIn,
    CircleRecord,
    CircleSettings,
    CircleTask,
    ConversationIn,
    ConversationRecord,
    Conversations,
    MemberChange,
    MemberIn,
    ReviewIn,
    Submission,
    TaskFlow,
    TaskIn,
    add_member,
    change_circle,
    change_member,
    create_circle,
    create_conversation,
    delete_circle,
    get_circle,
    get_circle_task,
    get_conversation,
    get_member,
    list_circle_tasks,
    list_circles,
    list_conversations,
    list_members,
    member_of_user,
    set_circle_status,
    task_decisions,
    task_dependencies,
    task_history,
    task_reviews,
    transcript,
)
from gathering.circles.definition import NO_NUL, SAID, Competencies, Role
from gathering.circles.store import SQL
from gathering.db import Database
from gathering.db.fields import Ref
from gathering.errors import NotFoundError, PermissionDeniedError

router = APIRouter(prefix="/circles", tags=["circles"])
CirclesReader = Annotated[Principal, Depends(require_scope("circles:read"))]
CirclesWriter = Annotated[Principal, Depends(require_scope("circles:write"))]
CircleId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The circle's id")]
TaskId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The task's id")]
TaskStatus = Literal[
    "pending",
    "blocked",
    "offered",
    "in_progress",
    "in_review",
    "changes_requested",
    "completed",
    "failed",
    "cancelled",
]
MemberId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The member's id")]


class CircleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner_id: int
    name: str
    description: str
    status: str = Field(description="created, active or archived")
    settings: CircleSettings
    created_at: datetime
    updated_at: datetime


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    circle_id: int
    agent_id: int | None
    user_id: int | None
    name: str = Field(description="The agent's name or the person's email ('(gone)': deleted)")
    role: str = Field(description="lead, member or reviewer")
    competencies: dict[str, int]
    active: bool
    gone: bool = Field(description="Their agent or account was deleted")
    load: int = Field(description="Tasks offered to them or in their hands")
    joined_at: datetime


class MetricsOut(BaseModel):
    member_id: int
    name: str
    role: str
    completed: int
    failed: int
    approval_rate: float | None = Field(description="Approved verdicts over all, on their work")
    mean_review_rounds: float | None = Field(description="Attempts per completed task")
    reviews_given: int
    tokens: int
    work_seconds: float
    load: int


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    circle_id: int
    title: str
    description: str
    task_type: str
    requirements: dict[str, int]
    priority: int
    status: str = Field(description=", ".join(STATUSES))
    offered_to: int | None = Field(description="The member it is offered to")
    offer_deadline: datetime | None
    assignee_id: int | None = Field(description="The member working it (its author)")
    iteration: int = Field(description="The attempt, from 1")
    review_type: str
    result: dict[str, Any] | None = Field(description="What was handed in: text, summary, files")
    feedback: str | None = Field(description="The changes the last review asked for")
    error: str | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    from_status: str | None
    to_status: str
    member_id: int | None
    user_id: int | None
    reason: str
    at: datetime


class DecisionOut(BaseModel):
    id: int
    iteration: int
    kind: str = Field(description="offer, refused, expired, no_candidate, review or escalation")
    member_id: int | None
    reason: str
    scores: list[dict[str, Any]] = Field(description="The best candidates, with their scores")
    at: datetime


class ReviewOut(BaseModel):
    id: int
    iteration: int
    reviewer_id: int | None = Field(description="The reviewing member (null: a person)")
    user_id: int | None
    verdict: str
    feedback: str
    at: datetime


class TaskDetailOut(TaskOut):
    blocked_by: list[int]
    history: list[TransitionOut]
    decisions: list[DecisionOut]
    reviews: list[ReviewOut]


class ConflictOut(BaseModel):
    id: int
    kind: str = Field(description="file, cycle or disagreement")
    task_id: int | None
    other_task_id: int | None
    detail: dict[str, Any]
    status: str = Field(description="open or resolved")
    resolution: str | None
    created_at: datetime
    resolved_at: datetime | None


class AsMember(BaseModel):
    """Who takes the step: a member of the circle (a person member defaults to themselves;
    the owner names the member, e.g. an agent, they act for)."""

    model_config = ConfigDict(extra="forbid")

    member_id: Integer | None = Field(default=None, ge=1, le=MAX_ID)


class RefuseIn(AsMember):
    reason: str = Field(default="", max_length=2_000, pattern=NO_NUL)


class SubmitIn(Submission, AsMember):
    pass


class DecisionBody(AsMember):
    verdict: Literal["approved", "rejected"]
    feedback: str = Field(default="", max_length=20_000, pattern=NO_NUL)


class ChangesBody(AsMember):
    verdict: Literal["changes_requested"]
    feedback: str = Field(
        min_length=1, max_length=20_000, pattern=SAID, description="The changes to make"
    )


ReviewBody = Annotated[DecisionBody | ChangesBody, Field(discriminator="verdict")]


class AgentMemberIn(BaseModel):
    """One of the circle owner's agents joins."""

    model_config = ConfigDict(extra="forbid")

    agent: Ref = Field(description="The agent's id or name")
    role: Role = "member"
    competencies: Competencies = Field(default_factory=dict)


class PersonMemberIn(BaseModel):
    """A person joins (multi-user mode)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Integer = Field(ge=1, le=MAX_ID, description="Their account")
    role: Role = "member"
    competencies: Competencies = Field(default_factory=dict)


class DecideIn(AsMember):
    feedback: str = Field(default="", max_length=20_000, pattern=NO_NUL)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2_000, pattern=NO_NUL)


class DependencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocked_by: Integer = Field(ge=1, le=MAX_ID, description="The task to wait for")


class _Access:
    """What the caller may do in a circle: manage it (owner, admin), or act as one member."""

    def __init__(self, circle: CircleRecord, principal: Principal, member_id: int | None):
        self.circle = circle
        self.principal = principal
        self.own_member = member_id
        self.manager = principal.owns(circle.owner_id)

    async def actor(self, db: Database, member_id: int | None, *, person: bool = False) -> Actor:
        """Who takes a step: member `member_id` of this circle (the caller's own, or any for
        a manager), else the caller's own member; with `person`, a manager without
        `member_id` acts as a person (the human in the loop). The caller's account is
        always kept with it."""
        user_id = self.principal.user_id
        if member_id is not None:
            if member_id != self.own_member and not self.manager:
                raise PermissionDeniedError(f"you act as your own member {self.own_member} only")
            try:
                await get_member(db, self.circle.id, member_id)
            except NotFoundError:
                raise not_found("member", member_id) from None
            return Actor(member_id=member_id, user_id=user_id)
        if person and self.manager:
            return Actor(user_id=user_id)
        if self.own_member is not None:
            return Actor(member_id=self.own_member, user_id=user_id)
        if not self.manager:  # pragma: no cover - _access admits only managers and members
            raise PermissionDeniedError("you are not a member of this circle")
        if not person:
            raise PermissionDeniedError(
                "you are not a member of this circle: act as one of them with member_id",
                hint="list them with GET /circles/{id}/members",
            )
        return Actor(user_id=user_id)

    def manage(self) -> None:
        if not self.manager:
            raise PermissionDeniedError(f"only the owner of circle {self.circle.name!r} changes it")


async def _access(request: Request, principal: Principal, db: Database, circle_id: int) -> _Access:
    try:
        circle = await get_circle(db, circle_id)
    except NotFoundError:
        raise not_found("circle", circle_id) from None
    own = await member_of_user(db, circle.id, principal.user_id)
    if own is None:
        await ensure_owner(
            request, principal, circle.owner_id, resource="circle", resource_id=circle_id
        )
    return _Access(circle, principal, own)


async def _task(db: Database, access: _Access, task_id: int) -> CircleTask:
    try:
        task = await get_circle_task(db, task_id)
    except NotFoundError:
        raise not_found("task", task_id) from None
    if task.circle_id != access.circle.id:
        raise not_found("task", task_id)
    return task


@router.post(
    "",
    summary="Create a circle",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "A circle of that name exists"}},
)
async def circle_create(body: CircleIn, principal: CirclesWriter, db: DbDep) -> CircleOut:
    """A new circle of the caller's, `created`: add members, then activate it to route
    tasks. Its name is unique on the server (409 otherwise)."""
    async with db.transaction() as tx:
        return CircleOut.model_validate(await create_circle(tx, principal.user_id, body))


@router.get("", summary="List circles", dependencies=[rate_limit("relaxed")])
async def circles_list(
    principal: CirclesReader,
    db: DbDep,
    name: Annotated[str | None, Query(max_length=63, description="Only the one named")] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[CircleOut]:
    """The caller's circles and those they are a member of (admins: every one), oldest first."""
    found = await list_circles(db, principal.owner_filter, limit=limit, offset=offset, name=name)
    return [CircleOut.model_validate(c) for c in found]


@router.get("/{circle_id:id}", summary="One circle", dependencies=[rate_limit("relaxed")])
async def circle_get(
    circle_id: CircleId, request: Request, principal: CirclesReader, db: DbDep
) -> CircleOut:
    return CircleOut.model_validate((await _access(request, principal, db, circle_id)).circle)


@router.patch("/{circle_id:id}", summary="Change a circle's description or settings")
async def circle_change(
    circle_id: CircleId, body: CircleChange, request: Request, principal: CirclesWriter, db: DbDep
) -> CircleOut:
    (await _access(request, principal, db, circle_id)).manage()
    async with db.transaction() as tx:
        return CircleOut.model_validate(await change_circle(tx, circle_id, body))


_LIFECYCLE: dict[int | str, dict[str, Any]] = {
    409: {"description": "The circle's status does not allow it (allowed ones in details)"}
}


@router.post(
    "/{circle_id:id}/activate",
    summary="Activate a circle: its pending tasks are offered",
    responses=_LIFECYCLE,
)
async def circle_activate(
    circle_id: CircleId, request: Request, principal: CirclesWriter, db: DbDep, bus: BusDep
) -> CircleOut:
    (await _access(request, principal, db, circle_id)).manage()
    async with db.transaction() as tx:
        circle = await set_circle_status(tx, circle_id, "active")
    await TaskFlow(db, bus).route_pending(circle_id)
    return CircleOut.model_validate(circle)


@router.post(
    "/{circle_id:id}/archive",
    summary="Archive a circle: its open tasks and conversations are cancelled",
    responses=_LIFECYCLE,
)
async def circle_archive(
    circle_id: CircleId, request: Request, principal: CirclesWriter, db: DbDep, bus: BusDep
) -> CircleOut:
    (await _access(request, principal, db, circle_id)).manage()
    async with db.transaction() as tx:
        circle = await set_circle_status(tx, circle_id, "archived")
    await TaskFlow(db, bus).cancel_open(circle_id, "the circle was archived")
    await Conversations(db, bus).cancel_open(circle_id)
    return CircleOut.model_validate(circle)


@router.delete("/{circle_id:id}", summary="Delete a circle", status_code=status.HTTP_204_NO_CONTENT)
async def circle_delete(
    circle_id: CircleId, request: Request, principal: CirclesWriter, db: DbDep
) -> Response:
    """With its members, tasks and their history."""
    (await _access(request, principal, db, circle_id)).manage()
    await delete_circle(db, circle_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{circle_id:id}/members", summary="A circle's members", dependencies=[rate_limit("relaxed")]
)
async def members_list(
    circle_id: CircleId, request: Request, principal: CirclesReader, db: DbDep
) -> list[MemberOut]:
    await _access(request, principal, db, circle_id)
    return [MemberOut.model_validate(m) for m in await list_members(db, circle_id)]


@router.post(
    "/{circle_id:id}/members",
    summary="Add a member: one of the owner's agents, or a person",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Already a member"}},
)
async def member_add(
    circle_id: CircleId,
    body: AgentMemberIn | PersonMemberIn,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> MemberOut:
    access = await _access(request, principal, db, circle_id)
    access.manage()
    async with db.transaction() as tx:
        member = await add_member(tx, access.circle, MemberIn.model_validate(body.model_dump()))
    await TaskFlow(db, bus).route_pending(circle_id)
    return MemberOut.model_validate(member)


@router.patch("/{circle_id:id}/members/{member_id:id}", summary="Change a member")
async def member_change(
    circle_id: CircleId,
    member_id: MemberId,
    body: MemberChange,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> MemberOut:
    """Role, competencies, or `active: false`: no more offers (the ones they had go to the
    next member), no more access for a person; the history stays."""
    (await _access(request, principal, db, circle_id)).manage()
    async with db.transaction() as tx:
        member = await change_member(tx, circle_id, member_id, body)
    flow = TaskFlow(db, bus)
    if not member.active:
        await flow.member_left(circle_id, member.id)
    await flow.route_pending(circle_id)
    return MemberOut.model_validate(await get_member(db, circle_id, member.id))


@router.get(
    "/{circle_id:id}/metrics",
    summary="Each member's outcomes",
    dependencies=[rate_limit("relaxed")],
)
async def metrics(
    circle_id: CircleId, request: Request, principal: CirclesReader, db: DbDep
) -> list[MetricsOut]:
    """Updated with every outcome: tasks completed and failed, approval rate, attempts per
    completed task, reviews given, tokens and seconds of agents' work, current load."""
    await _access(request, principal, db, circle_id)
    return [
        MetricsOut(
            member_id=m.id,
            name=m.name,
            role=m.role,
            completed=m.completed,
            failed=m.failed,
            approval_rate=m.approval_rate,
            mean_review_rounds=m.mean_review_rounds,
            reviews_given=m.reviews_given,
            tokens=m.tokens,
            work_seconds=m.work_seconds,
            load=m.load,
        )
        for m in await list_members(db, circle_id)
    ]


@router.get(
    "/{circle_id:id}/conflicts",
    summary="Conflicts: file clashes, refused dependency cycles, reviewers who disagree",
    dependencies=[rate_limit("relaxed")],
)
async def conflicts(
    circle_id: CircleId,
    request: Request,
    principal: CirclesReader,
    db: DbDep,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
) -> list[ConflictOut]:
    """Newest first."""
    await _access(request, principal, db, circle_id)
    rows = await db.fetch_all(SQL["conflicts"], circle_id, open_only, limit)
    return [ConflictOut.model_validate(row) for row in rows]


@router.get(
    "/{circle_id:id}/tasks", summary="A circle's tasks", dependencies=[rate_limit("relaxed")]
)
async def tasks_list(
    circle_id: CircleId,
    request: Request,
    principal: CirclesReader,
    db: DbDep,
    task_status: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[TaskOut]:
    """Newest first; `status` keeps one status."""
    await _access(request, principal, db, circle_id)
    found = await list_circle_tasks(db, circle_id, status=task_status, limit=limit, offset=offset)
    return [TaskOut.model_validate(task) for task in found]


@router.post(
    "/{circle_id:id}/tasks",
    summary="Create a task (offered at once when the circle is active)",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {
            "description": "The circle is archived, takes no such review type, or a "
            "dependency never completes"
        }
    },
)
async def task_create(
    circle_id: CircleId,
    body: TaskIn,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> TaskOut:
    (await _access(request, principal, db, circle_id)).manage()
    return TaskOut.model_validate(
        await TaskFlow(db, bus).create(circle_id, body, principal.user_id)
    )


@router.get(
    "/{circle_id:id}/tasks/{task_id:id}",
    summary="A task with its history, routing decisions and reviews",
    dependencies=[rate_limit("relaxed")],
)
async def task_get(
    circle_id: CircleId, task_id: TaskId, request: Request, principal: CirclesReader, db: DbDep
) -> TaskDetailOut:
    access = await _access(request, principal, db, circle_id)
    task = await _task(db, access, task_id)
    return TaskDetailOut(
        **TaskOut.model_validate(task).model_dump(),
        blocked_by=await task_dependencies(db, task.id),
        history=[TransitionOut.model_validate(row) for row in await task_history(db, task.id)],
        decisions=[DecisionOut.model_validate(row) for row in await task_decisions(db, task.id)],
        reviews=[ReviewOut.model_validate(row) for row in await task_reviews(db, task.id)],
    )


_MOVE: dict[int | str, dict[str, Any]] = {
    409: {"description": "The task's status does not allow it (allowed ones in details)"}
}


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/offer",
    summary="Offer a pending task to the best member now",
    responses=_MOVE,
)
async def task_offer(
    circle_id: CircleId,
    task_id: TaskId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> TaskOut:
    access = await _access(request, principal, db, circle_id)
    access.manage()
    task = await _task(db, access, task_id)
    return TaskOut.model_validate(
        await TaskFlow(db, bus).offer(task.id, Actor(user_id=principal.user_id))
    )


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/claim",
    summary="Take a task offered to you (a lead takes any)",
    responses=_MOVE,
)
async def task_claim(
    circle_id: CircleId,
    task_id: TaskId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
    body: AsMember | None = None,
) -> TaskOut:
    """Also takes back a task whose review asked for changes (its author)."""
    access = await _access(request, principal, db, circle_id)
    task = await _task(db, access, task_id)
    actor = await access.actor(db, body.member_id if body else None)
    return TaskOut.model_validate(await TaskFlow(db, bus).claim(task.id, actor))


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/refuse",
    summary="Decline an offer: it goes to the next best member",
    responses=_MOVE,
)
async def task_refuse(
    circle_id: CircleId,
    task_id: TaskId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
    body: RefuseIn | None = None,
) -> TaskOut:
    access = await _access(request, principal, db, circle_id)
    task = await _task(db, access, task_id)
    actor = await access.actor(db, body.member_id if body else None)
    reason = body.reason if body else ""
    return TaskOut.model_validate(await TaskFlow(db, bus).refuse(task.id, actor, reason))


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/submit",
    summary="Hand in the work (the assignee only)",
    responses={
        **_MOVE,
        409: {"description": "The status does not allow it, or a file is another task's"},
    },
)
async def task_submit(
    circle_id: CircleId,
    task_id: TaskId,
    body: SubmitIn,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> TaskOut:
    """It goes to review (or completes, when the circle does not review its type). The
    `files` it names are locked for the task until it ends."""
    access = await _access(request, principal, db, circle_id)
    task = await _task(db, access, task_id)
    work = Submission(text=body.text, summary=body.summary, files=body.files)
    actor = await access.actor(db, body.member_id)
    return TaskOut.model_validate(await TaskFlow(db, bus).submit(task.id, actor, work))


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/review",
    summary="Give a verdict on the current attempt (never on your own work)",
    responses=_MOVE,
)
async def task_review(
    circle_id: CircleId,
    task_id: TaskId,
    body: ReviewBody,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> TaskOut:
    """A member asked to review, or a lead (`member_id`: the caller's own member by
    default); the owner who is no member decides as a person. `changes_requested` sends it
    back to its author with the feedback."""
    access = await _access(request, principal, db, circle_id)
    task = await _task(db, access, task_id)
    actor = await access.actor(db, body.member_id, person=access.own_member is None)
    verdict = ReviewIn(verdict=body.verdict, feedback=body.feedback)
    return TaskOut.model_validate(await TaskFlow(db, bus).review(task.id, actor, verdict))


async def _decide(
    circle_id: int,
    task_id: int,
    verdict: str,
    body: DecideIn | None,
    request: Request,
    principal: Principal,
    db: Database,
    bus: Any,
) -> TaskOut:
    access = await _access(request, principal, db, circle_id)
    task = await _task(db, access, task_id)
    actor = await access.actor(db, body.member_id if body else None, person=True)
    review = ReviewIn.model_validate(
        {"verdict": verdict, "feedback": body.feedback if body else ""}
    )
    return TaskOut.model_validate(await TaskFlow(db, bus).review(task.id, actor, review))


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/approve",
    summary="Approve the current attempt (human in the loop)",
    responses=_MOVE,
)
async def task_approve(
    circle_id: CircleId,
    task_id: TaskId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
    body: DecideIn | None = None,
) -> TaskOut:
    """As a person (the owner, an admin), unless `member_id` names a member: the task
    completes."""
    return await _decide(circle_id, task_id, "approved", body, request, principal, db, bus)


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/reject",
    summary="Reject the current attempt (human in the loop): the task fails",
    responses=_MOVE,
)
async def task_reject(
    circle_id: CircleId,
    task_id: TaskId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
    body: DecideIn | None = None,
) -> TaskOut:
    return await _decide(circle_id, task_id, "rejected", body, request, principal, db, bus)


@router.post("/{circle_id:id}/tasks/{task_id:id}/cancel", summary="Cancel a task", responses=_MOVE)
async def task_cancel(
    circle_id: CircleId,
    task_id: TaskId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
    body: CancelIn | None = None,
) -> TaskOut:
    """Any task that has not ended; the tasks waiting for it fail."""
    access = await _access(request, principal, db, circle_id)
    access.manage()
    task = await _task(db, access, task_id)
    actor = Actor(user_id=principal.user_id)
    return TaskOut.model_validate(
        await TaskFlow(db, bus).cancel(task.id, actor, body.reason if body else "")
    )


@router.post(
    "/{circle_id:id}/tasks/{task_id:id}/dependencies",
    summary="Make a task wait for another",
    responses={409: {"description": "It would close a cycle (kept as a conflict)"}},
)
async def task_dependency_add(
    circle_id: CircleId,
    task_id: TaskId,
    body: DependencyIn,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> TaskOut:
    access = await _access(request, principal, db, circle_id)
    access.manage()
    task = await _task(db, access, task_id)
    other = await _task(db, access, body.blocked_by)
    actor = Actor(user_id=principal.user_id)
    return TaskOut.model_validate(await TaskFlow(db, bus).add_dependency(task.id, other.id, actor))


# --- conversations ------------------------------------------------------------------------------

ConversationId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The conversation's id")]


class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    circle_id: int
    topic: str
    strategy: str = Field(description="round_robin, mention, facilitator or free")
    participants: list[int] = Field(description="The members who speak")
    facilitator_id: int | None
    max_turns: int
    token_budget: int
    stop_phrase: str | None
    consensus: bool
    seed: int
    status: str = Field(description="created, running, paused, finished, cancelled or failed")
    turns: int = Field(description="Agents' turns taken")
    tokens: int
    finish_reason: str | None = Field(
        description="max_turns, token_budget, stop_phrase, consensus, cancelled, error, ..."
    )
    summary: str | None
    error: str | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class MessageOut(BaseModel):
    n: int = Field(description="Its place in the transcript, from 1")
    turn: int | None = Field(description="The agent turn it is (null: a person's message)")
    member_id: int | None
    user_id: int | None
    speaker: str
    content: str
    tokens: int
    at: datetime


class InjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000, pattern=SAID)


async def _conversation(db: Database, access: _Access, conversation_id: int) -> ConversationRecord:
    try:
        found = await get_conversation(db, conversation_id)
    except NotFoundError:
        raise not_found("conversation", conversation_id) from None
    if found.circle_id != access.circle.id:
        raise not_found("conversation", conversation_id)
    return found


@router.post(
    "/{circle_id:id}/conversations",
    summary="Create a conversation (start it to run it)",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "The circle is archived, or has no such agent member to speak"}
    },
)
async def conversation_create(
    circle_id: CircleId,
    body: ConversationIn,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
) -> ConversationOut:
    """Its speakers are agent members (default: every active one); a person joins in with
    `inject`. The strategy picks each speaker: round_robin, mention (@name), facilitator (a
    lead agent picks) or free (seeded)."""
    access = await _access(request, principal, db, circle_id)
    access.manage()
    async with db.transaction() as tx:
        return ConversationOut.model_validate(
            await create_conversation(tx, access.circle, body, principal.user_id)
        )


@router.get(
    "/{circle_id:id}/conversations",
    summary="A circle's conversations, newest first",
    dependencies=[rate_limit("relaxed")],
)
async def conversations_list(
    circle_id: CircleId,
    request: Request,
    principal: CirclesReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[ConversationOut]:
    await _access(request, principal, db, circle_id)
    found = await list_conversations(db, circle_id, limit=limit, offset=offset)
    return [ConversationOut.model_validate(c) for c in found]


@router.get(
    "/{circle_id:id}/conversations/{conversation_id:id}",
    summary="One conversation",
    dependencies=[rate_limit("relaxed")],
)
async def conversation_get(
    circle_id: CircleId,
    conversation_id: ConversationId,
    request: Request,
    principal: CirclesReader,
    db: DbDep,
) -> ConversationOut:
    access = await _access(request, principal, db, circle_id)
    return ConversationOut.model_validate(await _conversation(db, access, conversation_id))


@router.get(
    "/{circle_id:id}/conversations/{conversation_id:id}/transcript",
    summary="What was said, oldest first",
    dependencies=[rate_limit("relaxed")],
)
async def conversation_transcript(
    circle_id: CircleId,
    conversation_id: ConversationId,
    request: Request,
    principal: CirclesReader,
    db: DbDep,
    after: Annotated[WholeNumber, Query(ge=0, le=2**31 - 1, description="The last n seen")] = 0,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 500,
) -> list[MessageOut]:
    """The next page starts after the last `n` of this one."""
    access = await _access(request, principal, db, circle_id)
    found = await _conversation(db, access, conversation_id)
    rows = await transcript(db, found.id, after=after, limit=limit)
    return [MessageOut.model_validate(row) for row in rows]


_CONTROL: dict[int | str, dict[str, Any]] = {
    409: {"description": "The conversation's status does not allow it"}
}


async def _control(
    circle_id: int,
    conversation_id: int,
    action: str,
    request: Request,
    principal: Principal,
    db: Database,
    bus: Any,
) -> ConversationOut:
    access = await _access(request, principal, db, circle_id)
    access.manage()
    found = await _conversation(db, access, conversation_id)
    conversations = Conversations(db, bus)
    act = {
        "start": conversations.start,
        "pause": conversations.pause,
        "resume": conversations.resume,
        "cancel": conversations.cancel,
    }[action]
    return ConversationOut.model_validate(await act(found.id))


@router.post(
    "/{circle_id:id}/conversations/{conversation_id:id}/start",
    summary="Start a conversation: its turns run as a job",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_CONTROL,
)
async def conversation_start(
    circle_id: CircleId,
    conversation_id: ConversationId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> ConversationOut:
    """Each turn streams on `/ws/circles/{name}`: conversation.turn_started, .delta,
    .turn_finished, then conversation.finished."""
    return await _control(circle_id, conversation_id, "start", request, principal, db, bus)


@router.post(
    "/{circle_id:id}/conversations/{conversation_id:id}/pause",
    summary="Pause a conversation after the turn being said",
    responses=_CONTROL,
)
async def conversation_pause(
    circle_id: CircleId,
    conversation_id: ConversationId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> ConversationOut:
    return await _control(circle_id, conversation_id, "pause", request, principal, db, bus)


@router.post(
    "/{circle_id:id}/conversations/{conversation_id:id}/resume",
    summary="Resume a paused conversation",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_CONTROL,
)
async def conversation_resume(
    circle_id: CircleId,
    conversation_id: ConversationId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> ConversationOut:
    return await _control(circle_id, conversation_id, "resume", request, principal, db, bus)


@router.post(
    "/{circle_id:id}/conversations/{conversation_id:id}/cancel",
    summary="Cancel a conversation (the turn being said ends first)",
    responses=_CONTROL,
)
async def conversation_cancel(
    circle_id: CircleId,
    conversation_id: ConversationId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> ConversationOut:
    return await _control(circle_id, conversation_id, "cancel", request, principal, db, bus)


@router.post(
    "/{circle_id:id}/conversations/{conversation_id:id}/inject",
    summary="Say something in a conversation, as a person",
    status_code=status.HTTP_201_CREATED,
    responses=_CONTROL,
)
async def conversation_inject(
    circle_id: CircleId,
    conversation_id: ConversationId,
    body: InjectIn,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> MessageOut:
    """The owner or a person who is a member; the next speakers read it (with the mention
    strategy, an @name in it picks the next speaker)."""
    access = await _access(request, principal, db, circle_id)
    found = await _conversation(db, access, conversation_id)
    speaker = "owner"
    if access.own_member is not None:
        speaker = (await get_member(db, circle_id, access.own_member)).name
    message = await Conversations(db, bus).inject(found.id, principal.user_id, speaker, body.text)
    return MessageOut.model_validate(message)


@router.post(
    "/{circle_id:id}/conversations/{conversation_id:id}/summary",
    summary="Ask for a summary of the transcript so far (a job)",
    status_code=status.HTTP_202_ACCEPTED,
)
async def conversation_summary(
    circle_id: CircleId,
    conversation_id: ConversationId,
    request: Request,
    principal: CirclesWriter,
    db: DbDep,
    bus: BusDep,
) -> ConversationOut:
    """The summary lands in the conversation's `summary`, with a conversation.summarized
    event."""
    access = await _access(request, principal, db, circle_id)
    found = await _conversation(db, access, conversation_id)
    await Conversations(db, bus).request_summary(found.id)
    return ConversationOut.model_validate(found)

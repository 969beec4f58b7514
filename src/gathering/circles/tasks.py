"""The life of a circle's task, each step one transaction that locks the circle, then the task
(`_locked`: one step of a circle at a time), checks the move (`states.check_move`), keeps it
in the history with who and why, publishes its events on the circle's subject and queues the
jobs it calls for (an agent's work, an agent's review).

pending -> offered -> in_progress -> in_review -> completed; in_review -> changes_requested ->
in_progress (the next attempt, with the feedback); blocked while a dependency is not done;
failed; cancelled. Steps taken by people come from the API; agents' steps come from the jobs
in `circles.work`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from gathering.circles.definition import ReviewIn, Submission, TaskIn
from gathering.circles.routing import Choice, lead_fallback, rank_reviewers, rank_workers
from gathering.circles.states import ENDED, check_move
from gathering.circles.store import (
    SQL,
    CircleRecord,
    MemberRecord,
    circle_event,
    list_members,
    lock_circle,
)
from gathering.db.database import Database, Queries
from gathering.errors import (
    BudgetExceededError,
    ConflictError,
    FileLockedError,
    GatheringError,
    NotFoundError,
    PermissionDeniedError,
)
from gathering.events import Event, EventBus
from gathering.jobs import enqueue, queued_with

QUEUE = "circles"
WORK = "circles:work"
REVIEW = "circles:review"


@dataclass(frozen=True)
class CircleTask:
    """A stored task of a circle."""

    id: int
    circle_id: int
    title: str
    description: str
    task_type: str
    requirements: dict[str, int]
    priority: int
    status: str
    offered_to: int | None
    offer_deadline: datetime | None
    assignee_id: int | None
    iteration: int
    review_type: str
    result: dict[str, Any] | None
    feedback: str | None
    error: str | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CircleTask:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def as_event(self) -> dict[str, Any]:
        return {
            "task_id": self.id,
            "title": self.title,
            "status": self.status,
            "iteration": self.iteration,
            "assignee_id": self.assignee_id,
            "offered_to": self.offered_to,
        }


@dataclass(frozen=True)
class Actor:
    """Who takes a step: a member of the circle, a person (the owner, an admin, a human
    member), or the system (a sweep, a job) when both are None."""

    member_id: int | None = None
    user_id: int | None = None


SYSTEM = Actor()
_KEEP: Any = object()  # `_move`: this column stays as it is


@dataclass
class _Step:
    """What one transaction did: the events to publish with it."""

    tx: Queries
    circle: CircleRecord
    events: list[Event] = field(default_factory=list)
    # A refusal whose record (a conflict) must still be kept: raised after the commit.
    refusal: GatheringError | None = None

    def event(self, kind: str, body: dict[str, Any]) -> None:
        self.events.append(circle_event(self.circle, kind, body))


async def get_circle_task(db: Queries, task_id: int) -> CircleTask:
    row = await db.fetch_one(SQL["task_by_id"], task_id)
    if row is None:
        raise NotFoundError(f"no circle task {task_id}")
    return CircleTask.from_row(row)


async def list_circle_tasks(
    db: Queries, circle_id: int, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[CircleTask]:
    """Tasks of a circle, newest first, with `status` only when given."""
    rows = await db.fetch_all(SQL["tasks"], circle_id, status, limit, offset)
    return [CircleTask.from_row(row) for row in rows]


async def task_history(db: Queries, task_id: int) -> list[dict[str, Any]]:
    """Every move of a task, oldest first: from, to, member, person, reason, when."""
    return list(await db.fetch_all(SQL["transitions"], task_id))


async def task_decisions(db: Queries, task_id: int) -> list[dict[str, Any]]:
    """Every routing decision about a task with its reason and scores, oldest first."""
    return list(await db.fetch_all(SQL["decisions"], task_id))


async def task_reviews(db: Queries, task_id: int) -> list[dict[str, Any]]:
    return list(await db.fetch_all(SQL["reviews"], task_id))


async def task_dependencies(db: Queries, task_id: int) -> list[int]:
    return [row["id"] for row in await db.fetch_all(SQL["dependencies"], task_id)]


class TaskFlow:
    """The steps of circles' tasks on `db`, with their events on `bus`."""

    def __init__(self, db: Database, bus: EventBus | None) -> None:
        self.db = db
        self.bus = bus

    # --- the steps ------------------------------------------------------------------------

    async def create(self, circle_id: int, spec: TaskIn, user_id: int | None) -> CircleTask:
        """A new task: pending (offered at once when the circle is active), or blocked while
        a task it waits for is not completed."""
        async with self.db.transaction() as tx:
            circle = await lock_circle(tx, circle_id)
            if circle.status == "archived":
                raise ConflictError(f"circle {circle.name!r} is archived: it takes no tasks")
            review_type = spec.review_type or circle.settings.review_types[0]
            if review_type not in circle.settings.review_types:
                raise ConflictError(
                    f"review type {review_type!r} is not one of the circle's",
                    hint=f"use one of: {', '.join(circle.settings.review_types)}",
                )
            waits_for = []
            for other_id in sorted(set(spec.blocked_by)):
                # Read under the circle's lock: a blocker's completion (a step of this circle)
                # is either committed, or comes after this task and sees it.
                other = await _task_of(tx, circle.id, other_id)
                if other.status in ("failed", "cancelled"):
                    raise ConflictError(f"task {other.id} is {other.status}: it never completes")
                waits_for.append(other)
            row = await tx.fetch_one(
                SQL["insert_task"],
                circle.id,
                spec.title,
                spec.description,
                spec.task_type,
                Jsonb(spec.requirements),
                spec.priority,
                review_type,
                user_id,
                "pending",
            )
            assert row is not None
            task = CircleTask.from_row(row)
            step = _Step(tx, circle)
            await tx.execute(
                SQL["insert_transition"], task.id, None, "pending", None, user_id, "created"
            )
            step.event("task.created", task.as_event())
            for other in waits_for:
                await tx.execute(SQL["insert_dependency"], task.id, other.id)
            open_deps = [other.id for other in waits_for if other.status != "completed"]
            if open_deps:
                task = await _move(step, task, "blocked", reason=f"waits for tasks {open_deps}")
            elif circle.status == "active":
                task = await _route(step, task)
            await self._publish(step)
        return task

    async def offer(self, task_id: int, actor: Actor) -> CircleTask:
        """Route a pending task now (the circle must be active)."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            if step.circle.status != "active":
                raise ConflictError(
                    f"circle {step.circle.name!r} is {step.circle.status}: activate it first"
                )
            check_move(task.id, task.status, "offered")
            task = await _route(step, task)
            await self._publish(step)
        return task

    async def refuse(self, task_id: int, actor: Actor, reason: str = "") -> CircleTask:
        """The offered member declines; the task goes to the next best member."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            if task.status != "offered" or task.offered_to != actor.member_id:
                raise ConflictError(
                    f"task {task.id} is not offered to member {actor.member_id}",
                    details={"status": task.status, "offered_to": task.offered_to},
                )
            await _decide(step, task, "refused", actor.member_id, reason or "declined")
            task = await _route(step, task)
            await self._publish(step)
        return task

    async def expire_offers(self, limit: int = 50) -> int:
        """Offers past their deadline go to the next best member; how many moved."""
        moved = 0
        for row in await self.db.fetch_all(SQL["expired_offers"], limit):
            async with self.db.transaction() as tx:
                task, step = await _locked(tx, row["id"])
                deadline = task.offer_deadline
                if task.status != "offered" or deadline is None or deadline > datetime.now(UTC):
                    continue  # answered meanwhile
                reason = f"no answer by {deadline}"
                await _decide(step, task, "expired", task.offered_to, reason)
                await _route(step, task)
                await self._publish(step)
                moved += 1
        return moved

    async def claim(self, task_id: int, actor: Actor) -> CircleTask:
        """The offered member (or a lead) takes the task; the author takes it back after
        changes were requested. The member must have the competencies it needs."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            task = await _claim(step, task, actor)
            await self._publish(step)
        return task

    async def submit(
        self, task_id: int, actor: Actor, work: Submission, *, iteration: int | None = None
    ) -> CircleTask:
        """The assignee hands in the work: it goes to review, or completes when the circle
        does not review this type of task. The files it names are locked for the task."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            if iteration is not None and (task.iteration, task.status) != (
                iteration,
                "in_progress",
            ):
                return task  # a job's late answer for an attempt that is over
            check_move(task.id, task.status, "in_review")
            if actor.member_id is None or task.assignee_id != actor.member_id:
                raise PermissionDeniedError(
                    f"only the assignee (member {task.assignee_id}) submits task {task.id}"
                )
            await _lock_files(step, task, work.files)
            result = work.model_dump()
            if step.refusal is not None:
                pass  # the conflict is kept; the refusal is raised after the commit
            elif step.circle.settings.needs_review(task.task_type):
                task = await _move(step, task, "in_review", actor, "submitted", result=result)
                await _route_reviews(step, task)
            else:
                task = await _move(step, task, "completed", actor, "submitted", result=result)
                await _completed(step, task)
            await self._publish(step)
        if step.refusal is not None:
            raise step.refusal
        return task

    async def review(
        self, task_id: int, actor: Actor, verdict: ReviewIn, *, iteration: int | None = None
    ) -> CircleTask:
        """A verdict on the current attempt. A member asked to review (or a lead) gives one;
        a person who is not a member (the owner, an admin) decides at once. Never the
        author. When the reviewers disagree, the lead decides."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            if iteration is not None and task.iteration != iteration:
                raise ConflictError(f"attempt {iteration} of task {task.id} is over")
            check_move(task.id, task.status, "completed")
            members = {m.id: m for m in await list_members(tx, task.circle_id)}
            author = members.get(task.assignee_id) if task.assignee_id else None
            if (actor.member_id is not None and actor.member_id == task.assignee_id) or (
                actor.user_id is not None and author is not None and author.user_id == actor.user_id
            ):
                raise PermissionDeniedError(f"the author of task {task.id} cannot review it")
            asked = await _asked(step, task)
            reviewer = members.get(actor.member_id) if actor.member_id else None
            if actor.member_id is not None and (reviewer is None or not reviewer.active):
                raise PermissionDeniedError(
                    f"member {actor.member_id} is not an active member of this circle"
                )
            if reviewer is not None and reviewer.id not in asked and reviewer.role != "lead":
                raise PermissionDeniedError(
                    f"member {reviewer.id} was not asked to review task {task.id}",
                    hint="a lead, or a member the circle asked, reviews",
                )
            earlier = await tx.fetch_all(SQL["reviews_of_attempt"], task.id, task.iteration)
            if actor.member_id is not None and any(
                r["reviewer_id"] == actor.member_id for r in earlier
            ):
                raise ConflictError(
                    f"member {actor.member_id} has reviewed attempt {task.iteration} of task "
                    f"{task.id} already",
                    hint="one verdict per reviewer and attempt; the others' are awaited",
                )
            row = await tx.fetch_one(
                SQL["insert_review"],
                task.id,
                task.iteration,
                actor.member_id,
                actor.user_id,
                verdict.verdict,
                verdict.feedback,
            )
            assert row is not None
            if author is not None:
                approved = 1 if verdict.verdict == "approved" else 0
                await tx.execute(SQL["count_verdict"], author.id, approved, actor.member_id)
            step.event(
                "review.submitted",
                {
                    "task_id": task.id,
                    "iteration": task.iteration,
                    "member_id": actor.member_id,
                    "user_id": actor.user_id,
                    "verdict": verdict.verdict,
                    "feedback": verdict.feedback,
                },
            )
            final = reviewer is None or reviewer.role == "lead"
            if final:
                task = await _apply_verdict(step, task, actor, verdict)
            else:
                task = await _tally(step, task, actor, asked, members)
            await self._publish(step)
        return task

    async def start_attempt(
        self, task_id: int, member_id: int, iteration: int
    ) -> CircleTask | None:
        """Agent member `member_id` takes attempt `iteration` of a task offered to them (or
        sent back to them with changes to make); the task when it is theirs to work (again,
        after a crash), None when that attempt is over or was never theirs. An offer they
        cannot take (no room, competencies) is refused and goes to the next member."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            actor = Actor(member_id=member_id)
            if task.iteration != iteration:
                return None
            if task.status == "in_progress" and task.assignee_id == member_id:
                return task
            mine = (task.status == "offered" and task.offered_to == member_id) or (
                task.status == "changes_requested" and task.assignee_id == member_id
            )
            if not mine:
                return None
            try:  # _claim checks everything before it writes
                task = await _claim(step, task, actor)
            except (ConflictError, PermissionDeniedError) as exc:
                if task.status == "offered":
                    await _decide(step, task, "refused", member_id, f"cannot take it: {exc}")
                    await _route(step, task)
                await self._publish(step)
                return None
            await self._publish(step)
        return task

    async def escalate(self, task_id: int, member_id: int, iteration: int, reason: str) -> None:
        """Member `member_id` could not review attempt `iteration`: a lead who was not asked
        yet reviews instead, or, when every lead was, a person."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            if (task.status, task.iteration) != ("in_review", iteration):
                return
            await _escalate(step, task, reason)
            await self._publish(step)

    async def member_left(self, circle_id: int, member_id: int) -> int:
        """A member was made inactive: the tasks offered to them go to the next member, the
        reviews they were asked for and had not given go to another reviewer (the tasks in
        their hands stay theirs to finish); how many tasks moved."""
        moved = 0
        for row in await self.db.fetch_all(SQL["waiting_on_member"], circle_id, member_id):
            async with self.db.transaction() as tx:
                task, step = await _locked(tx, row["id"])
                if task.status == "offered" and task.offered_to == member_id:
                    await _decide(step, task, "refused", member_id, "left the circle")
                    await _route(step, task)
                    moved += 1
                elif task.status == "in_review" and await _awaits_review(step, task, member_id):
                    await _escalate(step, task, f"member {member_id} left the circle")
                    moved += 1
                await self._publish(step)
        return moved

    async def sweep_orphans(self, limit: int = 50) -> int:
        """Tasks whose member is gone (their agent or account was deleted): an offer goes to
        the next member, work in no one's hands fails; how many moved."""
        moved = 0
        for row in await self.db.fetch_all(SQL["orphaned_tasks"], limit):
            async with self.db.transaction() as tx:
                task, step = await _locked(tx, row["id"])
                present = {m.id for m in await list_members(tx, task.circle_id) if not m.gone}
                if task.status == "offered" and task.offered_to not in present:
                    reason = "the member it was offered to is gone"
                    await _decide(step, task, "expired", task.offered_to, reason)
                    await _route(step, task)
                elif (
                    task.status in ("in_progress", "changes_requested")
                    and task.assignee_id not in present
                ):
                    reason = "the member working it is gone (deleted)"
                    task = await _move(step, task, "failed", SYSTEM, reason, error=reason)
                    await _ended(step, task)
                else:
                    continue
                await self._publish(step)
                moved += 1
        return moved

    async def sweep_stranded(self, limit: int = 50) -> int:
        """Agents' work whose job ended without an outcome (it failed on an unexpected error,
        or a person cancelled the job itself): the attempt fails, and a review goes to a lead
        (or a person); how many moved. Nothing else would ever move such a task on. A task
        or circle deleted meanwhile is passed over."""
        moved = 0
        for row in await self.db.fetch_all(SQL["stranded_work"], limit):
            with contextlib.suppress(NotFoundError):
                moved += await self._fail_stranded(row)
        for row in await self.db.fetch_all(SQL["stranded_reviews"], limit):
            with contextlib.suppress(NotFoundError):
                moved += await self._hand_on_review(row)
        return moved

    async def _fail_stranded(self, row: dict[str, Any]) -> int:
        reason = _job_ended(row, "the agent's work")
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, row["id"])
            if (
                (task.iteration, task.assignee_id) != (row["iteration"], row["member_id"])
                or task.status not in ("in_progress", "changes_requested")
                or not await _still_ended(tx, row["job_id"])
            ):
                return 0  # moved on (another hand, a retried job) since the rows were read
            task = await _move(step, task, "failed", SYSTEM, reason, error=reason)
            await _ended(step, task)
            await self._publish(step)
        return 1

    async def _hand_on_review(self, row: dict[str, Any]) -> int:
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, row["id"])
            if await tx.fetch_one(SQL["review_job_handled"], row["job_id"], task.id) is None:
                return 0  # another sweep handed it on
            if (task.status, task.iteration) != ("in_review", row["iteration"]):
                return 0
            if not await _still_ended(tx, row["job_id"]):
                return 0  # retried since the rows were read
            members = {m.id: m for m in await list_members(tx, task.circle_id)}
            member = members.get(row["member_id"])
            if member is None or (not member.active and not member.gone):
                return 0  # left: that handed the review on already
            if not await _awaits_review(step, task, member.id):
                return 0  # answered meanwhile
            await _escalate(step, task, _job_ended(row, f"member {member.id}'s review"))
            await self._publish(step)
        return 1

    async def fail(self, task_id: int, actor: Actor, error: str, *, iteration: int) -> CircleTask:
        """Attempt `iteration` could not be done (an agent's turn failed)."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            if (task.iteration, task.status) != (iteration, "in_progress"):
                return task
            task = await _move(step, task, "failed", actor, error, error=error)
            await _ended(step, task)
            await self._publish(step)
        return task

    async def wait_for_budget(
        self,
        task_id: int,
        member: MemberRecord,
        iteration: int,
        refusal: BudgetExceededError,
        waits: int,
        at: datetime,
        *,
        announce: bool,
    ) -> None:
        """A budget refused the model call of attempt `iteration`: the task stays in the
        member's hands (not failed), `circle.task.waiting` says why and until when (when
        `announce`: at a turn's refusal, not at each look), and the work is asked again at
        `at` (it runs once the budget can take the call). One such job per attempt (a second
        delivery of a job does not start a second chain), holding no agent lock while it
        waits (the agent's other work goes on; its turns take one at a time anyway)."""
        waiting = f"circle-budget:{task_id}:{iteration}"
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            if (task.iteration, task.status, task.assignee_id) != (
                iteration,
                "in_progress",
                member.id,
            ):
                return
            if await queued_with(tx, waiting):
                return  # another delivery asked for it already
            if announce:
                error = {"code": refusal.code, "message": refusal.message}
                body = {**task.as_event(), "error": error | {"details": refusal.details}}
                step.event("task.waiting", body | {"retry_at": at.isoformat()})
            estimate = [
                refusal.details.get("call_estimate_usd", 0.0),
                refusal.details.get("call_estimate_tokens", 0),
            ]
            args: dict[str, Any] = {"task_id": task.id, "iteration": iteration}
            args |= {"member_id": member.id, "budget_waits": waits, "estimate": estimate}
            await enqueue(tx, WORK, args, queue=QUEUE, at=at, queueing_lock=waiting)
            await self._publish(step)

    async def cancel(self, task_id: int, actor: Actor, reason: str = "") -> CircleTask:
        """Any task that has not ended; the tasks that wait for it fail."""
        async with self.db.transaction() as tx:
            task, step = await _locked(tx, task_id)
            task = await _move(step, task, "cancelled", actor, reason or "cancelled")
            await _ended(step, task)
            await self._publish(step)
        return task

    async def add_dependency(self, task_id: int, blocked_by: int, actor: Actor) -> CircleTask:
        """Task `task_id` waits for `blocked_by` (of the same circle). A dependency that would
        close a cycle is refused, and kept as a resolved conflict."""
        async with self.db.transaction() as tx:
            # One step per circle at a time (`_locked`): two dependencies that each close half
            # of a cycle cannot both see no cycle.
            task, step = await _locked(tx, task_id)
            if await tx.fetch_val(SQL["has_dependency"], task.id, blocked_by):
                return task  # it waits for it already
            other = await _task_of(tx, task.circle_id, blocked_by)
            if task.status not in ("pending", "blocked"):
                raise ConflictError(
                    f"task {task.id} is {task.status}: only a pending or blocked task may wait"
                )
            path = await tx.fetch_val(SQL["dependency_path"], other.id, task.id)
            if path is not None:  # `other` waits for `task` (or is it): a cycle
                cycle = [task.id, *path]  # each waits for the next
                await _conflict(
                    step,
                    "cycle",
                    task.id,
                    other.id,
                    {"cycle": cycle},
                    resolution="the dependency was refused",
                )
                step.refusal = ConflictError(
                    f"task {task.id} waiting for {other.id} would close a cycle: "
                    + " -> ".join(map(str, cycle)),
                    details={"cycle": cycle},
                )
            elif other.status in ("failed", "cancelled"):
                raise ConflictError(f"task {other.id} is {other.status}: it never completes")
            else:
                await tx.execute(SQL["insert_dependency"], task.id, other.id)
                if other.status != "completed" and task.status == "pending":
                    task = await _move(step, task, "blocked", actor, f"waits for task {other.id}")
            await self._publish(step)
        if step.refusal is not None:
            raise step.refusal
        return task

    async def route_pending(self, circle_id: int) -> int:
        """Offer every pending task of an active circle (it was just activated, or its
        members changed); how many were routed."""
        routed = 0
        for row in await self.db.fetch_all(SQL["open_tasks"], circle_id):
            async with self.db.transaction() as tx:
                task, step = await _locked(tx, row["id"])
                if task.status == "pending" and step.circle.status == "active":
                    await _route(step, task)
                    routed += 1
                await self._publish(step)
        return routed

    async def cancel_open(self, circle_id: int, reason: str) -> int:
        """Cancel every task of a circle that has not ended (it was archived); how many."""
        cancelled = 0
        for row in await self.db.fetch_all(SQL["open_tasks"], circle_id):
            async with self.db.transaction() as tx:
                task, step = await _locked(tx, row["id"])
                if task.status not in ENDED:
                    await _move(step, task, "cancelled", SYSTEM, reason)
                    await _ended(step, task)
                    cancelled += 1
                await self._publish(step)
        return cancelled

    async def _publish(self, step: _Step) -> None:
        if self.bus is not None and step.events:
            await self.bus.publish_many(step.events, tx=step.tx)


# --- inside one step's transaction ------------------------------------------------------------


async def _still_ended(tx: Queries, job_id: int) -> bool:
    """Whether job `job_id` still stands as ended without an outcome (not retried)."""
    status = await tx.fetch_val(SQL["job_status"], job_id)
    return status in ("failed", "cancelled", "aborted")


def _job_ended(row: dict[str, Any], what: str) -> str:
    """Why `what` (an agent's work or review) stopped: its job (`row`'s) ended without an
    outcome."""
    how = {"failed": "failed on an unexpected error (see the worker's log)"}
    ended = how.get(row["job_status"], f"was {row['job_status']}")
    return f"{what} stopped: its job {row['job_id']} {ended}"


async def _locked(tx: Queries, task_id: int) -> tuple[CircleTask, _Step]:
    """Task `task_id`, locked, with a step on its circle. The circle's row is locked first:
    one step of a circle at a time, so that routing sees every offer made before it (no
    member gets more than their share) and no two steps wait on each other's rows."""
    found = await tx.fetch_one(SQL["task_by_id"], task_id)
    if found is None:
        raise NotFoundError(f"no circle task {task_id}")
    circle = await lock_circle(tx, found["circle_id"])
    row = await tx.fetch_one(SQL["lock_task"], task_id)
    assert row is not None  # tasks leave only with their circle, whose row this step holds
    return CircleTask.from_row(row), _Step(tx, circle)


async def _task_of(tx: Queries, circle_id: int, task_id: int) -> CircleTask:
    row = await tx.fetch_one(SQL["task_by_id"], task_id)
    if row is None or row["circle_id"] != circle_id:
        raise NotFoundError(f"no task {task_id} in this circle")
    return CircleTask.from_row(row)


async def _move(
    step: _Step,
    task: CircleTask,
    to: str,
    actor: Actor = SYSTEM,
    reason: str = "",
    *,
    offered_to: int | None = None,
    deadline: datetime | None = None,
    assignee_id: int | None = _KEEP,
    iteration: int | None = None,
    result: dict[str, Any] | None = _KEEP,
    feedback: str | None = _KEEP,
    error: str | None = None,
) -> CircleTask:
    """Task `task` to status `to` (checked), kept in its history and announced."""
    check_move(task.id, task.status, to)
    row = await step.tx.fetch_one(
        SQL["move_task"],
        task.id,
        to,
        offered_to,
        deadline,
        task.assignee_id if assignee_id is _KEEP else assignee_id,
        task.iteration if iteration is None else iteration,
        Jsonb(task.result if result is _KEEP else result),
        task.feedback if feedback is _KEEP else feedback,
        error,
    )
    assert row is not None
    await step.tx.execute(
        SQL["insert_transition"], task.id, task.status, to, actor.member_id, actor.user_id, reason
    )
    moved = CircleTask.from_row(row)
    step.event(
        "task.moved",
        {**moved.as_event(), "from": task.status, "member_id": actor.member_id, "reason": reason},
    )
    return moved


async def _decide(
    step: _Step,
    task: CircleTask,
    kind: str,
    member_id: int | None,
    reason: str,
    scores: list[dict[str, Any]] | None = None,
) -> None:
    await step.tx.execute(
        SQL["insert_decision"],
        task.id,
        task.iteration,
        kind,
        member_id,
        reason,
        Jsonb(scores or []),
    )


async def _route(step: _Step, task: CircleTask) -> CircleTask:
    """Offer `task` to the best member who has not passed on this attempt, or leave it
    pending (with the reason kept) when no one may take it."""
    settings = step.circle.settings
    members = [m for m in await list_members(step.tx, task.circle_id) if m.active]
    passed = await step.tx.fetch_all(SQL["passed_over"], task.id, task.iteration)
    refused = frozenset(row["member_id"] for row in passed if row["kind"] == "refused")
    candidates = [
        m.candidate() for m in members if m.id != task.offered_to or task.status != "offered"
    ]

    def rank(excluded: frozenset[int]) -> list[Choice]:
        return rank_workers(
            task.requirements,
            candidates,
            cap=settings.max_parallel_tasks,
            strategy=settings.routing,
            excluded=excluded,
        )

    # Who let an offer expire is passed over while someone else can take it; who refused,
    # for this attempt.
    ranked = rank(refused | {row["member_id"] for row in passed}) or rank(refused)
    scores = [choice.as_json() for choice in ranked[:10]]
    if not ranked:
        reason = "no active member has the competencies and room for it"
        last = await step.tx.fetch_val(SQL["last_decision"], task.id, task.iteration)
        if last != "no_candidate":  # said once until something changes
            await _decide(step, task, "no_candidate", None, reason)
            step.event("task.unrouted", {**task.as_event(), "reason": reason})
        if task.status == "offered":
            return await _move(step, task, "pending", SYSTEM, reason)
        return task
    best = ranked[0]
    reason = f"best of {len(ranked)}: {best.reason}"
    await _decide(step, task, "offer", best.member_id, reason, scores)
    deadline = datetime.now(UTC) + timedelta(seconds=settings.offer_timeout_seconds)
    moved = await _move(
        step, task, "offered", SYSTEM, reason, offered_to=best.member_id, deadline=deadline
    )
    member = next(m for m in members if m.id == best.member_id)
    step.event(
        "task.offered",
        {
            **moved.as_event(),
            "member_id": member.id,
            "member": member.name,
            "deadline": deadline.isoformat(),
            "reason": reason,
        },
    )
    if member.agent_id is not None:
        await _work_job(step.tx, moved, member)
    return moved


async def _work_job(tx: Queries, task: CircleTask, member: MemberRecord) -> None:
    await agent_job(tx, WORK, task.id, task.iteration, member)


async def agent_job(
    tx: Queries,
    name: str,
    task_id: int,
    iteration: int,
    member: MemberRecord,
    at: datetime | None = None,
    **extra: Any,
) -> None:
    """Queue job `name` (work or review) of agent member `member` (`extra`: more arguments of
    the job); one agent's jobs run one after another (an agent takes one turn at a time)."""
    args = {"task_id": task_id, "iteration": iteration, "member_id": member.id, **extra}
    await enqueue(tx, name, args, queue=QUEUE, lock=f"agent:{member.agent_id}", at=at)


async def _claim(step: _Step, task: CircleTask, actor: Actor) -> CircleTask:
    members = {m.id: m for m in await list_members(step.tx, task.circle_id)}
    member = members.get(actor.member_id) if actor.member_id is not None else None
    if member is None or not member.active:
        raise PermissionDeniedError(f"only an active member of the circle claims task {task.id}")
    check_move(task.id, task.status, "in_progress")
    if task.status == "changes_requested":
        if member.id == task.assignee_id:
            return await _move(step, task, "in_progress", actor, f"attempt {task.iteration}")
        if member.role != "lead":
            raise PermissionDeniedError(
                f"task {task.id} is back with its author (member {task.assignee_id})"
            )
    elif member.id != task.offered_to and member.role != "lead":
        raise PermissionDeniedError(
            f"task {task.id} is not offered to member {member.id}",
            hint="only the member it is offered to, or a lead, claims it",
        )
    missing = {
        tag: need
        for tag, need in task.requirements.items()
        if member.competencies.get(tag, 0) < need
    }
    if missing:
        raise ConflictError(
            f"member {member.id} lacks what task {task.id} needs: "
            + ", ".join(f"{tag} {need}" for tag, need in missing.items()),
            details={"missing": missing},
        )
    cap = step.circle.settings.max_parallel_tasks
    load = member.load - (1 if task.offered_to == member.id else 0)
    if load >= cap:
        raise ConflictError(f"member {member.id} has {load} tasks already (at most {cap})")
    reason = "claimed" if task.status != "changes_requested" else "taken over by a lead"
    return await _move(
        step, task, "in_progress", actor, reason, assignee_id=member.id, offered_to=None
    )


async def _lock_files(step: _Step, task: CircleTask, paths: list[str]) -> None:
    """Lock `paths` for `task`; a path another task holds is a `FileLockedError` (the step's
    refusal), kept as an open conflict that resolves when the holder ends."""
    wanted = sorted(set(paths))
    if not wanted:
        return
    got = {
        row["path"]
        for row in await step.tx.fetch_all(SQL["lock_files"], task.circle_id, task.id, wanted)
    }
    held = [path for path in wanted if path not in got]
    if not held:
        return
    holders = await step.tx.fetch_all(SQL["file_holders"], task.circle_id, held)
    first = holders[0]
    detail = {
        "paths": held,
        "holder_task_id": first["task_id"],
        "holder_member_id": first["assignee_id"],
        "member_id": task.assignee_id,
    }
    await _conflict(step, "file", task.id, first["task_id"], detail)
    step.refusal = FileLockedError(
        f"task {first['task_id']} (member {first['assignee_id']}) holds {', '.join(held)}",
        hint="wait until that task ends, or change other files",
        details=detail,
    )


async def _conflict(
    step: _Step,
    kind: str,
    task_id: int,
    other_task_id: int | None,
    detail: dict[str, Any],
    *,
    resolution: str | None = None,
) -> None:
    """Keep a conflict (open, or already resolved with `resolution`) and announce it; a
    refused step still keeps it (the caller commits before raising)."""
    status = "resolved" if resolution else "open"
    row = await step.tx.fetch_one(
        SQL["insert_conflict"],
        step.circle.id,
        kind,
        task_id,
        other_task_id,
        Jsonb(detail),
        status,
        resolution,
    )
    assert row is not None
    step.event(
        "conflict.opened" if status == "open" else "conflict.resolved",
        {"conflict_id": row["id"], "kind": kind, "task_id": task_id, **detail},
    )


async def _route_reviews(step: _Step, task: CircleTask) -> None:
    """Ask the circle's number of reviewers for `task`'s attempt, by review type, with a lead
    as the fallback; when no member may review, a person must."""
    settings = step.circle.settings
    members = [m for m in await list_members(step.tx, task.circle_id) if m.active]
    candidates = [m.candidate() for m in members]
    ranked = rank_reviewers(
        task.review_type, candidates, author_id=task.assignee_id, cap=settings.max_parallel_tasks
    )[: settings.reviewers_per_task]
    if not ranked:
        fallback = lead_fallback(task.review_type, candidates, author_id=task.assignee_id)
        ranked = [fallback] if fallback is not None else []
    if not ranked:
        await _ask_a_person(step, task, "no member may review it: a person approves or rejects it")
        return
    for choice in ranked:
        await _ask_review(step, task, members, choice.member_id, "review", choice.reason)


async def _ask_review(
    step: _Step,
    task: CircleTask,
    members: list[MemberRecord],
    member_id: int,
    kind: str,
    reason: str,
) -> None:
    await _decide(step, task, kind, member_id, reason)
    member = next(m for m in members if m.id == member_id)
    step.event(
        "review.requested",
        {**task.as_event(), "member_id": member_id, "member": member.name, "reason": reason},
    )
    if member.agent_id is not None:
        await agent_job(step.tx, REVIEW, task.id, task.iteration, member)


async def _escalate(
    step: _Step, task: CircleTask, reason: str, *, to_lead: str | None = None
) -> None:
    """Ask a lead not asked yet for this attempt (nor its author) to review it (saying
    `to_lead`, else `reason`), or, when there is none, a person."""
    members = [m for m in await list_members(step.tx, task.circle_id) if m.active]
    asked = await _asked(step, task)
    lead = lead_fallback(
        task.review_type,
        [m.candidate() for m in members],
        author_id=task.assignee_id,
        excluded=frozenset(asked),
    )
    if lead is None:
        await _ask_a_person(step, task, reason + "; a person decides")
    else:
        said = reason if to_lead is None else to_lead
        await _ask_review(step, task, members, lead.member_id, "escalation", said)


async def _ask_a_person(step: _Step, task: CircleTask, reason: str) -> None:
    """No member may review the attempt: a person (the owner, an admin) decides."""
    await _decide(step, task, "escalation", None, reason)
    step.event("review.requested", {**task.as_event(), "member_id": None, "reason": reason})


async def _asked(step: _Step, task: CircleTask) -> list[int]:
    """The members asked to review the current attempt, in order."""
    rows = await step.tx.fetch_all(SQL["review_requests"], task.id, task.iteration)
    return [row["member_id"] for row in rows]


async def _awaits_review(step: _Step, task: CircleTask, member_id: int) -> bool:
    """Whether member `member_id` was asked to review the current attempt and has not."""
    if member_id not in await _asked(step, task):
        return False
    reviews = await step.tx.fetch_all(SQL["reviews_of_attempt"], task.id, task.iteration)
    return all(r["reviewer_id"] != member_id for r in reviews)


async def _tally(
    step: _Step,
    task: CircleTask,
    actor: Actor,
    asked: list[int],
    members: dict[int, MemberRecord],
) -> CircleTask:
    """Decide when every reviewer asked (and still active) has answered: their common
    verdict, or the lead's when they disagree (kept as a conflict)."""
    reviews = await step.tx.fetch_all(SQL["reviews_of_attempt"], task.id, task.iteration)
    verdicts = {r["reviewer_id"]: r for r in reviews if r["reviewer_id"] in asked}
    awaited = {m for m in asked if m in members and members[m].active} - set(verdicts)
    if awaited:  # a reviewer who left is not waited for (they were replaced)
        return task
    kinds = {r["verdict"] for r in verdicts.values()}
    if len(kinds) == 1:
        last = reviews[-1]
        return await _apply_verdict(
            step, task, actor, ReviewIn(verdict=last["verdict"], feedback=_feedback(verdicts))
        )
    detail = {
        "verdicts": {str(member_id): r["verdict"] for member_id, r in verdicts.items()},
        "iteration": task.iteration,
    }
    await _conflict(step, "disagreement", task.id, None, detail)
    reason = "the reviewers disagree: " + ", ".join(
        f"member {member_id} {r['verdict']}" for member_id, r in verdicts.items()
    )
    await _escalate(step, task, reason, to_lead=reason + "; the lead decides")
    return task


def _feedback(verdicts: dict[int, dict[str, Any]]) -> str:
    return "\n\n".join(r["feedback"] for r in verdicts.values() if r["feedback"])


async def _apply_verdict(
    step: _Step, task: CircleTask, actor: Actor, verdict: ReviewIn
) -> CircleTask:
    await step.tx.fetch_all(
        SQL["resolve_conflicts"],
        task.id,
        "disagreement",
        f"{verdict.verdict} by the final reviewer",
    )
    if verdict.verdict == "approved":
        task = await _move(step, task, "completed", actor, "approved")
        await _completed(step, task)
        return task
    if verdict.verdict == "rejected":
        task = await _move(
            step, task, "failed", actor, "rejected", error=verdict.feedback or "rejected"
        )
        await _ended(step, task)
        return task
    attempts = step.circle.settings.max_attempts
    if task.iteration >= attempts:
        error = f"changes were still asked after {attempts} attempts: {verdict.feedback}"
        task = await _move(step, task, "failed", actor, "out of attempts", error=error)
        await _ended(step, task)
        return task
    task = await _move(
        step,
        task,
        "changes_requested",
        actor,
        "changes requested",
        iteration=task.iteration + 1,
        feedback=verdict.feedback,
    )
    author = task.assignee_id
    if author is not None:
        members = {m.id: m for m in await list_members(step.tx, task.circle_id)}
        if members[author].agent_id is not None and members[author].active:
            await _work_job(step.tx, task, members[author])
    return task


async def _completed(step: _Step, task: CircleTask) -> None:
    """A completed task counts for its author and frees the tasks that waited for it."""
    if task.assignee_id is not None:
        await step.tx.execute(SQL["count_outcome"], task.assignee_id, 1, 0, task.iteration, 0, 0.0)
    await _release(step, task)
    for row in await step.tx.fetch_all(SQL["dependents"], task.id):
        waiting, _ = await _locked(step.tx, row["id"])
        deps = await step.tx.fetch_all(SQL["dependencies"], waiting.id)
        if all(dep["status"] == "completed" for dep in deps):
            await _move(step, waiting, "pending", SYSTEM, f"task {task.id} completed")
    await _route_waiting(step)


async def _ended(step: _Step, task: CircleTask) -> None:
    """A failed or cancelled task: it counts for its author, and the tasks that waited for it
    fail too (they can never start); then the pending tasks may have a member with room."""
    await _end(step, task)
    await _route_waiting(step)


async def _end(step: _Step, task: CircleTask) -> None:
    if task.status == "failed" and task.assignee_id is not None:
        await step.tx.execute(SQL["count_outcome"], task.assignee_id, 0, 1, 0, 0, 0.0)
    await _release(step, task)
    for row in await step.tx.fetch_all(SQL["dependents"], task.id):
        waiting, _ = await _locked(step.tx, row["id"])
        reason = f"task {task.id} it waits for is {task.status}"
        await _end(step, await _move(step, waiting, "failed", SYSTEM, reason, error=reason))


async def _route_waiting(step: _Step) -> None:
    """Offer the circle's pending tasks again: a member may have room now."""
    if step.circle.status != "active":
        return
    for row in await step.tx.fetch_all(SQL["waiting_to_route"], step.circle.id):
        await _route(step, CircleTask.from_row(row))


async def _release(step: _Step, task: CircleTask) -> None:
    paths = [row["path"] for row in await step.tx.fetch_all(SQL["release_files"], task.id)]
    if paths:
        resolved = await step.tx.fetch_all(
            SQL["resolve_conflicts"], task.id, "file", f"task {task.id} {task.status}: files free"
        )
        for row in resolved:
            step.event(
                "conflict.resolved",
                {
                    "conflict_id": row["id"],
                    "kind": "file",
                    "task_id": row["task_id"],
                    "paths": paths,
                },
            )

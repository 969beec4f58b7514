"""Goals as stored (migration 0019): a tree of goals and subgoals, blocking dependencies
between them (never a cycle), success criteria, what was done about each (activities), and
the progress of a goal rolled up from its subgoals."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from psycopg.types.json import Jsonb
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from gathering.db.database import Queries
from gathering.db.fields import MAX_ID, Ref, Said, as_number
from gathering.db.locks import LockKey
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_text, storable_value
from gathering.errors import ConflictError, InvalidInputError, NotFoundError
from gathering.events import Event, outbox
from gathering.scheduler.tasks.store import owned_id

_SQL = queries_of("gathering.scheduler.goals")
STATUSES = ("open", "waiting", "active", "done", "failed", "cancelled")
ENDED = ("done", "failed", "cancelled")
MAX_TEXT = 10_000
MAX_DEPTH = 20  # levels of subgoals


def _flush(value: float) -> float:
    """0 for a number too close to 0 for PostgreSQL (5e-324 and the like)."""
    return 0.0 if abs(value) < 1e-30 else value


class GoalFields(BaseModel):
    """What a person says about a goal (every field may be changed later)."""

    model_config = ConfigDict(extra="forbid")

    title: Said = Field(min_length=1, max_length=200, pattern=r"\S")
    description: str = Field(default="", max_length=MAX_TEXT)
    success_criteria: str = Field(
        default="", max_length=MAX_TEXT, description="How to tell it is reached"
    )
    agent: Ref | None = Field(default=None, description="The agent who works on it (id or name)")
    pipeline: Ref | None = Field(
        default=None, description="Or the pipeline that achieves it (id or name)"
    )


class GoalIn(GoalFields):
    """A new goal: top-level, or a subgoal of `parent_id`."""

    parent_id: Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(as_number)] | None = Field(
        default=None, description="The parent's id"
    )


class GoalChange(BaseModel):
    """A change of a goal: only the fields given change (`null` clears the agent or the
    pipeline, and changes nothing else)."""

    model_config = ConfigDict(extra="forbid")

    title: Said | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S")
    description: str | None = Field(default=None, max_length=MAX_TEXT)
    success_criteria: str | None = Field(default=None, max_length=MAX_TEXT)
    agent: Ref | None = None
    pipeline: Ref | None = None
    progress: (
        Annotated[float, Field(ge=0, le=1), BeforeValidator(as_number), AfterValidator(_flush)]
        | None
    ) = Field(default=None, description="A leaf's own")
    position: Annotated[int, Field(ge=0, le=100_000), BeforeValidator(as_number)] | None = None


@dataclass(frozen=True)
class GoalRecord:
    """A stored goal."""

    id: int
    owner_id: int
    parent_id: int | None
    title: str
    description: str
    success_criteria: str
    status: str
    agent_id: int | None
    pipeline_id: int | None
    task_id: int | None
    pipeline_run_id: int | None
    progress: float
    position: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> GoalRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass
class GoalNode:
    """A goal in its tree: its subgoals, what it waits for, its rolled-up progress."""

    goal: GoalRecord
    children: list[GoalNode] = field(default_factory=list)
    blocked_by: list[int] = field(default_factory=list)

    @property
    def progress(self) -> float:
        """1 when done; a leaf's own progress; else the mean of its subgoals' (a cancelled
        subgoal does not count)."""
        if self.goal.status == "done":
            return 1.0
        counted = [child for child in self.children if child.goal.status != "cancelled"]
        if not counted:
            return self.goal.progress
        return sum(child.progress for child in counted) / len(counted)


async def add_activity(queries: Queries, goal_id: int, kind: str, **body: Any) -> None:
    """Record what was done about goal `goal_id`."""
    await queries.execute(_SQL["add_activity"], goal_id, kind, Jsonb(storable_value(body)))


def goal_changed(goal: GoalRecord, **extra: Any) -> Event:
    """The `goal.changed` event of `goal` as it is now, on its owner's subject."""
    return _goal_event(goal.owner_id, goal.id, goal.parent_id, goal.status, **extra)


def _goal_event(
    owner_id: int, goal_id: int, parent_id: int | None, status: str, **extra: Any
) -> Event:
    body = {"goal_id": goal_id, "status": status, "parent_id": parent_id, **extra}
    return Event("goal.changed", body, subject=f"user:{owner_id}", source="scheduler")


async def _tell(queries: Queries, event: Event) -> None:
    """Write `event` to the outbox in the caller's transaction: it goes out if it commits."""
    await outbox.write(queries, [event])


async def create_goal(queries: Queries, owner_id: int, spec: GoalIn) -> GoalRecord:
    """Store a goal of `owner_id` (a subgoal when `parent_id` names one of theirs, which is
    locked meanwhile: call it inside a transaction)."""
    if spec.parent_id is not None:
        locked = await queries.fetch_one(_SQL["lock_goal"], spec.parent_id)  # vs. a start
        if locked is None:
            raise NotFoundError(f"no goal {spec.parent_id}")
        parent = GoalRecord.from_row(locked)
        if parent.owner_id != owner_id:
            raise NotFoundError(f"no goal {spec.parent_id}")
        if parent.status in ENDED or parent.task_id or parent.pipeline_run_id:
            raise ConflictError(
                f"goal {parent.id} is {parent.status} and works on its own: add no subgoal",
                hint="add the goal at the top level, or under an open goal",
            )
        depth = len(await queries.fetch_all(_SQL["ancestors"], parent.id))
        if depth + 1 >= MAX_DEPTH:
            raise InvalidInputError(f"goals nest at most {MAX_DEPTH} levels deep")
    agent_id = (
        await owned_id(queries, "agent_of_owner", owner_id, spec.agent, "agent")
        if (spec.agent is not None)
        else None
    )
    pipeline_id = None
    if spec.pipeline is not None:
        pipeline_id = await owned_id(
            queries, "pipeline_of_owner", owner_id, spec.pipeline, "pipeline"
        )
    row = await queries.fetch_one(
        _SQL["insert_goal"],
        owner_id,
        spec.parent_id,
        storable_text(spec.title),
        storable_text(spec.description),
        storable_text(spec.success_criteria),
        agent_id,
        pipeline_id,
    )
    assert row is not None
    goal = GoalRecord.from_row(row)
    await add_activity(queries, goal.id, "created", title=goal.title)
    await _tell(queries, goal_changed(goal, change="created"))
    return goal


async def get_goal(queries: Queries, goal_id: int) -> GoalRecord:
    """Goal `goal_id`; `NotFoundError` when there is none."""
    row = await queries.fetch_one(_SQL["goal_by_id"], goal_id)
    if row is None:
        raise NotFoundError(f"no goal {goal_id}", hint="list goals with `gathering goals list`")
    return GoalRecord.from_row(row)


async def list_goals(
    queries: Queries, owner_id: int | None, *, limit: int = 100, offset: int = 0
) -> list[GoalRecord]:
    """Top-level goals, newest first (of `owner_id`; every owner's when None)."""
    rows = await queries.fetch_all(_SQL["root_goals"], owner_id, limit, offset)
    return [GoalRecord.from_row(row) for row in rows]


async def goal_tree(queries: Queries, goal_id: int) -> GoalNode:
    """Goal `goal_id` with every goal below it and their dependencies."""
    rows = await queries.fetch_all(_SQL["subtree"], goal_id)
    if not rows:
        raise NotFoundError(f"no goal {goal_id}", hint="list goals with `gathering goals list`")
    nodes = {int(row["id"]): GoalNode(GoalRecord.from_row(row)) for row in rows}
    for node in nodes.values():
        parent = node.goal.parent_id
        if node.goal.id != goal_id and parent in nodes:
            nodes[parent].children.append(node)
    for row in await queries.fetch_all(_SQL["dependencies_in"], list(nodes)):
        nodes[int(row["goal_id"])].blocked_by.append(int(row["blocked_by"]))
    return nodes[goal_id]


async def change_goal(queries: Queries, goal: GoalRecord, change: GoalChange) -> GoalRecord:
    """Apply the fields `change` gives to `goal`."""
    # A field given as null changes nothing, but for the agent and the pipeline: it clears them.
    columns = [
        name
        for name in change.model_fields_set
        if getattr(change, name) is not None or name in ("agent", "pipeline")
    ]
    if not columns:
        return goal
    agent_id = pipeline_id = None
    if change.agent is not None:
        agent_id = await owned_id(queries, "agent_of_owner", goal.owner_id, change.agent, "agent")
    if change.pipeline is not None:
        pipeline_id = await owned_id(
            queries, "pipeline_of_owner", goal.owner_id, change.pipeline, "pipeline"
        )
    row = await queries.fetch_one(
        _SQL["update_goal"],
        goal.id,
        storable_text(change.title or ""),
        storable_text(change.description or ""),
        storable_text(change.success_criteria or ""),
        agent_id,
        pipeline_id,
        change.progress if change.progress is not None else goal.progress,
        change.position if change.position is not None else goal.position,
        columns,
    )
    if row is None:
        raise NotFoundError(f"no goal {goal.id}")
    await add_activity(queries, goal.id, "changed", fields=sorted(columns))
    changed = GoalRecord.from_row(row)
    await _tell(queries, goal_changed(changed, change="changed", fields=sorted(columns)))
    return changed


async def delete_goal(queries: Queries, goal_id: int) -> None:
    """Delete a goal with its subgoals (the tasks and runs they started are kept), telling
    each: a `goal.changed` with status `deleted` per goal, and `dependency_removed` to each goal
    that waited for one of them. Call it inside a transaction: the events go with the delete."""
    rows = await queries.fetch_all(_SQL["delete_goal"], goal_id)
    if not rows:
        raise NotFoundError(f"no goal {goal_id}")
    events = [
        _goal_event(row["owner_id"], row["id"], row["parent_id"], "deleted")
        if row["deleted"]
        else _goal_event(
            row["owner_id"],
            row["id"],
            row["parent_id"],
            row["status"],
            change="dependency_removed",
            blocked_by=row["blocked_by"],
        )
        for row in rows
    ]
    await outbox.write(queries, events)


async def lock_dependencies(queries: Queries, owner_id: int) -> None:
    """Until the end of the caller's transaction: no other change of `owner_id`'s
    dependencies (take it before locking any goal, as every caller does)."""
    await queries.execute(
        _SQL["lock_dependencies"], LockKey("goal-dependencies", str(owner_id)).value
    )


async def try_lock_dependencies(queries: Queries, owner_id: int) -> bool:
    """`lock_dependencies` when nobody holds it now; False (and no lock) when somebody does."""
    key = LockKey("goal-dependencies", str(owner_id)).value
    return bool(await queries.fetch_val(_SQL["try_lock_dependencies"], key))


async def add_dependency(queries: Queries, goal: GoalRecord, blocked_by: GoalRecord) -> None:
    """`goal` cannot start before `blocked_by` is done; `ConflictError` when that would make
    a cycle (through dependencies, or between a goal and one above it), `NotFoundError` when
    the two have different owners, `ConflictError` too when `goal` has started (it would
    not wait). Call it inside a transaction: the owner's dependencies are changed one
    transaction at a time (and never while a goal of theirs starts), so two cannot close a
    cycle together."""
    if blocked_by.owner_id != goal.owner_id:
        raise NotFoundError(f"no goal {blocked_by.id}")
    await lock_dependencies(queries, goal.owner_id)
    status = (await get_goal(queries, goal.id)).status  # a start takes the lock too
    if status not in ("open", "waiting"):
        raise ConflictError(
            f"goal {goal.id} is {status}: it has started or ended, so a dependency would not "
            "hold it back",
            hint="add dependencies before starting a goal, or cancel it and add a new one",
            details={"goal_id": goal.id, "status": status},
        )
    above = {int(row["id"]) for row in await queries.fetch_all(_SQL["ancestors"], goal.id)}
    below = {int(row["id"]) for row in await queries.fetch_all(_SQL["ancestors"], blocked_by.id)}
    if blocked_by.id in above or goal.id in below:
        raise ConflictError(
            f"goal {goal.id} and goal {blocked_by.id} are in one line of subgoals: a parent "
            "ends with its subgoals, so neither can wait for the other",
            details={"goal_id": goal.id, "blocked_by": blocked_by.id},
        )
    if blocked_by.id == goal.id or await _would_wait_forever(queries, goal, blocked_by.id):
        raise ConflictError(
            f"goal {goal.id} cannot wait for goal {blocked_by.id}: goal {blocked_by.id} "
            f"already waits (through dependencies and subgoals) for goal {goal.id} or a goal "
            "above it, which would be a cycle",
            details={"goal_id": goal.id, "blocked_by": blocked_by.id},
        )
    if await queries.fetch_one(_SQL["add_dependency"], goal.id, blocked_by.id) is not None:
        await add_activity(queries, goal.id, "dependency_added", blocked_by=blocked_by.id)
        event = goal_changed(goal, change="dependency_added", blocked_by=blocked_by.id)
        await _tell(queries, event)


async def _would_wait_forever(queries: Queries, goal: GoalRecord, blocked_by: int) -> bool:
    """Whether `goal` waiting for `blocked_by` closes a cycle of waits. Besides
    dependencies, a parent waits for its subgoals to end, and a subgoal starts only once
    every goal above it is unblocked: so whatever the goals below `blocked_by` wait for (and
    so on) must not be `goal`, a goal below it, or a goal above it."""
    rows = await queries.fetch_all(_SQL["owner_goal_parents"], goal.owner_id)
    parent = {int(row["id"]): row["parent_id"] for row in rows}
    children: dict[int, list[int]] = defaultdict(list)
    for child, above in parent.items():
        if above is not None:
            children[int(above)].append(child)
    waits: dict[int, list[int]] = defaultdict(list)
    for row in await queries.fetch_all(_SQL["owner_dependencies"], goal.owner_id):
        waits[int(row["goal_id"])].append(int(row["blocked_by"]))
    waits[goal.id].append(blocked_by)

    def below(node: int) -> list[int]:
        found, stack = [], [node]
        while stack:
            found.append(current := stack.pop())
            stack.extend(children[current])
        return found

    def line_up(node: int | None) -> list[int]:
        found = []
        while node is not None:
            found.append(node)
            node = parent.get(node)
        return found

    forbidden = set(below(goal.id)) | set(line_up(goal.id))
    seen: set[int] = set()
    lined: set[int] = set()  # goals whose dependencies are already followed
    waiting = [blocked_by]  # each visited goal brings its subgoals: a goal's whole subtree
    while waiting:
        node = waiting.pop()
        if node in seen:
            continue
        if node in forbidden:
            return True
        seen.add(node)
        waiting.extend(children[node])
        up: int | None = node
        while up is not None and up not in lined:
            lined.add(up)
            waiting.extend(waits[up])
            up = parent.get(up)
    return False


async def remove_dependency(queries: Queries, goal_id: int, blocked_by: int) -> None:
    """Goal `goal_id` no longer waits for `blocked_by`."""
    if await queries.fetch_one(_SQL["remove_dependency"], goal_id, blocked_by) is None:
        raise NotFoundError(f"goal {goal_id} does not wait for goal {blocked_by}")
    goal = await get_goal(queries, goal_id)
    await _tell(queries, goal_changed(goal, change="dependency_removed", blocked_by=blocked_by))
    await add_activity(queries, goal_id, "dependency_removed", blocked_by=blocked_by)


async def dependencies_of(queries: Queries, goal_id: int) -> list[GoalRecord]:
    """The goals `goal_id` waits for."""
    rows = await queries.fetch_all(_SQL["dependencies_of"], goal_id)
    return [GoalRecord.from_row(row) for row in rows]


async def activities(
    queries: Queries, goal_id: int, *, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """What was done about goal `goal_id`, oldest first, from after activity `after`."""
    rows = await queries.fetch_all(_SQL["activities_of"], goal_id, after, limit)
    return [dict(row) for row in rows]

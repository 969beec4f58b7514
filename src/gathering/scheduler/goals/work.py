"""What a goal does: `start_goal` launches real work (a background task of the goal's agent,
or a run of its pipeline) for the goal, or for each subgoal of a parent, in one transaction; a
goal blocked by a dependency not done yet waits. `settle_goals` (the scheduler's sweep) ends a
goal when its work ends, starts waiting goals once their dependencies are done, and ends a
parent once its subgoals have all ended. `decompose_goal` asks an agent for subgoals."""

from __future__ import annotations

import asyncio
import json
import time

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gathering.agents.agent import Agent
from gathering.agents.agent_store import PostgresAgentStore
from gathering.config import get_settings
from gathering.db.database import Database, Queries
from gathering.db.fields import Ref, Said
from gathering.db.named_queries import queries_of
from gathering.errors import (
    ConflictError,
    DatabaseError,
    DecompositionFailedError,
    GatheringError,
    ProviderTimeoutError,
    RateLimitedError,
)
from gathering.events import Event, EventBus
from gathering.llm import Message
from gathering.llm.base import DEFAULT_MAX_TOKENS
from gathering.pipelines.executor import Executor
from gathering.scheduler.goals.store import (
    ENDED,
    MAX_TEXT,
    GoalIn,
    GoalNode,
    GoalRecord,
    add_activity,
    add_dependency,
    create_goal,
    get_goal,
    goal_changed,
    goal_tree,
    lock_dependencies,
    try_lock_dependencies,
)
from gathering.scheduler.tasks.store import ENDED as TASK_ENDED
from gathering.scheduler.tasks.store import (
    TaskSpec,
    cancel_task,
    get_task,
    owned_id,
    start_task,
)
from gathering.usage import (
    current_attribution,
    estimated_input_tokens,
    model_call_entry,
    record_failed_call,
    reserve_model_call,
)
from gathering.usage import record as record_usage

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.scheduler.goals")
MAX_SUBGOALS = 20
MAX_ANSWER_CHARS = 200_000
DECOMPOSE_BRIEF = (
    "Split the goal the user gives into 2 to {most} subgoals that together reach it. Answer "
    "with a JSON array and nothing else. Each item: "
    '{{"title": "...", "description": "...", "success_criteria": "...", '
    '"depends_on": [numbers of earlier items, from 1, that must be done first]}}.'
)


async def start_goal(
    db: Database, bus: EventBus | None, goal_id: int, *, agent: Ref | None = None
) -> GoalRecord:
    """Start an open goal: its own work (its agent's task, or its pipeline's run; `agent` for
    the goals that name neither, kept as theirs), or, for a parent, each open subgoal's, all
    in one transaction. A goal that waits for another not done yet waits (a parent's
    subgoals with it). `ConflictError` naming every goal nobody would work on."""
    bus = bus if bus is not None else EventBus(db)
    async with db.transaction() as tx:
        await lock_dependencies(tx, (await get_goal(tx, goal_id)).owner_id)  # none added now
        tree = await _locked_tree(tx, goal_id)
        root = tree.goal
        if root.status != "open":
            raise ConflictError(
                f"goal {goal_id} is {root.status}: only an open goal is started",
                details={"status": root.status},
            )
        fallback = None
        if agent is not None:
            fallback = await owned_id(tx, "agent_of_owner", root.owner_id, agent, "agent")
        idle = [n.goal for n in _leaves(tree) if n.goal.agent_id is None and not n.goal.pipeline_id]
        if idle and fallback is None:
            raise ConflictError(
                f"nobody would work on goal(s) {', '.join(str(g.id) for g in idle)}: give each "
                "an agent or a pipeline, or start with an agent",
                hint='PATCH /goals/{id} with {"agent": ...}, or `gathering goals start ID '
                "--agent NAME`",
                details={"goal_ids": [g.id for g in idle]},
            )
        for goal in idle:  # the start's agent takes them on, for good
            await tx.fetch_one(_SQL["assign_agent"], goal.id, fallback)
            await add_activity(tx, goal.id, "agent_assigned", agent_id=fallback)
        events: list[Event] = []
        await _start(db, bus, tx, await goal_tree(tx, goal_id), events)
        await bus.publish_many(events, tx=tx)
        return await get_goal(tx, goal_id)


async def _locked_tree(tx: Queries, goal_id: int) -> GoalNode:
    """Goal `goal_id`'s tree, every goal of it locked (in id order), as read under the locks
    (a subgoal added before its parent was locked is read, then locked in turn)."""
    locked: set[int] = set()
    while True:
        tree = await goal_tree(tx, goal_id)
        new = sorted({node.goal.id for node in _walk(tree)} - locked)
        if not new:
            return tree
        await tx.fetch_all(_SQL["lock_goals"], new)
        locked.update(new)


def _leaves(node: GoalNode) -> list[GoalNode]:
    """The open goals of `node`'s tree that would do work themselves."""
    if node.goal.status != "open":
        return []
    if not node.children:
        return [node]
    return [leaf for child in node.children for leaf in _leaves(child)]


async def _start(
    db: Database, bus: EventBus, tx: Queries, node: GoalNode, events: list[Event]
) -> None:
    """Start `node` (open, or waiting with its dependencies now done): wait, launch its work,
    or start its subgoals."""
    goal = node.goal
    if goal.status not in ("open", "waiting"):
        return
    blocked = [g.id for g in await _blockers(tx, goal.id)]
    if blocked:
        if goal.status == "open":
            row = await tx.fetch_one(_SQL["set_goal_status"], goal.id, "waiting")
            assert row is not None
            await add_activity(tx, goal.id, "waiting", blocked_by=blocked)
            events.append(goal_changed(GoalRecord.from_row(row), blocked_by=blocked))
        return
    if not node.children:
        await _launch(db, bus, tx, goal, events)
        return
    row = await tx.fetch_one(_SQL["set_goal_status"], goal.id, "active")
    assert row is not None
    await add_activity(tx, goal.id, "started", subgoals=len(node.children))
    events.append(goal_changed(GoalRecord.from_row(row)))
    for child in node.children:
        await _start(db, bus, tx, child, events)


async def _blockers(tx: Queries, goal_id: int) -> list[GoalRecord]:
    """The goals not done yet that `goal_id` waits for, itself or through a goal above it
    (a subgoal starts only once every goal above it is unblocked)."""
    rows = await tx.fetch_all(_SQL["blockers_in_line"], goal_id)
    return [GoalRecord.from_row(row) for row in rows]


async def _launch(
    db: Database,
    bus: EventBus,
    tx: Queries,
    goal: GoalRecord,
    events: list[Event],
) -> None:
    """Start the work of `goal`: a task of its agent, else a run of its pipeline;
    `ConflictError` when it has neither (any more)."""
    task_id = run_id = None
    if goal.agent_id is not None:
        spec = TaskSpec(agent=goal.agent_id, goal=await _brief(tx, goal))
        task = await start_task(db, bus, goal.owner_id, spec)
        task_id = task.id
        await add_activity(tx, goal.id, "task_started", task_id=task.id, agent_id=goal.agent_id)
    elif goal.pipeline_id is not None:
        version = await tx.fetch_val(_SQL["pipeline_version"], goal.pipeline_id)
        goal_input = {
            "goal": {
                "id": goal.id,
                "title": goal.title,
                "description": goal.description,
                "success_criteria": goal.success_criteria,
            }
        }
        run = await Executor(db, bus).start_run(
            goal.pipeline_id, version, goal.owner_id, goal_input, trigger="goal"
        )
        run_id = run.id
        await add_activity(tx, goal.id, "pipeline_started", pipeline_run_id=run.id)
    else:
        raise ConflictError(
            f"goal {goal.id} has no agent and no pipeline (any more): nobody works on it",
            hint="give it an agent or a pipeline and start it again",
        )
    row = await tx.fetch_one(_SQL["goal_launched"], goal.id, task_id, run_id)
    if row is None:
        raise ConflictError(f"goal {goal.id} was started meanwhile")
    events.append(goal_changed(GoalRecord.from_row(row), task_id=task_id, pipeline_run_id=run_id))


async def _brief(tx: Queries, goal: GoalRecord) -> str:
    """The goal text of a task working on `goal`: the goal, its criteria, what it serves."""
    parts = [goal.title]
    if goal.description:
        parts.append(goal.description)
    if goal.success_criteria:
        parts.append(f"Success criteria: {goal.success_criteria}")
    above = [row["title"] for row in await tx.fetch_all(_SQL["ancestors"], goal.id)]
    if above:
        parts.append("This is part of: " + " ← ".join(above))
    return "\n\n".join(parts)[: MAX_TEXT * 2]


async def settle_goals(db: Database, bus: EventBus | None, limit: int = 100) -> int:
    """Move started goals on: end those whose work ended (or is gone), start waiting ones
    whose dependencies are done, end parents whose subgoals have all ended; how many were
    looked at. A goal that cannot be moved on (its work cannot start) fails, alone."""
    bus = bus if bus is not None else EventBus(db)
    rows = await db.fetch_all(_SQL["goals_to_settle"], limit)
    for row in rows:
        try:
            async with db.transaction() as tx:
                # No dependency added meanwhile; a goal whose owner is busy changing theirs,
                # or that a start or cancel holds, waits for the next sweep (nobody waits).
                if not await try_lock_dependencies(tx, int(row["owner_id"])):
                    continue
                locked = await tx.fetch_one(_SQL["lock_goal_if_free"], row["id"])
                if locked is None:
                    continue
                events: list[Event] = []
                await _settle(db, bus, tx, GoalRecord.from_row(locked), events)
                await bus.publish_many(events, tx=tx)
        except RateLimitedError as exc:  # the owner runs as much work as allowed
            log.info("a goal waits for room to start", goal_id=row["id"], error=exc.message)
        except DatabaseError:
            raise  # the database's trouble, not the goal's: the next sweep tries again
        except GatheringError as exc:
            await _fail_goal(db, bus, int(row["id"]), exc)
        except Exception as exc:  # a fault of ours: that goal fails, the others go on
            log.error("a goal could not be settled", goal_id=row["id"], exc_info=exc)
            failure = GatheringError(f"goal {row['id']} could not go on: an internal error")
            await _fail_goal(db, bus, int(row["id"]), failure)
    return len(rows)


async def _fail_goal(db: Database, bus: EventBus, goal_id: int, exc: GatheringError) -> None:
    log.warning("a goal could not go on", goal_id=goal_id, error=exc.message)
    async with db.transaction() as tx:
        row = await tx.fetch_one(_SQL["fail_started_goal"], goal_id)
        if row is None:
            return  # deleted, ended or cancelled meanwhile
        await add_activity(tx, goal_id, "failed", error={"code": exc.code, "message": exc.message})
        await bus.publish_many([goal_changed(GoalRecord.from_row(row))], tx=tx)


async def _settle(
    db: Database, bus: EventBus, tx: Queries, goal: GoalRecord, events: list[Event]
) -> None:
    if goal.status in ("open", "waiting"):  # its subgoals locked: a start of one waits
        await _start(db, bus, tx, await _locked_tree(tx, goal.id), events)
        return
    if goal.status != "active":
        return
    if goal.task_id is not None:
        task = await get_task(tx, goal.task_id)
        if task.status not in TASK_ENDED:
            return
        to = "done" if task.status == "succeeded" else "failed"
        detail = {"result": (task.result or "")[:2000]} if to == "done" else {"error": task.error}
        await add_activity(tx, goal.id, f"task_{task.status}", task_id=task.id, **detail)
    elif goal.pipeline_run_id is not None:
        status = await tx.fetch_val(_SQL["pipeline_run_status"], goal.pipeline_run_id)
        if status == "running":
            return
        to = "done" if status == "succeeded" else "failed"
        await add_activity(
            tx, goal.id, f"pipeline_{status or 'deleted'}", pipeline_run_id=goal.pipeline_run_id
        )
    else:
        ended = [child.goal.status for child in (await goal_tree(tx, goal.id)).children]
        if any(status not in ENDED for status in ended):
            return
        if ended:
            if "failed" in ended:
                to = "failed"
            else:  # done once any subgoal is; cancelled when every one was
                to = "done" if "done" in ended else "cancelled"
            await add_activity(tx, goal.id, "subgoals_ended", statuses=ended)
        else:  # its task, run or subgoals were deleted
            to = "failed"
            await add_activity(tx, goal.id, "work_gone")
    row = await tx.fetch_one(_SQL["set_goal_status"], goal.id, to)
    assert row is not None
    events.append(goal_changed(GoalRecord.from_row(row)))


async def cancel_goal(db: Database, bus: EventBus | None, goal_id: int) -> GoalRecord:
    """End a goal that has not ended, and every subgoal of it that has not, as cancelled:
    their running tasks and pipeline runs are stopped."""
    bus = bus if bus is not None else EventBus(db)
    async with db.transaction() as tx:
        tree = await _locked_tree(tx, goal_id)
        if tree.goal.status in ENDED:
            raise ConflictError(f"goal {goal_id} has ended ({tree.goal.status}): nothing to cancel")
        events: list[Event] = []
        for node in _walk(tree):
            goal = node.goal
            if goal.status in ENDED:
                continue
            if goal.task_id is not None:
                if (await get_task(tx, goal.task_id)).status not in TASK_ENDED:
                    await cancel_task(db, bus, goal.task_id)
            if goal.pipeline_run_id is not None:
                status = await tx.fetch_val(_SQL["pipeline_run_status"], goal.pipeline_run_id)
                if status == "running":
                    reason = f"goal {goal.id} was cancelled"
                    await Executor(db, bus).cancel_run(goal.pipeline_run_id, reason=reason)
            row = await tx.fetch_one(_SQL["set_goal_status"], goal.id, "cancelled")
            assert row is not None
            await add_activity(tx, goal.id, "cancelled", by_goal=goal_id)
            events.append(goal_changed(GoalRecord.from_row(row)))
        await bus.publish_many(events, tx=tx)
        return await get_goal(tx, goal_id)


def _walk(node: GoalNode) -> list[GoalNode]:
    """`node` and every node below it, parents first."""
    return [node, *(below for child in node.children for below in _walk(child))]


class _Subgoal(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: Said = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=MAX_TEXT)
    success_criteria: str = Field(default="", max_length=MAX_TEXT)
    depends_on: list[int] = Field(default_factory=list, max_length=MAX_SUBGOALS)


async def decompose_goal(
    db: Database, goal_id: int, *, agent: Ref | None = None
) -> list[GoalRecord]:
    """Ask an agent (`agent`, else the goal's) to split goal `goal_id` into subgoals, and
    store them with the dependencies it gave (a person may edit them after). Refused when the
    goal has subgoals already or has been started."""
    goal = await get_goal(db, goal_id)
    if goal.status != "open":
        raise ConflictError(f"goal {goal_id} is {goal.status}: only an open goal is decomposed")
    tree = await goal_tree(db, goal_id)
    if tree.children:
        raise ConflictError(
            f"goal {goal_id} has {len(tree.children)} subgoal(s) already",
            hint="delete them first, or edit them by hand",
        )
    reference = agent if agent is not None else goal.agent_id
    if reference is None:
        raise ConflictError(
            f"goal {goal_id} has no agent: name one to decompose it",
            hint='POST /goals/{id}/decompose with {"agent": NAME}',
        )
    agent_id = await owned_id(db, "agent_of_owner", goal.owner_id, reference, "agent")
    store = PostgresAgentStore(db)
    worker = Agent.from_record(await store.load_agent(agent_id, owner_id=goal.owner_id))
    text = "\n\n".join(
        part
        for part in (
            goal.title,
            goal.description,
            goal.success_criteria and f"Success criteria: {goal.success_criteria}",
        )
        if part
    )
    messages = [Message.system(DECOMPOSE_BRIEF.format(most=MAX_SUBGOALS)), Message.user(text)]
    provider = await worker.model_provider(db)
    seconds = get_settings().model_call_timeout
    # Like every model call: reserved on its budgets first, then written to the usage ledger.
    who = current_attribution().merged(user_id=goal.owner_id, agent_id=worker.id)
    model = provider.model or worker.model
    max_tokens = worker.options.get("max_tokens")
    estimate = estimated_input_tokens("", messages)
    reservation = await reserve_model_call(
        db,
        who,
        provider.name,
        model,
        estimate,
        max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS,
        seconds,
    )
    started = time.monotonic()
    try:
        try:
            async with asyncio.timeout(seconds):
                completion = await provider.generate(messages, None, **worker.options)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"the agent did not answer within {seconds:g}s",
                hint="try again, or raise GATHERING_MODEL_CALL_TIMEOUT",
            ) from None
    except GatheringError as exc:
        spent = round((time.monotonic() - started) * 1000)
        await record_failed_call(db, who, provider.name, model, exc, spent, reservation)
        raise
    charge = await model_call_entry(
        db, who, completion, provider.name, model, reservation, estimated_input=estimate
    )
    await record_usage(db, charge)
    subgoals = _parsed(completion.text)
    async with db.transaction() as tx:
        await lock_dependencies(tx, goal.owner_id)  # before any goal: add_dependency's order
        locked = await tx.fetch_one(_SQL["lock_goal"], goal_id)
        if locked is None or locked["status"] != "open" or (await goal_tree(tx, goal_id)).children:
            raise ConflictError(f"goal {goal_id} changed while it was being decomposed")
        made: list[GoalRecord] = []
        for item in subgoals:
            made.append(
                await create_goal(
                    tx,
                    goal.owner_id,
                    GoalIn(
                        parent_id=goal_id,
                        title=item.title,
                        description=item.description,
                        success_criteria=item.success_criteria,
                        agent=goal.agent_id,
                        pipeline=None,
                    ),
                )
            )
        for item, child in zip(subgoals, made, strict=True):
            for number in item.depends_on:
                await add_dependency(tx, child, made[number - 1])
        await add_activity(
            tx, goal_id, "decomposed", agent_id=worker.id, subgoals=[g.id for g in made]
        )
    return made


def _parsed(text: str) -> list[_Subgoal]:
    """The subgoals in the model's answer: a JSON array of objects, each depending only on
    earlier ones; `DecompositionFailedError` saying what is wrong."""
    start, end = text.find("["), text.rfind("]")
    try:
        if start < 0 or end < start:
            raise ValueError("no JSON array in it")
        if end - start > MAX_ANSWER_CHARS:
            raise ValueError(f"longer than {MAX_ANSWER_CHARS} characters")
        items = json.loads(text[start : end + 1])
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_SUBGOALS:
            raise ValueError(f"not a list of 1 to {MAX_SUBGOALS} subgoals")
        subgoals = [_Subgoal.model_validate(item) for item in items]
    except RecursionError:
        raise DecompositionFailedError(
            "the agent's answer is nested too deeply to be a list of subgoals",
            hint="try again, or add subgoals by hand",
        ) from None
    except (ValueError, ValidationError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise DecompositionFailedError(
            f"the agent's answer is not a list of subgoals ({reason})",
            hint="try again, use a stronger model, or add subgoals by hand",
            details={"answer": text[:500]},
        ) from None
    for number, item in enumerate(subgoals, start=1):
        if any(not 1 <= other < number for other in item.depends_on):
            raise DecompositionFailedError(
                f"subgoal {number} depends on a subgoal that does not come before it",
                hint="try again, or add subgoals by hand",
            )
    return subgoals

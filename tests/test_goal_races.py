"""Goals under the interleavings and stuck states a hostile review forced (before the fixes
they made a dependency cycle, deadlocked a parent and its subgoal, broke the scheduler's sweep
for everyone, left goals active forever, or launched a goal's work twice or after a cancel):
each now ends as the guarantees say."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pipeline_runtime import LAB, linear, tool_node
from task_runtime import HOLD_WRITE, Lab, call, task_lab
from task_runtime import add_goal as add
from task_runtime import goal_settled as settled

from gathering.agents import Agent, PostgresAgentStore
from gathering.config import get_settings
from gathering.db.database import Queries
from gathering.errors import ConflictError, DecompositionFailedError, ProviderTimeoutError
from gathering.pipelines import create_pipeline
from gathering.scheduler.goals import (
    GoalChange,
    GoalIn,
    GoalNode,
    activities,
    add_dependency,
    cancel_goal,
    change_goal,
    create_goal,
    decompose_goal,
    delete_goal,
    get_goal,
    goal_tree,
    settle_goals,
    start_goal,
)
from gathering.scheduler.goals import work as goals_work
from gathering.scheduler.tasks import get_task

pytestmark = pytest.mark.integration
lab = task_lab  # the fixture, by the name these tests use


async def kinds(lab: Lab, goal_id: int) -> list[str]:
    return [row["kind"] for row in await activities(lab.db, goal_id)]


async def last_activity(lab: Lab, goal_id: int) -> dict[str, Any]:
    return (await activities(lab.db, goal_id))[-1]


async def task_count(lab: Lab, title: str | None = None) -> int:
    count: int = await lab.db.fetch_val(
        "SELECT count(*) FROM scheduler.tasks WHERE $1::text IS NULL OR goal LIKE $1 || '%'",
        title,
    )
    return count


async def dependency_pairs(lab: Lab) -> set[tuple[int, int]]:
    rows = await lab.db.fetch_all("SELECT goal_id, blocked_by FROM scheduler.goal_dependencies")
    return {(row["goal_id"], row["blocked_by"]) for row in rows}


# --- dependencies ------------------------------------------------------------------------------


async def test_two_dependencies_added_at_once_never_close_a_cycle(lab: Lab) -> None:
    """A waits for B and B waits for A, each in its own open transaction at once: the
    second waits for the first to commit, then sees its row and is refused."""
    a = await add(lab, "a")
    b = await add(lab, "b")

    async def b_waits_for_a() -> None:
        async with lab.db.transaction() as tx2:
            await add_dependency(tx2, b, a)

    async def blocked_on_the_owners_lock() -> bool:
        waiting: int = await lab.db.fetch_val(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        return waiting > 0

    other: asyncio.Task[None] | None = None
    async with lab.db.transaction() as tx1:
        await add_dependency(tx1, a, b)
        other = asyncio.create_task(b_waits_for_a())  # its own connection
        deadline = time.monotonic() + 10
        while not other.done() and not await blocked_on_the_owners_lock():
            assert time.monotonic() < deadline, "the second change neither ended nor waited"
            await asyncio.sleep(0.05)
        assert not other.done(), "the second change went through while the first was open"
    with pytest.raises(ConflictError, match="cycle"):
        await asyncio.wait_for(other, 10)
    assert await dependency_pairs(lab) == {(a.id, b.id)}


async def test_a_goal_never_waits_for_one_above_or_below_it(lab: Lab) -> None:
    """A subgoal waiting for its parent (or the other way round) would wait forever: the
    parent ends with its subgoals."""
    root = await add(lab, "root")
    child = await add(lab, "child", parent_id=root.id)
    grandchild = await add(lab, "grandchild", parent_id=child.id, agent="Tasker")
    sibling = await add(lab, "sibling", parent_id=root.id, agent="Tasker")
    for goal, other in [
        (child, root),
        (root, child),
        (grandchild, root),
        (root, grandchild),
        (grandchild, child),
    ]:
        with pytest.raises(ConflictError, match="one line of subgoals"):
            async with lab.db.transaction() as tx:
                await add_dependency(tx, goal, other)
    assert await dependency_pairs(lab) == set()
    async with lab.db.transaction() as tx:
        await add_dependency(tx, sibling, child)  # not in one line: taken
    assert await dependency_pairs(lab) == {(sibling.id, child.id)}
    lab.stub.add_reply("grandchild done", "sibling done")
    await start_goal(lab.db, lab.bus, root.id)
    assert (await settled(lab, root.id, "done", "failed")).status == "done"
    assert await task_count(lab) == 2


async def test_a_parent_waits_for_its_own_dependency_before_its_subgoals_start(lab: Lab) -> None:
    q = await add(lab, "q", agent="Tasker")
    p = await add(lab, "p")
    child = await add(lab, "p child", parent_id=p.id, agent="Tasker")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, p, q)
    started = await start_goal(lab.db, lab.bus, p.id)
    assert (started.status, started.task_id) == ("waiting", None)
    assert (await get_goal(lab.db, child.id)).status == "open"  # nothing of it started
    for _ in range(3):
        await lab.scheduler.tick()
    assert (await get_goal(lab.db, p.id)).status == "waiting"
    assert await task_count(lab) == 0
    assert (await last_activity(lab, p.id))["body"] == {"blocked_by": [q.id]}

    lab.stub.add_reply("q done")
    await start_goal(lab.db, lab.bus, q.id)
    await settled(lab, q.id, "done")
    lab.stub.add_reply("child done")
    assert (await settled(lab, p.id, "done", "failed")).status == "done"
    assert (await get_goal(lab.db, child.id)).status == "done"
    assert await task_count(lab, "p child") == 1
    assert await kinds(lab, p.id) == [
        "created",
        "dependency_added",
        "waiting",
        "started",
        "subgoals_ended",
    ]


# --- a goal that cannot go on fails alone ---------------------------------------------------------


async def other_agent(lab: Lab) -> int:
    store = PostgresAgentStore(lab.db)
    agent = Agent("Other", "ollama", "llama3.2", store=store, owner_id=lab.owner_id)
    await agent.save()
    assert agent.id is not None
    return agent.id


async def test_a_waiting_goal_whose_agent_was_deleted_fails_alone(lab: Lab) -> None:
    """Its agent deleted (goals.agent_id is set NULL), a waiting goal has nobody to work on it
    once its dependency is done: it fails, and the same sweep moves the other goals on."""
    await other_agent(lab)
    first = await add(lab, "first", agent="Tasker")
    second = await add(lab, "second", agent="Tasker")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, second, first)
    await start_goal(lab.db, lab.bus, second.id)
    assert (await get_goal(lab.db, second.id)).status == "waiting"
    lab.stub.add_reply("unrelated done")
    unrelated = await start_goal(lab.db, lab.bus, (await add(lab, "unrelated", agent="Other")).id)
    assert unrelated.task_id is not None
    await lab.wait(unrelated.task_id)
    # `first` is done (as if its task succeeded), and the agent of `second` is deleted.
    await lab.db.execute("UPDATE scheduler.goals SET status = 'done' WHERE id = $1", first.id)
    await PostgresAgentStore(lab.db).delete_agent(lab.agent_id)
    await settle_goals(lab.db, lab.bus)  # does not raise
    failed = await get_goal(lab.db, second.id)
    assert (failed.status, failed.task_id) == ("failed", None)
    assert failed.finished_at is not None
    ended = await last_activity(lab, second.id)
    assert ended["kind"] == "failed"
    assert ended["body"]["error"]["code"] == "conflict"
    assert "no agent and no pipeline" in ended["body"]["error"]["message"]
    assert (await get_goal(lab.db, unrelated.id)).status == "done"
    await lab.scheduler.tick()  # and every later round goes through
    assert (await get_goal(lab.db, second.id)).status == "failed"


async def test_clearing_a_waiting_goals_agent_does_not_stop_the_sweep(lab: Lab) -> None:
    """PATCH {"agent": null} on a waiting goal: once its dependency is done it fails; other
    goals (of any owner) behind it in the sweep still move on."""
    first = await add(lab, "first", agent="Tasker")
    second = await add(lab, "second", agent="Tasker")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, second, first)
    await start_goal(lab.db, lab.bus, second.id)
    async with lab.db.transaction() as tx:
        await change_goal(tx, await get_goal(tx, second.id), GoalChange(agent=None))
    await lab.db.execute("UPDATE scheduler.goals SET status = 'done' WHERE id = $1", first.id)
    lab.stub.add_reply("other done")
    other = await add(lab, "unrelated", agent="Tasker")
    started = await start_goal(lab.db, lab.bus, other.id)
    assert started.task_id is not None
    await lab.wait(started.task_id)
    for _ in range(3):
        await lab.scheduler.tick()  # never raises
    assert (await get_goal(lab.db, other.id)).status == "done"
    assert (await get_goal(lab.db, second.id)).status == "failed"
    assert (await last_activity(lab, second.id))["kind"] == "failed"


# --- work that was deleted ------------------------------------------------------------------------


async def test_a_goal_whose_task_was_deleted_fails_and_its_parent_with_it(lab: Lab) -> None:
    """Deleting the agent deletes its tasks (ON DELETE CASCADE) and sets the goal's task_id
    NULL: the goal's work is gone, so it fails, and its parent ends with it."""
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="del"))
    root = await add(lab, "root")
    leaf = await add(lab, "leaf", parent_id=root.id, agent="Tasker")
    await start_goal(lab.db, lab.bus, root.id)
    await asyncio.wait_for(LAB.started_event("del").wait(), 10)
    await PostgresAgentStore(lab.db).delete_agent(lab.agent_id)
    assert (await get_goal(lab.db, leaf.id)).task_id is None
    gone = await settled(lab, leaf.id, "failed", "done")
    assert gone.status == "failed"
    assert (await last_activity(lab, leaf.id))["kind"] == "work_gone"
    ended = await settled(lab, root.id, "failed", "done")
    assert ended.status == "failed"
    last = await last_activity(lab, root.id)
    assert (last["kind"], last["body"]) == ("subgoals_ended", {"statuses": ["failed"]})


async def test_a_parent_whose_subgoals_were_deleted_fails(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="sub"))
    root = await add(lab, "root")
    leaf = await add(lab, "leaf", parent_id=root.id, agent="Tasker")
    await start_goal(lab.db, lab.bus, root.id)
    await asyncio.wait_for(LAB.started_event("sub").wait(), 10)
    await delete_goal(lab.db, leaf.id)
    assert (await settled(lab, root.id, "failed", "done")).status == "failed"
    assert (await last_activity(lab, root.id))["kind"] == "work_gone"


# --- start and cancel lock the subtree ------------------------------------------------------------


async def test_a_cancel_racing_a_start_stops_the_work_the_start_launched(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start commits right after the cancel has read the tree (before it locks it): the
    cancel sees the launched task under its lock and stops it."""
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="race"))
    root = await add(lab, "root")
    leaf = await add(lab, "leaf", parent_id=root.id, agent="Tasker")
    real_tree = goal_tree
    calls = 0

    async def tree_then_start(queries: Queries, goal_id: int) -> GoalNode:
        nonlocal calls
        calls += 1
        node = await real_tree(queries, goal_id)
        if calls == 1:  # the cancel's first read: a start commits right after it
            await asyncio.wait_for(asyncio.create_task(start_goal(lab.db, lab.bus, root.id)), 10)
        return node

    monkeypatch.setattr(goals_work, "goal_tree", tree_then_start)
    cancelled = await cancel_goal(lab.db, lab.bus, root.id)
    monkeypatch.undo()
    assert cancelled.status == "cancelled"
    leaf_now = await get_goal(lab.db, leaf.id)
    assert leaf_now.status == "cancelled" and leaf_now.task_id is not None
    assert (await get_task(lab.db, leaf_now.task_id)).status == "cancelled"
    await asyncio.sleep(1.0)  # its job was stopped: it stays cancelled
    assert (await get_task(lab.db, leaf_now.task_id)).status == "cancelled"
    assert await task_count(lab) == 1


async def test_a_start_racing_a_cancel_launches_nothing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel commits right after the start has read the tree (before it locks it): the
    start sees the cancelled goal under its lock and is refused."""
    root = await add(lab, "root")
    leaf = await add(lab, "leaf", parent_id=root.id, agent="Tasker")
    real_tree = goal_tree
    calls = 0

    async def tree_then_cancel(queries: Queries, goal_id: int) -> GoalNode:
        nonlocal calls
        calls += 1
        node = await real_tree(queries, goal_id)
        if calls == 1:  # the start's first read: a cancel commits right after it
            await asyncio.wait_for(asyncio.create_task(cancel_goal(lab.db, lab.bus, root.id)), 10)
        return node

    monkeypatch.setattr(goals_work, "goal_tree", tree_then_cancel)
    with pytest.raises(ConflictError, match="is cancelled"):
        await start_goal(lab.db, lab.bus, root.id)
    monkeypatch.undo()
    assert (await get_goal(lab.db, root.id)).status == "cancelled"
    assert (await get_goal(lab.db, leaf.id)).status == "cancelled"
    assert await task_count(lab) == 0


async def test_starting_a_parent_and_its_subgoal_at_once_launches_the_subgoal_once(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start holds the owner's start lock while it reads and locks the tree; the
    other waits for it, then finds the subgoal started: one goal, one task."""
    lab.stub.add_reply("one", "two")
    root = await add(lab, "root")
    leaf = await add(lab, "leaf", parent_id=root.id, agent="Tasker")
    real_tree = goal_tree
    first_read = asyncio.Event()

    async def tree_then_pause(queries: Queries, goal_id: int) -> GoalNode:
        node = await real_tree(queries, goal_id)
        if not first_read.is_set():
            first_read.set()
            await asyncio.sleep(0.5)  # the other start comes now
        return node

    monkeypatch.setattr(goals_work, "goal_tree", tree_then_pause)
    first = asyncio.create_task(start_goal(lab.db, lab.bus, root.id))
    await asyncio.wait_for(first_read.wait(), 10)
    second = asyncio.create_task(start_goal(lab.db, lab.bus, leaf.id))
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    monkeypatch.undo()
    assert not isinstance(outcomes[0], BaseException), outcomes[0]
    assert isinstance(outcomes[1], ConflictError) and "is active" in str(outcomes[1])
    assert await task_count(lab, "leaf") == 1  # one goal, one task
    leaf_now = await get_goal(lab.db, leaf.id)
    assert leaf_now.status == "active" and leaf_now.task_id is not None
    assert (await get_goal(lab.db, root.id)).status == "active"
    assert (await kinds(lab, leaf.id)).count("task_started") == 1


async def test_a_second_launch_of_a_goal_is_refused_and_rolled_back(lab: Lab) -> None:
    """A launch from a stale read of a goal that has started meanwhile changes nothing: the
    task it made goes with its transaction."""
    lab.stub.add_reply("ran once")
    goal = await add(lab, "solo", agent="Tasker")
    stale = await get_goal(lab.db, goal.id)
    started = await start_goal(lab.db, lab.bus, goal.id)
    assert started.task_id is not None
    with pytest.raises(ConflictError, match="started meanwhile"):
        async with lab.db.transaction() as tx:
            await goals_work._launch(lab.db, lab.bus, tx, stale, [])
    assert await task_count(lab) == 1
    now = await get_goal(lab.db, goal.id)
    assert (now.status, now.task_id) == ("active", started.task_id)
    assert (await kinds(lab, goal.id)).count("task_started") == 1
    assert (await settled(lab, goal.id, "done", "failed")).status == "done"


# --- subgoals and decomposition -------------------------------------------------------------------


async def test_no_subgoal_under_a_goal_that_ended_or_works_on_its_own(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="own"))
    working = await add(lab, "working", agent="Tasker")
    started = await start_goal(lab.db, lab.bus, working.id)
    assert started.task_id is not None
    with pytest.raises(ConflictError, match="works on its own"):
        await add(lab, "under a task", parent_id=working.id)
    ended = await add(lab, "ended")
    await lab.db.execute("UPDATE scheduler.goals SET status = 'done' WHERE id = $1", ended.id)
    with pytest.raises(ConflictError, match="is done"):
        await add(lab, "under an ended goal", parent_id=ended.id)
    assert (await goal_tree(lab.db, working.id)).children == []
    assert (await goal_tree(lab.db, ended.id)).children == []
    open_parent = await add(lab, "open parent")
    assert (await add(lab, "fine", parent_id=open_parent.id)).parent_id == open_parent.id


@pytest.mark.parametrize("depth", [50_000, 200_000], ids=["deep", "deep-and-huge"])
async def test_decompose_refuses_a_deeply_nested_answer_cleanly(lab: Lab, depth: int) -> None:
    goal = await add(lab, "g", agent="Tasker")
    lab.stub.add_reply("[" * depth + "]" * depth)
    with pytest.raises(DecompositionFailedError) as refused:
        await decompose_goal(lab.db, goal.id)
    assert refused.value.http_status == 502
    assert (await goal_tree(lab.db, goal.id)).children == []
    assert (await get_goal(lab.db, goal.id)).status == "open"


async def test_a_subgoal_added_while_its_parent_is_started_is_never_left_behind(
    lab: Lab,
) -> None:
    """A subgoal's creation locks its parent: a start of that parent waits for it, then
    starts the parent as a parent (its new subgoal works), instead of launching the parent's
    own task while an open subgoal appears under it."""
    lab.stub.add_reply("child done")
    leaf = await add(lab, "leaf", agent="Tasker")
    async with lab.db.transaction() as tx:
        child = await create_goal(
            tx, lab.owner_id, GoalIn(title="late subgoal", parent_id=leaf.id, agent="Tasker")
        )
        starting = asyncio.create_task(start_goal(lab.db, lab.bus, leaf.id))
        await asyncio.sleep(0.5)
        assert not starting.done()  # waits for the subgoal's transaction
    started = await asyncio.wait_for(starting, 10)
    assert started.status == "active" and started.task_id is None
    assert (await get_goal(lab.db, child.id)).task_id is not None
    assert (await settled(lab, leaf.id, "done", "failed")).status == "done"


async def test_a_subgoal_started_by_hand_while_the_sweep_starts_its_parent_fails_nothing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting parent is unblocked; while the sweep starts it (its tree read), a person
    starts one of its subgoals. The person's start waits for the sweep's, then is refused
    (the subgoal is active): the subgoal runs once, and the parent goes on."""
    lab.stub.add_reply("child done")
    q = await add(lab, "q", agent="Tasker")
    parent = await add(lab, "parent")
    child = await add(lab, "child", parent_id=parent.id, agent="Tasker")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, parent, q)
    assert (await start_goal(lab.db, lab.bus, parent.id)).status == "waiting"
    await lab.db.execute("UPDATE scheduler.goals SET status = 'done' WHERE id = $1", q.id)
    real_tree = goal_tree
    by_hand: list[asyncio.Task[Any]] = []

    async def tree_then_start_child(queries: Queries, goal_id: int) -> GoalNode:
        node = await real_tree(queries, goal_id)
        if goal_id == parent.id and not by_hand:  # the sweep read the parent's tree
            by_hand.append(asyncio.create_task(start_goal(lab.db, lab.bus, child.id)))
            await asyncio.sleep(0.5)  # the person's start is under way
        return node

    monkeypatch.setattr(goals_work, "goal_tree", tree_then_start_child)
    await settle_goals(lab.db, lab.bus)
    monkeypatch.undo()
    assert by_hand
    with pytest.raises(ConflictError, match="is active"):
        await asyncio.wait_for(by_hand[0], 10)
    assert await task_count(lab, "child") == 1
    assert (await get_goal(lab.db, child.id)).status in ("active", "done")
    parent_now = await get_goal(lab.db, parent.id)
    assert parent_now.status == "active", await activities(lab.db, parent.id)
    assert (await settled(lab, parent.id, "done", "failed")).status == "done"


@pytest.mark.parametrize(
    "shape",
    ["subgoal-waits-for-a-goal-behind-its-parent", "parent-waits-for-a-goal-behind-its-subgoal"],
)
async def test_a_dependency_closing_a_cycle_through_a_parent_is_refused(
    lab: Lab, shape: str
) -> None:
    """A parent ends with its subgoals, and its subgoals start only once it is unblocked:
    those are waits too. B waits for parent A, then A's subgoal A1 waiting for B (or Q
    waits for P's subgoal C, then P waiting for Q) closes a cycle no goal of which can ever
    move: the closing dependency must be refused as any other cycle."""
    parent = await add(lab, "parent")
    child = await add(lab, "child", parent_id=parent.id, agent="Tasker")
    other = await add(lab, "other", agent="Tasker")
    first, closing = (
        ((other, parent), (child, other))
        if shape.startswith("subgoal")
        else ((other, child), (parent, other))
    )
    async with lab.db.transaction() as tx:
        await add_dependency(tx, *first)
    with pytest.raises(ConflictError):
        async with lab.db.transaction() as tx:
            await add_dependency(tx, *closing)
    assert await dependency_pairs(lab) == {(first[0].id, first[1].id)}
    lab.stub.add_reply("one", "two")
    await start_goal(lab.db, lab.bus, parent.id)
    await start_goal(lab.db, lab.bus, other.id)
    assert (await settled(lab, parent.id, "done", "failed")).status == "done"
    assert (await settled(lab, other.id, "done", "failed")).status == "done"


async def test_a_subgoal_added_under_an_active_parent_starts_and_the_parent_ends(
    lab: Lab,
) -> None:
    lab.stub.add_reply("first done", "late done")
    parent = await add(lab, "parent")
    first = await add(lab, "first", parent_id=parent.id, agent="Tasker")
    assert (await start_goal(lab.db, lab.bus, parent.id)).status == "active"
    late = await add(lab, "late", parent_id=parent.id, agent="Tasker")
    assert (await settled(lab, late.id, "done", "failed")).status == "done"
    assert (await get_goal(lab.db, first.id)).status == "done"
    assert (await settled(lab, parent.id, "done", "failed")).status == "done"


async def test_a_subgoal_started_by_hand_waits_while_a_goal_above_it_is_blocked(
    lab: Lab,
) -> None:
    lab.stub.add_reply("blocker done", "child done")
    blocker = await add(lab, "blocker", agent="Tasker")
    parent = await add(lab, "parent")
    child = await add(lab, "child", parent_id=parent.id, agent="Tasker")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, parent, blocker)
    assert (await start_goal(lab.db, lab.bus, child.id)).status == "waiting"
    assert (await get_goal(lab.db, child.id)).task_id is None
    await start_goal(lab.db, lab.bus, blocker.id)
    assert (await settled(lab, child.id, "done", "failed")).status == "done"


async def test_a_slow_agent_asked_to_decompose_is_a_provider_timeout(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATHERING_MODEL_CALL_TIMEOUT", "1")
    get_settings.cache_clear()
    try:
        goal = await add(lab, "Plan", agent="Tasker")
        answer = {"model": "llama3.2", "message": {"role": "assistant", "content": "[]"}}
        lab.stub.add_json({**answer, "done": True}, delay=3)
        with pytest.raises(ProviderTimeoutError, match="did not answer within 1s"):
            await decompose_goal(lab.db, goal.id)
        assert (await goal_tree(lab.db, goal.id)).children == []
    finally:
        get_settings.cache_clear()


async def test_the_pipeline_run_cap_makes_a_goal_wait_instead_of_failing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATHERING_PIPELINE_MAX_RUNNING_RUNS", "1")
    get_settings.cache_clear()
    try:
        holder = await create_pipeline(
            lab.db,
            linear(tool_node("hold", "blocked", key="slot"), name="hold"),
            owner_id=lab.owner_id,
        )
        echo = await create_pipeline(
            lab.db,
            linear(tool_node("say", "echo", text="w"), name="echo"),
            owner_id=lab.owner_id,
        )
        busy = await add(lab, "busy", pipeline=holder.id)
        dep = await add(lab, "dep")
        waiter = await add(lab, "waiter", pipeline=echo.id)
        async with lab.db.transaction() as tx:
            await add_dependency(tx, waiter, dep)
        await start_goal(lab.db, lab.bus, busy.id)
        await asyncio.wait_for(LAB.started_event("slot").wait(), 15)
        assert (await start_goal(lab.db, lab.bus, waiter.id)).status == "waiting"
        await lab.db.execute("UPDATE scheduler.goals SET status = 'done' WHERE id = $1", dep.id)
        await lab.scheduler.tick()  # the owner runs as many pipeline runs as allowed
        assert (await get_goal(lab.db, waiter.id)).status == "waiting"
        LAB.gates.setdefault("slot", asyncio.Event()).set()
        await settled(lab, busy.id, "done")
        assert (await settled(lab, waiter.id, "done", "failed")).status == "done"
    finally:
        get_settings.cache_clear()

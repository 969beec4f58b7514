"""Goals on the real runtime: the tree and its rolled-up progress, dependencies that never
make a cycle, `start` launching a real background task (or pipeline run) per goal, goals
that wait for their dependencies and start once they are done, parents that end with their
subgoals, cancel that stops the work, and `decompose` through the LLM stub."""

from __future__ import annotations

import asyncio
import json

import pytest
from pipeline_runtime import LAB, TOOLS, linear, tool_node
from task_runtime import HOLD_WRITE, Lab, call, task_lab
from task_runtime import add_goal as add
from task_runtime import goal_settled as settled

from gathering.errors import (
    ConflictError,
    DecompositionFailedError,
    NotFoundError,
)
from gathering.pipelines import create_pipeline
from gathering.scheduler.goals import (
    GoalChange,
    GoalIn,
    activities,
    add_dependency,
    cancel_goal,
    change_goal,
    decompose_goal,
    delete_goal,
    get_goal,
    goal_tree,
    remove_dependency,
    settle_goals,
    start_goal,
)
from gathering.scheduler.tasks import cancel_task, get_task

pytestmark = pytest.mark.integration
lab = task_lab  # the fixture, by the name these tests use


async def test_progress_rolls_up_from_the_subgoals(lab: Lab) -> None:
    root = await add(lab, "ship")
    a = await add(lab, "a", parent_id=root.id)
    b = await add(lab, "b", parent_id=root.id)
    c = await add(lab, "c", parent_id=b.id)
    d = await add(lab, "d", parent_id=b.id)
    async with lab.db.transaction() as tx:
        await change_goal(tx, a, GoalChange(progress=0.5))
        await change_goal(tx, c, GoalChange(progress=1.0))
    tree = await goal_tree(lab.db, root.id)
    assert [n.goal.id for n in tree.children] == [a.id, b.id]
    assert [n.goal.id for n in tree.children[1].children] == [c.id, d.id]
    assert tree.children[1].progress == pytest.approx(0.5)  # c 1.0, d 0.0
    assert tree.progress == pytest.approx(0.5)  # a 0.5, b 0.5
    await lab.db.execute("UPDATE scheduler.goals SET status = 'cancelled' WHERE id = $1", d.id)
    assert (await goal_tree(lab.db, root.id)).progress == pytest.approx(0.75)
    kinds = [row["kind"] for row in await activities(lab.db, a.id)]
    assert kinds == ["created", "changed"]
    await delete_goal(lab.db, b.id)
    assert [n.goal.id for n in (await goal_tree(lab.db, root.id)).children] == [a.id]
    with pytest.raises(NotFoundError):
        await get_goal(lab.db, c.id)


async def test_dependencies_never_make_a_cycle(lab: Lab) -> None:
    a, b, c = [await add(lab, name) for name in "abc"]
    async with lab.db.transaction() as tx:
        await add_dependency(tx, b, a)
        await add_dependency(tx, c, b)
    for goal, other in ((a, c), (a, b), (a, a)):
        with pytest.raises(ConflictError, match="cycle"):
            async with lab.db.transaction() as tx:
                await add_dependency(tx, goal, other)
    await remove_dependency(lab.db, c.id, b.id)
    async with lab.db.transaction() as tx:
        await add_dependency(tx, a, c)  # no cycle any more
    with pytest.raises(NotFoundError):
        await remove_dependency(lab.db, c.id, b.id)


async def test_a_goal_needs_a_parent_of_its_owner_and_a_known_agent(lab: Lab) -> None:
    with pytest.raises(NotFoundError, match="no goal 999"):
        await add(lab, "x", parent_id=999)
    with pytest.raises(NotFoundError, match="no agent 'Nobody'"):
        await add(lab, "x", agent="Nobody")
    with pytest.raises(ValueError):
        GoalIn(title="   ")


async def test_starting_a_goal_launches_a_real_task_and_its_end_ends_the_goal(lab: Lab) -> None:
    lab.stub.add_reply("written")
    goal = await add(lab, "Write the summary", agent="Tasker", success_criteria="one paragraph")
    started = await start_goal(lab.db, lab.bus, goal.id)
    assert started.status == "active" and started.task_id is not None
    task = await get_task(lab.db, started.task_id)
    assert "Write the summary" in task.goal and "Success criteria: one paragraph" in task.goal
    done = await settled(lab, goal.id, "done", "failed")
    assert done.status == "done" and done.progress == 1
    kinds = [row["kind"] for row in await activities(lab.db, goal.id)]
    assert kinds == ["created", "task_started", "task_succeeded"]
    with pytest.raises(ConflictError, match="only an open goal"):
        await start_goal(lab.db, lab.bus, goal.id)


async def test_a_parent_starts_its_subgoals_in_dependency_order_and_ends_with_them(
    lab: Lab,
) -> None:
    await lab.enable(TOOLS[0])  # echo
    root = await add(lab, "release")
    build = await add(lab, "build", parent_id=root.id, agent="Tasker")
    publish = await add(lab, "publish", parent_id=root.id)
    async with lab.db.transaction() as tx:
        await add_dependency(tx, publish, build)
    # publish has no agent of its own: the start's agent works on it.
    lab.stub.add_reply(call("echo", text="built"), "build done")
    started = await start_goal(lab.db, lab.bus, root.id, agent="Tasker")
    assert started.status == "active" and started.task_id is None
    assert (await get_goal(lab.db, publish.id)).status == "waiting"
    assert (await get_goal(lab.db, build.id)).task_id is not None
    await settled(lab, build.id, "done")
    lab.stub.add_reply("published")
    launched = await settled(lab, publish.id, "active", "done")
    assert launched.task_id is not None
    await settled(lab, publish.id, "done")
    ended = await settled(lab, root.id, "done", "failed")
    assert ended.status == "done"
    assert (await goal_tree(lab.db, root.id)).progress == 1.0
    assert LAB.calls["built"] == 1
    kinds = [row["kind"] for row in await activities(lab.db, publish.id)]
    assert kinds == [
        "created",
        "dependency_added",
        "agent_assigned",
        "waiting",
        "task_started",
        "task_succeeded",
    ]


async def test_nobody_to_work_on_a_goal_is_refused_before_anything_starts(lab: Lab) -> None:
    root = await add(lab, "r")
    await add(lab, "with agent", parent_id=root.id, agent="Tasker")
    lonely = await add(lab, "lonely", parent_id=root.id)
    with pytest.raises(ConflictError, match=f"goal\\(s\\) {lonely.id}"):
        await start_goal(lab.db, lab.bus, root.id)
    tree = await goal_tree(lab.db, root.id)
    assert {n.goal.status for n in [tree, *tree.children]} == {"open"}
    assert await lab.db.fetch_val("SELECT count(*) FROM scheduler.tasks") == 0


async def test_a_task_that_does_not_succeed_fails_its_goal_and_its_parent(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    root = await add(lab, "r")
    leaf = await add(lab, "leaf", parent_id=root.id, agent="Tasker")
    lab.stub.add_reply(call("hold_write", key="f"))
    await start_goal(lab.db, lab.bus, root.id)
    await asyncio.wait_for(LAB.started_event("f").wait(), 10)
    task_id = (await get_goal(lab.db, leaf.id)).task_id
    assert task_id is not None
    await cancel_task(lab.db, lab.bus, task_id)  # a person stops the task itself
    assert (await settled(lab, leaf.id, "failed", "done")).status == "failed"
    assert (await settled(lab, root.id, "failed", "done")).status == "failed"
    kinds = [row["kind"] for row in await activities(lab.db, leaf.id)]
    assert kinds[-1] == "task_cancelled"


async def test_cancel_stops_the_work_of_every_subgoal(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    root = await add(lab, "r")
    leaf = await add(lab, "leaf", parent_id=root.id, agent="Tasker")
    lab.stub.add_reply(call("hold_write", key="g"))
    await start_goal(lab.db, lab.bus, root.id)
    await asyncio.wait_for(LAB.started_event("g").wait(), 10)
    cancelled = await cancel_goal(lab.db, lab.bus, root.id)
    assert cancelled.status == "cancelled"
    leaf_now = await get_goal(lab.db, leaf.id)
    assert leaf_now.status == "cancelled" and leaf_now.task_id is not None
    assert (await get_task(lab.db, leaf_now.task_id)).status == "cancelled"
    with pytest.raises(ConflictError):
        await cancel_goal(lab.db, lab.bus, root.id)


async def test_a_goal_with_a_pipeline_starts_a_run(lab: Lab) -> None:
    document = linear(tool_node("say", "echo", text="from the pipeline"), name="p")
    pipeline = await create_pipeline(lab.db, document, owner_id=lab.owner_id)
    goal = await add(lab, "run it", pipeline=pipeline.id)
    started = await start_goal(lab.db, lab.bus, goal.id)
    assert started.pipeline_run_id is not None and started.task_id is None
    assert (await settled(lab, goal.id, "done", "failed")).status == "done"
    assert LAB.calls["from the pipeline"] == 1


async def test_decompose_stores_the_agents_subgoals_with_their_dependencies(lab: Lab) -> None:
    goal = await add(lab, "Plan the launch", agent="Tasker")
    answer = [
        {"title": "Draft", "success_criteria": "a draft exists"},
        {"title": "Review", "depends_on": [1]},
        {"title": "Publish", "description": "on the site", "depends_on": [1, 2]},
    ]
    lab.stub.add_reply("Here you are:\n" + json.dumps(answer))
    made = await decompose_goal(lab.db, goal.id)
    assert [g.title for g in made] == ["Draft", "Review", "Publish"]
    assert all(g.parent_id == goal.id and g.agent_id == lab.agent_id for g in made)
    tree = await goal_tree(lab.db, goal.id)
    by_title = {n.goal.title: n for n in tree.children}
    assert by_title["Review"].blocked_by == [made[0].id]
    assert by_title["Publish"].blocked_by == [made[0].id, made[1].id]
    asked = lab.stub.last.json
    assert "Plan the launch" in json.dumps(asked["messages"])
    with pytest.raises(ConflictError, match="subgoal"):
        await decompose_goal(lab.db, goal.id)


@pytest.mark.parametrize(
    "answer",
    [
        "I cannot do that",
        "[]",
        '[{"description": "no title"}]',
        '[{"title": "a", "depends_on": [1]}]',
        '[{"title": "a", "depends_on": [2]}, {"title": "b"}]',
        "[" + ",".join(['{"title": "t"}'] * 21) + "]",
    ],
)
async def test_decompose_refuses_an_unusable_answer_and_stores_nothing(
    lab: Lab, answer: str
) -> None:
    goal = await add(lab, "g", agent="Tasker")
    lab.stub.add_reply(answer)
    with pytest.raises(DecompositionFailedError):
        await decompose_goal(lab.db, goal.id)
    assert (await goal_tree(lab.db, goal.id)).children == []


async def test_settling_is_safe_on_two_instances_at_once(lab: Lab) -> None:
    lab.stub.add_reply("ok")
    goal = await add(lab, "once", agent="Tasker")
    waiting = await add(lab, "after", agent="Tasker")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, waiting, goal)
    await start_goal(lab.db, lab.bus, waiting.id)
    await start_goal(lab.db, lab.bus, goal.id)
    await settled(lab, goal.id, "done")
    lab.stub.add_reply("ok again")
    await asyncio.gather(*(settle_goals(lab.db, lab.bus) for _ in range(4)))
    assert (
        await lab.db.fetch_val("SELECT count(*) FROM scheduler.tasks WHERE goal LIKE 'after%'") == 1
    )

"""Background tasks and goals under what a hostile review of them tried (each failed before its
fix): a sweep crowded out by another owner's stuck goals, text that Python and a regex read
differently, call ids that become one id once stored, a tool denied while a task runs, a pause
that lands as a call is marked running, a provider's odd usage, a dependency added to a goal
already at work, a parent whose subgoals were all cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipeline_runtime import LAB, TOOLS
from pydantic import ValidationError
from task_runtime import HOLD_WRITE, Lab, add_goal, call, goal_settled, task_lab, until

from gathering.agents import Agent, PostgresAgentStore
from gathering.auth.users import UserStore
from gathering.errors import ConflictError
from gathering.scheduler.goals import (
    GoalIn,
    add_dependency,
    cancel_goal,
    create_goal,
    get_goal,
    settle_goals,
    start_goal,
)
from gathering.scheduler.goals import work as goals_work
from gathering.scheduler.tasks import (
    TaskSpec,
    pause_task,
    resume_task,
    start_task,
    task_steps,
)
from gathering.scheduler.tasks.loop import TaskRunner
from gathering.tools.agent_tools import change_agent_tool

pytestmark = pytest.mark.integration
lab = task_lab  # the fixture, by the name these tests use
ECHO, WHOAMI, SEND, FLAKY, BLOCKED = TOOLS


# --- goals ------------------------------------------------------------------------------------


async def test_another_owners_stuck_goals_do_not_crowd_out_the_sweep(lab: Lab) -> None:
    """30 goals of another owner wait for good (started by hand under a parent that waits
    for a goal never started). With a sweep of 10 goals at a time, the lab owner's goal whose
    task ended is still settled on the next sweeps: goals a sweep cannot move are looked at
    in turn, and those blocked through a goal above them are not taken at all."""
    user = await UserStore(lab.db).create("mallory@example.com", "correct horse battery staple")
    agent = Agent("Mal", "ollama", "llama3.2", store=PostgresAgentStore(lab.db), owner_id=user.id)
    await agent.save()

    async def theirs(title: str, **fields: Any) -> Any:
        async with lab.db.transaction() as tx:
            return await create_goal(tx, user.id, GoalIn(title=title, **fields))

    blocker, parent = await theirs("never started"), await theirs("parent")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, parent, blocker)
    for i in range(30):
        kid = await theirs(f"kid {i}", parent_id=parent.id, agent="Mal")
        assert (await start_goal(lab.db, lab.bus, kid.id)).status == "waiting"
    assert await settle_goals(lab.db, lab.bus, limit=10) == 0  # blocked above: not taken
    lab.stub.add_reply("done")
    victim = await start_goal(lab.db, lab.bus, (await add_goal(lab, "victim", agent="Tasker")).id)
    assert victim.task_id is not None
    assert (await lab.wait(victim.task_id)).status == "succeeded"
    for _ in range(3):
        await settle_goals(lab.db, lab.bus, limit=10)
    assert (await get_goal(lab.db, victim.id)).status == "done"


async def test_the_sweep_looks_at_goals_in_turn(lab: Lab) -> None:
    """Goals the sweep takes but cannot move on (here: a fault of ours while settling each
    but one) do not keep the others from their turn: the ones looked at longest ago come
    first, and a goal the sweep fails on fails alone."""
    lab.stub.hold("held")
    goals = []
    for i in range(4):
        goal = await start_goal(lab.db, lab.bus, (await add_goal(lab, "held", agent="Tasker")).id)
        goals.append(goal)
    taken = [
        [row["id"] for row in await lab.db.fetch_all(goals_work._SQL["goals_to_settle"], 2)]
        for _ in range(2)
    ]
    assert taken == [[], []]  # their tasks run: nothing to move on yet
    for goal in goals:
        assert goal.task_id is not None
        await lab.db.execute(
            "UPDATE scheduler.tasks SET status = 'succeeded' WHERE id = $1", goal.task_id
        )
    first = [r["id"] for r in await lab.db.fetch_all(goals_work._SQL["goals_to_settle"], 2)]
    second = [r["id"] for r in await lab.db.fetch_all(goals_work._SQL["goals_to_settle"], 2)]
    assert sorted(first + second) == sorted(g.id for g in goals)


async def test_a_fault_in_one_goal_fails_that_goal_and_the_sweep_goes_on(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab.stub.add_reply("a done", "b done")
    a = await start_goal(lab.db, lab.bus, (await add_goal(lab, "a", agent="Tasker")).id)
    b = await start_goal(lab.db, lab.bus, (await add_goal(lab, "b", agent="Tasker")).id)
    for goal in (a, b):
        assert goal.task_id is not None
        await lab.wait(goal.task_id)
    settle = goals_work._settle

    async def broken_for_a(db: Any, bus: Any, tx: Any, goal: Any, events: Any) -> None:
        if goal.id == a.id:
            raise KeyError("a bug of ours")
        await settle(db, bus, tx, goal, events)

    monkeypatch.setattr(goals_work, "_settle", broken_for_a)
    await settle_goals(lab.db, lab.bus)
    assert (await get_goal(lab.db, a.id)).status == "failed"
    assert (await get_goal(lab.db, b.id)).status == "done"


@pytest.mark.parametrize("title", ["\x1c", "\x1f \x1e", "\x1d\n"])
def test_a_title_or_a_goal_of_only_white_space_is_refused(title: str) -> None:
    """Python's `strip` counts these as space though a regex's \\s may not: refused on the
    way in, never when the goal's task is started."""
    with pytest.raises(ValidationError, match="only white space"):
        GoalIn(title=title)
    with pytest.raises(ValidationError, match="only white space"):
        TaskSpec(agent="a", goal=title)


async def test_the_sweep_does_not_wait_for_an_owner_busy_with_their_dependencies(
    lab: Lab,
) -> None:
    """Another transaction holds the owner's dependency lock (a long decompose, a start):
    the sweep passes that owner's goals by for now instead of waiting with everyone's."""
    lab.stub.add_reply("done")
    goal = await start_goal(lab.db, lab.bus, (await add_goal(lab, "g", agent="Tasker")).id)
    assert goal.task_id is not None
    await lab.wait(goal.task_id)
    holding, release = asyncio.Event(), asyncio.Event()

    async def busy_owner() -> None:
        async with lab.db.transaction() as tx:
            await goals_work.lock_dependencies(tx, lab.owner_id)
            holding.set()
            await release.wait()

    busy = asyncio.create_task(busy_owner())
    try:
        await asyncio.wait_for(holding.wait(), 10)
        await asyncio.wait_for(settle_goals(lab.db, lab.bus), 5)  # returns: nobody waits
        assert (await get_goal(lab.db, goal.id)).status == "active"  # its turn comes later
    finally:
        release.set()
        await busy
    await settle_goals(lab.db, lab.bus)
    assert (await get_goal(lab.db, goal.id)).status == "done"


async def test_a_dependency_of_a_goal_already_at_work_is_refused(lab: Lab) -> None:
    lab.stub.hold("runner")
    runner = await start_goal(lab.db, lab.bus, (await add_goal(lab, "runner", agent="Tasker")).id)
    assert runner.status == "active"
    blocker = await add_goal(lab, "blocker")
    with pytest.raises(ConflictError, match="active: it has started"):
        async with lab.db.transaction() as tx:
            await add_dependency(tx, runner, blocker)


async def test_a_parent_whose_subgoals_were_all_cancelled_is_cancelled(lab: Lab) -> None:
    """Not `done`: none of its work happened, so a goal waiting for it keeps waiting."""
    parent = await add_goal(lab, "parent")
    kids = [await add_goal(lab, k, parent_id=parent.id, agent="Tasker") for k in "ab"]
    dependent = await add_goal(lab, "dependent", agent="Tasker")
    async with lab.db.transaction() as tx:
        await add_dependency(tx, dependent, parent)
    assert (await start_goal(lab.db, lab.bus, dependent.id)).status == "waiting"
    for kid in kids:
        await cancel_goal(lab.db, lab.bus, kid.id)
    await start_goal(lab.db, lab.bus, parent.id)
    assert (await goal_settled(lab, parent.id, "done", "failed", "cancelled")).status == "cancelled"
    await settle_goals(lab.db, lab.bus)
    assert (await get_goal(lab.db, dependent.id)).status == "waiting"


# --- tasks ------------------------------------------------------------------------------------


async def openai_agent(lab: Lab, *tools: Any, policy: str = "allow") -> int:
    agent = Agent(
        "Oai", "openai", "gpt-4o", store=PostgresAgentStore(lab.db), owner_id=lab.owner_id
    )
    await agent.save()
    assert agent.id is not None
    for tool in tools:
        await change_agent_tool(lab.db, agent.id, tool, {"enabled": True, "policy": policy})
    return agent.id


def chat_completion(
    *calls: tuple[str, str, str], usage: tuple[int, int] = (12, 10), model: str = "gpt-4o"
) -> dict[str, Any]:
    """An OpenAI chat completion asking for `calls` (id, tool, JSON arguments)."""
    tool_calls = [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
        for cid, name, args in calls
    ]
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        },
    }


async def test_call_ids_that_are_one_id_once_stored_are_both_run(lab: Lab) -> None:
    """ "d\\x00" and "d\\ufffd" differ, but are both "d\\ufffd" once stored: each call gets
    an id of its own, so both run and both results reach the model."""
    await openai_agent(lab, FLAKY)
    lab.stub.add_json(
        chat_completion(("d\x00", "flaky", '{"key": "k1"}'), ("d\ufffd", "flaky", '{"key": "k2"}'))
    )
    lab.stub.add_reply("all done")
    task = await start_task(lab.db, lab.bus, lab.owner_id, TaskSpec(agent="Oai", goal="two"))
    assert (await lab.wait(task.id)).status == "succeeded"
    (step, _) = await task_steps(lab.db, task.id)
    assert len({c["id"] for c in step.tool_calls}) == 2 and len(step.results) == 2
    assert LAB.calls["k1"] == LAB.calls["k2"] == 1


async def test_numbers_json_has_not_in_a_calls_arguments_make_them_invalid(lab: Lab) -> None:
    """Python's JSON reader takes NaN and Infinity, PostgreSQL's jsonb does not: the step is
    stored with the arguments as invalid (their text kept), the call fails without running,
    and the task goes on."""
    await openai_agent(lab, ECHO)
    lab.stub.add_json(chat_completion(("n1", "echo", '{"text": NaN, "x": -Infinity}')))
    lab.stub.add_reply("the end")
    task = await start_task(lab.db, lab.bus, lab.owner_id, TaskSpec(agent="Oai", goal="nan"))
    done = await lab.wait(task.id)
    assert (done.status, done.result) == ("succeeded", "the end"), done.error
    (step, _) = await task_steps(lab.db, task.id)
    assert step.tool_calls[0]["arguments"] == {}
    assert step.tool_calls[0]["invalid_arguments"] == '{"text": NaN, "x": -Infinity}'
    assert LAB.calls["nan"] == 0
    (state,) = step.results.values()
    assert state["status"] == "failed"


async def test_a_tool_denied_while_a_task_runs_is_denied_at_its_next_step(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    await lab.enable(WHOAMI)
    lab.stub.add_reply(call("hold_write", key="p"), call("whoami"), "done")
    task = await lab.start("policy change")
    await asyncio.wait_for(LAB.started_event("p").wait(), 10)
    await change_agent_tool(lab.db, lab.agent_id, WHOAMI, {"enabled": True, "policy": "deny"})
    LAB.gates.setdefault("p", asyncio.Event()).set()
    assert (await lab.wait(task.id)).status == "succeeded"
    assert LAB.calls["whoami"] == 0
    (whoami,) = (await task_steps(lab.db, task.id))[1].results.values()
    assert whoami["status"] == "failed"


async def test_a_pause_as_a_call_is_marked_running_does_not_count_the_pause(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `running` state is stored, and the pause's cancellation reaches the job before
    the tool starts: the stopped job counts that run (a few ms), so the resumed job does not
    count it from its start to now, the pause included."""
    store = TaskRunner._set_call
    slow = asyncio.Event()

    async def slow_answer(self: TaskRunner, *args: Any, **kwargs: Any) -> Any:
        stored = await store(self, *args, **kwargs)
        if args[4] == "running" and not slow.is_set():
            slow.set()
            await asyncio.sleep(3600)  # the database's answer is slow to come back
        return stored

    monkeypatch.setattr(TaskRunner, "_set_call", slow_answer)
    await lab.enable(WHOAMI)
    lab.stub.add_reply(call("whoami"), "end")
    task = await lab.start("pause time", max_seconds=300)
    await asyncio.wait_for(slow.wait(), 15)
    await pause_task(lab.db, lab.bus, task.id)

    async def counted() -> bool:
        steps = await task_steps(lab.db, task.id)
        return all(state.get("charged") for state in steps[0].results.values())

    await until("the cut run counted", counted)
    await asyncio.sleep(2.0)  # paused: none of this is work
    await resume_task(lab.db, lab.bus, task.id)
    done = await lab.wait(task.id)
    assert done.status == "succeeded", done.error
    assert done.active_seconds < 1.5, done.active_seconds


@pytest.mark.parametrize(
    ("usage", "model"),
    [((-10_000_000, -5), "gpt-4o"), ((3_000_000_000, 10), "gpt-4o"), ((12, 10), "gpt-4o\x00x")],
    ids=["negative", "past-int4", "nul-in-model"],
)
async def test_a_providers_odd_usage_or_model_name_is_stored_sanely(
    lab: Lab, usage: tuple[int, int], model: str
) -> None:
    await openai_agent(lab, ECHO)
    lab.stub.add_json(chat_completion(("u1", "echo", '{"text": "a"}'), usage=usage, model=model))
    lab.stub.add_reply("the end")
    spec = TaskSpec(agent="Oai", goal="usage", max_tokens=100_000_000)
    task = await start_task(lab.db, lab.bus, lab.owner_id, spec)
    done = await lab.wait(task.id)
    if usage[0] > 100_000_000:  # counted (as much as a step holds): over the budget
        assert done.error is not None and done.error["code"] == "budget_exhausted", done.error
    else:
        assert done.status == "succeeded", done.error
    assert done.input_tokens >= 0 and done.output_tokens >= 0 and done.cost_usd >= 0
    first = (await task_steps(lab.db, task.id))[0]
    assert first.model is not None and "\x00" not in first.model

"""Background agent tasks on the real job runtime and the test's database: the plan / act /
observe loop against the LLM stub (real HTTP, Ollama's wire format), every step stored before
the next, budgets, approvals that hold a task without a worker, pause / resume / cancel that
stop a running job, a job that comes back after its worker stopped mid-call, and the
scheduler's `run_task` action."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from pipeline_runtime import LAB, TOOLS
from task_runtime import HOLD_WRITE, Lab, call, task_lab

from gathering.errors import ConflictError, InvalidInputError, NotFoundError
from gathering.scheduler import create_schedule, parse_spec
from gathering.scheduler.tasks import (
    TaskSpec,
    cancel_task,
    get_task,
    list_tasks,
    pause_task,
    resume_task,
    start_task,
    task_steps,
)
from gathering.tools.approvals import decide, get_approval

pytestmark = pytest.mark.integration
lab = task_lab  # the fixture, by the name these tests use


# --- the loop -------------------------------------------------------------------------------


async def test_a_task_plans_acts_observes_and_ends_with_the_answer(lab: Lab) -> None:
    await lab.enable(TOOLS[0])  # echo
    lab.stub.add_reply(call("echo", text="one"), call("echo", text="two"), "All done: one, two.")
    task = await lab.start("Say one, then two.")
    assert task.status == "queued"
    done = await lab.wait(task.id)
    assert done.status == "succeeded", done.error
    assert done.result == "All done: one, two."
    assert (done.steps, done.error) == (3, None)
    assert done.input_tokens > 0 and done.output_tokens > 0
    assert LAB.calls["one"] == LAB.calls["two"] == 1
    steps = await task_steps(lab.db, task.id)
    assert [s.n for s in steps] == [1, 2, 3]
    assert all(s.status == "done" for s in steps)
    first = steps[0]
    assert [c["name"] for c in first.tool_calls] == ["echo"]
    (state,) = first.results.values()
    assert (state["status"], state["content"]) == ("finished", "one")
    assert steps[2].thought == "All done: one, two." and steps[2].tool_calls == []
    # The second model call saw the goal, the first call and its result.
    second = [r for r in lab.stub.requests if r.path.endswith("/api/chat")][1].json
    texts = json.dumps(second["messages"])
    assert "Say one, then two." in texts and '"one"' in texts
    # Paged with `after`: no gap, no repeat.
    assert [s.n for s in await task_steps(lab.db, task.id, after=1, limit=1)] == [2]
    await asyncio.sleep(0.5)  # events arrive through the outbox
    kinds = lab.kinds(task.id)
    assert kinds[0] == "task.queued" and kinds[-1] == "task.finished"
    assert "task.started" in kinds and kinds.count("task.step") >= 3


async def test_a_failed_call_is_told_to_the_model_and_an_unknown_tool_too(lab: Lab) -> None:
    await lab.enable(TOOLS[3])  # flaky
    LAB.failures_left["f"] = 1
    lab.stub.add_reply(call("flaky", key="f"), call("nosuch"), "gave up")
    done = await lab.wait((await lab.start("try")).id)
    assert done.status == "succeeded"
    steps = await task_steps(lab.db, done.id)
    (flaky,) = steps[0].results.values()
    assert flaky["status"] == "failed" and "failed on purpose" in flaky["content"]
    (unknown,) = steps[1].results.values()
    assert unknown["status"] == "failed" and "no tool named 'nosuch'" in unknown["content"]


# --- budgets --------------------------------------------------------------------------------


async def test_the_step_budget_stops_a_task_before_its_next_model_call(lab: Lab) -> None:
    await lab.enable(TOOLS[0])
    lab.stub.add_reply(call("echo", text="a"), call("echo", text="b"), "never asked")
    done = await lab.wait((await lab.start("loop", max_steps=2)).id)
    assert done.status == "failed"
    assert done.error is not None and done.error["code"] == "budget_exhausted"
    assert "2 steps" in done.error["message"]
    assert done.steps == 2
    assert len([r for r in lab.stub.requests if r.path.endswith("/api/chat")]) == 2


async def test_the_token_budget_stops_a_task(lab: Lab) -> None:
    await lab.enable(TOOLS[0])
    lab.stub.add_reply(call("echo", text="a"), "never asked")
    done = await lab.wait((await lab.start("loop", max_tokens=1)).id)
    assert done.status == "failed" and done.error is not None
    assert done.error["code"] == "budget_exhausted" and "tokens" in done.error["message"]
    assert done.steps == 1


async def test_the_time_budget_bounds_a_tool_call_then_stops_the_task(lab: Lab) -> None:
    await lab.enable(TOOLS[4])  # blocked: waits until released (600 s timeout of its own)
    lab.stub.add_reply(call("blocked", key="forever"))
    done = await lab.wait((await lab.start("wait", max_seconds=1)).id, limit=20)
    assert done.status == "failed" and done.error is not None
    assert done.error["code"] == "budget_exhausted" and "seconds" in done.error["message"]
    (state,) = (await task_steps(lab.db, done.id))[0].results.values()
    assert state["status"] == "failed" and "did not finish" in state["content"]
    assert done.active_seconds >= 1


def test_a_task_spec_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="only white space"):
        TaskSpec(agent="a", goal="   ")
    with pytest.raises(ValueError):
        TaskSpec(agent="a", goal="x", max_steps=0)
    with pytest.raises(ValueError):
        TaskSpec(agent="a", goal="x", surprise=1)  # type: ignore[call-arg]
    assert TaskSpec(agent="42", goal="x").agent == 42


async def test_a_task_of_an_agent_the_owner_does_not_have_is_refused(lab: Lab) -> None:
    with pytest.raises(NotFoundError, match="no agent 'Nobody'"):
        await start_task(lab.db, lab.bus, lab.owner_id, TaskSpec(agent="Nobody", goal="x"))
    assert await list_tasks(lab.db, None) == []


# --- approvals ------------------------------------------------------------------------------


async def test_an_ask_call_waits_without_a_worker_and_runs_once_approved(lab: Lab) -> None:
    await lab.enable(TOOLS[2])  # send: external, so `ask`
    lab.stub.add_reply(call("send", text="report"), "sent it")
    task = await lab.start("send the report")
    waiting = await lab.wait(task.id, "waiting_approval")
    assert waiting.approval_id is not None and waiting.job_id is None
    approval = await get_approval(lab.db, waiting.approval_id)
    assert (approval.task_id, approval.turn_id, approval.tool_name) == (task.id, None, "send")
    assert LAB.calls["send:report"] == 0
    await lab.scheduler.tick()  # an unanswered approval changes nothing
    assert (await get_task(lab.db, task.id)).status == "waiting_approval"
    await decide(lab.db, approval.id, approve=True, by=lab.owner_id)
    await lab.scheduler.tick()
    done = await lab.wait(task.id)
    assert (done.status, done.result) == ("succeeded", "sent it")
    assert LAB.calls["send:report"] == 1
    (state,) = (await task_steps(lab.db, task.id))[0].results.values()
    assert (state["status"], state["content"]) == ("finished", "sent report")
    await lab.scheduler.tick()  # taken up once
    assert LAB.calls["send:report"] == 1


async def test_a_denied_call_is_not_run_and_the_model_is_told(lab: Lab) -> None:
    await lab.enable(TOOLS[2])
    lab.stub.add_reply(call("send", text="x"), "fine, not sent")
    task = await lab.start("send x")
    waiting = await lab.wait(task.id, "waiting_approval")
    assert waiting.approval_id is not None
    await decide(lab.db, waiting.approval_id, approve=False, by=lab.owner_id, comment="no")
    await lab.scheduler.tick()
    done = await lab.wait(task.id)
    assert done.status == "succeeded" and LAB.calls["send:x"] == 0
    (state,) = (await task_steps(lab.db, task.id))[0].results.values()
    assert state["status"] == "not_run" and "a person denied it: no" in state["content"]


async def test_a_paused_waiting_task_reads_the_answer_when_resumed(lab: Lab) -> None:
    await lab.enable(TOOLS[2])
    lab.stub.add_reply(call("send", text="p"), "ok")
    task = await lab.start("send p")
    waiting = await lab.wait(task.id, "waiting_approval")
    assert waiting.approval_id is not None
    await pause_task(lab.db, lab.bus, task.id)
    await decide(lab.db, waiting.approval_id, approve=True, by=lab.owner_id)
    await lab.scheduler.tick()
    assert (await get_task(lab.db, task.id)).status == "paused"
    await resume_task(lab.db, lab.bus, task.id)
    done = await lab.wait(task.id)
    assert done.status == "succeeded" and LAB.calls["send:p"] == 1


# --- control --------------------------------------------------------------------------------


async def test_pause_stops_a_running_call_and_resume_goes_on_from_the_last_step(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="h"), "after the pause")
    task = await lab.start("hold")
    await asyncio.wait_for(LAB.started_event("h").wait(), 10)
    paused = await pause_task(lab.db, lab.bus, task.id)
    assert paused.status == "paused" and paused.job_id is None
    await asyncio.sleep(1.5)  # the job was stopped: nothing more is stored
    assert (await get_task(lab.db, task.id)).status == "paused"
    (state,) = (await task_steps(lab.db, task.id))[0].results.values()
    assert state["status"] == "running"
    with pytest.raises(ConflictError):
        await pause_task(lab.db, lab.bus, task.id)
    await resume_task(lab.db, lab.bus, task.id)
    done = await lab.wait(task.id)
    assert (done.status, done.result, done.steps) == ("succeeded", "after the pause", 2)
    assert LAB.calls["h"] == 1  # a write cut short is not made again
    (state,) = (await task_steps(lab.db, task.id))[0].results.values()
    assert state["status"] == "interrupted" and "may or may not" in state["content"]
    with pytest.raises(ConflictError, match="only a paused task"):
        await resume_task(lab.db, lab.bus, task.id)


async def test_a_read_call_cut_short_runs_again(lab: Lab) -> None:
    await lab.enable(TOOLS[4])  # blocked: a read
    lab.stub.add_reply(call("blocked", key="r"), "read it")
    task = await lab.start("read")
    await asyncio.wait_for(LAB.started_event("r").wait(), 10)
    await pause_task(lab.db, lab.bus, task.id)
    LAB.gates.setdefault("r", asyncio.Event()).set()
    await resume_task(lab.db, lab.bus, task.id)
    done = await lab.wait(task.id)
    assert done.status == "succeeded" and LAB.calls["r"] == 2
    (state,) = (await task_steps(lab.db, task.id))[0].results.values()
    assert (state["status"], state["content"]) == ("finished", "r released")


async def test_cancel_stops_a_task_for_good(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="c"), "never")
    task = await lab.start("hold")
    await asyncio.wait_for(LAB.started_event("c").wait(), 10)
    cancelled = await cancel_task(lab.db, lab.bus, task.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert cancelled.error == {"code": "cancelled", "message": "cancelled by request"}
    await asyncio.sleep(1.5)
    assert (await get_task(lab.db, task.id)).status == "cancelled"
    assert len(await task_steps(lab.db, task.id)) == 1
    for control in (pause_task, resume_task, cancel_task):
        with pytest.raises(ConflictError):
            await control(lab.db, lab.bus, task.id)


async def test_a_job_that_comes_back_goes_on_from_the_stored_step(lab: Lab) -> None:
    """What a worker killed mid-call leaves (its call `running`, the task `running` under its
    job), taken up by the job again: the write is reported interrupted, not made twice."""
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="k"), "finished anyway")
    task = await lab.start("hold")
    await asyncio.wait_for(LAB.started_event("k").wait(), 10)
    running = await get_task(lab.db, task.id)
    assert running.job_id is not None
    # The worker "dies": its job is cancelled without the task knowing, then queued again as
    # procrastinate does for a stalled job.
    await lab.db.execute("SELECT procrastinate_cancel_job_v1($1, true, false)", running.job_id)
    await asyncio.sleep(1.5)
    await lab.db.execute(
        "UPDATE procrastinate_jobs SET status = 'todo', abort_requested = false WHERE id = $1",
        running.job_id,
    )
    await lab.db.execute("SELECT pg_notify('procrastinate_any_queue_v1', '{}')")
    done = await lab.wait(task.id)
    assert (done.status, done.steps) == ("succeeded", 2)
    assert LAB.calls["k"] == 1
    steps = await task_steps(lab.db, task.id)
    assert [s.n for s in steps] == [1, 2]
    assert next(iter(steps[0].results.values()))["status"] == "interrupted"


async def test_a_task_whose_job_ended_without_it_is_settled(lab: Lab) -> None:
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="s"))
    task = await lab.start("hold")
    await asyncio.wait_for(LAB.started_event("s").wait(), 10)
    job_id = (await get_task(lab.db, task.id)).job_id
    await lab.db.execute("SELECT procrastinate_cancel_job_v1($1, true, false)", job_id)
    await lab.db.execute(
        "UPDATE scheduler.tasks SET updated_at = now() - interval '1 minute', alive_at = NULL WHERE id = $1",
        task.id,
    )
    deadline = time.monotonic() + 10
    while (await get_task(lab.db, task.id)).status == "running":
        await lab.scheduler.tick()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    ended = await get_task(lab.db, task.id)
    assert ended.status == "cancelled" and ended.error is not None
    assert "its job was cancelled" in ended.error["message"]


# --- the scheduler's run_task ---------------------------------------------------------------


async def test_a_schedule_runs_a_task_and_its_run_ends_with_it(lab: Lab) -> None:
    lab.stub.add_reply("the daily summary")
    action = {"action": "run_task", "config": {"agent": "Tasker", "goal": "summarise"}}
    at = "2030-01-01T00:00:00Z"
    schedule = await create_schedule(
        lab.db, lab.owner_id, "daily", {"kind": "once", "at": at, **action}
    )
    run = await lab.scheduler.trigger(schedule)
    deadline = time.monotonic() + 20
    while True:
        await lab.scheduler.tick()
        row = await lab.db.fetch_one("SELECT * FROM scheduler.runs WHERE id = $1", run.id)
        assert row is not None
        if row["status"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, row
        await asyncio.sleep(0.1)
    assert row["status"] == "succeeded", row["error"]
    task = await get_task(lab.db, row["task_id"])
    assert (task.status, task.result, task.goal) == ("succeeded", "the daily summary", "summarise")
    assert row["output"] == {"task_id": task.id}


def test_a_run_task_schedule_is_checked_like_a_task() -> None:
    once = {"kind": "once", "at": "2030-01-01T00:00:00Z", "action": "run_task"}
    with pytest.raises(InvalidInputError, match=r"config\.agent"):
        parse_spec({**once, "config": {"goal": "x"}})
    with pytest.raises(InvalidInputError, match=r"config\.max_steps"):
        parse_spec({**once, "config": {"agent": "a", "goal": "x", "max_steps": 0}})
    spec = parse_spec({**once, "config": {"agent": "7", "goal": "x"}})
    assert spec.config["agent"] == 7 and spec.config["max_steps"] == 20

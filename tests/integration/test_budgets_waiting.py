"""What waits when a budget refuses a model call: a pipeline's agent node waits (it does not
fail), and runs once an admin has raised the budget and answered it `retry`; a background
task waits (`waiting_budget`) with the budget's error, for a job deferred to the budget's
reset or for `resume_task`. The model is the wire stub; the database is real."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from pipeline_runtime import linear, pipeline_runtime
from task_runtime import Lab, task_lab
from typer.testing import CliRunner

from gathering.agents import Agent, PostgresAgentStore
from gathering.cli import app
from gathering.config import get_settings
from gathering.scheduler.tasks import cancel_task, get_task, pause_task, resume_task
from gathering.usage import Attribution, BudgetSpec, LedgerEntry, record, set_budget

runner = CliRunner()


def agent_node(node_id: str, agent: str) -> dict:
    return {"id": node_id, "type": "agent", "config": {"agent": agent, "prompt": "say hi"}}


async def test_a_refused_agent_node_waits_and_runs_once_the_budget_is_raised(
    migrated_database_url, llm_stub_env, monkeypatch
) -> None:
    async with pipeline_runtime(migrated_database_url) as rt:
        store = PostgresAgentStore(rt.db)
        writer = Agent("Writer", provider="openai", model="gpt-4o", store=store)
        writer.owner_id = rt.owner_id
        await writer.save()
        pipeline_id, version = await rt.pipeline(linear(agent_node("write", "Writer")))
        tight = BudgetSpec("pipeline", pipeline_id, "month", limit_tokens=10)
        await set_budget(rt.db, tight, actor_id=None)
        run = await rt.executor.start_run(pipeline_id, version, rt.owner_id, {})
        deadline = time.monotonic() + 30
        while True:
            run = await rt.wait(run.id, "running", "succeeded", "failed")
            node = run.nodes["write"]
            if node.status == "waiting" or run.status != "running":
                break
            assert time.monotonic() < deadline, run.nodes
            await asyncio.sleep(0.05)
        assert run.status == "running" and node.status == "waiting"
        assert node.error is not None and node.error["code"] == "budget_exceeded"
        assert node.error["details"]["scope"] == "pipeline"
        assert await rt.db.fetch_val("SELECT count(*) FROM usage.ledger") == 0

        raised = BudgetSpec("pipeline", pipeline_id, "month", limit_tokens=1_000_000)
        await set_budget(rt.db, raised, actor_id=None)
        monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
        get_settings.cache_clear()
        answer = ["pipelines", "resolve", str(run.id), "write"]
        wrong = await asyncio.to_thread(runner.invoke, app, [*answer, "[/bold]"])
        assert wrong.exit_code == 2 and "is not one of" in wrong.output, wrong.output
        answered = await asyncio.to_thread(runner.invoke, app, [*answer, "retry"])
        assert answered.exit_code == 0, answered.output
        assert "queued to run again" in answered.output
        done = await rt.wait(run.id)
        again = await asyncio.to_thread(runner.invoke, app, [*answer, "retry"])
        assert again.exit_code == 1 and "not waiting for a decision" in again.output
        assert done.status == "succeeded", done.nodes
        rows = await rt.db.fetch_all("SELECT * FROM usage.ledger WHERE kind = 'model'")
        assert [(r["pipeline_id"], r["pipeline_run_id"]) for r in rows] == [(pipeline_id, run.id)]
        assert rows[0]["user_id"] == rt.owner_id


lab = task_lab  # the fixture, by the name this test uses


async def job_of(lab: Lab, job_id: int | None) -> dict | None:
    if job_id is None:
        return None
    return await lab.db.fetch_one(
        "SELECT status::text, scheduled_at FROM procrastinate_jobs WHERE id = $1", job_id
    )


async def waiting_events(lab: Lab, task_id: int) -> list:
    """The task's `task.waiting` events, once the bus has delivered one (it polls: the status
    is stored before the event reaches a subscriber)."""
    for _ in range(200):
        found = [e for e in lab.events if e.type == "task.waiting" and e.data["task_id"] == task_id]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no task.waiting event for task {task_id}")


async def spend(lab: Lab, tokens: int) -> None:
    """A model call of the lab's agent today, as the ledger has it."""
    who = Attribution(user_id=lab.owner_id, agent_id=lab.agent_id)
    await record(lab.db, LedgerEntry("model", who, "ollama", "llama3.2", input_tokens=tokens))


async def test_a_task_refused_by_a_used_up_budget_waits_for_its_reset_or_a_resume(lab: Lab):
    tight = BudgetSpec("agent", lab.agent_id, "day", limit_tokens=100_000)
    budget = await set_budget(lab.db, tight, actor_id=None)
    await spend(lab, 99_990)  # a call fits the whole limit, not what is left of it today
    task = await lab.start("report")
    task = await lab.wait(task.id, "waiting_budget", "paused", "failed", "succeeded")
    assert task.status == "waiting_budget" and task.lease is None
    assert task.error is not None and task.error["code"] == "budget_exceeded"
    assert task.error["details"]["budget_id"] == budget.id
    resets_at = datetime.fromisoformat(task.error["details"]["resets_at"])
    waiting = await waiting_events(lab, task.id)
    assert waiting and waiting[0].data["reason"] == "budget"
    retry_at = datetime.fromisoformat(waiting[0].data["retry_at"])  # the reset, or 5 min
    assert retry_at <= resets_at and (retry_at - task.updated_at).total_seconds() <= 301
    job = await job_of(lab, task.job_id)  # deferred to it, no worker held meanwhile
    assert job is not None and (job["status"], job["scheduled_at"]) == ("todo", retry_at)
    assert waiting[0].data["error"]["code"] == "budget_exceeded"
    assert (
        await lab.db.fetch_val("SELECT count(*) FROM usage.ledger WHERE task_id IS NOT NULL") == 0
    )

    raised = BudgetSpec("agent", lab.agent_id, "day", limit_tokens=10**6)
    await set_budget(lab.db, raised, actor_id=None)
    resumed = await resume_task(lab.db, lab.bus, task.id)
    assert resumed.status == "queued" and resumed.job_id != task.job_id
    assert (await job_of(lab, task.job_id))["status"] == "cancelled"  # the deferred one
    task = await lab.wait(task.id)
    assert task.status == "succeeded", task
    rows = await lab.db.fetch_all("SELECT * FROM usage.ledger WHERE task_id IS NOT NULL")
    assert [(r["task_id"], r["agent_id"], r["user_id"]) for r in rows] == [
        (task.id, lab.agent_id, lab.owner_id)
    ]


async def test_the_job_deferred_to_the_reset_takes_the_task_up(lab: Lab) -> None:
    tight = BudgetSpec("agent", lab.agent_id, "day", limit_tokens=100_000)
    await set_budget(lab.db, tight, actor_id=None)
    await spend(lab, 99_990)
    task = await lab.start("report")
    task = await lab.wait(task.id, "waiting_budget", "failed", "succeeded")
    assert task.status == "waiting_budget" and task.job_id is not None
    # The reset: a new day's spending starts at 0 (here: the limit raised), the job is due.
    raised = BudgetSpec("agent", lab.agent_id, "day", limit_tokens=10**6)
    await set_budget(lab.db, raised, actor_id=None)
    await lab.db.execute(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = $1", task.job_id
    )
    task = await lab.wait(task.id)
    assert task.status == "succeeded", task
    assert "task.started" in lab.kinds(task.id)


async def test_a_call_larger_than_the_whole_limit_waits_for_a_person_only(lab: Lab) -> None:
    """No reset and no look makes room for it: no job waits, a raised budget and a resume
    do. Waiting, it can be paused, resumed (refused again: it waits again) and cancelled."""
    spec = BudgetSpec("agent", lab.agent_id, "day", limit_tokens=10)
    await set_budget(lab.db, spec, actor_id=None)
    task = await lab.start("report")
    task = await lab.wait(task.id, "waiting_budget", "failed", "succeeded")
    assert task.status == "waiting_budget" and task.job_id is None, task
    events = await waiting_events(lab, task.id)
    assert events[0].data["retry_at"] is None
    assert (await pause_task(lab.db, lab.bus, task.id)).status == "paused"
    assert (await resume_task(lab.db, lab.bus, task.id)).error is None  # the refusal is over
    again = await lab.wait(task.id, "waiting_budget", "failed", "succeeded", limit=30)
    assert again.status == "waiting_budget" and again.updated_at > task.updated_at
    assert (await cancel_task(lab.db, lab.bus, task.id)).status == "cancelled"


async def test_a_waiting_task_looks_again_without_taking_a_step_while_still_refused(lab: Lab):
    """A `total` budget never resets: the task looks again every 5 minutes (a reservation
    released, a budget raised). A look the budgets still refuse takes no step and sends no
    event: the wait goes on under a new job; once the call fits, the next look runs it."""
    spec = BudgetSpec("agent", lab.agent_id, "total", limit_tokens=100_000)
    await set_budget(lab.db, spec, actor_id=None)
    await spend(lab, 99_990)
    task = await lab.start("report")
    task = await lab.wait(task.id, "waiting_budget", "failed", "succeeded")
    first = await job_of(lab, task.job_id)
    assert first is not None and first["status"] == "todo"
    wait = (first["scheduled_at"] - task.updated_at).total_seconds()
    assert 290 < wait < 310, wait  # no reset: the next look
    await waiting_events(lab, task.id)  # delivered: what came before the look is all here
    kinds = lab.kinds(task.id)

    async def look_now(job_id: int | None) -> None:
        await lab.db.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = $1", job_id
        )

    await look_now(task.job_id)
    deadline = asyncio.get_running_loop().time() + 30
    while (await get_task(lab.db, task.id)).job_id == task.job_id:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    looked = await get_task(lab.db, task.id)
    assert looked.status == "waiting_budget" and looked.steps == 0
    while (await job_of(lab, task.job_id))["status"] == "doing":  # the look, ending
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert (await job_of(lab, task.job_id))["status"] == "succeeded"  # the look, done
    assert (await job_of(lab, looked.job_id))["status"] == "todo"  # the next one
    assert lab.kinds(task.id) == kinds  # no task.started, no second task.waiting
    assert looked.error is not None and looked.error["code"] == "budget_exceeded"

    await set_budget(
        lab.db, BudgetSpec("agent", lab.agent_id, "total", limit_tokens=10**6), actor_id=None
    )
    await look_now(looked.job_id)
    done = await lab.wait(task.id)
    assert done.status == "succeeded" and done.error is None, done


async def test_a_task_refused_only_for_a_reservation_runs_once_it_is_released(lab: Lab):
    """The refusal counted a call in flight (its reservation), not spending: the next look,
    once that call is over, finds room."""
    spec = BudgetSpec("agent", lab.agent_id, "total", limit_tokens=100_000)
    budget = await set_budget(lab.db, spec, actor_id=None)
    await lab.db.execute(
        "INSERT INTO usage.reservations (budget_id, call_id, tokens, expires_at) "
        "VALUES ($1, gen_random_uuid(), 99990, now() + interval '1 hour')",
        budget.id,
    )
    task = await lab.start("report")
    task = await lab.wait(task.id, "waiting_budget", "failed", "succeeded")
    assert task.status == "waiting_budget" and task.job_id is not None
    assert task.error["details"]["spent_tokens"] == 0  # refused for what was held only
    await lab.db.execute("DELETE FROM usage.reservations")  # the call in flight ended
    await lab.db.execute(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = $1", task.job_id
    )
    assert (await lab.wait(task.id)).status == "succeeded"


async def test_a_waiting_task_is_resumed_only_once(lab: Lab) -> None:
    """Two resumes at once (two instances): one queues the task, the other is told why not."""
    total = BudgetSpec("agent", lab.agent_id, "total", limit_tokens=10)
    await set_budget(lab.db, total, actor_id=None)
    task = await lab.start("report")
    task = await lab.wait(task.id, "waiting_budget", "failed", "succeeded")
    assert task.status == "waiting_budget"
    outcomes = await asyncio.gather(
        resume_task(lab.db, lab.bus, task.id),
        resume_task(lab.db, lab.bus, task.id),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "TaskRecord"]

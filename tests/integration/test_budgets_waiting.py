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
from gathering.scheduler.tasks import cancel_task, pause_task, resume_task
from gathering.usage import Attribution, BudgetSpec, LedgerEntry, record, remove_budget, set_budget

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
    job = await job_of(lab, task.job_id)  # deferred to the reset, no worker held meanwhile
    assert job is not None and (job["status"], job["scheduled_at"]) == ("todo", resets_at)
    waiting = [e for e in lab.events if e.type == "task.waiting" and e.data["task_id"] == task.id]
    assert waiting and waiting[0].data["reason"] == "budget"
    assert waiting[0].data["retry_at"] == resets_at.isoformat()
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


async def test_no_reset_makes_room_so_no_job_waits_for_one(lab: Lab) -> None:
    # A `total` budget never resets; a call larger than a day budget's whole limit never fits.
    for spec in (
        BudgetSpec("agent", lab.agent_id, "total", limit_tokens=100_000),
        BudgetSpec("agent", lab.agent_id, "day", limit_tokens=10),
    ):
        budget = await set_budget(lab.db, spec, actor_id=None)
        if spec.period == "total":
            await spend(lab, 99_990)
        task = await lab.start("report")
        task = await lab.wait(task.id, "waiting_budget", "failed", "succeeded")
        assert task.status == "waiting_budget" and task.job_id is None, task
        events = [
            e for e in lab.events if e.type == "task.waiting" and e.data["task_id"] == task.id
        ]
        assert events[0].data["retry_at"] is None
        # waiting, it can be paused, resumed (refused again: it waits again) and cancelled
        assert (await pause_task(lab.db, lab.bus, task.id)).status == "paused"
        await resume_task(lab.db, lab.bus, task.id)
        again = await lab.wait(task.id, "waiting_budget", "failed", "succeeded", limit=30)
        assert again.status == "waiting_budget" and again.updated_at > task.updated_at
        assert (await cancel_task(lab.db, lab.bus, task.id)).status == "cancelled"
        await remove_budget(lab.db, budget.id, actor_id=None)


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

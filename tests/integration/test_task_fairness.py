"""One owner's background tasks cannot take every worker: `GATHERING_TASK_MAX_RUNNING_PER_OWNER`.

A task whose owner already runs that many waits, queued (it never fails), under a deferred job;
a task of the owner that stops running wakes the oldest one waiting. Other owners' tasks run
meanwhile. In the test's process (the task lab: one worker, 4 jobs at once) and across two
real `gathering worker` processes, whose tool calls mark the database with the real time: the
owner never has more tasks running at once than the cap.

The model is the test's LLM stub: a goal `CALL <tool> <arguments>` makes its first reply that
call, and a reply after the tool's result is an echo (the task succeeds)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from db_rows import new_user
from job_processes import ScratchDatabase, Worker, scratch_database, wait_until
from pipeline_runtime import LAB
from task_runtime import HOLD_WRITE, Lab, task_lab, until

from gathering.agents import Agent, PostgresAgentStore
from gathering.agents.retrieval import local_owner_id
from gathering.config import get_settings, load_settings
from gathering.db import Database
from gathering.errors import ConfigurationError
from gathering.scheduler.tasks import (
    TaskRecord,
    TaskSpec,
    cancel_task,
    get_task,
    pause_task,
    resume_task,
    start_task,
)
from gathering.testing import LLMStubServer

lab = task_lab  # the fixture, by the name these tests use
CAP = "GATHERING_TASK_MAX_RUNNING_PER_OWNER"


@pytest.fixture
def cap_of_one() -> Iterator[None]:
    """Each owner may have one task running at once (read by the lab's worker at each start)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CAP, "1")
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


def holding(key: str) -> str:
    """A goal whose first step is a `hold_write` that waits until the test lets `key` go."""
    return f'CALL hold_write {{"key": "{key}"}}'


async def deferred_job(lab: Lab, task_id: int) -> dict[str, Any] | None:
    """The job of task `task_id` when it is queued for later (the task waits for room)."""
    return await lab.db.fetch_one(
        "SELECT j.id, j.scheduled_at FROM scheduler.tasks t"
        " JOIN procrastinate_jobs j ON j.id = t.job_id"
        " WHERE t.id = $1 AND t.status = 'queued' AND j.status = 'todo'"
        " AND j.scheduled_at > now()",
        task_id,
    )


def kinds(lab: Lab, task_id: int) -> list[str]:
    """The events of task `task_id` on its own subject, in order."""
    return [e.type for e in lab.events if e.subject == f"task:{task_id}"]


async def other_owner_task(lab: Lab, goal: str) -> TaskRecord:
    """A task of another owner's agent (the model of the lab's)."""
    other = await new_user(lab.db)
    store = PostgresAgentStore(lab.db)
    await Agent("Helper", "ollama", "llama3.2", store=store, owner_id=other).save()
    return await start_task(lab.db, lab.bus, other, TaskSpec(agent="Helper", goal=goal))


async def test_a_second_task_waits_for_the_first_while_another_owner_s_runs(
    lab: Lab, cap_of_one: None
) -> None:
    await lab.enable(HOLD_WRITE)
    first = await lab.start(holding("first"))
    await asyncio.wait_for(LAB.started_event("first").wait(), 10)
    second = await lab.start("second")
    await until("the second task waiting", lambda: deferred_job(lab, second.id))

    # Another owner's task runs meanwhile, to its end.
    other = await other_owner_task(lab, "the other owner's")
    done = await lab.wait(other.id)
    assert (done.status, done.result) == ("succeeded", "Echo: the other owner's")

    waiting = await get_task(lab.db, second.id)
    assert (waiting.status, waiting.steps, waiting.error, waiting.started_at) == (
        "queued",
        0,
        None,
        None,
    )
    assert kinds(lab, second.id) == ["task.queued"]  # waiting, it says nothing more
    assert (await get_task(lab.db, first.id)).status == "running"
    job = await deferred_job(lab, second.id)
    assert job is not None

    # The first ends: in the same transaction, the second's job is made due.
    LAB.gates.setdefault("first", asyncio.Event()).set()
    ended = await lab.wait(first.id)
    assert ended.status == "succeeded"
    second_done = await lab.wait(second.id, limit=20)
    assert (second_done.status, second_done.result) == ("succeeded", "Echo: second")
    woken = await lab.db.fetch_one(
        "SELECT scheduled_at FROM procrastinate_jobs WHERE id = $1", job["id"]
    )
    assert woken is not None and woken["scheduled_at"] == ended.finished_at

    async def job_succeeded() -> bool:  # procrastinate marks it a moment after the task ended
        status = "SELECT status::text FROM procrastinate_jobs WHERE id = $1"
        return await lab.db.fetch_val(status, job["id"]) == "succeeded"

    await until("the second task's job succeeded", job_succeeded)
    assert second_done.started_at is not None and ended.finished_at is not None
    assert second_done.started_at >= ended.finished_at

    async def finished() -> bool:  # the bus delivers by polling: the event comes a moment later
        return "task.finished" in kinds(lab, second.id)

    await until("the second task's task.finished", finished)
    assert kinds(lab, second.id)[0] == "task.queued" and kinds(lab, second.id)[1] == "task.started"
    assert kinds(lab, second.id).count("task.queued") == 1


async def test_a_waiting_task_is_paused_resumed_and_cancelled_like_a_queued_one(
    lab: Lab, cap_of_one: None
) -> None:
    await lab.enable(HOLD_WRITE)
    first = await lab.start(holding("busy"))
    await asyncio.wait_for(LAB.started_event("busy").wait(), 10)
    second = await lab.start("second")
    await until("the second task waiting", lambda: deferred_job(lab, second.id))

    paused = await pause_task(lab.db, lab.bus, second.id)
    assert (paused.status, paused.job_id) == ("paused", None)
    await resume_task(lab.db, lab.bus, second.id)
    await until("the resumed task waiting again", lambda: deferred_job(lab, second.id))
    cancelled = await cancel_task(lab.db, lab.bus, second.id)
    assert cancelled.status == "cancelled"

    LAB.gates.setdefault("busy", asyncio.Event()).set()
    assert (await lab.wait(first.id)).status == "succeeded"
    assert (await get_task(lab.db, second.id)).status == "cancelled"


async def test_a_task_that_stops_running_wakes_the_oldest_waiting_one(
    lab: Lab, cap_of_one: None
) -> None:
    """A pause of the running task makes room, as its end does: the next in line runs."""
    await lab.enable(HOLD_WRITE)
    first = await lab.start(holding("paused"))
    await asyncio.wait_for(LAB.started_event("paused").wait(), 10)
    second = await lab.start(holding("next"))
    await until("the second task waiting", lambda: deferred_job(lab, second.id))
    third = await lab.start("third")
    await until("the third task waiting", lambda: deferred_job(lab, third.id))

    await pause_task(lab.db, lab.bus, first.id)
    await asyncio.wait_for(LAB.started_event("next").wait(), 10)
    assert (await get_task(lab.db, second.id)).status == "running"
    assert await deferred_job(lab, third.id) is not None  # still one at a time

    LAB.gates.setdefault("next", asyncio.Event()).set()
    assert (await lab.wait(second.id)).status == "succeeded"
    assert (await lab.wait(third.id, limit=20)).status == "succeeded"
    assert (await get_task(lab.db, first.id)).status == "paused"


async def test_a_woken_task_paused_before_its_job_runs_passes_its_turn_on(
    lab: Lab, cap_of_one: None
) -> None:
    """The first task's pause wakes the second; the second is paused before its job runs:
    the room it was given goes to the third at once, not after the fallback look."""
    await lab.enable(HOLD_WRITE)
    first = await lab.start(holding("first-paused"))
    await asyncio.wait_for(LAB.started_event("first-paused").wait(), 10)
    second = await lab.start("second")
    await until("the second task waiting", lambda: deferred_job(lab, second.id))
    third = await lab.start("third")
    await until("the third task waiting", lambda: deferred_job(lab, third.id))

    await pause_task(lab.db, lab.bus, first.id)  # wakes the second
    await pause_task(lab.db, lab.bus, second.id)  # (mostly) before its woken job runs
    assert (await lab.wait(third.id, limit=15)).status == "succeeded"
    assert (await get_task(lab.db, second.id)).status == "paused"


def test_the_cap_is_a_setting_of_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAP, raising=False)
    assert load_settings().task_max_running_per_owner == 2
    monkeypatch.setenv(CAP, "5")
    assert load_settings().task_max_running_per_owner == 5
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(CAP, bad)
        with pytest.raises(ConfigurationError, match=CAP):
            load_settings()


# --- two worker processes ---------------------------------------------------------------------

TASKS = 6
SECONDS = 1.0  # each task's one tool call


@pytest.fixture
def database(test_server_url: str) -> Iterator[ScratchDatabase]:
    with scratch_database(test_server_url) as db:
        yield db


@pytest.fixture
def stub(llm_stub: LLMStubServer) -> Iterator[LLMStubServer]:
    llm_stub.reset()
    try:
        yield llm_stub
    finally:
        llm_stub.reset()


def start_many(db: ScratchDatabase, count: int) -> dict[int, str]:
    """`count` tasks of the local owner's agent, each a `slow_write` of `SECONDS` (key `t<n>`):
    their goals by id."""

    async def work() -> dict[int, str]:
        async with Database(db.url, min_size=0, max_size=2) as database:
            owner = await local_owner_id(database)
            store = PostgresAgentStore(database)
            agent = Agent("Tasker", "ollama", "llama3.2", store=store, owner_id=owner)
            await agent.save()
            await database.execute(
                "INSERT INTO tool.agent_tools (agent_id, tool_name, enabled, policy)"
                " VALUES ($1, 'slow_write', true, 'allow')",
                agent.id,
            )
            goals = {}
            for n in range(count):
                goal = "CALL slow_write " + json.dumps({"key": f"t{n}", "seconds": SECONDS})
                task = await start_task(database, None, owner, TaskSpec(agent="Tasker", goal=goal))
                goals[task.id] = goal
            return goals

    return asyncio.run(work())


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of `intervals` that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in edges:  # at a tie an end comes first (-1 < 1): touching is not overlapping
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_two_workers_never_run_more_of_one_owner_s_tasks_than_the_cap(
    database: ScratchDatabase, stub: LLMStubServer
) -> None:
    """Two workers of 2 jobs each could run 4 tasks at once; the owner's cap is 2."""
    environment = {CAP: "2", **stub.environment()}
    workers = [Worker(database, **environment), Worker(database, **environment)]
    try:
        goals = start_many(database, TASKS)

        def ended() -> bool:
            rows = database.sql(
                "SELECT count(*) FROM scheduler.tasks WHERE status IN"
                " ('succeeded', 'failed', 'cancelled')"
            )
            return rows[0][0] == TASKS

        try:
            wait_until(ended, 120, "every task ended")
        except AssertionError:
            logs = "\n".join(f"--- worker {w.pid}:\n{w.output()}" for w in workers)
            raise AssertionError(f"{database.sql('TABLE scheduler.tasks')}\n{logs}") from None
        rows = database.sql("SELECT id, status, result FROM scheduler.tasks")
        assert {id: (status, result) for id, status, result in rows} == {
            id: ("succeeded", f"Echo: {goal}") for id, goal in goals.items()
        }
        marks = database.sql(
            "SELECT key, min(at) FILTER (WHERE what = 'started'),"
            " max(at) FILTER (WHERE what = 'done'), count(*) FROM job_test_marks GROUP BY key"
        )
        assert sorted(key for key, *_ in marks) == [f"t{n}" for n in range(TASKS)]
        assert all(count == 2 for *_, count in marks)  # each call ran once
        assert most_at_once([(begin, end) for _, begin, end, _ in marks]) == 2
        assert all(worker.process.poll() is None for worker in workers)
    finally:
        for worker in workers:
            worker.stop()

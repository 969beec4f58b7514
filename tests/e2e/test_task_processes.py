"""Background agent tasks across real processes: two `gathering worker`s on a scratch database,
the model faked at the HTTP wire by the test's LLM stub (Ollama's format), the tool a write of
the test plugin (`slow_write`, which marks `job_test_marks` from the worker process that runs
it). The worker running the task is killed (SIGKILL) mid-step, once in a tool call and once
in a model call: the other worker's stalled-jobs duty queues the task's job again, and it
goes on from the last stored step and finishes. Its step log has no gap and no duplicate step,
a write cut short is reported as interrupted and never made twice, and a model call cut short
is made again. A pause given from another process stops the call in the worker's process."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from job_processes import ScratchDatabase, Worker, scratch_database, wait_until

from gathering.agents import Agent, PostgresAgentStore
from gathering.agents.retrieval import local_owner_id
from gathering.db import Database
from gathering.llm import ToolCall
from gathering.scheduler.tasks import TaskSpec, start_task
from gathering.testing import LLMStubServer
from gathering.testing.wire_requests import StubRequest, last_user_text

pytestmark = pytest.mark.slow
RECOVERY = 60  # s: bound on the wait for a killed worker's task to end elsewhere
ENDED = ("succeeded", "failed", "cancelled")


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


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall("", name, arguments)


def start(db: ScratchDatabase, goal: str) -> int:
    """An agent `Tasker` allowed `slow_write` (a plugin tool, known only to the workers: its
    setting is written with SQL), and a task of it on `goal`; the task's id."""

    async def work() -> int:
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
            task = await start_task(database, None, owner, TaskSpec(agent="Tasker", goal=goal))
            return task.id

    return asyncio.run(work())


def task_row(db: ScratchDatabase, task_id: int) -> dict[str, Any]:
    rows = db.sql(
        "SELECT status, result, error, steps, job_id FROM scheduler.tasks WHERE id = %s", task_id
    )
    return dict(zip(("status", "result", "error", "steps", "job_id"), rows[0], strict=True))


def steps_of(db: ScratchDatabase, task_id: int) -> list[dict[str, Any]]:
    rows = db.sql(
        "SELECT n, status, thought, tool_calls, results FROM scheduler.task_steps"
        " WHERE task_id = %s ORDER BY n",
        task_id,
    )
    names = ("n", "status", "thought", "tool_calls", "results")
    return [dict(zip(names, row, strict=True)) for row in rows]


def wait_ended(db: ScratchDatabase, task_id: int, workers: list[Worker]) -> dict[str, Any]:
    """The task once ended, within `RECOVERY` s (the workers' output in the failure)."""

    def ended() -> dict[str, Any] | None:
        row = task_row(db, task_id)
        return row if row["status"] in ENDED else None

    try:
        row: dict[str, Any] = wait_until(ended, RECOVERY, f"task {task_id} ended")
    except AssertionError as exc:
        logs = "\n".join(f"--- worker {w.pid}:\n{w.output()}" for w in workers)
        raise AssertionError(f"{exc}; it is {task_row(db, task_id)}\n{logs}") from None
    return row


def job_events(db: ScratchDatabase, task_id: int) -> list[str]:
    """What procrastinate recorded of the task's job, in order (a task has one job until it
    is paused or waits for a person: a stalled job is queued again under its own id)."""
    rows = db.sql(
        "SELECT e.type::text FROM procrastinate_events e JOIN procrastinate_jobs j"
        " ON j.id = e.job_id WHERE j.args ->> 'task_id' = %s ORDER BY e.id",
        str(task_id),
    )
    return [row[0] for row in rows]


def worker_of(workers: list[Worker], pid: int) -> Worker:
    (worker,) = [w for w in workers if w.pid == pid]
    return worker


def chats_on(stub: LLMStubServer, goal: str) -> list[StubRequest]:
    """The model calls of the task on `goal` (its last user message is always its goal)."""
    return [
        request
        for request in stub.requests
        if request.path.endswith("/api/chat")
        and last_user_text((request.json or {}).get("messages") or []) == goal
    ]


def test_a_task_killed_in_a_tool_call_finishes_on_the_other_worker(
    database: ScratchDatabase, stub: LLMStubServer
) -> None:
    goal = f"Write a, then b ({secrets.token_hex(4)})."
    stub.add_reply(
        call("slow_write", key="a", seconds=0.2),
        call("slow_write", key="b", seconds=60),
        "done",
    )
    workers = [Worker(database, **stub.environment()), Worker(database, **stub.environment())]
    try:
        task_id = start(database, goal)
        marks = wait_until(lambda: database.marks("b"), 30, "b started")
        assert [what for what, _ in marks] == ["started"]
        victim = worker_of(workers, marks[0][1])
        (survivor,) = [w for w in workers if w is not victim]
        running = task_row(database, task_id)
        assert (running["status"], running["steps"]) == ("running", 2)
        victim.kill()

        ended = wait_ended(database, task_id, workers)
        assert ended["status"] == "succeeded", ended["error"]
        assert (ended["result"], ended["steps"], ended["error"]) == ("done", 3, None)
        # The job that took the task up again is the same one, queued again as stalled.
        events = job_events(database, task_id)
        assert (events.count("started"), events[-1]) == (2, "succeeded"), events
        assert "deferred_for_retry" in events, events
        steps = steps_of(database, task_id)
        assert [s["n"] for s in steps] == [1, 2, 3]  # no gap, no duplicate
        assert all(s["status"] == "done" for s in steps)
        (first,) = steps[0]["results"].values()
        assert (first["status"], first["name"], first["content"]) == (
            "finished",
            "slow_write",
            "a done",
        )
        (cut,) = steps[1]["results"].values()
        assert (cut["status"], cut["name"]) == ("interrupted", "slow_write")
        assert "may or may not have taken effect" in cut["content"]
        assert (steps[2]["thought"], steps[2]["tool_calls"]) == ("done", [])
        # The write cut short was never made again; the earlier one ran once.
        assert database.marks("b") == [("started", victim.pid)]
        assert database.marks("a") == [("started", victim.pid), ("done", victim.pid)]
        # The model was asked three times: the last time, told that b was interrupted.
        chats = chats_on(stub, goal)
        assert len(chats) == 3
        assert "interrupted" in json.dumps(chats[-1].json["messages"])
        assert survivor.process.poll() is None, survivor.output()
    finally:
        for worker in workers:
            worker.stop()


def test_a_task_killed_in_a_model_call_asks_the_model_again_on_the_other_worker(
    database: ScratchDatabase, stub: LLMStubServer
) -> None:
    goal = f"Write a, then answer ({secrets.token_hex(4)})."
    stub.add_reply(call("slow_write", key="a", seconds=0.2), "done")
    first_call = stub.hold(goal)
    workers = [Worker(database, **stub.environment()), Worker(database, **stub.environment())]
    second_call = None
    try:
        task_id = start(database, goal)
        assert first_call.arrived.wait(30), "the first model call did not come"
        # Hold the next model call of the task too (the held one keeps its own hold).
        second_call = stub.hold(goal)
        first_call.release()
        assert second_call.arrived.wait(30), "the second model call did not come"
        assert [what for what, _ in database.marks("a")] == ["started", "done"]
        victim = worker_of(workers, database.marks("a")[0][1])  # the task's worker
        (survivor,) = [w for w in workers if w is not victim]
        assert task_row(database, task_id)["steps"] == 1
        # The parked request keeps its hold (released once the task ended: it then answers a
        # dead connection, and takes no queued reply); the call made again is not held.
        del stub.holds[goal]
        victim.kill()

        ended = wait_ended(database, task_id, workers)
        assert ended["status"] == "succeeded", ended["error"]
        assert (ended["result"], ended["steps"], ended["error"]) == ("done", 2, None)
        events = job_events(database, task_id)
        assert (events.count("started"), events[-1]) == (2, "succeeded"), events
        assert "deferred_for_retry" in events, events
        steps = steps_of(database, task_id)
        assert [s["n"] for s in steps] == [1, 2]  # no gap, no duplicate
        assert all(s["status"] == "done" for s in steps)
        (first,) = steps[0]["results"].values()
        assert (first["status"], first["content"]) == ("finished", "a done")
        assert (steps[1]["thought"], steps[1]["tool_calls"]) == ("done", [])
        assert database.marks("a") == [("started", victim.pid), ("done", victim.pid)]
        # Asked three times: step 1, step 2 on the killed worker, step 2 again on the other,
        # with the same goal and history (step 1's call and its result).
        chats = chats_on(stub, goal)
        assert len(chats) == 3
        lost, again = (chat.json["messages"] for chat in chats[1:])
        assert [m for m in lost if m["role"] != "system"] == [
            m for m in again if m["role"] != "system"
        ]
        assert "a done" in json.dumps(again)
        assert survivor.process.poll() is None, survivor.output()
    finally:
        first_call.release()
        if second_call is not None:
            second_call.release()
        for worker in workers:
            worker.stop()


def control(db: ScratchDatabase, verb: str, task_id: int) -> str:
    """Pause, resume or cancel task `task_id` from the test's process; its new status."""
    from gathering.scheduler import tasks

    act = {"pause": tasks.pause_task, "resume": tasks.resume_task, "cancel": tasks.cancel_task}

    async def work() -> str:
        async with Database(db.url, min_size=0, max_size=2) as database:
            return (await act[verb](database, None, task_id)).status

    return asyncio.run(work())


def test_a_pause_from_another_process_stops_the_running_call_and_resume_goes_on(
    database: ScratchDatabase, stub: LLMStubServer
) -> None:
    """The pause is given by the test's process; the call runs in a worker process. The
    worker's job is aborted (procrastinate's NOTIFY): the cut call's time is billed there (it
    is marked charged), the write is never finished, and a resume from here goes on with the
    call reported interrupted."""
    goal = f"Write c, then answer ({secrets.token_hex(4)})."
    stub.add_reply(call("slow_write", key="c", seconds=60), "after the pause")
    workers = [Worker(database, **stub.environment()), Worker(database, **stub.environment())]
    try:
        task_id = start(database, goal)
        wait_until(lambda: database.marks("c"), 30, "c started")
        assert control(database, "pause", task_id) == "paused"

        def cut() -> bool:
            steps = steps_of(database, task_id)
            (state,) = steps[0]["results"].values()
            return bool(state.get("charged"))

        wait_until(cut, 30, "the call cut short in its worker")
        assert task_row(database, task_id)["status"] == "paused"
        assert control(database, "resume", task_id) == "queued"
        ended = wait_ended(database, task_id, workers)
        assert (ended["status"], ended["result"]) == ("succeeded", "after the pause")
        steps = steps_of(database, task_id)
        assert [s["n"] for s in steps] == [1, 2]
        (state,) = steps[0]["results"].values()
        assert state["status"] == "interrupted"
        assert [what for what, _ in database.marks("c")] == ["started"]
        assert all(w.process.poll() is None for w in workers)
    finally:
        for worker in workers:
            worker.stop()

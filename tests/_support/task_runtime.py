"""A background-task runtime in the test's process: its own migrated database, an event bus,
the job queue with the scheduler's and the pipelines' tasks, a worker, a stored agent `Tasker` whose model is the
LLM stub (real HTTP, Ollama's wire format), and tools the test can count and hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pipeline_runtime import LAB, TOOLS

from gathering.agents import Agent, PostgresAgentStore
from gathering.agents.retrieval import local_owner_id
from gathering.db import Database
from gathering.events import Event, EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker
from gathering.llm import ToolCall
from gathering.pipelines.jobs import blueprint as pipelines_blueprint
from gathering.scheduler import Scheduler
from gathering.scheduler.goals import GoalIn, GoalRecord, create_goal, get_goal
from gathering.scheduler.jobs import blueprint as scheduler_blueprint
from gathering.scheduler.tasks import TaskRecord, TaskSpec, get_task, start_task
from gathering.testing import LLMStubServer
from gathering.tools import function_tool
from gathering.tools import registry as registry_module
from gathering.tools.agent_tools import change_agent_tool

ENDED = ("succeeded", "failed", "cancelled")


async def hold_write(key: str) -> str:
    """Wait until the test releases `key` (a write: reported interrupted when cut short)."""
    LAB.calls[key] += 1
    LAB.started_event(key).set()
    await LAB.gates.setdefault(key, asyncio.Event()).wait()
    return f"{key} released"


HOLD_WRITE = function_tool(hold_write, effect="write", timeout=600)


@dataclass
class Lab:
    db: Database
    bus: EventBus
    scheduler: Scheduler
    owner_id: int
    agent_id: int
    stub: LLMStubServer
    events: list[Event]

    async def start(self, goal: str, **budgets: Any) -> TaskRecord:
        spec = TaskSpec(agent="Tasker", goal=goal, **budgets)
        return await start_task(self.db, self.bus, self.owner_id, spec)

    async def wait(self, task_id: int, *statuses: str, limit: float = 30) -> TaskRecord:
        wanted = statuses or ENDED
        deadline = time.monotonic() + limit
        while True:
            task = await get_task(self.db, task_id)
            if task.status in wanted:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} is {task.status}, not {wanted}: {task}")
            await asyncio.sleep(0.05)

    async def enable(self, tool: Any, policy: str | None = None) -> None:
        await change_agent_tool(self.db, self.agent_id, tool, {"enabled": True, "policy": policy})

    def kinds(self, task_id: int) -> list[str]:
        return [e.type for e in self.events if e.data.get("task_id") == task_id]


@pytest.fixture
async def task_lab(migrated_database_url: str, llm_stub_env: LLMStubServer) -> AsyncIterator[Lab]:
    llm_stub_env.reset()
    for tool in [*TOOLS, HOLD_WRITE]:
        registry_module.registry.register(tool)
    for state in (LAB.calls, LAB.failures_left, LAB.gates, LAB.started):
        state.clear()
    db = Database(migrated_database_url)
    await db.connect()
    bus = EventBus(db, poll_interval=0.2)
    await bus.start()
    events: list[Event] = []
    subscription = bus.subscribe(["task.*"], events.append)
    blueprints = {"pipelines": pipelines_blueprint, "scheduler": scheduler_blueprint}
    queue = await JobQueue(db, blueprints=blueprints).open()
    worker = JobWorker(queue, JobServices(db, bus), concurrency=4, shutdown_timeout=0.5)
    await worker.start()
    owner = await local_owner_id(db)
    agent = Agent("Tasker", "ollama", "llama3.2", store=PostgresAgentStore(db), owner_id=owner)
    await agent.save()
    assert agent.id is not None
    try:
        yield Lab(db, bus, Scheduler(db, bus), owner, agent.id, llm_stub_env, events)
    finally:
        for gate in LAB.gates.values():
            gate.set()
        await worker.stop()
        subscription.unsubscribe()
        await queue.close()
        await bus.close(grace=1)
        await db.disconnect()
        for tool in [*TOOLS, HOLD_WRITE]:
            registry_module.registry.unregister(tool.name)
        llm_stub_env.reset()


async def until(what: str, check: Any, limit: float = 15) -> None:
    """Wait (bounded) until the coroutine function `check` gives a true value."""
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {limit:g}s")
        await asyncio.sleep(0.05)


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall("", name, arguments)


async def add_goal(lab: Lab, title: str, **fields: Any) -> GoalRecord:
    """A goal of the lab's owner (`parent_id`, `agent`, ... as `GoalIn` takes them)."""
    async with lab.db.transaction() as tx:
        return await create_goal(tx, lab.owner_id, GoalIn(title=title, **fields))


async def goal_settled(lab: Lab, goal_id: int, *statuses: str, limit: float = 30) -> GoalRecord:
    """Run the scheduler's sweep until goal `goal_id` has one of `statuses`."""
    deadline = time.monotonic() + limit
    while True:
        await lab.scheduler.tick()
        goal = await get_goal(lab.db, goal_id)
        if goal.status in statuses:
            return goal
        if time.monotonic() > deadline:
            raise AssertionError(f"goal {goal_id} is {goal.status}, not {statuses}")
        await asyncio.sleep(0.1)

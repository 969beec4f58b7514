"""A circles runtime in the test's process: its own migrated database, an event bus whose
`circle.*` events the test keeps, stored agents whose model is the LLM stub (real HTTP,
Ollama's wire format), and, when asked, a job worker that runs the agents' work and reviews."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gathering.agents import Agent, PostgresAgentStore
from gathering.agents.retrieval import local_owner_id
from gathering.circles import (
    Actor,
    CircleIn,
    CircleRecord,
    CircleSettings,
    CircleTask,
    MemberIn,
    MemberRecord,
    TaskFlow,
    TaskIn,
    add_member,
    create_circle,
    get_circle_task,
    set_circle_status,
)
from gathering.circles.jobs import blueprint as circles_blueprint
from gathering.db import Database
from gathering.events import Event, EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker
from gathering.testing import LLMStubServer

ENDED = ("completed", "failed", "cancelled")


@dataclass
class CircleLab:
    db: Database
    bus: EventBus
    flow: TaskFlow
    owner_id: int
    stub: LLMStubServer
    events: list[Event]
    agents: dict[str, int] = field(default_factory=dict)
    worker: JobWorker | None = None
    queue: JobQueue | None = None

    async def agent(self, name: str) -> int:
        """A stored agent of the owner, on the LLM stub."""
        if name not in self.agents:
            store = PostgresAgentStore(self.db)
            agent = Agent(name, "ollama", "llama3.2", store=store, owner_id=self.owner_id)
            await agent.save()
            assert agent.id is not None
            self.agents[name] = agent.id
        return self.agents[name]

    async def circle(
        self, name: str = "team", *, active: bool = True, **settings: Any
    ) -> CircleRecord:
        spec = CircleIn(name=name, settings=CircleSettings(**settings))
        async with self.db.transaction() as tx:
            circle = await create_circle(tx, self.owner_id, spec)
            if active:
                circle = await set_circle_status(tx, circle.id, "active")
        return circle

    async def member(
        self, circle: CircleRecord, name: str, role: str = "member", **competencies: int
    ) -> MemberRecord:
        await self.agent(name)
        spec = MemberIn.model_validate({"agent": name, "role": role, "competencies": competencies})
        async with self.db.transaction() as tx:
            return await add_member(tx, circle, spec)

    async def task(
        self, circle: CircleRecord, title: str = "write it", **fields: Any
    ) -> CircleTask:
        return await self.flow.create(circle.id, TaskIn(title=title, **fields), self.owner_id)

    async def wait(self, task_id: int, *statuses: str, limit: float = 30) -> CircleTask:
        """The task once it is in one of `statuses` (an ended one by default)."""
        wanted = statuses or ENDED
        deadline = time.monotonic() + limit
        while True:
            task = await get_circle_task(self.db, task_id)
            if task.status in wanted:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} is {task.status}, not {wanted}: {task}")
            await asyncio.sleep(0.05)

    def kinds(self, task_id: int | None = None) -> list[str]:
        return [e.type for e in self.events if task_id is None or e.data.get("task_id") == task_id]

    async def start_worker(self) -> None:
        self.queue = await JobQueue(self.db, blueprints={"circles": circles_blueprint}).open()
        self.worker = JobWorker(
            self.queue, JobServices(self.db, self.bus), concurrency=4, shutdown_timeout=0.5
        )
        await self.worker.start()


def as_member(member: MemberRecord) -> Actor:
    return Actor(member_id=member.id)


@pytest.fixture
async def circle_lab(
    migrated_database_url: str, llm_stub_env: LLMStubServer
) -> AsyncIterator[CircleLab]:
    llm_stub_env.reset()
    db = Database(migrated_database_url)
    await db.connect()
    bus = EventBus(db, poll_interval=0.1)
    await bus.start()
    events: list[Event] = []
    subscription = bus.subscribe(["circle.*", "conversation.*"], events.append)
    lab = CircleLab(db, bus, TaskFlow(db, bus), await local_owner_id(db), llm_stub_env, events)
    try:
        yield lab
    finally:
        if lab.worker is not None:
            await lab.worker.stop()
        if lab.queue is not None:
            await lab.queue.close()
        subscription.unsubscribe()
        await bus.close(grace=1)
        await db.disconnect()
        llm_stub_env.reset()

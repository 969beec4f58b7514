"""A pipeline runtime in the test's process: its own migrated database, an event bus, the job
queue with the pipelines' task, a worker, the deadlines duty, and tools whose calls the test
can count and steer (fail a few times, block until released)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from gathering.agents.retrieval import local_owner_id
from gathering.db import Database
from gathering.errors import ToolFailedError
from gathering.events import Event, EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker
from gathering.pipelines import create_pipeline
from gathering.pipelines.breaker import BreakerPolicy
from gathering.pipelines.executor import Executor
from gathering.pipelines.jobs import blueprint, deadlines_duty
from gathering.pipelines.runs import RunRecord, get_run
from gathering.tools import function_tool
from gathering.tools import registry as registry_module
from gathering.tools.context import ToolContext


@dataclass
class ToolLab:
    """The test tools' shared state: calls per key, failures left per key, blocked keys."""

    calls: Counter[str] = field(default_factory=Counter)
    failures_left: Counter[str] = field(default_factory=Counter)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    started: dict[str, asyncio.Event] = field(default_factory=dict)

    def started_event(self, key: str) -> asyncio.Event:
        return self.started.setdefault(key, asyncio.Event())


LAB = ToolLab()


async def echo(text: str) -> str:
    """Give `text` back (counted)."""
    LAB.calls[text] += 1
    return text


async def flaky(key: str) -> str:
    """Fail while failures are left for `key`, then succeed (counted)."""
    LAB.calls[key] += 1
    if LAB.failures_left[key] > 0:
        LAB.failures_left[key] -= 1
        raise ToolFailedError(f"{key} failed on purpose")
    return f"{key} ok"


async def blocked(key: str) -> str:
    """Wait until the test releases `key` (counted when it starts)."""
    LAB.calls[key] += 1
    LAB.started_event(key).set()
    await LAB.gates.setdefault(key, asyncio.Event()).wait()
    return f"{key} released"


async def whoami(context: ToolContext) -> str:
    """The id of this call (a pipeline node's idempotency key: run/node/attempt)."""
    LAB.calls["whoami"] += 1
    return context.call_id or ""


async def send(text: str) -> str:
    """Send `text` somewhere outside (an external effect; counted)."""
    LAB.calls[f"send:{text}"] += 1
    return f"sent {text}"


TOOLS = [
    function_tool(echo, effect="read"),
    function_tool(whoami, effect="write"),
    function_tool(send, effect="external"),
    function_tool(flaky, effect="write"),
    function_tool(blocked, effect="read", timeout=600),
]


@dataclass
class Runtime:
    db: Database
    bus: EventBus
    queue: JobQueue
    executor: Executor
    owner_id: int
    events: list[Event]

    async def pipeline(self, document: dict[str, Any]) -> tuple[int, int]:
        record = await create_pipeline(self.db, document, owner_id=self.owner_id)
        return record.id, record.version

    async def start(
        self, document: dict[str, Any], run_input: dict[str, Any] | None = None
    ) -> RunRecord:
        pipeline_id, version = await self.pipeline(document)
        return await self.executor.start_run(pipeline_id, version, self.owner_id, run_input or {})

    async def wait(self, run_id: int, *statuses: str, limit: float = 30) -> RunRecord:
        wanted = statuses or ("succeeded", "failed", "cancelled")
        deadline = time.monotonic() + limit
        while True:
            run = await get_run(self.db, run_id)
            if run.status in wanted:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run.status}, not {wanted}: {run.nodes}")
            await asyncio.sleep(0.05)

    def event_types(self, run_id: int) -> list[str]:
        return [e.type for e in self.events if e.data.get("run_id") == run_id]


def linear(*nodes: dict[str, Any], name: str = "p", **extra: Any) -> dict[str, Any]:
    """A definition: a manual trigger `start`, then `nodes` one after another."""
    all_nodes = [{"id": "start", "type": "trigger", "config": {"kind": "manual"}}, *nodes]
    edges = [{"from": a["id"], "to": b["id"]} for a, b in pairwise(all_nodes)]
    return {"name": name, "nodes": all_nodes, "edges": edges, **extra}


def tool_node(node_id: str, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "tool", "config": {"tool": tool, "arguments": arguments}}


@asynccontextmanager
async def pipeline_runtime(
    database_url: str, *, breaker: BreakerPolicy | None = None, workers: int = 1
) -> AsyncIterator[Runtime]:
    """A runtime on the database at `database_url`, stopped (and the test tools removed) on
    exit."""
    LAB.calls.clear()
    LAB.failures_left.clear()
    LAB.gates.clear()
    LAB.started.clear()
    for tool in TOOLS:
        registry_module.registry.register(tool)
    db = Database(database_url)
    await db.connect()
    bus = EventBus(db, poll_interval=0.2)
    await bus.start()
    events: list[Event] = []
    subscription = bus.subscribe(["pipeline_run.*", "pipeline_node.*"], events.append)
    queue = await JobQueue(db, blueprints={"pipelines": blueprint}).open()
    services = JobServices(db, bus)
    executor = Executor(db, bus, breaker=breaker)
    running = [
        JobWorker(queue, services, concurrency=4, shutdown_timeout=0.5) for _ in range(workers)
    ]
    duty = deadlines_duty(services, interval=0.2)
    try:
        for worker in running:
            worker.services = services
            await worker.start()
        await duty.start()
        owner = await local_owner_id(db)
        yield Runtime(db, bus, queue, executor, owner, events)
    finally:
        for gate in LAB.gates.values():
            gate.set()
        await duty.stop()
        for worker in running:
            await worker.stop()
        subscription.unsubscribe()
        await queue.close()
        await bus.close(grace=1)
        await db.disconnect()
        for tool in TOOLS:
            registry_module.registry.unregister(tool.name)

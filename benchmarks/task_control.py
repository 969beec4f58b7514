"""Background tasks: how soon a pause stops a running task's job, and how soon a resume has it
working again, against PostgreSQL's own NOTIFY round trip measured in the same run.

One task of an agent whose model is the LLM stub (real HTTP): its first step calls a `read`
tool that never returns, so each resume runs the call again. Two `JobWorker`s (concurrency 2)
run in this process while a busy-looping process keeps one of the machine's cores loaded. Each
round pauses the task (`pause_task`, as the API does) and times until its job has stopped (the
cut call's run is counted, which only the stopped job does), then resumes it and times until the
call runs again. The baseline: a NOTIFY from one connection until another connection that
LISTENs receives it, the message a pause rides on. Target: a pause stops the job within 1 s
(p99).

Bounded in count and time; creates its own embedded server in a temporary directory; touches
only loopback. Run: `.venv/bin/python benchmarks/task_control.py` (`--rounds` to change the
count).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_DATA_DIR = Path(tempfile.mkdtemp(prefix="gathering-bench-tasks-"))
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)  # after the server stops
os.environ["GATHERING_DATA_DIR"] = str(_DATA_DIR)
os.environ.setdefault("GATHERING_LOG_LEVEL", "WARNING")
os.environ.pop("DATABASE_URL", None)

import psycopg  # noqa: E402
import structlog  # noqa: E402

from gathering.agents import Agent, PostgresAgentStore  # noqa: E402
from gathering.agents.retrieval import local_owner_id  # noqa: E402
from gathering.db import Database  # noqa: E402
from gathering.events import EventBus  # noqa: E402
from gathering.jobs import JobQueue, JobServices, JobWorker  # noqa: E402
from gathering.llm import ToolCall  # noqa: E402
from gathering.scheduler.jobs import blueprint  # noqa: E402
from gathering.scheduler.tasks import (  # noqa: E402
    TaskSpec,
    pause_task,
    resume_task,
    start_task,
    task_steps,
)
from gathering.testing import LLMStubServer  # noqa: E402
from gathering.tools import function_tool  # noqa: E402
from gathering.tools import registry as registry_module  # noqa: E402
from gathering.tools.agent_tools import change_agent_tool  # noqa: E402

ROUNDS = 40
LIMIT = 10.0  # seconds any one wait may take
RUNS = 0  # how many times the held call started


async def bench_hold() -> str:
    """Wait for ever (a read: run again after each resume)."""
    global RUNS
    RUNS += 1
    await asyncio.Event().wait()
    return "never"


HOLD = function_tool(bench_hold, effect="read", timeout=600)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def until(what: str, check: object) -> float:
    """Poll `check` (a coroutine function) every millisecond; when it came true."""
    deadline = time.perf_counter() + LIMIT
    while not await check():  # type: ignore[operator]
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not within {LIMIT:g} s")
        await asyncio.sleep(0.001)
    return time.perf_counter()


async def notify_round_trips(url: str, rounds: int) -> list[float]:
    """Seconds from a NOTIFY on one connection to its receipt on another, `rounds` times."""
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    sender = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await listener.execute("LISTEN bench_control")
        notifies = listener.notifies()
        seconds = []
        for n in range(rounds):
            began = time.perf_counter()
            await sender.execute("SELECT pg_notify('bench_control', %s)", [str(n)])
            async with asyncio.timeout(LIMIT):
                await anext(notifies)
            seconds.append(time.perf_counter() - began)
        return seconds
    finally:
        await listener.close()
        await sender.close()


async def control(rounds: int) -> None:
    stub = LLMStubServer().start()
    os.environ.update(stub.environment())  # before the settings are first read
    db = Database(test=True)
    await db.connect()
    bus = EventBus(db)
    await bus.start()
    registry_module.registry.register(HOLD)
    queue = await JobQueue(db, blueprints={"scheduler": blueprint}).open()
    workers = [
        JobWorker(queue, JobServices(db, bus), concurrency=2, shutdown_timeout=1.0)
        for _ in range(2)
    ]
    hog = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    pauses: list[float] = []
    resumes: list[float] = []
    try:
        for worker in workers:
            await worker.start()
        owner = await local_owner_id(db)
        agent = Agent("Bench", "ollama", "llama3.2", store=PostgresAgentStore(db), owner_id=owner)
        await agent.save()
        assert agent.id is not None
        await change_agent_tool(db, agent.id, HOLD, {"enabled": True, "policy": None})
        stub.add_reply(ToolCall("", "bench_hold", {}))
        spec = TaskSpec(agent="Bench", goal="hold", max_seconds=3600)
        task = await start_task(db, bus, owner, spec)

        async def call_running() -> bool:
            return RUNS > seen

        async def cut_counted() -> bool:
            steps = await task_steps(db, task.id)
            return bool(steps and all(s.get("charged") for s in steps[0].results.values()))

        seen = 0
        await until("the first call", call_running)
        for _ in range(rounds):
            seen = RUNS
            began = time.perf_counter()
            await pause_task(db, bus, task.id)
            pauses.append(await until("the job stops", cut_counted) - began)
            began = time.perf_counter()
            await resume_task(db, bus, task.id)
            resumes.append(await until("the call runs again", call_running) - began)
        baseline = await notify_round_trips(db.url, rounds)
    finally:
        hog.kill()
        await hog.wait()
        for worker in workers:
            await worker.stop()
        await queue.close()
        await bus.close(grace=1)
        await db.disconnect()
        stub.stop()
    notify = statistics.median(baseline)
    print(f"task control: {rounds} pauses and resumes of one task, one core kept busy")
    print(f"  NOTIFY round trip (baseline): p50 {notify * 1000:7.1f} ms")
    for name, values in (("pause to job stopped", pauses), ("resume to call running", resumes)):
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(
            f"  {name:23}: p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms"
            f"  ({p50 / notify:.0f}x the baseline)"
        )
    p99 = percentile(pauses, 0.99)
    print(f"  a pause stops the job within 1 s (p99): {'met' if p99 < 1 else 'NOT MET'}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    options = parser.parse_args()
    if not 1 <= options.rounds <= 1_000:
        parser.error("--rounds is 1 to 1,000")
    return options


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # its app-in-__main__ warning
    asyncio.run(control(arguments().rounds))

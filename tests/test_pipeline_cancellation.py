"""Cancellation and timeouts of pipeline runs, on the real runtime (a worker in this process):
a cancel stops the running node within a second and nothing after it runs; run and node
timeouts are persisted deadlines; nothing is left running or queued afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from pipeline_runtime import LAB, Runtime, linear, pipeline_runtime, tool_node

from gathering.errors import ConflictError
from gathering.jobs import JobServices, JobWorker
from gathering.pipelines.runs import get_run

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(migrated_database_url: str) -> AsyncIterator[Runtime]:
    async with pipeline_runtime(migrated_database_url) as opened:
        yield opened


async def open_jobs(runtime: Runtime) -> list[str]:
    """The run's jobs still queued or running, once their workers had 2 s to record them."""
    for _ in range(40):
        jobs = await runtime.queue.list_jobs(limit=1000)
        left = [f"{job.id}:{job.status}" for job in jobs if job.status in ("todo", "doing")]
        if not left:
            break
        await asyncio.sleep(0.05)
    return left


async def test_pipeline_cancellation_stops_the_running_node_within_a_second(
    runtime: Runtime,
) -> None:
    document = linear(
        tool_node("slow", "blocked", key="slow"), tool_node("next", "echo", text="next")
    )
    run = await runtime.start(document)
    await asyncio.wait_for(LAB.started_event("slow").wait(), 20)
    started = time.monotonic()
    cancelled = await runtime.executor.cancel_run(run.id)
    assert cancelled.status == "cancelled"
    while (await get_run(runtime.db, run.id)).nodes["slow"].status == "running":
        assert time.monotonic() - started < 1.0, "the running node was not stopped within 1 s"
        await asyncio.sleep(0.02)
    done = await get_run(runtime.db, run.id)
    assert done.nodes["slow"].status == "cancelled"
    assert done.nodes["next"].status == "cancelled"
    assert LAB.calls["next"] == 0  # the downstream node never ran
    assert done.error == {"code": "cancelled", "message": "cancelled by request"}
    assert await open_jobs(runtime) == []


async def test_cancel_before_any_node_ran(migrated_database_url: str) -> None:
    async with pipeline_runtime(migrated_database_url, workers=0) as runtime:
        run = await runtime.start(linear(tool_node("a", "echo", text="never")))
        queued = (await get_run(runtime.db, run.id)).nodes["start"]
        assert queued.status == "queued" and queued.job_id is not None
        cancelled = await runtime.executor.cancel_run(run.id)
        assert {node.status for node in cancelled.nodes.values()} == {"cancelled"}
        assert (await runtime.queue.job(queued.job_id)).status == "cancelled"
        worker = JobWorker(runtime.queue, JobServices(runtime.db, runtime.bus))
        await worker.start()
        try:
            await asyncio.sleep(1.5)  # more than a worker's poll: it would have found a job
        finally:
            await worker.stop()
        assert LAB.calls["never"] == 0
        assert (await get_run(runtime.db, run.id)).nodes["a"].status == "cancelled"


async def test_cancel_of_a_finished_run_is_refused(runtime: Runtime) -> None:
    run = await runtime.start(linear(tool_node("a", "echo", text="x")))
    await runtime.wait(run.id)
    with pytest.raises(ConflictError, match="is succeeded: there is nothing to cancel"):
        await runtime.executor.cancel_run(run.id)


async def test_pipeline_timeout_fails_the_run_at_its_deadline(runtime: Runtime) -> None:
    document = linear(tool_node("slow", "blocked", key="forever"), timeout_seconds=600)
    run = await runtime.start(document)
    assert run.deadline is not None
    await asyncio.wait_for(LAB.started_event("forever").wait(), 20)
    # the deadline comes while the node runs, however slow the machine was to start it
    await runtime.db.execute(
        "UPDATE pipeline.runs SET deadline = now() + interval '0.3 seconds' WHERE id = $1",
        run.id,
    )
    done = await runtime.wait(run.id, "failed", limit=20)
    assert done.error is not None and done.error["code"] == "run_timeout"
    assert "did not finish within its timeout" in done.error["message"]
    for _ in range(100):
        if (await get_run(runtime.db, run.id)).nodes["slow"].status == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert (await get_run(runtime.db, run.id)).nodes["slow"].status == "cancelled"
    assert await open_jobs(runtime) == []


async def test_pipeline_timeout_skips_the_nodes_that_never_started(
    migrated_database_url: str,
) -> None:
    async with pipeline_runtime(migrated_database_url, workers=0) as runtime:
        document = linear(tool_node("a", "echo", text="late"), timeout_seconds=0.3)
        run = await runtime.start(document)
        done = await runtime.wait(run.id, "failed", limit=20)
        assert done.error is not None and done.error["code"] == "run_timeout"
        assert {node.status for node in done.nodes.values()} == {"skipped"}
        assert LAB.calls["late"] == 0
        assert await open_jobs(runtime) == []


async def test_a_node_timeout_is_an_attempt_that_failed_and_may_be_retried(
    runtime: Runtime,
) -> None:
    node = tool_node("slow", "blocked", key="stuck") | {
        "timeout_seconds": 0.3,
        "retry": {"max_attempts": 2, "backoff": 0.05, "retry_on": ["timeout"]},
    }
    run = await runtime.start(linear(node))
    done = await runtime.wait(run.id, "failed", limit=20)
    assert done.nodes["slow"].attempt == 2 and LAB.calls["stuck"] == 2
    assert done.error is not None and done.error["code"] == "timeout"


async def test_cancel_leaves_no_zombies(runtime: Runtime) -> None:
    document = {
        "name": "wide",
        "nodes": [
            {"id": "start", "type": "trigger"},
            *[tool_node(f"b{n}", "blocked", key=f"b{n}") for n in range(3)],
        ],
        "edges": [{"from": "start", "to": f"b{n}"} for n in range(3)],
    }
    run = await runtime.start(document)
    for n in range(3):
        await asyncio.wait_for(LAB.started_event(f"b{n}").wait(), 20)
    await runtime.executor.cancel_run(run.id)
    for _ in range(100):
        nodes = (await get_run(runtime.db, run.id)).nodes
        if all(node.status == "cancelled" for name, node in nodes.items() if name != "start"):
            break
        await asyncio.sleep(0.05)
    assert {n.status for name, n in nodes.items() if name != "start"} == {"cancelled"}
    for _ in range(100):
        if not await open_jobs(runtime):
            break
        await asyncio.sleep(0.05)
    assert await open_jobs(runtime) == []


async def test_cancelling_one_node_s_job_fails_that_node(runtime: Runtime) -> None:
    run = await runtime.start(linear(tool_node("slow", "blocked", key="job")))
    await asyncio.wait_for(LAB.started_event("job").wait(), 20)
    node = (await get_run(runtime.db, run.id)).nodes["slow"]
    assert node.job_id is not None
    await runtime.queue.cancel(node.job_id)
    done = await runtime.wait(run.id, "failed", limit=10)
    assert done.error is not None and done.error["code"] == "cancelled"

"""A job goes on from node to node: the node a success makes ready is claimed by the same job
in the step that stores the success (one statement for a plain chain), so a chain runs in one
job. What must hold all the same: other branches get jobs of their own, a job queued again
after its worker died takes up the node it was on (same attempt, same idempotency key), a
cancel or a shutdown that lands while the step is stored leaves no node claimed and never
started, the run still ends when the next node was not pending, and an open breaker on the
next node's target is seen through the step's own read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipeline_runtime import LAB, Runtime, linear, pipeline_runtime, tool_node

from gathering.errors import DatabaseError
from gathering.jobs import JobServices, JobWorker
from gathering.pipelines.breaker import BreakerPolicy, record_failure
from gathering.pipelines.executor import Claimed, Executor
from gathering.pipelines.runs import get_run
from gathering.tools import function_tool
from gathering.tools import registry as registry_module

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(migrated_database_url: str) -> AsyncIterator[Runtime]:
    async with pipeline_runtime(migrated_database_url) as opened:
        yield opened


@pytest.fixture
async def idle(migrated_database_url: str) -> AsyncIterator[Runtime]:
    """A runtime with no worker: the test runs the jobs by hand."""
    async with pipeline_runtime(migrated_database_url, workers=0) as opened:
        yield opened


async def jobs_of(runtime: Runtime, run_id: int) -> int:
    """How many node jobs run `run_id` had."""
    count = await runtime.db.fetch_val(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'pipelines:run_node'"
        " AND (args ->> 'run_id')::bigint = $1",
        run_id,
    )
    return int(count)


async def first_job(runtime: Runtime, run_id: int) -> int:
    job = (await get_run(runtime.db, run_id)).nodes["start"].job_id
    assert job is not None
    return job


def never_stopping() -> bool:
    return False


async def test_a_chain_runs_in_one_job(runtime: Runtime) -> None:
    document = linear(*(tool_node(f"n{i}", "echo", text=f"n{i}") for i in range(5)))
    done = await runtime.wait((await runtime.start(document)).id)
    assert done.status == "succeeded", done.error
    assert [done.outputs[f"n{i}"] for i in range(5)] == [f"n{i}" for i in range(5)]
    assert await jobs_of(runtime, done.id) == 1
    assert all(node.claims == 1 and node.attempt == 1 for node in done.nodes.values())


async def test_branches_that_become_ready_together_get_jobs_of_their_own(
    runtime: Runtime,
) -> None:
    document = {
        "name": "fan-out",
        "nodes": [
            {"id": "start", "type": "trigger"},
            tool_node("a", "blocked", key="a"),
            tool_node("b", "blocked", key="b"),
        ],
        "edges": [{"from": "start", "to": "a"}, {"from": "start", "to": "b"}],
    }
    run = await runtime.start(document)
    # Both run at once: one in the trigger's job, the other in a job of its own.
    async with asyncio.timeout(20):
        await LAB.started_event("a").wait()
        await LAB.started_event("b").wait()
    LAB.gates.setdefault("a", asyncio.Event()).set()
    LAB.gates.setdefault("b", asyncio.Event()).set()
    done = await runtime.wait(run.id)
    assert done.status == "succeeded"
    assert await jobs_of(runtime, run.id) == 2


async def test_the_events_of_a_chain_come_once_each_in_order(runtime: Runtime) -> None:
    document = linear(tool_node("a", "echo", text="a"), tool_node("b", "echo", text="b"))
    run = await runtime.start(document)
    await runtime.wait(run.id)
    for _ in range(100):
        if "pipeline_run.succeeded" in runtime.event_types(run.id):
            break
        await asyncio.sleep(0.02)
    node_events = [
        (e.data["node"], e.data["status"], e.data["attempt"])
        for e in runtime.events
        if e.data.get("run_id") == run.id and e.type.startswith("pipeline_node.")
    ]
    assert node_events == [
        ("start", "queued", 0),
        ("start", "running", 1),
        ("start", "succeeded", 1),
        ("a", "running", 1),
        ("a", "succeeded", 1),
        ("b", "running", 1),
        ("b", "succeeded", 1),
    ]


async def test_a_job_queued_again_after_its_worker_died_takes_up_the_node_it_went_on_to(
    idle: Runtime,
) -> None:
    run = await idle.start(linear(tool_node("a", "whoami"), tool_node("b", "echo", text="b")))
    job = await first_job(idle, run.id)
    # What kill -9 leaves after the job went on from `start` to `a`: `start` stored, `a` running
    # under the same job, the job queued again by the stalled-jobs duty (it keeps its id).
    await idle.db.execute(
        "UPDATE pipeline.node_runs SET status = 'succeeded', output = '{}', job_id = NULL,"
        " attempt = 1, claims = 1, finished_at = now() WHERE run_id = $1 AND node_id = 'start'",
        run.id,
    )
    await idle.db.execute(
        "UPDATE pipeline.node_runs SET status = 'running', job_id = $2, attempt = 1,"
        " claims = 1, started_at = now() WHERE run_id = $1 AND node_id = 'a'",
        run.id,
        job,
    )
    await idle.executor.run_node(run.id, "start", job, shutting_down=never_stopping)
    done = await get_run(idle.db, run.id)
    assert done.status == "succeeded", done.nodes
    assert done.outputs["a"] == f"{run.id}/a/1"  # the interrupted attempt's key
    assert (done.nodes["a"].attempt, done.nodes["a"].claims) == (1, 2)
    assert done.outputs["b"] == "b"
    assert LAB.calls["whoami"] == 1


async def test_the_run_ends_when_the_next_node_was_not_pending(idle: Runtime) -> None:
    run = await idle.start(
        linear(tool_node("a", "echo", text="a"), tool_node("b", "echo", text="b"))
    )
    # `b` already holds an output (as a retry's reused node does): `a`'s step settles `a`,
    # claims nothing, and the general step ends the run.
    await idle.db.execute(
        "UPDATE pipeline.node_runs SET status = 'succeeded', output = '\"kept\"',"
        " finished_at = now() WHERE run_id = $1 AND node_id = 'b'",
        run.id,
    )
    await idle.executor.run_node(
        run.id, "start", await first_job(idle, run.id), shutting_down=never_stopping
    )
    done = await get_run(idle.db, run.id)
    assert done.status == "succeeded"
    assert (done.outputs["a"], done.outputs["b"]) == ("a", "kept")
    assert LAB.calls["b"] == 0


class CancelledWhileStoring(Executor):
    """An executor whose job is cancelled (or its worker stopped) while a step is stored."""

    job: asyncio.Task[None] | None = None

    async def _settle_and_chain(self, claimed: Claimed, *args: Any) -> Claimed | bool:
        assert self.job is not None
        self.job.cancel()
        return await super()._settle_and_chain(claimed, *args)


@pytest.mark.parametrize("stopping", [False, True], ids=["cancel", "shutdown"])
async def test_a_node_claimed_while_the_job_was_stopped_never_starts(
    idle: Runtime, stopping: bool
) -> None:
    document = linear(tool_node("a", "echo", text="a"), tool_node("b", "echo", text="b"))
    run = await idle.start(document)
    executor = CancelledWhileStoring(idle.db, idle.bus)
    cancelled = asyncio.Event()

    def shutting_down() -> bool:
        return stopping and cancelled.is_set()

    job = await first_job(idle, run.id)

    async def the_job() -> None:
        try:
            await executor.run_node(run.id, "start", job, shutting_down=shutting_down)
        finally:
            cancelled.set()

    executor.job = asyncio.create_task(the_job())
    original = executor.job.cancel

    def cancel(msg: Any = None) -> bool:
        cancelled.set()
        return original(msg)

    executor.job.cancel = cancel  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await executor.job
    after = await get_run(idle.db, run.id)
    assert after.nodes["start"].status == "succeeded"
    assert LAB.calls["a"] == 0  # claimed in the step, never started
    if stopping:  # back in the queue, as if never claimed
        node = after.nodes["a"]
        assert (node.status, node.attempt) == ("queued", 0)
        assert node.job_id is not None and node.job_id != job
        await idle.executor.run_node(run.id, "a", node.job_id, shutting_down=never_stopping)
        done = await get_run(idle.db, run.id)
        assert done.status == "succeeded" and done.nodes["a"].attempt == 1
    else:  # this job alone was cancelled: the node it held fails
        assert after.nodes["a"].status == "failed"
        assert (after.nodes["a"].error or {})["code"] == "cancelled"
        assert after.status == "failed"


async def test_an_open_breaker_on_the_next_node_s_target_fails_it_without_a_call(
    idle: Runtime,
) -> None:
    policy = BreakerPolicy(failures=1, window=60, cooldown=60)
    run = await idle.start(linear(tool_node("a", "echo", text="a")))
    await record_failure(idle.db, f"{idle.owner_id}/tool:echo", policy)  # opens it
    executor = Executor(idle.db, idle.bus, breaker=policy)
    await executor.run_node(
        run.id, "start", await first_job(idle, run.id), shutting_down=never_stopping
    )
    done = await get_run(idle.db, run.id)
    assert done.status == "failed"
    assert (done.nodes["a"].error or {})["code"] == "circuit_open"
    assert LAB.calls["a"] == 0


# --- what the hostile review found -------------------------------------------------------------


async def test_a_draining_worker_takes_no_next_node(idle: Runtime) -> None:
    """A worker told to stop lets its running node finish, and queues the next node for
    another worker instead of starting it (an external one would then wait for a person)."""
    run = await idle.start(
        linear(tool_node("a", "blocked", key="drain"), tool_node("b", "send", text="pay"))
    )
    worker = JobWorker(idle.queue, JobServices(idle.db, idle.bus), shutdown_timeout=5)
    await worker.start()
    async with asyncio.timeout(20):
        await LAB.started_event("drain").wait()
    stopping = asyncio.create_task(worker.stop())  # a deploy: the worker drains
    await asyncio.sleep(0.2)
    LAB.gates.setdefault("drain", asyncio.Event()).set()  # `a` ends within the grace
    await stopping
    after = await get_run(idle.db, run.id)
    assert after.nodes["a"].status == "succeeded"
    assert after.nodes["b"].status == "queued" and LAB.calls["send:pay"] == 0
    job = after.nodes["b"].job_id
    assert job is not None
    await idle.executor.run_node(run.id, "b", job, shutting_down=never_stopping)
    done = await get_run(idle.db, run.id)
    assert done.status == "succeeded" and LAB.calls["send:pay"] == 1


class ProcessKilled(BaseException):
    """Stands for kill -9: nothing after it runs (no `except Exception` catches it)."""


class LosesTheDatabaseOnce(Executor):
    """The run-locked step after a success fails once (a lost connection): with `fatal`,
    as if the process died there."""

    fatal = False
    armed = True

    async def _locked(self, tx: Any, run_id: int, node_id: str | None) -> Any:
        if self.armed and node_id == "start":
            self.armed = False
            if self.fatal:
                raise ProcessKilled
            raise DatabaseError("connection lost")
        return await super()._locked(tx, run_id, node_id)


@pytest.mark.parametrize("fatal", [False, True], ids=["database error", "process killed"])
async def test_a_fork_whose_next_node_is_reused_never_stays_running(
    idle: Runtime, fatal: bool
) -> None:
    """Forked at `b`, the trigger runs again and the node after it is reused: its step is
    the general one, in one transaction, so a failure there leaves no half-stored step."""
    original = await idle.start(
        linear(tool_node("a", "echo", text="a"), tool_node("b", "echo", text="b"))
    )
    await idle.executor.run_node(
        original.id, "start", await first_job(idle, original.id), shutting_down=never_stopping
    )
    fork = await idle.executor.fork_run(original.id, "b")
    nodes = (await get_run(idle.db, fork.id)).nodes
    assert nodes["a"].reused and nodes["b"].job_id is not None
    await idle.executor.run_node(fork.id, "b", nodes["b"].job_id, shutting_down=never_stopping)
    failing = LosesTheDatabaseOnce(idle.db, idle.bus)
    failing.fatal = fatal
    job = await first_job(idle, fork.id)
    if fatal:
        with pytest.raises(ProcessKilled):
            await failing.run_node(fork.id, "start", job, shutting_down=never_stopping)
        # Queued again by the stalled-jobs duty (same id): the trigger repeats and the run ends.
        await idle.executor.run_node(fork.id, "start", job, shutting_down=never_stopping)
        assert (await get_run(idle.db, fork.id)).status == "succeeded"
    else:
        await failing.run_node(fork.id, "start", job, shutting_down=never_stopping)
        done = await get_run(idle.db, fork.id)
        assert done.status == "failed"
        assert (done.error or {})["code"] == "output_not_stored"


async def tally(bag: dict[str, Any]) -> str:
    """Add a mark to `bag` (in place, as a careless tool might) and give it back."""
    bag.setdefault("seen", []).append(len(bag.get("seen", [])))
    return json.dumps(bag)


async def test_a_tool_that_changes_its_arguments_changes_no_later_run(runtime: Runtime) -> None:
    registry_module.registry.register(function_tool(tally, effect="read"))
    try:
        document = linear(tool_node("a", "tally", bag={"seen": []}))
        pipeline_id, version = await runtime.pipeline(document)
        outputs = []
        for _ in range(3):
            run = await runtime.executor.start_run(pipeline_id, version, runtime.owner_id, {})
            outputs.append((await runtime.wait(run.id)).outputs["a"])
        assert outputs == ['{"seen": [0]}'] * 3
    finally:
        registry_module.registry.unregister("tally")


async def test_a_literal_longer_than_a_rendering_may_be_fails_the_node(runtime: Runtime) -> None:
    done = await runtime.wait(
        (await runtime.start(linear(tool_node("a", "echo", text="x" * 1_000_001)))).id
    )
    assert done.status == "failed"
    assert (done.error or {})["code"] == "template_error"


async def test_a_condition_naming_outputs_in_full_width_letters_reads_them(
    runtime: Runtime,
) -> None:
    check = {
        "id": "check",
        "type": "condition",
        "config": {"expression": "\uff4f\uff55\uff54\uff50\uff55\uff54\uff53.a == 'a'"},
    }
    done = await runtime.wait(
        (await runtime.start(linear(tool_node("a", "echo", text="a"), check))).id
    )
    assert done.status == "succeeded", done.error
    assert done.outputs["check"] is True

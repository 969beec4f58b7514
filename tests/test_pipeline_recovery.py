"""What a run does when things go wrong under it: outputs the database refuses, conditions that
fail, a node whose worker died (kept attempt and idempotency key; external nodes wait for a
person, also at a deadline), a job cancelled by hand, a run cancelled while its node's worker
is dead, templates that would exhaust the process, and a worker that lost its registration.
Dead workers are staged in the database (the state kill -9 leaves); the process tests in
tests/e2e/ kill real ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pipeline_runtime import LAB, Runtime, linear, pipeline_runtime, tool_node

from gathering.config import load_settings
from gathering.errors import ConfigurationError, InvalidInputError
from gathering.jobs import JobServices, JobWorker
from gathering.pipelines.executor import Claim, Claimed, graph_of
from gathering.pipelines.runs import RunRecord, get_run

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(migrated_database_url: str) -> AsyncIterator[Runtime]:
    async with pipeline_runtime(migrated_database_url) as opened:
        yield opened


@pytest.fixture
async def idle(migrated_database_url: str) -> AsyncIterator[Runtime]:
    """A runtime with no worker: the test stages what a dead one left, then acts."""
    async with pipeline_runtime(migrated_database_url, workers=0) as opened:
        yield opened


async def until(
    runtime: Runtime, run_id: int, node: str, status: str, limit: float = 20
) -> RunRecord:
    for _ in range(int(limit / 0.05)):
        run = await get_run(runtime.db, run_id)
        if run.nodes[node].status == status:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"node {node} of run {run_id} is {run.nodes[node].status}, not {status}")


async def died_running(runtime: Runtime, run_id: int, node: str, *, job: str = "failed") -> int:
    """Stage node `node` as running on a worker that died, its job left `job`; its job id."""
    row = await runtime.db.fetch_one(
        "SELECT job_id FROM pipeline.node_runs WHERE run_id = $1 AND node_id = $2", run_id, node
    )
    assert row is not None and row["job_id"] is not None
    await runtime.db.execute(
        "UPDATE pipeline.node_runs SET status = 'running', attempt = 1, claims = 1,"
        " started_at = now(), updated_at = now() - interval '1 minute'"
        " WHERE run_id = $1 AND node_id = $2",
        run_id,
        node,
    )
    await runtime.db.execute(
        "UPDATE procrastinate_jobs SET status = $2::procrastinate_job_status WHERE id = $1",
        row["job_id"],
        job,
    )
    return int(row["job_id"])


async def start_only_first(idle: Runtime, document: dict[str, object]) -> int:
    """Start a run with no worker and settle its trigger by hand, so its next node is queued
    (a job whose worker is draining goes on to no further node)."""
    run = await idle.start(document)
    trigger = (await get_run(idle.db, run.id)).nodes["start"]  # run its job here, by hand
    assert trigger.job_id is not None
    await idle.executor.run_node(
        run.id, "start", trigger.job_id, shutting_down=lambda: False, draining=lambda: True
    )
    return run.id


# --- outputs and conditions -----------------------------------------------------------------


async def test_nul_characters_are_stored_as_replacement_characters(runtime: Runtime) -> None:
    document = linear(tool_node("a", "echo", text="{{ '\\x00' }}in{{ input.x }}"))
    done = await runtime.wait((await runtime.start(document, {"x": "put"})).id)
    assert done.status == "succeeded", done.error
    assert done.outputs["a"] == "\ufffdinput"
    with pytest.raises(InvalidInputError, match="NUL"):
        await runtime.start(linear(name="nul"), {"x": "\x00"})


async def test_a_failing_edge_condition_fails_the_run(runtime: Runtime) -> None:
    document = linear(tool_node("a", "echo", text="x"), tool_node("b", "echo", text="y"))
    document["edges"][1]["condition"] = "input.xs[5] == 1"
    done = await runtime.wait((await runtime.start(document, {"xs": [1]})).id)
    assert done.status == "failed"
    assert done.error is not None and done.error["code"] == "condition_error"


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 10**8 }}",
        "{% for i in range(100000) %}{% endfor %}",
        "{{ 10 ** 100000 }}",
        "{% for i in range(300) %}{{ 'x' * 1000000 }}{% endfor %}",  # 300 MB, one piece at a time
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    ],
)
async def test_templates_that_would_exhaust_the_process_fail_the_node(
    runtime: Runtime, template: str
) -> None:
    done = await runtime.wait(
        (await runtime.start(linear(tool_node("a", "echo", text=template)))).id
    )
    assert done.status == "failed"
    assert done.error is not None and done.error["code"] == "template_error"


# --- dead workers ---------------------------------------------------------------------------


async def test_a_repeat_after_a_crash_keeps_the_attempt_and_its_idempotency_key(
    idle: Runtime,
) -> None:
    run_id = await start_only_first(idle, linear(tool_node("a", "whoami")))
    job = await died_running(idle, run_id, "a", job="todo")  # queued again by the stalled duty
    await idle.executor.run_node(run_id, "a", job, shutting_down=lambda: False)
    done = await get_run(idle.db, run_id)
    assert done.status == "succeeded"
    assert done.outputs["a"] == f"{run_id}/a/1"  # the same key as the interrupted attempt
    assert (done.nodes["a"].attempt, done.nodes["a"].claims) == (1, 2)


async def test_a_late_writer_cannot_settle_a_node_claimed_again(idle: Runtime) -> None:
    run_id = await start_only_first(idle, linear(tool_node("a", "whoami")))
    job = await died_running(idle, run_id, "a", job="todo")
    await idle.executor.run_node(run_id, "a", job, shutting_down=lambda: False)
    run = await get_run(idle.db, run_id)
    graph = await graph_of(idle.db, run.pipeline_id, run.version)
    stale = Claimed(run, graph, graph.nodes["a"], Claim(1, 1), {})
    # The dead worker comes back and stores its outcome under its old claim.
    await idle.executor._succeeded(stale, "stale", None, job, lambda: True)
    assert (await get_run(idle.db, run_id)).outputs["a"] == f"{run_id}/a/1"


async def test_a_node_deadline_never_repeats_an_external_call(idle: Runtime) -> None:
    node = tool_node("a", "send", text="money") | {
        "timeout_seconds": 1,
        "retry": {"max_attempts": 3, "backoff": 0},
    }
    run_id = await start_only_first(idle, linear(node))
    await died_running(idle, run_id, "a", job="doing")
    await idle.db.execute(
        "UPDATE pipeline.node_runs SET deadline = now() - interval '1 minute'"
        " WHERE run_id = $1 AND node_id = 'a'",
        run_id,
    )
    await idle.executor.enforce_deadlines()
    run = await get_run(idle.db, run_id)
    assert run.nodes["a"].status == "waiting"
    assert (run.nodes["a"].error or {})["code"] == "outcome_unknown"
    assert LAB.calls["send:money"] == 0


async def test_cancel_while_the_node_s_worker_is_dead_settles_the_node(idle: Runtime) -> None:
    run_id = await start_only_first(idle, linear(tool_node("a", "echo", text="x")))
    await died_running(idle, run_id, "a", job="doing")
    await idle.executor.cancel_run(run_id)
    # the stalled duty finds the dead worker's job: procrastinate fails it (abort requested)
    await idle.db.execute(
        "UPDATE procrastinate_jobs SET status = 'failed' WHERE id = (SELECT job_id FROM"
        " pipeline.node_runs WHERE run_id = $1 AND node_id = 'a')",
        run_id,
    )
    await idle.executor.enforce_deadlines()
    assert (await get_run(idle.db, run_id)).nodes["a"].status == "cancelled"


async def test_a_node_whose_job_was_cancelled_by_hand_fails_the_run(idle: Runtime) -> None:
    run_id = await start_only_first(idle, linear(tool_node("a", "echo", text="x")))
    job = (await get_run(idle.db, run_id)).nodes["a"].job_id
    assert job is not None
    await idle.queue.cancel(job)  # `gathering jobs cancel`: the queued job never runs
    await idle.db.execute(
        "UPDATE pipeline.node_runs SET updated_at = now() - interval '1 minute' WHERE run_id = $1",
        run_id,
    )
    await idle.executor.enforce_deadlines()
    run = await get_run(idle.db, run_id)
    assert run.status == "failed" and (run.error or {})["code"] == "cancelled"


async def test_a_job_that_failed_mid_attempt_is_repeated_as_the_same_attempt(idle: Runtime) -> None:
    run_id = await start_only_first(idle, linear(tool_node("a", "whoami")))
    old_job = await died_running(idle, run_id, "a", job="failed")  # e.g. its outcome unwritten
    await idle.executor.enforce_deadlines()
    node = (await get_run(idle.db, run_id)).nodes["a"]
    assert node.status == "running" and node.job_id not in (None, old_job)  # a new job
    assert node.job_id is not None
    await idle.executor.run_node(run_id, "a", node.job_id, shutting_down=lambda: False)
    done = await get_run(idle.db, run_id)
    assert done.status == "succeeded"
    assert done.outputs["a"] == f"{run_id}/a/1"  # the interrupted attempt's key, kept


# --- workers --------------------------------------------------------------------------------


def test_a_worker_is_never_taken_as_dead_between_two_heartbeats() -> None:
    with pytest.raises(
        ConfigurationError, match="more than twice GATHERING_JOB_HEARTBEAT_INTERVAL"
    ):
        load_settings(job_heartbeat_interval=10, job_stalled_after=15)


async def test_a_worker_forgotten_by_the_database_starts_again(idle: Runtime) -> None:
    worker = JobWorker(idle.queue, JobServices(idle.db, idle.bus), concurrency=2)
    await worker.start()
    try:
        await asyncio.sleep(0.5)
        await idle.db.execute("DELETE FROM procrastinate_workers")  # pruned while alive
        run = await idle.start(linear(tool_node("a", "echo", text="still")))
        done = await idle.wait(run.id, limit=30)
        assert done.status == "succeeded"
    finally:
        await worker.stop()


# --- sub-pipelines and limits ---------------------------------------------------------------


async def test_a_caller_whose_called_pipeline_was_deleted_fails(idle: Runtime) -> None:
    from gathering.pipelines import delete_pipeline

    callee_id, _ = await idle.pipeline(linear(tool_node("x", "echo", text="x"), name="gone"))
    caller = linear({"id": "call", "type": "sub_pipeline", "config": {"pipeline": "gone"}})
    run_id = await start_only_first(idle, caller)
    job = (await get_run(idle.db, run_id)).nodes["call"].job_id
    assert job is not None
    await idle.executor.run_node(run_id, "call", job, shutting_down=lambda: False)
    assert (await get_run(idle.db, run_id)).nodes["call"].status == "waiting"
    await delete_pipeline(idle.db, callee_id)  # its runs go with it: no wake-up will come
    await idle.db.execute(
        "UPDATE pipeline.node_runs SET updated_at = now() - interval '1 minute' WHERE run_id = $1",
        run_id,
    )
    await idle.executor.enforce_deadlines()
    run = await get_run(idle.db, run_id)
    assert run.status == "failed" and (run.error or {})["code"] == "sub_pipeline_failed"
    assert "was deleted" in (run.error or {})["message"]


async def test_an_owner_s_running_runs_are_bounded(
    monkeypatch: pytest.MonkeyPatch, idle: Runtime
) -> None:
    from gathering.config import get_settings
    from gathering.errors import RateLimitedError

    monkeypatch.setenv("GATHERING_PIPELINE_MAX_RUNNING_RUNS", "2")
    get_settings.cache_clear()
    try:
        pipeline_id, version = await idle.pipeline(linear(name="many"))
        for _ in range(2):
            await idle.executor.start_run(pipeline_id, version, idle.owner_id, {})
        with pytest.raises(RateLimitedError, match="2 pipeline runs running"):
            await idle.executor.start_run(pipeline_id, version, idle.owner_id, {})
    finally:
        get_settings.cache_clear()

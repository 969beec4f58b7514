"""Pipeline execution on the real runtime: runs are stored, each node runs as a job on a worker,
outputs flow through templates, conditions branch, joins wait, failed nodes are retried with
backoff, and a shared circuit breaker stops calling a failing target.

Every test runs on its own migrated database with a worker in this process; nothing is mocked
(the tools are small registered tools whose calls the test counts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pipeline_runtime import LAB, Runtime, linear, pipeline_runtime, tool_node

from gathering.config import get_settings
from gathering.errors import CircuitOpenError, InvalidInputError
from gathering.pipelines import update_pipeline
from gathering.pipelines.breaker import (
    BreakerPolicy,
    check_breaker,
    list_breakers,
    record_failure,
    record_success,
)
from gathering.pipelines.conditions import evaluate
from gathering.pipelines.definition import RetryPolicy
from gathering.pipelines.executor import backoff_seconds
from gathering.pipelines.runs import get_run

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(migrated_database_url: str) -> AsyncIterator[Runtime]:
    async with pipeline_runtime(migrated_database_url) as opened:
        yield opened


def condition(node_id: str, expression: str) -> dict[str, object]:
    return {"id": node_id, "type": "condition", "config": {"expression": expression}}


# --- execution basics -----------------------------------------------------------------------


async def test_execute_linear_pipeline(runtime: Runtime) -> None:
    run = await runtime.start(
        linear(tool_node("a", "echo", text="one"), tool_node("b", "echo", text="two"))
    )
    done = await runtime.wait(run.id)
    assert done.status == "succeeded"
    assert {name: node.status for name, node in done.nodes.items()} == {
        "start": "succeeded",
        "a": "succeeded",
        "b": "succeeded",
    }
    assert done.outputs == {"start": {}, "a": "one", "b": "two"}
    assert all(node.attempt == 1 for node in done.nodes.values())


async def test_execute_output_passing(runtime: Runtime) -> None:
    document = linear(
        tool_node("first", "echo", text="{{ input.topic }} first"),
        tool_node("second", "echo", text="after [{{ outputs.first }}]"),
    )
    run = await runtime.start(document, {"topic": "tides"})
    done = await runtime.wait(run.id)
    assert done.outputs["second"] == "after [tides first]"
    assert LAB.calls["after [tides first]"] == 1


async def test_execute_trigger_passes_data(runtime: Runtime) -> None:
    run = await runtime.start(linear(), {"ticket": "T-1", "tags": ["a"]})
    done = await runtime.wait(run.id)
    assert done.outputs["start"] == {"ticket": "T-1", "tags": ["a"]}


async def test_run_input_is_checked_against_the_input_schema(runtime: Runtime) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    pipeline_id, version = await runtime.pipeline(linear(input_schema=schema))
    with pytest.raises(InvalidInputError, match='input_schema at n: "x" is not of type "integer"'):
        await runtime.executor.start_run(pipeline_id, version, runtime.owner_id, {"n": "x"})
    run = await runtime.executor.start_run(pipeline_id, version, runtime.owner_id, {"n": 3})
    assert (await runtime.wait(run.id)).status == "succeeded"


async def test_a_run_pins_the_version_it_started_with(runtime: Runtime) -> None:
    pipeline_id, version = await runtime.pipeline(linear(tool_node("a", "blocked", key="pin")))
    run = await runtime.executor.start_run(pipeline_id, version, runtime.owner_id, {})
    await asyncio.wait_for(LAB.started_event("pin").wait(), 20)
    await update_pipeline(runtime.db, pipeline_id, linear(tool_node("a", "echo", text="v2")))
    LAB.gates["pin"].set()
    done = await runtime.wait(run.id)
    assert done.version == 1 and done.outputs["a"] == "pin released"


# --- node dispatch --------------------------------------------------------------------------


async def test_dispatch_condition_true_and_false(runtime: Runtime) -> None:
    document = linear(condition("yes", "true"))
    document["nodes"].append(condition("no", "false"))
    document["edges"].append({"from": "start", "to": "no"})
    done = await runtime.wait((await runtime.start(document)).id)
    assert done.outputs["yes"] is True and done.outputs["no"] is False


async def test_conditions_read_input_and_outputs() -> None:
    outputs = {"sort": {"priority": "high"}}
    assert evaluate(
        'outputs.sort.priority == "high" and len(input.tags) > 1', {"tags": [1, 2]}, outputs
    )
    assert evaluate("contains(lower(input.title), 'urgent')", {"title": "URGENT: x"}, {})
    with pytest.raises(InvalidInputError, match="could not be evaluated"):
        evaluate("outputs.missing.key", {}, {})


async def test_unknown_node_types_are_refused_before_a_run(runtime: Runtime) -> None:
    document = linear({"id": "x", "type": "teleport", "config": {}})
    with pytest.raises(InvalidInputError, match="invalid node data"):
        await runtime.pipeline(document)


async def test_delay_node_is_a_durable_timer(runtime: Runtime) -> None:
    document = linear(
        {"id": "wait", "type": "delay", "config": {"seconds": 1}},
        tool_node("after", "echo", text="late"),
    )
    run = await runtime.start(document)
    await asyncio.sleep(0.5)
    waiting = await get_run(runtime.db, run.id)
    assert waiting.nodes["wait"].status == "waiting" and waiting.nodes["wait"].wake_at is not None
    assert LAB.calls["late"] == 0
    jobs = await runtime.queue.list_jobs(status="todo")
    assert any(
        job.args == {"run_id": run.id, "node_id": "wait"} and job.scheduled_at for job in jobs
    )
    done = await runtime.wait(run.id)
    assert done.status == "succeeded" and LAB.calls["late"] == 1


async def test_action_emit_event(runtime: Runtime) -> None:
    seen = []
    subscription = runtime.bus.subscribe("report.ready", seen.append)
    try:
        document = linear(
            {
                "id": "say",
                "type": "action",
                "config": {
                    "kind": "emit_event",
                    "event": "report.ready",
                    "body": {"for": "{{ input.who }}"},
                },
            }
        )
        done = await runtime.wait((await runtime.start(document, {"who": "ops"})).id)
        assert done.outputs["say"] == {"event": "report.ready"}
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert seen[0].data["body"] == {"for": "ops"}
    finally:
        subscription.unsubscribe()


# --- branching and joins --------------------------------------------------------------------


def diamond(expression: str, join: dict[str, object] | None = None) -> dict[str, object]:
    """start → check → (yes | no) → merge: `yes` runs when the check holds, `no` otherwise."""
    merge = (
        {"id": "merge", "type": "parallel", "config": join}
        if join
        else tool_node("merge", "echo", text="merged")
    )
    return {
        "name": "diamond",
        "nodes": [
            {"id": "start", "type": "trigger"},
            condition("check", expression),
            tool_node("yes", "echo", text="yes"),
            tool_node("no", "echo", text="no"),
            merge,
        ],
        "edges": [
            {"from": "start", "to": "check"},
            {"from": "check", "to": "yes"},
            {"from": "start", "to": "no", "condition": "not input.flag"},
            {"from": "yes", "to": "merge"},
            {"from": "no", "to": "merge"},
        ],
    }


async def test_condition_false_skips_downstream(runtime: Runtime) -> None:
    done = await runtime.wait((await runtime.start(diamond("input.flag"), {"flag": False})).id)
    assert done.status == "succeeded"
    assert done.nodes["yes"].status == "skipped"
    assert done.nodes["no"].status == "succeeded"
    assert done.nodes["merge"].status == "succeeded"  # one live branch and one skipped
    assert LAB.calls["yes"] == 0


async def test_condition_true_executes_downstream(runtime: Runtime) -> None:
    done = await runtime.wait((await runtime.start(diamond("input.flag"), {"flag": True})).id)
    assert done.nodes["yes"].status == "succeeded"
    assert done.nodes["no"].status == "skipped"
    assert done.nodes["merge"].status == "succeeded"


async def test_parallel_branches_run_at_once_and_join_all(runtime: Runtime) -> None:
    document = {
        "name": "fan",
        "nodes": [
            {"id": "start", "type": "trigger"},
            tool_node("left", "blocked", key="left"),
            tool_node("right", "blocked", key="right"),
            {"id": "join", "type": "parallel", "config": {"join": "all"}},
        ],
        "edges": [
            {"from": "start", "to": "left"},
            {"from": "start", "to": "right"},
            {"from": "left", "to": "join"},
            {"from": "right", "to": "join"},
        ],
    }
    run = await runtime.start(document)
    # both branches are running at the same time, before either is released
    await asyncio.wait_for(LAB.started_event("left").wait(), 20)
    await asyncio.wait_for(LAB.started_event("right").wait(), 20)
    LAB.gates["left"].set()
    await asyncio.sleep(0.3)
    assert (await get_run(runtime.db, run.id)).nodes["join"].status == "pending"
    LAB.gates["right"].set()
    done = await runtime.wait(run.id)
    assert done.outputs["join"] == {"left": "left released", "right": "right released"}


async def test_parallel_join_any_goes_on_with_the_first_branch(runtime: Runtime) -> None:
    document = {
        "name": "race",
        "nodes": [
            {"id": "start", "type": "trigger"},
            tool_node("fast", "echo", text="fast"),
            tool_node("slow", "blocked", key="slow"),
            {"id": "join", "type": "parallel", "config": {"join": "any"}},
            tool_node("after", "echo", text="after"),
        ],
        "edges": [
            {"from": "start", "to": "fast"},
            {"from": "start", "to": "slow"},
            {"from": "fast", "to": "join"},
            {"from": "slow", "to": "join"},
            {"from": "join", "to": "after"},
        ],
    }
    run = await runtime.start(document)
    for _ in range(400):
        if LAB.calls["after"]:
            break
        await asyncio.sleep(0.05)
    assert LAB.calls["after"] == 1  # while `slow` is still running
    LAB.gates.setdefault("slow", asyncio.Event()).set()  # `slow` may not have started yet
    done = await runtime.wait(run.id)
    assert done.outputs["join"] == {"fast": "fast"}


# --- retry and circuit breaker --------------------------------------------------------------


def retried(node: dict[str, object], **policy: object) -> dict[str, object]:
    return node | {"retry": {"backoff": 0.05, **policy}}


async def test_node_retry_on_failure(runtime: Runtime) -> None:
    LAB.failures_left["shaky"] = 2
    run = await runtime.start(linear(retried(tool_node("a", "flaky", key="shaky"), max_attempts=3)))
    done = await runtime.wait(run.id)
    assert done.status == "succeeded"
    assert done.nodes["a"].attempt == 3 and LAB.calls["shaky"] == 3
    assert runtime.event_types(run.id).count("pipeline_node.retrying") == 2


async def test_node_retry_exhaustion(runtime: Runtime) -> None:
    LAB.failures_left["broken"] = 10
    run = await runtime.start(
        linear(
            retried(tool_node("a", "flaky", key="broken"), max_attempts=2),
            tool_node("b", "echo", text="never"),
        )
    )
    done = await runtime.wait(run.id)
    assert done.status == "failed"
    assert done.error is not None and "broken failed on purpose" in done.error["message"]
    assert done.error["node"] == "a" and done.error["code"] == "tool_failed"
    assert done.nodes["a"].attempt == 2 and LAB.calls["broken"] == 2
    assert done.nodes["b"].status == "skipped" and LAB.calls["never"] == 0


async def test_errors_not_in_retry_on_are_not_retried(runtime: Runtime) -> None:
    LAB.failures_left["picky"] = 5
    node = retried(tool_node("a", "flaky", key="picky"), max_attempts=5, retry_on=["tool_timeout"])
    done = await runtime.wait((await runtime.start(linear(node))).id)
    assert done.status == "failed" and LAB.calls["picky"] == 1


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=1.0, max_backoff=5.0)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 5.0)):
        waits = {backoff_seconds(policy, attempt) for _ in range(50)}
        assert all(full / 2 <= wait <= full for wait in waits)
        assert len(waits) > 1  # jitter


async def test_circuit_breaker_trips_after_threshold(runtime: Runtime) -> None:
    policy = BreakerPolicy(failures=3, window=60, cooldown=60)
    for _ in range(2):
        assert await record_failure(runtime.db, "tool:x", policy) == "closed"
        await check_breaker(runtime.db, "tool:x", policy)
    assert await record_failure(runtime.db, "tool:x", policy) == "open"
    with pytest.raises(CircuitOpenError, match="circuit open for tool:x"):
        await check_breaker(runtime.db, "tool:x", policy)


async def test_circuit_breaker_recovery_and_reset_on_success(runtime: Runtime) -> None:
    policy = BreakerPolicy(failures=1, window=60, cooldown=0.3)
    assert await record_failure(runtime.db, "host:h", policy) == "open"
    with pytest.raises(CircuitOpenError):
        await check_breaker(runtime.db, "host:h", policy)
    await asyncio.sleep(0.4)
    await check_breaker(runtime.db, "host:h", policy)  # half open: a trial goes through
    [state] = await list_breakers(runtime.db, policy)
    assert state.state == "half_open"
    await record_success(runtime.db, "host:h")
    [state] = await list_breakers(runtime.db, policy)
    assert (state.state, state.failures) == ("closed", 0)
    # a failed trial while half open opens it again at once
    assert await record_failure(runtime.db, "host:h", policy) == "open"


async def test_an_open_breaker_fails_nodes_fast_without_calling(
    monkeypatch: pytest.MonkeyPatch, migrated_database_url: str
) -> None:
    monkeypatch.setenv("GATHERING_BREAKER_FAILURES", "2")
    monkeypatch.setenv("GATHERING_BREAKER_COOLDOWN", "600")
    get_settings.cache_clear()
    try:
        async with pipeline_runtime(migrated_database_url) as runtime:
            LAB.failures_left["down"] = 100
            pipeline_id, version = await runtime.pipeline(
                linear(tool_node("a", "flaky", key="down"))
            )

            async def run_once():  # type: ignore[no-untyped-def]
                run = await runtime.executor.start_run(pipeline_id, version, runtime.owner_id, {})
                return await runtime.wait(run.id)

            for _ in range(2):
                failed = await run_once()
                assert failed.error is not None and failed.error["code"] == "tool_failed"
            fast = await run_once()
            assert fast.error is not None and fast.error["code"] == "circuit_open"
            assert LAB.calls["down"] == 2  # the third run never called the tool
    finally:
        get_settings.cache_clear()


# --- events ---------------------------------------------------------------------------------


async def test_events_emitted_during_execution(runtime: Runtime) -> None:
    run = await runtime.start(linear(tool_node("a", "echo", text="x")))
    await runtime.wait(run.id)
    for _ in range(100):
        if "pipeline_run.succeeded" in runtime.event_types(run.id):
            break
        await asyncio.sleep(0.02)
    kinds = runtime.event_types(run.id)
    assert kinds[0] == "pipeline_run.started" and kinds[-1] == "pipeline_run.succeeded"
    for expected in ("pipeline_node.queued", "pipeline_node.running", "pipeline_node.succeeded"):
        assert expected in kinds
    start = [e.type for e in runtime.events if e.data.get("node") == "start"]
    assert start == ["pipeline_node.queued", "pipeline_node.running", "pipeline_node.succeeded"]
    # The trigger's job claims the node after it in the transaction that settles the trigger.
    node_a = [e.type for e in runtime.events if e.data.get("node") == "a"]
    assert node_a == ["pipeline_node.running", "pipeline_node.succeeded"]
    assert all(e.subject == f"pipeline:{run.pipeline_id}" for e in runtime.events)


# --- approvals ------------------------------------------------------------------------------


def approval(node_id: str, **config: object) -> dict[str, object]:
    return {
        "id": node_id,
        "type": "approval",
        "config": {"message": "Ship {{ input.v }}?", **config},
    }


async def test_an_approval_node_waits_for_a_person_then_goes_on(runtime: Runtime) -> None:
    run = await runtime.start(
        linear(approval("ok"), tool_node("ship", "echo", text="shipped")), {"v": "1.2"}
    )
    for _ in range(200):
        waiting = await get_run(runtime.db, run.id)
        if waiting.nodes["ok"].status == "waiting":
            break
        await asyncio.sleep(0.05)
    assert waiting.nodes["ok"].input == {"message": "Ship 1.2?"}
    assert LAB.calls["shipped"] == 0
    with pytest.raises(InvalidInputError, match="use approve or deny"):
        await runtime.executor.resolve(run.id, "ok", "skip")
    await runtime.executor.resolve(run.id, "ok", "approve", by=runtime.owner_id, comment="go")
    done = await runtime.wait(run.id)
    assert done.status == "succeeded" and LAB.calls["shipped"] == 1
    assert done.outputs["ok"] == {"approved": True, "by": runtime.owner_id, "comment": "go"}


async def test_a_denied_or_expired_approval_fails_the_run(runtime: Runtime) -> None:
    run = await runtime.start(linear(approval("ok")), {"v": "2"})
    for _ in range(200):
        if (await get_run(runtime.db, run.id)).nodes["ok"].status == "waiting":
            break
        await asyncio.sleep(0.05)
    await runtime.executor.resolve(run.id, "ok", "deny", comment="not today")
    denied = await runtime.wait(run.id)
    assert denied.error is not None and denied.error["code"] == "approval_denied"
    assert "not today" in denied.error["message"]

    pipeline_id, version = await runtime.pipeline(
        linear(approval("ok", timeout_seconds=0.5), name="q")
    )
    late = await runtime.executor.start_run(pipeline_id, version, runtime.owner_id, {"v": "3"})
    expired = await runtime.wait(late.id, limit=20)
    assert expired.error is not None and expired.error["code"] == "approval_expired"


# --- sub-pipelines --------------------------------------------------------------------------


def call(node_id: str, pipeline: str, **given: object) -> dict[str, object]:
    return {"id": node_id, "type": "sub_pipeline", "config": {"pipeline": pipeline, "input": given}}


async def test_a_sub_pipeline_runs_and_its_outputs_flow_on(runtime: Runtime) -> None:
    await runtime.pipeline(
        linear(tool_node("say", "echo", text="child got {{ input.word }}"), name="child")
    )
    parent = linear(
        call("call", "child", word="{{ input.w }}"),
        tool_node("after", "echo", text="parent saw [{{ outputs.call.outputs.say }}]"),
        name="parent",
    )
    done = await runtime.wait((await runtime.start(parent, {"w": "hi"})).id)
    assert done.status == "succeeded", done.error
    child_id = done.outputs["call"]["run_id"]
    child = await get_run(runtime.db, child_id)
    assert child.status == "succeeded" and child.trigger == "sub_pipeline"
    assert done.outputs["after"] == "parent saw [child got hi]"


async def test_a_failing_sub_pipeline_fails_its_caller(runtime: Runtime) -> None:
    LAB.failures_left["deep"] = 5
    await runtime.pipeline(linear(tool_node("x", "flaky", key="deep"), name="fragile"))
    done = await runtime.wait(
        (await runtime.start(linear(call("call", "fragile"), name="caller"))).id
    )
    assert done.status == "failed"
    assert done.error is not None and done.error["code"] == "sub_pipeline_failed"
    assert "deep failed on purpose" in done.error["message"]


async def test_cancelling_the_caller_cancels_the_sub_pipeline(runtime: Runtime) -> None:
    await runtime.pipeline(linear(tool_node("x", "blocked", key="inner"), name="inner"))
    run = await runtime.start(linear(call("call", "inner"), name="outer"))
    await asyncio.wait_for(LAB.started_event("inner").wait(), 20)
    await runtime.executor.cancel_run(run.id)
    child_id = (await get_run(runtime.db, run.id)).nodes["call"].input["run_id"]
    child = await runtime.wait(child_id, "cancelled", limit=10)
    for _ in range(100):
        if (await get_run(runtime.db, child_id)).nodes["x"].status == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert (await get_run(runtime.db, child_id)).nodes["x"].status == "cancelled"
    assert child.error is not None and "the run that called it" in child.error["message"]


async def test_pipelines_calling_themselves_stop_at_a_depth(runtime: Runtime) -> None:
    done = await runtime.wait(
        (await runtime.start(linear(call("again", "loop"), name="loop"))).id, limit=60
    )
    assert done.status == "failed"
    assert done.error is not None and "more than 8 deep" in done.error["message"]

"""Pipeline runs across real processes: a worker killed mid-run (SIGKILL) and the other one
finishes the run without repeating completed nodes; an external node interrupted so waits for
a person; a cancel from the API process stops a node running in a worker process within a
second; a delay outlives every process; a circuit breaker is shared by two workers.

Nodes call the test plugin's tools (tests/_support/job_plugin), which write `job_test_marks`
from the worker process that runs them: the test counts what ran where from its own
connection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from itertools import pairwise
from typing import Any, TypeVar

import httpx
import pytest
from job_processes import ScratchDatabase, Worker, scratch_database, wait_until, worker_env
from live_server import LiveServer, environment

from gathering.agents.retrieval import local_owner_id
from gathering.db import Database
from gathering.pipelines import create_pipeline
from gathering.pipelines.executor import Executor
from gathering.pipelines.runs import RunRecord, get_run

pytestmark = pytest.mark.slow
T = TypeVar("T")


@pytest.fixture
def database(test_server_url: str) -> Iterator[ScratchDatabase]:
    with scratch_database(test_server_url) as db:
        yield db


def on(db: ScratchDatabase, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` with a `Database` on `db`, from this (synchronous) test."""

    async def go() -> T:
        async with Database(db.url, min_size=0, max_size=2) as database:
            return await work(database)

    return asyncio.run(go())


def start(
    db: ScratchDatabase, document: dict[str, Any], run_input: dict[str, Any] | None = None
) -> int:
    """Store `document` and start a run of it (its jobs wait for a worker)."""

    async def work(database: Database) -> int:
        owner = await local_owner_id(database)
        record = await create_pipeline(database, document, owner_id=owner)
        run = await Executor(database, None).start_run(
            record.id, record.version, owner, run_input or {}
        )
        return run.id

    return on(db, work)


def run_of(db: ScratchDatabase, run_id: int) -> RunRecord:
    return on(db, lambda database: get_run(database, run_id))


def node(node_id: str, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "tool", "config": {"tool": tool, "arguments": arguments}}


def chain(name: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    everything = [{"id": "start", "type": "trigger"}, *nodes]
    edges = [{"from": a["id"], "to": b["id"]} for a, b in pairwise(everything)]
    return {"name": name, "nodes": everything, "edges": edges}


def finished(db: ScratchDatabase, run_id: int, limit: float = 60) -> RunRecord:
    return wait_until(
        lambda: (run := run_of(db, run_id)).status != "running" and run,
        limit,
        f"run {run_id} ended",
    )


def test_a_run_survives_the_kill_of_its_worker_without_repeating_finished_nodes(
    database: ScratchDatabase,
) -> None:
    first, second = Worker(database), Worker(database)
    workers = {first.pid: first, second.pid: second}
    try:
        document = chain(
            "takeover",
            node("w1", "slow_write", key="w1", seconds=0.1),
            node("w2", "slow_write", key="w2", seconds=4),
            node("w3", "slow_write", key="w3", seconds=0.1),
        )
        run_id = start(database, document)
        wait_until(lambda: database.marks("w2"), 30, "w2 started")
        [(_, pid)] = database.marks("w2")
        workers.pop(pid).kill()
        survivor = next(iter(workers.values()))
        run = finished(database, run_id)
        assert run.status == "succeeded", run
        assert [what for what, _ in database.marks("w1")] == ["started", "done"]  # once
        assert database.marks("w2") == [
            ("started", pid),
            ("started", survivor.pid),
            ("done", survivor.pid),
        ]
        assert [what for what, _ in database.marks("w3")] == ["started", "done"]
        assert (run.nodes["w2"].attempt, run.nodes["w2"].claims) == (1, 2)  # a repeat, same key
        assert run.nodes["w1"].claims == 1
    finally:
        for worker in (first, second):
            worker.stop()


def test_an_interrupted_external_node_waits_for_a_person(database: ScratchDatabase) -> None:
    first, second = Worker(database), Worker(database)
    workers = {first.pid: first, second.pid: second}
    try:
        run_id = start(
            database, chain("external", node("pay", "slow_external", key="pay", seconds=4))
        )
        wait_until(lambda: database.marks("pay"), 30, "pay started")
        [(_, pid)] = database.marks("pay")
        workers.pop(pid).kill()
        waiting = wait_until(
            lambda: (run := run_of(database, run_id)).nodes["pay"].status == "waiting" and run,
            30,
            "the node waits for a decision",
        )
        error = waiting.nodes["pay"].error or {}
        assert error["code"] == "outcome_unknown" and "/resolve" in error["hint"]
        time.sleep(1)
        assert database.marks("pay") == [("started", pid)]  # not repeated by itself
        on(database, lambda db: Executor(db, None).resolve(run_id, "pay", "retry"))
        run = finished(database, run_id)
        assert run.status == "succeeded"
        assert [what for what, _ in database.marks("pay")] == ["started", "started", "done"]
    finally:
        for worker in (first, second):
            worker.stop()


def test_a_cancel_from_the_api_process_stops_a_node_in_a_worker_process_within_a_second(
    database: ScratchDatabase,
) -> None:
    api = LiveServer(**worker_env(database, GATHERING_WORKER="off"))
    worker = Worker(database)
    try:
        api.wait_ready()
        run_id = start(
            database,
            chain(
                "cancel",
                node("slow", "slow_write", key="slow", seconds=30),
                node("after", "slow_write", key="after", seconds=0),
            ),
        )
        wait_until(lambda: database.marks("slow"), 30, "the node started in the worker")
        answer = httpx.post(f"{api.base}/pipelines/runs/{run_id}/cancel", timeout=10)
        assert answer.status_code == 200, answer.text
        asked = time.monotonic()
        wait_until(
            lambda: run_of(database, run_id).nodes["slow"].status == "cancelled",
            5,
            "node cancelled",
        )
        assert time.monotonic() - asked < 1.0
        run = run_of(database, run_id)
        assert run.status == "cancelled" and run.nodes["after"].status == "cancelled"
        assert database.marks("slow") == [("started", worker.pid)]  # stopped: never done
        assert database.marks("after") == []
    finally:
        worker.stop()
        api.stop()


def test_a_delay_outlives_every_process(database: ScratchDatabase) -> None:
    worker = Worker(database)
    document = chain(
        "later",
        {"id": "wait", "type": "delay", "config": {"seconds": 3}},
        node("after", "slow_write", key="later", seconds=0),
    )
    run_id = start(database, document)
    wait_until(
        lambda: run_of(database, run_id).nodes["wait"].status == "waiting", 30, "the delay waits"
    )
    assert worker.stop() == 0  # no process of ours is left
    time.sleep(3.5)  # the delay ends while nothing runs
    assert run_of(database, run_id).status == "running"
    again = Worker(database)
    try:
        run = finished(database, run_id, limit=30)
        assert run.status == "succeeded"
        assert database.marks("later") == [("started", again.pid), ("done", again.pid)]
    finally:
        again.stop()


def test_the_circuit_breaker_is_shared_by_two_workers(database: ScratchDatabase) -> None:
    settings = {"GATHERING_BREAKER_FAILURES": "2", "GATHERING_BREAKER_COOLDOWN": "600"}
    document = chain("breaker", node("call", "always_fails", key="down"))

    async def store(db: Database) -> tuple[int, int]:
        owner = await local_owner_id(db)
        record = await create_pipeline(db, document, owner_id=owner)
        return record.id, owner

    pipeline_id, owner = on(database, store)

    def run_once() -> RunRecord:
        async def work(db: Database) -> int:
            return (await Executor(db, None).start_run(pipeline_id, 1, owner, {})).id

        return finished(database, on(database, work))

    first = Worker(database, **settings)
    assert (run_once().error or {})["code"] == "tool_failed"
    first.stop()
    second = Worker(database, **settings)
    try:
        assert (run_once().error or {})["code"] == "tool_failed"  # the second failure: open
        fast = run_once()
        assert (fast.error or {})["code"] == "circuit_open"
        pids = {pid for _, pid in database.marks("down")}
        assert pids == {first.pid, second.pid} and len(database.marks("down")) == 2
    finally:
        second.stop()


def test_an_approval_is_given_from_another_process_after_a_restart(
    database: ScratchDatabase,
) -> None:
    worker = Worker(database)
    document = chain(
        "release",
        {"id": "ok", "type": "approval", "config": {"message": "Release {{ input.v }}?"}},
        node("ship", "slow_write", key="ship", seconds=0),
    )
    run_id = start(database, document, {"v": "2.0"})
    waiting = wait_until(
        lambda: (run := run_of(database, run_id)).nodes["ok"].status == "waiting" and run,
        30,
        "the approval waits",
    )
    assert waiting.nodes["ok"].input == {"message": "Release 2.0?"}
    assert worker.stop() == 0  # nothing of ours runs while it waits
    answer = subprocess.run(
        [sys.executable, "-m", "gathering", "pipelines", "approve", str(run_id), "ok", "-m", "go"],
        env=environment(**worker_env(database)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    again = Worker(database)
    try:
        run = finished(database, run_id, limit=30)
        assert run.status == "succeeded"
        assert (run.outputs["ok"] or {})["comment"] == "go"
        assert database.marks("ship") == [("started", again.pid), ("done", again.pid)]
    finally:
        again.stop()

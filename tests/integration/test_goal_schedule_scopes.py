"""What an API key's scope covers when the thing it changes launches other work
(docs/goals.md: "`goals:write` covers what a goal launches ... without `tasks:write` or
`pipelines:write`"; docs/scheduler.md: `schedules:write` likewise covers what a schedule starts).

On a multi-user app whose lifespan runs a worker and the scheduler duty, the model faked at its
HTTP wire: a `goals:write`-only key starts a goal whose task really runs, and decomposes a goal
through its agent's model; a `schedules:write`-only key makes a `run_task` schedule whose
triggered run starts a task that really runs. Neither key may start or read a task directly,
and what they launch is their owner's, on their owner's agents only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from task_api import (
    api_key,
    client_for,
    login,
    make_agent,
    multi_user_app,
    open_every_gate,
    status_becomes,
    stub_fixture,  # noqa: F401 - the fixture "stub"
    tools_fixture,  # noqa: F401 - the fixture "tools"
)

from gathering.testing import LLMStubServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def running(
    migrated_database_url: str, stub: LLMStubServer, tools: None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Multi-user mode with its lifespan: a worker runs tasks, the duty settles goals and
    schedule runs."""
    app = multi_user_app(migrated_database_url)
    try:
        async with app.router.lifespan_context(app), client_for(app) as client:
            try:
                yield app, client
            finally:
                open_every_gate()
    finally:
        await app.state.gathering.close()


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    answer = await client.get("/auth/me", headers=headers)
    assert answer.status_code == 200, answer.text
    user_id: int = answer.json()["id"]
    return user_id


async def no_task_of_its_own(
    client: httpx.AsyncClient, key: dict[str, str], task_id: int, scope: str
) -> None:
    """The `scope`-only `key` may neither start a task nor read one: 403, naming the scope
    it lacks."""
    started = await client.post("/tasks", json={"agent": "Keyed", "goal": "x"}, headers=key)
    assert started.status_code == 403, started.text
    assert "tasks:write" in started.json()["detail"]
    read = await client.get(f"/tasks/{task_id}", headers=key)
    assert read.status_code == 403, read.text
    assert "tasks:read" in read.json()["detail"], scope


# --- goals -------------------------------------------------------------------------------------


async def test_a_goals_write_key_starts_a_goal_whose_task_runs(
    running: tuple[FastAPI, httpx.AsyncClient], stub: LLMStubServer
) -> None:
    app, client = running
    member = await login(app, client)
    agent_id = await make_agent(client, "Keyed", headers=member)
    writer = await api_key(client, member, "goals:write")
    reader = await api_key(client, member, "goals:read")
    stub.add_reply("the launch plan is written")

    made = await client.post(
        "/goals", json={"title": "Write the launch plan", "agent": "Keyed"}, headers=writer
    )
    assert made.status_code == 201, made.text
    goal_id = made.json()["id"]
    started = await client.post(f"/goals/{goal_id}/start", headers=writer)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "active"
    task_id = started.json()["task_id"]
    assert task_id is not None
    await no_task_of_its_own(client, writer, task_id, "goals:write")

    # The task is the member's, of their agent, and the server's worker runs it to the end.
    task = (await client.get(f"/tasks/{task_id}", headers=member)).json()
    assert (task["owner_id"], task["agent_id"]) == (await me(client, member), agent_id)
    done = await status_becomes(client, f"/goals/{goal_id}", ("done", "failed"), headers=reader)
    assert done["status"] == "done", done
    ended = await status_becomes(client, f"/tasks/{task_id}", ("succeeded",), headers=member)
    assert ended["result"] == "the launch plan is written"
    # `goals:read` shows the finished task's result in the goal's activities.
    shown = await client.get(f"/goals/{goal_id}/activities", headers=reader)
    assert shown.status_code == 200, shown.text
    [succeeded] = [a for a in shown.json() if a["kind"] == "task_succeeded"]
    assert succeeded["body"] == {"task_id": task_id, "result": "the launch plan is written"}


async def test_a_goals_write_key_decomposes_through_the_agents_model(
    running: tuple[FastAPI, httpx.AsyncClient], stub: LLMStubServer
) -> None:
    app, client = running
    member = await login(app, client)
    await make_agent(client, "Keyed", headers=member)
    writer = await api_key(client, member, "goals:write")
    goal = await client.post("/goals", json={"title": "Move", "agent": "Keyed"}, headers=writer)
    assert goal.status_code == 201, goal.text
    stub.add_reply(json.dumps([{"title": "Pack"}, {"title": "Carry", "depends_on": [1]}]))
    split = await client.post(f"/goals/{goal.json()['id']}/decompose", headers=writer)
    assert split.status_code == 201, split.text
    assert [g["title"] for g in split.json()] == ["Pack", "Carry"]
    assert "Move" in json.dumps(stub.last.json["messages"])  # the agent's model was asked


async def test_a_goals_write_key_launches_nothing_on_someone_elses_agent(
    running: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = running
    alice, bob = await login(app, client), await login(app, client)
    await make_agent(client, "Bobs", headers=bob)
    writer = await api_key(client, alice, "goals:write")
    refused = await client.post("/goals", json={"title": "x", "agent": "Bobs"}, headers=writer)
    assert refused.status_code == 404, refused.text
    goal = await client.post("/goals", json={"title": "x"}, headers=writer)
    assert goal.status_code == 201, goal.text
    start = await client.post(
        f"/goals/{goal.json()['id']}/start", json={"agent": "Bobs"}, headers=writer
    )
    assert start.status_code == 404, start.text
    assert (await client.get("/tasks", headers=alice)).json() == []
    assert (await client.get("/tasks", headers=bob)).json() == []


# --- schedules ---------------------------------------------------------------------------------


def run_task_schedule(name: str, agent: str, goal: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "interval",
        "every_seconds": 86_400,
        "action": "run_task",
        "config": {"agent": agent, "goal": goal, "max_steps": 3},
    }


async def run_ended(
    client: httpx.AsyncClient, schedule_id: int, headers: dict[str, str], limit: float = 30
) -> dict[str, Any]:
    """The schedule's one run, once it has ended."""
    deadline = time.monotonic() + limit
    while True:
        answer = await client.get(f"/schedules/{schedule_id}/runs", headers=headers)
        assert answer.status_code == 200, answer.text
        runs = answer.json()
        if runs and runs[0]["status"] not in ("queued", "running"):
            run: dict[str, Any] = runs[0]
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"the run of schedule {schedule_id} did not end: {runs}")
        await asyncio.sleep(0.05)


async def test_a_schedules_write_key_makes_a_run_task_schedule_whose_task_runs(
    running: tuple[FastAPI, httpx.AsyncClient], stub: LLMStubServer
) -> None:
    app, client = running
    member = await login(app, client)
    agent_id = await make_agent(client, "Keyed", headers=member)
    writer = await api_key(client, member, "schedules:write")
    reader = await api_key(client, member, "schedules:read")
    stub.add_reply("the digest is sent")

    body = run_task_schedule("digest", "Keyed", "Send the digest")
    made = await client.post("/schedules", json=body, headers=writer)
    assert made.status_code == 201, made.text
    schedule_id = made.json()["id"]
    triggered = await client.post(f"/schedules/{schedule_id}/trigger", headers=writer)
    assert triggered.status_code == 202, triggered.text

    run = await run_ended(client, schedule_id, reader)
    assert run["status"] == "succeeded", run
    task_id = run["output"]["task_id"]
    await no_task_of_its_own(client, writer, task_id, "schedules:write")
    task = (await client.get(f"/tasks/{task_id}", headers=member)).json()
    assert (task["owner_id"], task["agent_id"]) == (await me(client, member), agent_id)
    assert (task["status"], task["result"]) == ("succeeded", "the digest is sent")
    assert task["goal"] == "Send the digest" and task["max_steps"] == 3


async def test_a_schedules_write_key_makes_a_schedule_that_runs_a_pipeline(
    running: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = running
    member = await login(app, client)
    writer = await api_key(client, member, "schedules:write")
    reader = await api_key(client, member, "schedules:read")
    pipeline = await client.post(
        "/pipelines",
        json={"name": "nightly", "nodes": [{"id": "start", "type": "trigger"}], "edges": []},
        headers=member,
    )
    assert pipeline.status_code == 201, pipeline.text
    direct = await client.post(f"/pipelines/{pipeline.json()['id']}/runs", json={}, headers=writer)
    assert direct.status_code == 403 and "pipelines:write" in direct.json()["detail"], direct.text
    body = {
        "name": "nightly",
        "kind": "interval",
        "every_seconds": 86_400,
        "action": "execute_pipeline",
        "config": {"pipeline": "nightly"},
    }
    made = await client.post("/schedules", json=body, headers=writer)
    assert made.status_code == 201, made.text
    schedule_id = made.json()["id"]
    assert (await client.post(f"/schedules/{schedule_id}/trigger", headers=writer)).is_success
    run = await run_ended(client, schedule_id, reader)
    assert run["status"] == "succeeded" and run["pipeline_run_id"] is not None, run
    started = await client.get(f"/pipelines/runs/{run['pipeline_run_id']}", headers=member)
    assert started.status_code == 200, started.text
    assert (started.json()["trigger"], started.json()["status"]) == ("schedule", "succeeded")
    hidden = await client.get(f"/pipelines/runs/{run['pipeline_run_id']}", headers=writer)
    assert hidden.status_code == 403, hidden.text


async def test_a_schedules_write_key_starts_no_task_of_someone_elses_agent(
    running: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = running
    alice, bob = await login(app, client), await login(app, client)
    await make_agent(client, "Bobs", headers=bob)
    writer = await api_key(client, alice, "schedules:write")
    reader = await api_key(client, alice, "schedules:read")
    made = await client.post(
        "/schedules", json=run_task_schedule("theirs", "Bobs", "x"), headers=writer
    )
    assert made.status_code == 201, made.text  # the agent is looked up when a run starts
    schedule_id = made.json()["id"]
    assert (await client.post(f"/schedules/{schedule_id}/trigger", headers=writer)).is_success
    run = await run_ended(client, schedule_id, reader)
    assert run["status"] == "failed" and run["error"]["code"] == "not_found", run
    assert "Bobs" in run["error"]["message"]
    assert (await client.get("/tasks", headers=alice)).json() == []
    assert (await client.get("/tasks", headers=bob)).json() == []

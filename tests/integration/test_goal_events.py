"""`goal.changed` events, read where they are stored (`events.outbox`): the app's router says
"Changes are `goal.changed` events on the owner's subject `user:<id>`" and docs/goals.md that
each step of a started goal (start, wait, its work ending, cancel) is one. Over HTTP, on an app
whose lifespan runs a worker and the scheduler duty, the model faked at its wire by the stub.

Checked: a goal made, changed (its fields, its progress), started (active, with its task;
waiting, with what it waits for), ended by the sweep once its task ends, and cancelled, each
writes a `goal.changed` of that goal, with its status, on `user:<owner id>`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pipeline_runtime import LAB
from task_api import (
    api_fixture,  # noqa: F401 - the fixture "api"
    call,
    make_agent,
    stub_fixture,  # noqa: F401 - the fixture "stub"
    tools_fixture,  # noqa: F401 - the fixture "tools"
)

from gathering.agents.retrieval import local_owner_id
from gathering.db import Database
from gathering.scheduler.goals import GoalIn, add_dependency, create_goal, delete_goal
from gathering.testing import LLMStubServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[Database]:
    """The app's database (the `api` app runs on this test's `migrated_database_url`)."""
    database = Database(migrated_database_url, min_size=0, max_size=2)
    await database.connect()
    yield database
    await database.disconnect()


async def goal_events(db: Database, goal_id: int) -> list[dict[str, Any]]:
    """The `goal.changed` events of goal `goal_id` in the outbox, in commit order."""
    rows = await db.fetch_all(
        "SELECT type, subject, data, source FROM events.outbox"
        " WHERE type = 'goal.changed' AND (data ->> 'goal_id')::bigint = $1 ORDER BY cursor",
        goal_id,
    )
    return [dict(row) for row in rows]


async def statuses_told(db: Database, goal_id: int) -> list[str]:
    return [event["data"]["status"] for event in await goal_events(db, goal_id)]


async def new_goal(client: httpx.AsyncClient, title: str, **fields: Any) -> dict[str, Any]:
    made = await client.post("/goals", json={"title": title, **fields})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def told(db: Database, goal_id: int, status: str, limit: float = 30) -> list[str]:
    """The statuses told of goal `goal_id` once `status` is among them (the server's sweep
    moves a started goal on)."""
    deadline = time.monotonic() + limit
    while True:
        statuses = await statuses_told(db, goal_id)
        if status in statuses:
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"goal {goal_id}: no goal.changed {status!r}, only {statuses}")
        await asyncio.sleep(0.05)


# --- a started goal's steps ---------------------------------------------------------------------


async def test_start_and_the_end_of_its_task_are_goal_changed_events(
    api: httpx.AsyncClient, db: Database, stub: LLMStubServer
) -> None:
    await make_agent(api)
    stub.add_reply("the notes are written")
    goal = await new_goal(api, "Write the notes", agent="Tasker")
    before = await statuses_told(db, goal["id"])
    started = await api.post(f"/goals/{goal['id']}/start")
    assert started.status_code == 202, started.text
    task_id = started.json()["task_id"]
    assert task_id is not None

    statuses = await told(db, goal["id"], "done")
    assert statuses[len(before) :] == ["active", "done"]
    active, done = (await goal_events(db, goal["id"]))[len(before) :]
    subject = f"user:{goal['owner_id']}"
    assert (active["subject"], done["subject"]) == (subject, subject)
    assert active["source"] == "scheduler"
    assert active["data"]["task_id"] == task_id and active["data"]["parent_id"] is None
    assert (await api.get(f"/goals/{goal['id']}")).json()["status"] == "done"


async def test_a_waiting_goal_tells_what_it_waits_for_then_that_it_started(
    api: httpx.AsyncClient, db: Database, stub: LLMStubServer
) -> None:
    await make_agent(api)
    stub.add_reply("first done", "second done")
    first = await new_goal(api, "first", agent="Tasker")
    second = await new_goal(api, "second", agent="Tasker")
    linked = await api.post(f"/goals/{second['id']}/dependencies", json={"blocked_by": first["id"]})
    assert linked.status_code == 204, linked.text
    before = len(await goal_events(db, second["id"]))
    assert (await api.post(f"/goals/{second['id']}/start")).json()["status"] == "waiting"
    [waiting] = (await goal_events(db, second["id"]))[before:]
    assert waiting["data"]["status"] == "waiting"
    assert waiting["data"]["blocked_by"] == [first["id"]]

    assert (await api.post(f"/goals/{first['id']}/start")).status_code == 202
    statuses = await told(db, second["id"], "done")
    assert statuses[before:] == ["waiting", "active", "done"]


async def test_cancel_is_a_goal_changed_event_of_the_goal_and_each_subgoal(
    api: httpx.AsyncClient, db: Database, stub: LLMStubServer
) -> None:
    await make_agent(api, tools=("hold_over_http",))
    stub.add_reply(call("hold_over_http", key="events"))
    root = await new_goal(api, "root")
    leaf = await new_goal(api, "leaf", parent_id=root["id"], agent="Tasker")
    assert (await api.post(f"/goals/{root['id']}/start")).status_code == 202
    await asyncio.wait_for(LAB.started_event("events").wait(), 15)
    cancelled = await api.post(f"/goals/{root['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert (await statuses_told(db, root["id"]))[-1] == "cancelled"
    leaf_events = await goal_events(db, leaf["id"])
    assert [e["data"]["status"] for e in leaf_events][-2:] == ["active", "cancelled"]
    assert leaf_events[-1]["data"]["parent_id"] == root["id"]
    task_id = (await api.get(f"/goals/{leaf['id']}")).json()["task_id"]
    assert [e["data"].get("task_id") for e in leaf_events][-2] == task_id
    assert (await api.get(f"/tasks/{task_id}")).json()["status"] == "cancelled"


# --- a person's changes -------------------------------------------------------------------------


async def test_a_goal_made_is_a_goal_changed_event(api: httpx.AsyncClient, db: Database) -> None:
    goal = await new_goal(api, "Plan the trip")
    events = await goal_events(db, goal["id"])
    assert len(events) == 1, events
    assert events[0]["subject"] == f"user:{goal['owner_id']}"
    assert events[0]["data"]["status"] == "open"
    sub = await new_goal(api, "Book the train", parent_id=goal["id"])
    [made] = await goal_events(db, sub["id"])
    assert made["data"]["parent_id"] == goal["id"]


async def test_a_goal_changed_by_a_person_is_a_goal_changed_event(
    api: httpx.AsyncClient, db: Database
) -> None:
    goal = await new_goal(api, "Plan the trip")
    before = len(await goal_events(db, goal["id"]))
    changed = await api.patch(f"/goals/{goal['id']}", json={"title": "Plan the holiday"})
    assert changed.status_code == 200, changed.text
    events = await goal_events(db, goal["id"])
    assert len(events) == before + 1, events
    assert events[-1]["subject"] == f"user:{goal['owner_id']}"
    assert events[-1]["data"]["status"] == "open"


async def test_progress_set_on_a_subgoal_is_a_goal_changed_event(
    api: httpx.AsyncClient, db: Database
) -> None:
    root = await new_goal(api, "Move house")
    leaf = await new_goal(api, "Pack the books", parent_id=root["id"])
    before = len(await goal_events(db, leaf["id"]))
    moved = await api.patch(f"/goals/{leaf['id']}", json={"progress": 0.5})
    assert moved.status_code == 200, moved.text
    assert (await api.get(f"/goals/{root['id']}")).json()["progress"] == 0.5  # rolled up
    events = await goal_events(db, leaf["id"])
    assert len(events) == before + 1, events
    # The event names the parent, whose rolled-up progress changed with it.
    assert events[-1]["data"]["parent_id"] == root["id"]


async def test_deleting_a_parent_tells_of_each_goal_gone_and_each_dependency_freed(
    db: Database,
) -> None:
    owner = await local_owner_id(db)
    async with db.transaction() as tx:
        parent = await create_goal(tx, owner, GoalIn(title="parent"))
        child = await create_goal(tx, owner, GoalIn(title="child", parent_id=parent.id))
        other = await create_goal(tx, owner, GoalIn(title="other"))
        await add_dependency(tx, other, child)  # other waits for the child
    async with db.transaction() as tx:
        await delete_goal(tx, parent.id)
    told = [
        (event["data"]["goal_id"], event["data"].get("change"), event["data"]["status"])
        for goal in (parent, child, other)
        for event in await goal_events(db, goal.id)
    ]
    assert (parent.id, None, "deleted") in told and (child.id, None, "deleted") in told
    assert (other.id, "dependency_removed", "open") in told
    freed = [e for e in await goal_events(db, other.id) if e["data"].get("change")]
    assert freed[-1]["data"]["blocked_by"] == child.id
    assert freed[-1]["subject"] == f"user:{owner}"

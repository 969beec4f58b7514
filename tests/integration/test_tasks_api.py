"""Background tasks over HTTP, on an app whose lifespan runs a worker, with the model faked at
its HTTP wire only: start (202), run to the model's answer, read one, list (status, paging),
the step log paged with `after`, pause / resume / cancel of a task held in a tool, clear
refusals (404, 409, 422); owners kept apart on every route, API key scopes, and the WebSocket
subject `task:<id>` open to its owner only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pipeline_runtime import LAB
from task_api import (
    api_fixture,  # noqa: F401 - the fixture "api"
    call,
    client_for,
    keyed_member,
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    multi_user_app,
    only_the_reader_reads,
    open_every_gate,
    status_becomes,
    stub_fixture,  # noqa: F401 - the fixture "stub"
    tools_fixture,  # noqa: F401 - the fixture "tools"
)

from gathering.testing import LLMStubServer

ENDED = ("succeeded", "failed", "cancelled")


async def wait_for(
    client: httpx.AsyncClient,
    task_id: int,
    *statuses: str,
    limit: float = 30,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Task `task_id` once it has one of `statuses` (by default, once it has ended)."""
    return await status_becomes(client, f"/tasks/{task_id}", statuses or ENDED, limit, headers)


async def start(client: httpx.AsyncClient, goal: str, **fields: Any) -> dict[str, Any]:
    answer = await client.post("/tasks", json={"agent": "Tasker", "goal": goal, **fields})
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


# --- single-user: a task's life --------------------------------------------------------------


async def test_a_task_started_over_http_runs_to_the_answer(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    agent_id = await make_agent(api, tools=("echo",))
    stub.add_reply(call("echo", text="one"), call("echo", text="two"), "All done: one, two.")
    started = await start(api, "Say one, then two.", max_steps=5, max_seconds=60)
    assert started["status"] == "queued"
    assert (started["agent_id"], started["goal"]) == (agent_id, "Say one, then two.")
    assert (started["max_steps"], started["max_tokens"], started["max_seconds"]) == (5, 200_000, 60)
    assert started["max_cost_usd"] is None
    assert (started["steps"], started["input_tokens"], started["cost_usd"]) == (0, 0, 0)
    assert started["result"] is None and started["error"] is None
    assert started["finished_at"] is None and "job_id" not in started

    done = await wait_for(api, started["id"])  # the app's own worker runs it
    assert done["status"] == "succeeded", done["error"]
    assert (done["result"], done["steps"], done["error"]) == ("All done: one, two.", 3, None)
    assert done["input_tokens"] > 0 and done["output_tokens"] > 0
    assert done["started_at"] is not None and done["finished_at"] is not None
    assert LAB.calls["one"] == LAB.calls["two"] == 1

    steps = (await api.get(f"/tasks/{started['id']}/steps")).json()
    assert [s["n"] for s in steps] == [1, 2, 3]
    assert all(s["status"] == "done" for s in steps)
    [first] = steps[0]["calls"]
    assert (first["name"], first["arguments"]) == ("echo", {"text": "one"})
    assert (first["status"], first["result"]) == ("finished", "one")
    assert steps[2]["thought"] == "All done: one, two." and steps[2]["calls"] == []
    assert steps[0]["model"] and steps[0]["input_tokens"] > 0


async def test_the_step_log_is_paged_with_after_without_gap_or_repeat(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api, tools=("echo",))
    stub.add_reply(*[call("echo", text=f"s{i}") for i in range(4)], "five steps")
    done = await wait_for(api, (await start(api, "five steps"))["id"])
    assert (done["status"], done["steps"]) == ("succeeded", 5)
    where = f"/tasks/{done['id']}/steps"
    seen: list[int] = []
    after = 0
    while page := (await api.get(where, params={"after": after, "limit": 2})).json():
        assert len(page) <= 2
        seen += [step["n"] for step in page]
        after = page[-1]["n"]
    assert seen == [1, 2, 3, 4, 5]
    assert [s["n"] for s in (await api.get(where, params={"after": 3})).json()] == [4, 5]
    assert (await api.get(where, params={"after": 5})).json() == []
    for bad in ({"after": -1}, {"limit": 0}, {"limit": 501}, {"after": "x"}):
        assert (await api.get(where, params=bad)).status_code == 422, bad


async def test_tasks_are_listed_newest_first_by_status_and_page(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api, tools=("hold_over_http",))
    stub.add_reply("first", "second", "third")
    ids = [(await start(api, f"goal {n}"))["id"] for n in range(3)]
    for task_id in ids:
        assert (await wait_for(api, task_id))["status"] == "succeeded"
    stub.add_reply(call("hold_over_http", key="listed"))
    stopped = await start(api, "held, then cancelled")
    await asyncio.wait_for(LAB.started_event("listed").wait(), 15)
    assert (await api.post(f"/tasks/{stopped['id']}/cancel")).status_code == 200

    newest_first = [ids[2], ids[1], ids[0]]
    listed = (await api.get("/tasks")).json()
    assert [t["id"] for t in listed] == [stopped["id"], *newest_first]
    succeeded = (await api.get("/tasks", params={"status": "succeeded"})).json()
    assert [t["id"] for t in succeeded] == newest_first
    cancelled = (await api.get("/tasks", params={"status": "cancelled"})).json()
    assert [t["id"] for t in cancelled] == [stopped["id"]]
    assert cancelled[0]["error"] == {"code": "cancelled", "message": "cancelled by request"}
    assert (await api.get("/tasks", params={"status": "failed"})).json() == []
    page: dict[str, str | int] = {"status": "succeeded", "limit": 2}
    assert [t["id"] for t in (await api.get("/tasks", params=page)).json()] == newest_first[:2]
    rest = (await api.get("/tasks", params={**page, "offset": 2})).json()
    assert [t["id"] for t in rest] == newest_first[2:]
    assert (await api.get("/tasks", params={"offset": 4})).json() == []
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 1001}, {"offset": -1}):
        assert (await api.get("/tasks", params=bad)).status_code == 422, bad


async def test_pause_resume_and_cancel_a_task_held_in_a_tool(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api, tools=("hold_over_http",))
    stub.add_reply(call("hold_over_http", key="p"), call("hold_over_http", key="q"), "never")
    task = await start(api, "hold on")
    where = f"/tasks/{task['id']}"
    await asyncio.wait_for(LAB.started_event("p").wait(), 15)
    assert (await api.get(where)).json()["status"] == "running"
    not_paused = await api.post(f"{where}/resume")
    assert not_paused.status_code == 409, not_paused.text
    assert (
        "only a paused task, or one waiting for a budget, is resumed" in not_paused.json()["detail"]
    )

    paused = await api.post(f"{where}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    again = await api.post(f"{where}/pause")
    assert again.status_code == 409 and "is paused: it cannot be paused" in again.text
    await asyncio.sleep(1.5)  # its job was stopped: nothing more is stored
    assert (await api.get(where)).json()["status"] == "paused"
    [step] = (await api.get(f"{where}/steps")).json()
    assert step["status"] == "acting" and step["calls"][0]["status"] == "running"

    resumed = await api.post(f"{where}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "queued"
    await asyncio.wait_for(LAB.started_event("q").wait(), 15)  # it went on: the next step
    assert LAB.calls["p"] == 1  # a write cut short is not made again
    first = (await api.get(f"{where}/steps")).json()[0]["calls"][0]
    assert first["status"] == "interrupted" and "may or may not" in first["result"]

    cancelled = await api.post(f"{where}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert body["error"] == {"code": "cancelled", "message": "cancelled by request"}
    await asyncio.sleep(1.5)
    assert (await api.get(where)).json()["status"] == "cancelled"
    assert [s["n"] for s in (await api.get(f"{where}/steps")).json()] == [1, 2]
    for verb in ("pause", "resume", "cancel"):
        ended = await api.post(f"{where}/{verb}")
        assert ended.status_code == 409, (verb, ended.text)
        assert f"task {task['id']} is cancelled" in ended.json()["detail"]


async def test_controls_on_a_task_that_succeeded_are_refused(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api)
    stub.add_reply("finished")
    done = await wait_for(api, (await start(api, "quick"))["id"])
    assert done["status"] == "succeeded"
    for verb in ("pause", "resume", "cancel"):
        refused = await api.post(f"/tasks/{done['id']}/{verb}")
        assert refused.status_code == 409, (verb, refused.text)
        assert f"task {done['id']} is succeeded" in refused.json()["detail"]
    assert (await api.get(f"/tasks/{done['id']}")).json()["status"] == "succeeded"


async def test_a_budget_that_runs_out_fails_the_task(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api, tools=("echo",))
    stub.add_reply(call("echo", text="a"), "never asked")
    done = await wait_for(api, (await start(api, "loop", max_steps=1))["id"])
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"]["code"] == "budget_exhausted" and "1 step" in done["error"]["message"]
    assert done["steps"] == 1


async def test_missing_tasks_and_agents_are_404(api: httpx.AsyncClient) -> None:
    await make_agent(api)
    for method, path in [
        ("GET", "/tasks/999999"),
        ("GET", "/tasks/999999/steps"),
        ("POST", "/tasks/999999/pause"),
        ("POST", "/tasks/999999/resume"),
        ("POST", "/tasks/999999/cancel"),
    ]:
        answer = await api.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["detail"] == "task 999999 not found"
    by_name = await api.post("/tasks", json={"agent": "Nobody", "goal": "x"})
    assert by_name.status_code == 404 and "no agent 'Nobody'" in by_name.json()["detail"]
    by_id = await api.post("/tasks", json={"agent": 999999, "goal": "x"})
    assert by_id.status_code == 404 and "no agent 999999" in by_id.json()["detail"]
    assert (await api.get("/tasks")).json() == []
    for bad_id in ("0", "-1", "abc", str(2**63)):
        assert (await api.get(f"/tasks/{bad_id}")).status_code in (404, 422), bad_id


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"goal": ""}, "goal"),
        ({"goal": "   "}, "only white space"),
        ({"goal": "x", "surprise": 1}, "surprise"),
        ({"goal": "x", "max_steps": 0}, "max_steps"),
        ({"goal": "x", "max_steps": 1_001}, "max_steps"),
        ({"goal": "x", "max_tokens": 0}, "max_tokens"),
        ({"goal": "x", "max_seconds": 0.5}, "max_seconds"),
        ({"goal": "x", "max_cost_usd": 0}, "max_cost_usd"),
        ({"goal": "x" * 20_001}, "goal"),
        ({"goal": "x", "agent": ""}, "agent"),
        ({"goal": "x", "agent": None}, "agent"),
        ({"goal": "x", "agent": 0}, "agent"),
    ],
)
async def test_bad_bodies_are_422_and_say_what_is_wrong(
    api: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    await make_agent(api)
    answer = await api.post("/tasks", json={"agent": "Tasker", **body})
    assert answer.status_code == 422, answer.text
    assert words in answer.text
    assert (await api.get("/tasks")).json() == []


async def test_a_goal_of_exactly_the_limit_is_taken(api: httpx.AsyncClient) -> None:
    # A model whose window holds it (Ollama's default num_ctx, 4096 tokens, does not).
    await make_agent(api, provider=("openai", "gpt-4o"))
    answer = await api.post("/tasks", json={"agent": "Tasker", "goal": "x" * 20_000})
    assert answer.status_code == 202, answer.text
    assert len(answer.json()["goal"]) == 20_000
    done = await wait_for(api, answer.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["goal"] == "x" * 20_000


# --- multi-user mode --------------------------------------------------------------------------


@pytest.fixture
async def multi_running(
    migrated_database_url: str, stub: LLMStubServer, tools: None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Multi-user mode with its lifespan and worker: tasks run."""
    app = multi_user_app(migrated_database_url)
    try:
        async with app.router.lifespan_context(app), client_for(app) as client:
            try:
                yield app, client
            finally:
                open_every_gate()
    finally:
        await app.state.gathering.close()


async def test_an_agent_of_someone_else_is_not_found(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    alice_agent = await make_agent(client, "Alices", headers=alice)
    for agent in (alice_agent, str(alice_agent), "Alices"):
        refused = await client.post("/tasks", json={"agent": agent, "goal": "x"}, headers=bob)
        assert refused.status_code == 404, (agent, refused.text)
        assert "no agent" in refused.json()["detail"]
    assert (await client.get("/tasks", headers=bob)).json() == []
    own = await client.post("/tasks", json={"agent": "Alices", "goal": "x"}, headers=alice)
    assert own.status_code == 202, own.text


async def test_each_owner_sees_and_controls_only_their_own_tasks(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    admin, viewer = await login(app, client, "admin"), await login(app, client, "viewer")
    await make_agent(client, "Same", headers=alice)
    await make_agent(client, "Same", headers=bob)  # names are per owner
    body = {"agent": "Same", "goal": "mine"}
    mine = (await client.post("/tasks", json=body, headers=alice)).json()
    theirs = (await client.post("/tasks", json=body, headers=bob)).json()
    assert mine["owner_id"] != theirs["owner_id"] and mine["agent_id"] != theirs["agent_id"]
    where = f"/tasks/{mine['id']}"
    for method, path, params in [
        ("GET", where, None),
        ("GET", f"{where}/steps", None),
        ("GET", f"{where}/steps", {"after": 0, "limit": 1}),
        ("POST", f"{where}/pause", None),
        ("POST", f"{where}/resume", None),
        ("POST", f"{where}/cancel", None),
    ]:
        answer = await client.request(method, path, params=params, headers=bob)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["detail"] == f"task {mine['id']} not found"
    # Bob's attempts changed nothing.
    assert (await client.get(where, headers=alice)).json()["status"] == "queued"

    assert [t["id"] for t in (await client.get("/tasks", headers=alice)).json()] == [mine["id"]]
    assert [t["id"] for t in (await client.get("/tasks", headers=bob)).json()] == [theirs["id"]]
    everyone = (await client.get("/tasks", headers=admin)).json()
    assert {t["id"] for t in everyone} == {mine["id"], theirs["id"]}
    queued_of_bob = await client.get("/tasks", params={"status": "queued"}, headers=bob)
    assert [t["id"] for t in queued_of_bob.json()] == [theirs["id"]]

    # An administrator reads and controls anyone's.
    assert (await client.get(where, headers=admin)).status_code == 200
    assert (await client.get(f"{where}/steps", headers=admin)).json() == []
    assert (await client.post(f"{where}/pause", headers=admin)).json()["status"] == "paused"
    assert (await client.post(f"{where}/resume", headers=admin)).json()["status"] == "queued"
    # The owner controls their own.
    assert (await client.post(f"{where}/cancel", headers=alice)).json()["status"] == "cancelled"

    # A viewer reads (nothing of its own) and starts nothing; nobody anonymous.
    assert (await client.get("/tasks", headers=viewer)).json() == []
    assert (await client.get(where, headers=viewer)).status_code == 404
    assert (await client.post("/tasks", json=body, headers=viewer)).status_code == 403
    assert (await client.get("/tasks")).status_code == 401
    assert (await client.post("/tasks", json=body)).status_code == 401
    assert (await client.get(where)).status_code == 401


async def test_api_keys_need_the_tasks_scopes(multi: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = multi
    keys = await keyed_member(app, client, "tasks", "schedules:read", "schedules:write")
    alice, reader, writer, other = keys
    body = {"agent": "Keyed", "goal": "keyed"}
    assert (await client.post("/tasks", json=body, headers=reader)).status_code == 403
    made = await client.post("/tasks", json=body, headers=writer)
    assert made.status_code == 202, made.text
    where = f"/tasks/{made.json()['id']}"
    assert made.json()["owner_id"] == (await client.get(where, headers=alice)).json()["owner_id"]

    await only_the_reader_reads(client, (where, f"{where}/steps", "/tasks"), reader, writer, other)
    for verb in ("pause", "resume", "cancel"):
        denied = await client.post(f"{where}/{verb}", headers=reader)
        assert denied.status_code == 403, (verb, denied.text)
        assert "tasks:write" in denied.json()["detail"]
    assert (await client.post("/tasks", json=body, headers=other)).status_code == 403
    assert (await client.get(where, headers=alice)).json()["status"] == "queued"
    assert (await client.post(f"{where}/pause", headers=writer)).json()["status"] == "paused"
    assert (await client.post(f"{where}/resume", headers=writer)).json()["status"] == "queued"
    assert (await client.post(f"{where}/cancel", headers=writer)).json()["status"] == "cancelled"


async def test_only_its_owner_follows_a_task_on_the_websocket(
    multi_running: tuple[FastAPI, httpx.AsyncClient], stub: LLMStubServer
) -> None:
    from asgi_ws import ASGIWebSocket  # tests/_support

    app, client = multi_running
    alice, bob = await login(app, client), await login(app, client)
    await make_agent(client, "Watched", headers=alice, tools=("hold_over_http",))
    stub.add_reply(call("hold_over_http", key="ws"), "watched to the end")
    made = await client.post("/tasks", json={"agent": "Watched", "goal": "w"}, headers=alice)
    assert made.status_code == 202, made.text
    task_id = made.json()["id"]
    subject = f"task:{task_id}"

    bob_token = bob["Authorization"].removeprefix("Bearer ")
    async with ASGIWebSocket(app, "/ws", query=f"access_token={bob_token}") as ws:
        for refused_subject in (subject, "task:999999"):
            await ws.send_json({"type": "subscribe", "subjects": [refused_subject]})
            refused = await ws.receive_json()
            assert refused["type"] == "error" and refused["code"] == "not_found", refused
            assert f"no task {refused_subject.removeprefix('task:')}" in refused["message"]

    alice_token = alice["Authorization"].removeprefix("Bearer ")
    async with ASGIWebSocket(app, "/ws", query=f"access_token={alice_token}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": [subject], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"
        await asyncio.wait_for(LAB.started_event("ws").wait(), 15)
        LAB.gates.setdefault("ws", asyncio.Event()).set()
        kinds: list[str] = []
        while "task.finished" not in kinds:
            message = await ws.receive_json(timeout=15)
            if message["type"] != "event":
                continue
            event = message["event"]
            assert event["type"].startswith("task.") and event["subject"] == subject, event
            assert event["data"]["task_id"] == task_id
            kinds.append(event["type"])
            if event["type"] == "task.finished":
                assert event["data"]["status"] == "succeeded"
    assert kinds[0] == "task.queued" and "task.started" in kinds
    assert kinds.count("task.step") >= 2
    done = await wait_for(client, task_id, headers=alice)
    assert (done["status"], done["result"]) == ("succeeded", "watched to the end")

"""Goals over HTTP, on an app whose lifespan runs a worker and the scheduler duty, with the
model faked at its HTTP wire only: create, read, change and delete goals, the tree with its
rolled-up progress, dependencies (never a cycle), start (a real background task, the goal done
once the server's own sweep sees the task end), cancel, decompose through the LLM stub, the
activities paged with `after`, clear refusals (404, 409, 422, 502); owners kept apart on every
route, an admin's subgoal kept its parent's owner's, and the API key scopes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pipeline_runtime import LAB
from task_api import (
    api_fixture,  # noqa: F401 - the fixture "api"
    call,
    keyed_member,
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    only_the_reader_reads,
    status_becomes,
    stub_fixture,  # noqa: F401 - the fixture "stub"
    tools_fixture,  # noqa: F401 - the fixture "tools"
)

from gathering.testing import LLMStubServer

GOAL_FIELDS = {
    "id",
    "owner_id",
    "parent_id",
    "title",
    "description",
    "success_criteria",
    "status",
    "agent_id",
    "pipeline_id",
    "task_id",
    "pipeline_run_id",
    "progress",
    "position",
    "created_at",
    "updated_at",
    "finished_at",
}


async def new_goal(
    client: httpx.AsyncClient, title: str, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    made = await client.post("/goals", json={"title": title, **fields}, headers=headers)
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def goal_becomes(
    client: httpx.AsyncClient,
    goal_id: int,
    *statuses: str,
    limit: float = 30,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Goal `goal_id` once it has one of `statuses` (the server's own sweep moves it on)."""
    return await status_becomes(client, f"/goals/{goal_id}", statuses, limit, headers)


async def activity_kinds(client: httpx.AsyncClient, goal_id: int) -> list[str]:
    return [a["kind"] for a in (await client.get(f"/goals/{goal_id}/activities")).json()]


# --- single-user: a goal's life ---------------------------------------------------------------


async def test_goals_are_made_read_changed_and_deleted(api: httpx.AsyncClient) -> None:
    agent_id = await make_agent(api)
    made = await new_goal(
        api, "Ship it", description="the release", success_criteria="users have it"
    )
    assert set(made) == GOAL_FIELDS
    assert (made["status"], made["progress"], made["position"]) == ("open", 0, 0)
    assert (made["parent_id"], made["agent_id"], made["task_id"]) == (None, None, None)
    assert (made["description"], made["success_criteria"]) == ("the release", "users have it")
    where = f"/goals/{made['id']}"
    assert (await api.get(where)).json() == made

    changed = await api.patch(where, json={"title": "Ship it now", "agent": "Tasker"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["title"], changed.json()["agent_id"]) == ("Ship it now", agent_id)
    by_id = await api.patch(where, json={"agent": str(agent_id)})
    assert by_id.json()["agent_id"] == agent_id
    same = await api.patch(where, json={})  # nothing given: nothing changes
    assert same.status_code == 200 and same.json()["title"] == "Ship it now"
    nulls = await api.patch(where, json={"title": None, "description": None})
    assert nulls.status_code == 200 and nulls.json()["description"] == "the release"
    cleared = await api.patch(where, json={"agent": None})
    assert cleared.status_code == 200 and cleared.json()["agent_id"] is None
    unknown = await api.patch(where, json={"agent": "Nobody"})
    assert unknown.status_code == 404 and "no agent 'Nobody'" in unknown.json()["detail"]

    deleted = await api.delete(where)
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await api.get(where)).status_code == 404
    assert (await api.delete(where)).status_code == 404


async def test_the_tree_rolls_progress_up_and_delete_takes_the_subgoals(
    api: httpx.AsyncClient,
) -> None:
    root = await new_goal(api, "ship")
    a = await new_goal(api, "a", parent_id=root["id"])
    b = await new_goal(api, "b", parent_id=root["id"])
    c = await new_goal(api, "c", parent_id=b["id"])
    d = await new_goal(api, "d", parent_id=b["id"])
    assert (a["position"], b["position"], c["position"], d["position"]) == (0, 1, 0, 1)
    assert (await api.patch(f"/goals/{a['id']}", json={"progress": 0.5})).status_code == 200
    assert (await api.patch(f"/goals/{c['id']}", json={"progress": 1})).status_code == 200

    tree = (await api.get(f"/goals/{root['id']}/tree")).json()
    assert [g["id"] for g in tree["subgoals"]] == [a["id"], b["id"]]
    b_node = tree["subgoals"][1]
    assert [g["id"] for g in b_node["subgoals"]] == [c["id"], d["id"]]
    assert b_node["progress"] == pytest.approx(0.5)  # c 1, d 0
    assert tree["progress"] == pytest.approx(0.5)  # a 0.5, b 0.5
    assert tree["blocked_by"] == [] and b_node["subgoals"][0]["subgoals"] == []
    assert (await api.get(f"/goals/{root['id']}")).json()["progress"] == pytest.approx(0.5)
    # The list holds top-level goals only, each with its rolled-up progress.
    listed = (await api.get("/goals")).json()
    assert [(g["id"], g["progress"]) for g in listed] == [(root["id"], pytest.approx(0.5))]

    # Moving a subgoal reorders the tree.
    assert (await api.patch(f"/goals/{a['id']}", json={"position": 5})).status_code == 200
    tree = (await api.get(f"/goals/{root['id']}/tree")).json()
    assert [g["id"] for g in tree["subgoals"]] == [b["id"], a["id"]]

    assert (await api.delete(f"/goals/{b['id']}")).status_code == 204
    for gone in (b, c, d):
        assert (await api.get(f"/goals/{gone['id']}")).status_code == 404
    tree = (await api.get(f"/goals/{root['id']}/tree")).json()
    assert [g["id"] for g in tree["subgoals"]] == [a["id"]]
    assert tree["progress"] == pytest.approx(0.5)


async def test_top_level_goals_are_listed_newest_first_and_paged(api: httpx.AsyncClient) -> None:
    ids = [(await new_goal(api, f"goal {n}"))["id"] for n in range(4)]
    await new_goal(api, "a subgoal", parent_id=ids[0])
    newest_first = ids[::-1]
    assert [g["id"] for g in (await api.get("/goals")).json()] == newest_first
    page = (await api.get("/goals", params={"limit": 2})).json()
    assert [g["id"] for g in page] == newest_first[:2]
    rest = (await api.get("/goals", params={"limit": 2, "offset": 2})).json()
    assert [g["id"] for g in rest] == newest_first[2:]
    assert (await api.get("/goals", params={"offset": 4})).json() == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}):
        assert (await api.get("/goals", params=bad)).status_code == 422, bad


async def test_dependencies_are_added_listed_removed_and_never_make_a_cycle(
    api: httpx.AsyncClient,
) -> None:
    a, b, c = [await new_goal(api, name) for name in "abc"]
    parent = await new_goal(api, "parent")
    child = await new_goal(api, "child", parent_id=parent["id"])

    def deps(goal: dict[str, Any]) -> str:
        return f"/goals/{goal['id']}/dependencies"

    assert (await api.post(deps(b), json={"blocked_by": a["id"]})).status_code == 204
    assert (await api.post(deps(c), json={"blocked_by": b["id"]})).status_code == 204
    again = await api.post(deps(c), json={"blocked_by": b["id"]})
    assert again.status_code == 204  # already so
    assert [g["id"] for g in (await api.get(deps(c))).json()] == [b["id"]]
    assert (await api.get(deps(a))).json() == []
    tree = (await api.get(f"/goals/{c['id']}/tree")).json()
    assert tree["blocked_by"] == [b["id"]]

    for goal, other in ((a, c), (a, b), (a, a)):
        refused = await api.post(deps(goal), json={"blocked_by": other["id"]})
        assert refused.status_code == 409, refused.text
        assert "cycle" in refused.json()["detail"]
    for goal, other in ((child, parent), (parent, child)):
        refused = await api.post(deps(goal), json={"blocked_by": other["id"]})
        assert refused.status_code == 409, refused.text
        assert "one line of subgoals" in refused.json()["detail"]
    missing = await api.post(deps(a), json={"blocked_by": 999_999})
    assert missing.status_code == 404 and missing.json()["detail"] == "goal 999999 not found"

    removed = await api.delete(f"{deps(c)}/{b['id']}")
    assert removed.status_code == 204, removed.text
    assert (await api.get(deps(c))).json() == []
    not_there = await api.delete(f"{deps(c)}/{b['id']}")
    assert not_there.status_code == 404
    assert "does not wait for" in not_there.json()["detail"]
    assert (await api.post(deps(a), json={"blocked_by": c["id"]})).status_code == 204
    kinds = await activity_kinds(api, c["id"])
    assert kinds[0] == "created" and kinds[-1] == "dependency_removed"
    assert "dependency_added" in kinds


async def test_start_launches_a_task_and_the_servers_sweep_ends_the_goal(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    agent_id = await make_agent(api)
    stub.add_reply("the summary is written")
    goal = await new_goal(api, "Write the summary", agent="Tasker", success_criteria="short")
    started = await api.post(f"/goals/{goal['id']}/start")
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "active" and body["task_id"] is not None
    task = (await api.get(f"/tasks/{body['task_id']}")).json()
    assert task["agent_id"] == agent_id
    assert "Write the summary" in task["goal"] and "Success criteria: short" in task["goal"]
    # The server's worker runs the task, its scheduler duty ends the goal: no call needed.
    done = await goal_becomes(api, goal["id"], "done", "failed")
    assert done["status"] == "done" and done["progress"] == 1
    assert done["finished_at"] is not None
    task = (await api.get(f"/tasks/{body['task_id']}")).json()
    assert (task["status"], task["result"]) == ("succeeded", "the summary is written")
    assert await activity_kinds(api, goal["id"]) == ["created", "task_started", "task_succeeded"]
    again = await api.post(f"/goals/{goal['id']}/start")
    assert again.status_code == 409 and "only an open goal" in again.json()["detail"]


async def test_a_parent_starts_its_subgoals_in_order_with_the_starts_agent(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    agent_id = await make_agent(api)
    root = await new_goal(api, "release")
    build = await new_goal(api, "build", parent_id=root["id"])
    publish = await new_goal(api, "publish", parent_id=root["id"])
    blocked = await api.post(
        f"/goals/{publish['id']}/dependencies", json={"blocked_by": build["id"]}
    )
    assert blocked.status_code == 204
    nobody = await api.post(f"/goals/{root['id']}/start")
    assert nobody.status_code == 409, nobody.text
    assert f"{build['id']}, {publish['id']}" in nobody.json()["detail"]
    no_agent = await api.post(f"/goals/{root['id']}/start", json={"agent": "Nobody"})
    assert no_agent.status_code == 404 and "no agent 'Nobody'" in no_agent.json()["detail"]
    assert (await api.get(f"/goals/{root['id']}")).json()["status"] == "open"

    stub.add_reply("built", "published")
    started = await api.post(f"/goals/{root['id']}/start", json={"agent": "Tasker"})
    assert started.status_code == 202, started.text
    assert (started.json()["status"], started.json()["task_id"]) == ("active", None)
    tree = (await api.get(f"/goals/{root['id']}/tree")).json()
    statuses = {g["title"]: (g["status"], g["agent_id"]) for g in tree["subgoals"]}
    assert statuses["publish"] == ("waiting", agent_id)
    assert statuses["build"][1] == agent_id
    assert (await goal_becomes(api, root["id"], "done", "failed"))["status"] == "done"
    tree = (await api.get(f"/goals/{root['id']}/tree")).json()
    assert [g["status"] for g in tree["subgoals"]] == ["done", "done"]
    assert tree["progress"] == 1
    assert await activity_kinds(api, root["id"]) == ["created", "started", "subgoals_ended"]


async def test_cancel_stops_the_work_of_a_goal_and_its_subgoals(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api, tools=("hold_over_http",))
    stub.add_reply(call("hold_over_http", key="goal"))
    root = await new_goal(api, "root")
    leaf = await new_goal(api, "leaf", parent_id=root["id"], agent="Tasker")
    assert (await api.post(f"/goals/{root['id']}/start")).status_code == 202
    await asyncio.wait_for(LAB.started_event("goal").wait(), 15)
    task_id = (await api.get(f"/goals/{leaf['id']}")).json()["task_id"]
    assert (await api.get(f"/tasks/{task_id}")).json()["status"] == "running"

    cancelled = await api.post(f"/goals/{root['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    leaf_now = (await api.get(f"/goals/{leaf['id']}")).json()
    assert (leaf_now["status"], leaf_now["task_id"]) == ("cancelled", task_id)
    assert (await api.get(f"/tasks/{task_id}")).json()["status"] == "cancelled"
    await asyncio.sleep(1.0)  # the server's sweep changes nothing of it
    assert (await api.get(f"/goals/{root['id']}")).json()["status"] == "cancelled"
    for verb in ("cancel", "start", "decompose"):
        refused = await api.post(f"/goals/{root['id']}/{verb}")
        assert refused.status_code == 409, (verb, refused.text)
    late = await api.post("/goals", json={"title": "late", "parent_id": root["id"]})
    assert late.status_code == 409, late.text
    assert (await activity_kinds(api, leaf["id"]))[-1] == "cancelled"


async def test_no_subgoal_under_a_goal_that_works_on_its_own(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api, tools=("hold_over_http",))
    stub.add_reply(call("hold_over_http", key="own"))
    goal = await new_goal(api, "alone", agent="Tasker")
    assert (await api.post(f"/goals/{goal['id']}/start")).status_code == 202
    refused = await api.post("/goals", json={"title": "sub", "parent_id": goal["id"]})
    assert refused.status_code == 409, refused.text
    assert "works on its own" in refused.json()["detail"]
    assert (await api.get(f"/goals/{goal['id']}/tree")).json()["subgoals"] == []


async def test_decompose_stores_the_agents_subgoals(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    agent_id = await make_agent(api)
    goal = await new_goal(api, "Plan the launch", agent="Tasker")
    answer = [
        {"title": "Draft", "success_criteria": "a draft exists"},
        {"title": "Review", "depends_on": [1]},
        {"title": "Publish", "description": "on the site", "depends_on": [1, 2]},
    ]
    stub.add_reply("Here you are:\n" + json.dumps(answer))
    made = await api.post(f"/goals/{goal['id']}/decompose")
    assert made.status_code == 201, made.text
    subgoals = made.json()
    assert [g["title"] for g in subgoals] == ["Draft", "Review", "Publish"]
    assert all(g["parent_id"] == goal["id"] and g["agent_id"] == agent_id for g in subgoals)
    assert subgoals[0]["success_criteria"] == "a draft exists"
    assert subgoals[2]["description"] == "on the site"
    assert "Plan the launch" in json.dumps(stub.last.json["messages"])
    tree = (await api.get(f"/goals/{goal['id']}/tree")).json()
    blocked = {g["title"]: g["blocked_by"] for g in tree["subgoals"]}
    assert blocked == {
        "Draft": [],
        "Review": [subgoals[0]["id"]],
        "Publish": [subgoals[0]["id"], subgoals[1]["id"]],
    }
    again = await api.post(f"/goals/{goal['id']}/decompose")
    assert again.status_code == 409 and "subgoal(s) already" in again.json()["detail"]
    assert (await activity_kinds(api, goal["id"]))[-1] == "decomposed"


async def test_decompose_refusals(api: httpx.AsyncClient, stub: LLMStubServer) -> None:
    await make_agent(api)
    nobody = await new_goal(api, "no agent")
    refused = await api.post(f"/goals/{nobody['id']}/decompose")
    assert refused.status_code == 409 and "has no agent" in refused.json()["detail"]
    unknown = await api.post(f"/goals/{nobody['id']}/decompose", json={"agent": "Nobody"})
    assert unknown.status_code == 404, unknown.text
    for odd in ("²", "٣", "9" * 40):  # digits that are no id: names nobody has
        answer = await api.post(f"/goals/{nobody['id']}/decompose", json={"agent": odd})
        assert answer.status_code == 404, (odd, answer.text)
    extra = await api.post(f"/goals/{nobody['id']}/decompose", json={"surprise": 1})
    assert extra.status_code == 422, extra.text

    goal = await new_goal(api, "g", agent="Tasker")
    for bad in (
        "I cannot do that",
        '[{"title": "a", "depends_on": [2]}, {"title": "b"}]',
        '[{"title": "\\u001c"}]',  # only white space, as Python strips it
    ):
        stub.add_reply(bad)
        answer = await api.post(f"/goals/{goal['id']}/decompose")
        assert answer.status_code == 502, answer.text
        assert answer.json()["code"] == "decomposition_failed"
    assert (await api.get(f"/goals/{goal['id']}/tree")).json()["subgoals"] == []
    # With another agent named in the body, for a goal without one.
    stub.add_reply('[{"title": "only one"}]')
    made = await api.post(f"/goals/{nobody['id']}/decompose", json={"agent": "Tasker"})
    assert made.status_code == 201, made.text
    assert [g["title"] for g in made.json()] == ["only one"]
    assert made.json()[0]["agent_id"] is None  # the goal's own agent (none) is inherited


async def test_activities_are_paged_with_after_without_gap_or_repeat(
    api: httpx.AsyncClient,
) -> None:
    goal = await new_goal(api, "busy")
    where = f"/goals/{goal['id']}"
    for n in range(4):
        assert (await api.patch(where, json={"progress": n / 10})).status_code == 200
    everything = (await api.get(f"{where}/activities")).json()
    assert [a["kind"] for a in everything] == ["created"] + ["changed"] * 4
    assert everything[0]["body"] == {"title": "busy"}
    assert everything[1]["body"] == {"fields": ["progress"]}
    ids = [a["id"] for a in everything]
    seen: list[int] = []
    after = 0
    while page := (
        await api.get(f"{where}/activities", params={"after": after, "limit": 2})
    ).json():
        assert len(page) <= 2
        seen += [a["id"] for a in page]
        after = page[-1]["id"]
    assert seen == ids
    assert (await api.get(f"{where}/activities", params={"after": ids[-1]})).json() == []
    for bad in ({"after": -1}, {"limit": 0}, {"limit": 501}, {"after": "x"}):
        answer = await api.get(f"{where}/activities", params=bad)
        assert answer.status_code == 422, bad


async def test_missing_goals_are_404_on_every_route(api: httpx.AsyncClient) -> None:
    await make_agent(api)
    where = "/goals/999999"
    for method, path, payload in [
        ("GET", where, None),
        ("GET", f"{where}/tree", None),
        ("PATCH", where, {"title": "x"}),
        ("DELETE", where, None),
        ("GET", f"{where}/dependencies", None),
        ("POST", f"{where}/dependencies", {"blocked_by": 1}),
        ("DELETE", f"{where}/dependencies/1", None),
        ("POST", f"{where}/start", None),
        ("POST", f"{where}/cancel", None),
        ("POST", f"{where}/decompose", None),
        ("GET", f"{where}/activities", None),
        ("POST", "/goals", {"title": "sub", "parent_id": 999999}),
    ]:
        answer = await api.request(method, path, json=payload)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["detail"] == "goal 999999 not found", (method, path)
    no_agent = await api.post("/goals", json={"title": "x", "agent": "Nobody"})
    assert no_agent.status_code == 404 and "no agent 'Nobody'" in no_agent.json()["detail"]
    no_pipeline = await api.post("/goals", json={"title": "x", "pipeline": 999999})
    assert no_pipeline.status_code == 404 and "no pipeline" in no_pipeline.json()["detail"]
    assert (await api.get("/goals")).json() == []
    for bad_id in ("0", "-1", "abc", str(2**63)):
        assert (await api.get(f"/goals/{bad_id}")).status_code in (404, 422), bad_id


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "x", "surprise": 1}, "surprise"),
        ({"title": "x", "description": "d" * 10_001}, "description"),
        ({"title": "x", "success_criteria": "s" * 10_001}, "success_criteria"),
        ({"title": "x", "parent_id": 0}, "parent_id"),
        ({"title": "x", "parent_id": "1"}, "parent_id"),
        ({"title": "x", "parent_id": True}, "parent_id"),
        ({"title": "x", "agent": ""}, "agent"),
        ({"title": "x", "agent": 0}, "agent"),
        ({"title": "x", "agent": True}, "agent"),
        ({"title": "x", "pipeline": ""}, "pipeline"),
        ({"title": 5}, "title"),
    ],
)
async def test_bad_goal_bodies_are_422_and_say_what_is_wrong(
    api: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    answer = await api.post("/goals", json=body)
    assert answer.status_code == 422, answer.text
    assert words in answer.text
    assert (await api.get("/goals")).json() == []


@pytest.mark.parametrize(
    ("route", "body", "words"),
    [
        ("", {"progress": 1.5}, "progress"),
        ("", {"progress": -0.1}, "progress"),
        ("", {"progress": "0.5"}, "progress"),
        ("", {"position": -1}, "position"),
        ("", {"position": 100_001}, "position"),
        ("", {"title": ""}, "title"),
        ("", {"title": "\x1c"}, "only white space"),
        ("", {"status": "done"}, "status"),
        ("/dependencies", {"blocked_by": 0}, "blocked_by"),
        ("/dependencies", {"blocked_by": "x"}, "blocked_by"),
        ("/dependencies", {}, "blocked_by"),
        ("/dependencies", {"blocked_by": 1, "extra": 1}, "extra"),
        ("/start", {"agent": ""}, "agent"),
        ("/start", {"surprise": True}, "surprise"),
    ],
)
async def test_bad_change_dependency_and_start_bodies_are_422(
    api: httpx.AsyncClient, route: str, body: dict[str, Any], words: str
) -> None:
    goal = await new_goal(api, "g")
    method = "PATCH" if route == "" else "POST"
    answer = await api.request(method, f"/goals/{goal['id']}{route}", json=body)
    assert answer.status_code == 422, answer.text
    assert words in answer.text
    assert (await api.get(f"/goals/{goal['id']}")).json() == goal


# --- multi-user mode --------------------------------------------------------------------------


async def test_the_goals_of_someone_else_are_404_on_every_route(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    alice_agent = await make_agent(client, "A", headers=alice)
    await make_agent(client, "B", headers=bob)
    mine = await new_goal(client, "mine", alice, agent="A")
    other = await new_goal(client, "other", alice)
    bobs = await new_goal(client, "bobs", bob)
    where = f"/goals/{mine['id']}"
    for method, path, payload in [
        ("GET", where, None),
        ("GET", f"{where}/tree", None),
        ("PATCH", where, {"title": "x"}),
        ("GET", f"{where}/dependencies", None),
        ("POST", f"{where}/dependencies", {"blocked_by": other["id"]}),
        ("DELETE", f"{where}/dependencies/{other['id']}", None),
        ("POST", f"{where}/start", None),
        ("POST", f"{where}/cancel", None),
        ("POST", f"{where}/decompose", None),
        ("GET", f"{where}/activities", None),
        ("POST", "/goals", {"title": "sub", "parent_id": mine["id"]}),
        ("POST", f"/goals/{bobs['id']}/dependencies", {"blocked_by": mine["id"]}),
        ("PATCH", f"/goals/{bobs['id']}", {"agent": alice_agent}),
        ("PATCH", f"/goals/{bobs['id']}", {"agent": "A"}),
        ("POST", f"/goals/{bobs['id']}/start", {"agent": "A"}),
        ("DELETE", where, None),
    ]:
        answer = await client.request(method, path, json=payload, headers=bob)
        assert answer.status_code == 404, (method, path, answer.text)
    # Bob's attempts changed nothing.
    assert (await client.get(where, headers=alice)).json() == mine
    assert (await client.get(f"{where}/dependencies", headers=alice)).json() == []
    assert (await client.get(f"/goals/{bobs['id']}", headers=bob)).json() == bobs
    assert (await client.get(f"/goals/{bobs['id']}/dependencies", headers=bob)).json() == []
    assert [g["id"] for g in (await client.get("/goals", headers=bob)).json()] == [bobs["id"]]
    listed = (await client.get("/goals", headers=alice)).json()
    assert [g["id"] for g in listed] == [other["id"], mine["id"]]


async def test_an_admin_sees_every_goal_and_a_viewer_changes_none(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice = await login(app, client)
    admin, viewer = await login(app, client, "admin"), await login(app, client, "viewer")
    mine = await new_goal(client, "mine", alice)
    theirs = await new_goal(client, "admins", admin)
    everyone = (await client.get("/goals", headers=admin)).json()
    assert {g["id"] for g in everyone} == {mine["id"], theirs["id"]}
    assert (await client.get(f"/goals/{mine['id']}", headers=admin)).status_code == 200
    changed = await client.patch(f"/goals/{mine['id']}", json={"title": "x"}, headers=admin)
    assert changed.status_code == 200 and changed.json()["owner_id"] == mine["owner_id"]

    assert (await client.get("/goals", headers=viewer)).json() == []
    assert (await client.get(f"/goals/{mine['id']}", headers=viewer)).status_code == 404
    made = await client.post("/goals", json={"title": "v"}, headers=viewer)
    assert made.status_code == 403, made.text
    assert (await client.get("/goals")).status_code == 401
    assert (await client.post("/goals", json={"title": "anon"})).status_code == 401
    assert (await client.get(f"/goals/{mine['id']}")).status_code == 401


async def test_an_admins_subgoal_of_someone_elses_goal_is_that_owners(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, admin = await login(app, client), await login(app, client, "admin")
    mine = await new_goal(client, "mine", alice)
    assert (await client.get(f"/goals/{mine['id']}", headers=admin)).status_code == 200
    sub = await client.post("/goals", json={"title": "sub", "parent_id": mine["id"]}, headers=admin)
    assert sub.status_code == 201, sub.text
    assert (sub.json()["owner_id"], sub.json()["parent_id"]) == (mine["owner_id"], mine["id"])
    tree = (await client.get(f"/goals/{mine['id']}/tree", headers=alice)).json()
    assert [g["id"] for g in tree["subgoals"]] == [sub.json()["id"]]
    assert (await client.get(f"/goals/{sub.json()['id']}", headers=alice)).status_code == 200


async def test_a_deeply_nested_decomposition_answer_is_a_502(
    multi: tuple[FastAPI, httpx.AsyncClient], stub: LLMStubServer
) -> None:
    app, client = multi
    alice = await login(app, client)
    await make_agent(client, "A", headers=alice)
    goal = await new_goal(client, "g", alice, agent="A")
    stub.add_reply("[" * 50_000 + "]" * 50_000)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as raw:
        answer = await raw.post(f"/goals/{goal['id']}/decompose", headers=alice)
    assert answer.status_code == 502, answer.text
    assert answer.json()["code"] == "decomposition_failed"
    tree = (await client.get(f"/goals/{goal['id']}/tree", headers=alice)).json()
    assert tree["subgoals"] == []


async def test_api_keys_need_the_goals_scopes(multi: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = multi
    keys = await keyed_member(app, client, "goals", "tasks:read", "tasks:write")
    alice, reader, writer, other = keys
    body = {"title": "keyed", "agent": "Keyed"}
    assert (await client.post("/goals", json=body, headers=reader)).status_code == 403
    assert (await client.post("/goals", json=body, headers=other)).status_code == 403
    made = await client.post("/goals", json=body, headers=writer)
    assert made.status_code == 201, made.text
    goal = made.json()
    where = f"/goals/{goal['id']}"
    assert goal["owner_id"] == (await client.get(where, headers=alice)).json()["owner_id"]
    blocker = await new_goal(client, "blocker", alice)

    paths = ("/goals", where, f"{where}/tree", f"{where}/dependencies", f"{where}/activities")
    await only_the_reader_reads(client, paths, reader, writer, other)
    for method, path, payload in [
        ("PATCH", where, {"title": "x"}),
        ("POST", f"{where}/dependencies", {"blocked_by": blocker["id"]}),
        ("DELETE", f"{where}/dependencies/{blocker['id']}", None),
        ("POST", f"{where}/start", None),
        ("POST", f"{where}/cancel", None),
        ("POST", f"{where}/decompose", None),
        ("DELETE", where, None),
    ]:
        denied = await client.request(method, path, json=payload, headers=reader)
        assert denied.status_code == 403, (method, path, denied.text)
        assert "goals:write" in denied.json()["detail"]
    assert (await client.get(where, headers=alice)).json() == goal
    linked = await client.post(
        f"{where}/dependencies", json={"blocked_by": blocker["id"]}, headers=writer
    )
    assert linked.status_code == 204, linked.text
    started = await client.post(f"{where}/start", headers=writer)
    assert started.status_code == 202 and started.json()["status"] == "waiting"
    cancelled = await client.post(f"{where}/cancel", headers=writer)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await client.delete(where, headers=writer)).status_code == 204

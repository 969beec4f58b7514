"""Circles over HTTP. Single-user mode, on an app whose lifespan runs a worker (the model
faked at its HTTP wire only): circles made, read, changed and moved along their lifecycle (a
refused move names the allowed ones), members added (an agent by name or id, once) and
changed, metrics, tasks made, listed and read with their history, routing decisions and
reviews, and every step of a task taken over HTTP: claim, refuse, submit, review, approve,
reject, cancel and dependencies, with their refusals (an illegal move 409 with the allowed
moves, a cycle and a file clash kept as conflicts, the author never reviewing their own
work); then a task worked and reviewed by agents through the worker. Multi-user mode: a
stranger sees nothing of a circle (404 everywhere), a person member sees it and acts as
themselves only, the owner approves as a person, an admin sees every circle, API keys need
the circles scopes; and who may subscribe to a circle's WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_ws import ASGIWebSocket
from fastapi import FastAPI
from task_api import (
    api_fixture,  # noqa: F401 - the fixture "api"
    api_key,
    client_for,
    keyed_member,
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    only_the_reader_reads,
    status_becomes,
    stub_fixture,  # noqa: F401 - the fixture "stub"
    tools_fixture,  # noqa: F401 - the fixture "tools"
)

from gathering.api.app import create_app
from gathering.circles import STATUSES
from gathering.config import load_settings
from gathering.testing import LLMStubServer

Json = dict[str, Any]
Headers = dict[str, str] | None

CIRCLE_FIELDS = {
    "id",
    "owner_id",
    "name",
    "description",
    "status",
    "settings",
    "created_at",
    "updated_at",
}
MEMBER_FIELDS = {
    "id",
    "circle_id",
    "agent_id",
    "user_id",
    "name",
    "role",
    "competencies",
    "active",
    "load",
    "joined_at",
    "gone",
}
TASK_FIELDS = {
    "id",
    "circle_id",
    "title",
    "description",
    "task_type",
    "requirements",
    "priority",
    "status",
    "offered_to",
    "offer_deadline",
    "assignee_id",
    "iteration",
    "review_type",
    "result",
    "feedback",
    "error",
    "created_by",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
}
DEFAULT_SETTINGS = {
    "review_required": True,
    "review_required_for": {},
    "review_types": ["general"],
    "reviewers_per_task": 1,
    "max_parallel_tasks": 3,
    "routing": "best_match",
    "offer_timeout_seconds": 600,
}
APPROVED = '{"verdict": "approved", "feedback": "clean and tested"}'
CHANGES = '{"verdict": "changes_requested", "feedback": "handle empty input"}'


async def posted(
    client: httpx.AsyncClient,
    path: str,
    body: Json | None = None,
    headers: Headers = None,
    expect: int = 201,
) -> Json:
    """The body of a POST to `path` that must answer `expect`."""
    answer = await client.post(path, json=body, headers=headers)
    assert answer.status_code == expect, (path, answer.text)
    found: Json = answer.json()
    return found


async def new_circle(
    client: httpx.AsyncClient, name: str, headers: Headers = None, **fields: Any
) -> Json:
    return await posted(client, "/circles", {"name": name, **fields}, headers)


async def new_member(
    client: httpx.AsyncClient, circle: Json, headers: Headers = None, **fields: Any
) -> Json:
    return await posted(client, f"/circles/{circle['id']}/members", fields, headers)


async def new_task(
    client: httpx.AsyncClient, circle: Json, title: str, headers: Headers = None, **fields: Any
) -> Json:
    return await posted(
        client, f"/circles/{circle['id']}/tasks", {"title": title, **fields}, headers
    )


async def act(
    client: httpx.AsyncClient,
    task: Json,
    verb: str,
    body: Json | None = None,
    headers: Headers = None,
) -> httpx.Response:
    """POST the step `verb` (claim, submit, ...) of `task`."""
    path = f"/circles/{task['circle_id']}/tasks/{task['id']}/{verb}"
    return await client.post(path, json=body, headers=headers)


async def moved(
    client: httpx.AsyncClient,
    task: Json,
    verb: str,
    body: Json | None = None,
    headers: Headers = None,
) -> Json:
    """The task after the step `verb`, which must succeed."""
    answer = await act(client, task, verb, body, headers)
    assert answer.status_code == 200, (verb, answer.text)
    found: Json = answer.json()
    return found


async def detail(client: httpx.AsyncClient, task: Json, headers: Headers = None) -> Json:
    answer = await client.get(f"/circles/{task['circle_id']}/tasks/{task['id']}", headers=headers)
    assert answer.status_code == 200, answer.text
    found: Json = answer.json()
    return found


def statuses(task_detail: Json) -> list[str]:
    return [row["to_status"] for row in task_detail["history"]]


def kinds(task_detail: Json) -> list[str]:
    return [row["kind"] for row in task_detail["decisions"]]


async def conflicts(
    client: httpx.AsyncClient, circle: Json, headers: Headers = None, **params: Any
) -> list[Json]:
    answer = await client.get(f"/circles/{circle['id']}/conflicts", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    found: list[Json] = answer.json()
    return found


async def metrics_of(client: httpx.AsyncClient, circle: Json, headers: Headers = None) -> Json:
    """Each member's metrics, by member id."""
    answer = await client.get(f"/circles/{circle['id']}/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    return {row["member_id"]: row for row in answer.json()}


def refusal(answer: httpx.Response, status: int, code: str) -> Json:
    """The problem+json body of a refusal that must be `status` with `code`."""
    assert answer.status_code == status, answer.text
    body: Json = answer.json()
    assert body["code"] == code, body
    return body


# --- single-user: circles ---------------------------------------------------------------------


async def test_a_circle_is_made_read_changed_and_listed(api: httpx.AsyncClient) -> None:
    made = await new_circle(api, "parsers", description="CSV and JSON")
    assert set(made) == CIRCLE_FIELDS
    assert (made["name"], made["description"], made["status"]) == (
        "parsers",
        "CSV and JSON",
        "created",
    )
    defaults = made["settings"]
    assert {key: defaults[key] for key in DEFAULT_SETTINGS} == DEFAULT_SETTINGS
    where = f"/circles/{made['id']}"
    assert (await api.get(where)).json() == made
    assert (await api.get("/circles")).json() == [made]
    assert (await api.get("/circles", params={"name": "parsers"})).json() == [made]
    assert (await api.get("/circles", params={"name": "other"})).json() == []

    taken = refusal(await api.post("/circles", json={"name": "parsers"}), 409, "conflict")
    assert "parsers" in taken["detail"] and "unique" in taken["hint"]

    settings = {"routing": "least_loaded", "reviewers_per_task": 2}
    changed = await api.patch(where, json={"description": "parsers", "settings": settings})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["description"] == "parsers"
    # A change of settings replaces the whole: what it leaves out is back at its default.
    assert body["settings"] == {**defaults, **settings}
    same = await api.patch(where, json={})
    assert same.status_code == 200 and same.json()["settings"] == body["settings"]
    assert same.json()["description"] == "parsers"

    other = await new_circle(api, "writers")
    assert [c["id"] for c in (await api.get("/circles")).json()] == [made["id"], other["id"]]
    missing = refusal(await api.get("/circles/999999"), 404, "not_found")
    assert missing["detail"] == "circle 999999 not found"
    assert (await api.patch("/circles/999999", json={})).status_code == 404


BAD_CIRCLES: list[tuple[Json, str]] = [
    ({"name": "Parsers"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "-parsers"}, "name"),
    ({"name": "a b"}, "name"),
    ({"name": "p" * 64}, "name"),
    ({"name": 5}, "name"),
    ({"name": "p", "surprise": 1}, "surprise"),
    ({"name": "p", "settings": {"reviewers_per_task": 0}}, "reviewers_per_task"),
    ({"name": "p", "settings": {"reviewers_per_task": 4}}, "reviewers_per_task"),
    ({"name": "p", "settings": {"reviewers_per_task": "2"}}, "reviewers_per_task"),
    ({"name": "p", "settings": {"max_parallel_tasks": True}}, "max_parallel_tasks"),
    ({"name": "p", "settings": {"max_parallel_tasks": 0}}, "max_parallel_tasks"),
    ({"name": "p", "settings": {"offer_timeout_seconds": 0}}, "offer_timeout_seconds"),
    ({"name": "p", "settings": {"routing": "random"}}, "routing"),
    ({"name": "p", "settings": {"review_types": []}}, "review_types"),
    ({"name": "p", "settings": {"review_types": ["Code Review"]}}, "review_types"),
    ({"name": "p", "settings": {"surprise": True}}, "surprise"),
    ({"name": "p", "settings": []}, "settings"),
]
BAD_CIRCLE_CHANGES: list[Json] = [
    {"settings": {"reviewers_per_task": 0}},
    {"settings": {"max_parallel_tasks": True}},
    {"settings": {"surprise": 1}},
    {"name": "renamed"},
    {"status": "active"},
    {"description": "d" * 20_001},
]


async def test_bad_circles_are_422_say_what_is_wrong_and_change_nothing(
    api: httpx.AsyncClient,
) -> None:
    for body, words in BAD_CIRCLES:
        answer = refusal(await api.post("/circles", json=body), 422, "invalid_input")
        assert words in str(answer["errors"]), (body, answer)
    assert (await api.get("/circles")).json() == []
    circle = await new_circle(api, "parsers")
    where = f"/circles/{circle['id']}"
    for change in BAD_CIRCLE_CHANGES:
        refusal(await api.patch(where, json=change), 422, "invalid_input")
    assert (await api.get(where)).json() == circle


async def test_a_circle_goes_from_created_to_active_to_archived_and_no_further(
    api: httpx.AsyncClient,
) -> None:
    circle = await new_circle(api, "parsers")
    where = f"/circles/{circle['id']}"
    waiting = await new_task(api, circle, "waits for the circle")
    assert (waiting["status"], waiting["offered_to"]) == ("pending", None)

    active = await posted(api, f"{where}/activate", expect=200)
    assert active["status"] == "active"
    again = await posted(api, f"{where}/activate", expect=200)  # already so: nothing changes
    assert again["status"] == "active"
    archived = await posted(api, f"{where}/archive", expect=200)
    assert archived["status"] == "archived"
    # Archiving cancelled the task that had not ended, with the reason kept.
    cancelled = await detail(api, waiting)
    assert cancelled["status"] == "cancelled"
    assert cancelled["history"][-1]["reason"] == "the circle was archived"

    refused = refusal(await api.post(f"{where}/activate"), 409, "conflict")
    assert refused["details"] == {"status": "archived", "allowed": []}
    assert "nothing (it is archived)" in refused["hint"]
    assert (await api.get(where)).json()["status"] == "archived"
    closed = refusal(await api.post(f"{where}/tasks", json={"title": "late"}), 409, "conflict")
    assert "archived" in closed["detail"]

    # A circle never activated may be archived at once; then it is archived for good.
    never = await new_circle(api, "never")
    assert (await posted(api, f"/circles/{never['id']}/archive", expect=200))["status"] == (
        "archived"
    )
    assert (await api.post(f"/circles/{never['id']}/activate")).status_code == 409
    assert (await api.post("/circles/999999/activate")).status_code == 404


async def test_a_circle_is_deleted_with_its_members_and_tasks(api: httpx.AsyncClient) -> None:
    await make_agent(api, "coder")
    circle = await new_circle(api, "parsers")
    await new_member(api, circle, agent="coder")
    task = await new_task(api, circle, "parse")
    where = f"/circles/{circle['id']}"
    deleted = await api.delete(where)
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await api.get(where)).status_code == 404
    assert (await api.get(f"{where}/tasks/{task['id']}")).status_code == 404
    assert (await api.delete(where)).status_code == 404
    assert (await api.get("/circles")).json() == []


# --- single-user: members ---------------------------------------------------------------------


async def test_members_join_once_by_agent_name_or_id_and_change(api: httpx.AsyncClient) -> None:
    coder_id = await make_agent(api, "coder")
    critic_id = await make_agent(api, "critic")
    circle = await new_circle(api, "parsers")
    where = f"/circles/{circle['id']}/members"

    coder = await new_member(api, circle, agent="coder", competencies={"python": 4})
    assert set(coder) == MEMBER_FIELDS
    assert (coder["agent_id"], coder["user_id"], coder["name"]) == (coder_id, None, "coder")
    assert (coder["role"], coder["competencies"], coder["active"], coder["load"]) == (
        "member",
        {"python": 4},
        True,
        0,
    )
    critic = await new_member(api, circle, agent=critic_id, role="reviewer")
    assert (critic["agent_id"], critic["name"], critic["role"]) == (critic_id, "critic", "reviewer")
    by_digits = await api.post(where, json={"agent": str(critic_id)})
    assert refusal(by_digits, 409, "conflict")["detail"].endswith("already")

    twice = refusal(await api.post(where, json={"agent": "coder"}), 409, "conflict")
    assert "already" in twice["detail"] and "PATCH" in twice["hint"]
    unknown = refusal(await api.post(where, json={"agent": "nobody"}), 404, "not_found")
    assert "no agent 'nobody'" in unknown["detail"]
    assert (await api.post(where, json={"agent": 999_999})).status_code == 404
    nobody = refusal(await api.post(where, json={"user_id": 999_999}), 404, "not_found")
    assert "no active account 999999" in nobody["detail"]
    listed = (await api.get(where)).json()
    assert [(m["id"], m["name"]) for m in listed] == [
        (coder["id"], "coder"),
        (critic["id"], "critic"),
    ]

    change = {"role": "lead", "competencies": {"python": 5, "review": 2}}
    changed = await api.patch(f"{where}/{coder['id']}", json=change)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["role"], changed.json()["competencies"]) == (
        "lead",
        change["competencies"],
    )
    paused = await api.patch(f"{where}/{critic['id']}", json={"active": False})
    assert paused.status_code == 200 and paused.json()["active"] is False
    assert paused.json()["role"] == "reviewer"  # what was not given stayed
    listed = {m["id"]: m for m in (await api.get(where)).json()}
    assert listed[coder["id"]]["role"] == "lead" and listed[critic["id"]]["active"] is False
    assert (await api.patch(f"{where}/999999", json={"active": True})).status_code == 404
    assert (await api.get("/circles/999999/members")).status_code == 404


BAD_MEMBERS: list[tuple[Json, str]] = [
    ({}, "agent"),
    ({"agent": "coder", "user_id": 1}, "user_id"),
    ({"agent": ""}, "agent"),
    ({"agent": True}, "agent"),
    ({"agent": "coder", "role": "boss"}, "role"),
    ({"agent": "coder", "competencies": {"python": 6}}, "competencies"),
    ({"agent": "coder", "competencies": {"python": 0}}, "competencies"),
    ({"agent": "coder", "competencies": {"python": True}}, "competencies"),
    ({"agent": "coder", "competencies": {"python": "4"}}, "competencies"),
    ({"agent": "coder", "competencies": {"Python Code": 3}}, "competencies"),
    ({"agent": "coder", "surprise": 1}, "surprise"),
    ({"user_id": 0}, "user_id"),
]
BAD_MEMBER_CHANGES: list[Json] = [
    {"role": "boss"},
    {"competencies": {"python": 9}},
    {"active": "maybe"},
    {"agent": "x"},
]


async def test_bad_members_and_member_changes_are_422(api: httpx.AsyncClient) -> None:
    await make_agent(api, "coder")
    circle = await new_circle(api, "parsers")
    where = f"/circles/{circle['id']}/members"
    for body, words in BAD_MEMBERS:
        answer = refusal(await api.post(where, json=body), 422, "invalid_input")
        assert words in str(answer["errors"]), (body, answer)
    assert (await api.get(where)).json() == []
    member = await new_member(api, circle, agent="coder")
    for change in BAD_MEMBER_CHANGES:
        refusal(await api.patch(f"{where}/{member['id']}", json=change), 422, "invalid_input")
    assert (await api.get(where)).json() == [member]


# --- single-user: tasks -----------------------------------------------------------------------


async def test_tasks_are_made_listed_by_status_and_read(api: httpx.AsyncClient) -> None:
    circle = await new_circle(api, "parsers", settings={"review_types": ["code", "docs"]})
    first = await new_task(
        api,
        circle,
        "parse CSV",
        description="rows out",
        task_type="feature",
        requirements={"python": 3},
        priority=5,
    )
    assert set(first) == TASK_FIELDS
    assert (first["status"], first["iteration"], first["review_type"]) == ("pending", 1, "code")
    assert (first["requirements"], first["priority"], first["task_type"]) == (
        {"python": 3},
        5,
        "feature",
    )
    assert (first["assignee_id"], first["offered_to"], first["result"]) == (None, None, None)
    assert first["created_by"] == circle["owner_id"]
    docs = await new_task(api, circle, "document it", review_type="docs")
    assert docs["review_type"] == "docs"
    gone = await new_task(api, circle, "never mind")
    await moved(api, gone, "cancel", {"reason": "not needed"})

    where = f"/circles/{circle['id']}/tasks"
    newest_first = [gone["id"], docs["id"], first["id"]]
    assert [t["id"] for t in (await api.get(where)).json()] == newest_first
    pending = (await api.get(where, params={"status": "pending"})).json()
    assert [t["id"] for t in pending] == [docs["id"], first["id"]]
    cancelled = (await api.get(where, params={"status": "cancelled"})).json()
    assert [t["id"] for t in cancelled] == [gone["id"]]
    assert (await api.get(where, params={"status": "completed"})).json() == []
    page = (await api.get(where, params={"limit": 1, "offset": 1})).json()
    assert [t["id"] for t in page] == [docs["id"]]
    unknown = refusal(await api.get(where, params={"status": "done"}), 422, "invalid_input")
    assert "status" in str(unknown["errors"])
    assert all(status in str(unknown) for status in STATUSES)

    shown = await detail(api, first)
    assert set(shown) == TASK_FIELDS | {"blocked_by", "history", "decisions", "reviews"}
    assert {k: shown[k] for k in TASK_FIELDS} == first
    assert (shown["blocked_by"], shown["decisions"], shown["reviews"]) == ([], [], [])
    [created] = shown["history"]
    assert (created["from_status"], created["to_status"], created["reason"]) == (
        None,
        "pending",
        "created",
    )
    assert (created["member_id"], created["user_id"]) == (None, circle["owner_id"])
    assert (await api.get(f"{where}/999999")).status_code == 404

    # A task is read through its own circle only.
    other = await new_circle(api, "writers")
    elsewhere = await api.get(f"/circles/{other['id']}/tasks/{first['id']}")
    assert refusal(elsewhere, 404, "not_found")["detail"] == f"task {first['id']} not found"
    assert (await act(api, {**first, "circle_id": other["id"]}, "cancel")).status_code == 404


BAD_TASKS: list[tuple[Json, str]] = [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "t" * 201}, "title"),
    ({"title": "t", "priority": 101}, "priority"),
    ({"title": "t", "priority": True}, "priority"),
    ({"title": "t", "requirements": {"python": 6}}, "requirements"),
    ({"title": "t", "task_type": "New Feature"}, "task_type"),
    ({"title": "t", "blocked_by": [0]}, "blocked_by"),
    ({"title": "t", "status": "completed"}, "status"),
]


async def test_bad_tasks_are_422(api: httpx.AsyncClient) -> None:
    circle = await new_circle(api, "parsers")
    where = f"/circles/{circle['id']}/tasks"
    for body, words in BAD_TASKS:
        answer = refusal(await api.post(where, json=body), 422, "invalid_input")
        assert words in str(answer["errors"]), (body, answer)
    assert (await api.get(where)).json() == []


async def test_a_review_type_the_circle_lacks_is_refused(api: httpx.AsyncClient) -> None:
    circle = await new_circle(api, "parsers")
    answer = await api.post(
        f"/circles/{circle['id']}/tasks", json={"title": "t", "review_type": "security"}
    )
    body = refusal(answer, 409, "conflict")
    assert "'security'" in body["detail"] and "general" in body["hint"]


# --- single-user: the steps of a task ---------------------------------------------------------


async def team_of_one_lead(api: httpx.AsyncClient, name: str = "flow") -> tuple[Json, Json]:
    """A circle not yet active (nothing is offered, no agent job queued) whose only member is
    the agent lead "coder": the owner claims its tasks for it, and no member may review its
    work (a person decides)."""
    await make_agent(api, "coder")
    circle = await new_circle(api, name)
    lead = await new_member(api, circle, agent="coder", role="lead", competencies={"python": 4})
    return circle, lead


async def test_the_owner_takes_each_step_for_an_agent_and_decides_as_a_person(
    api: httpx.AsyncClient,
) -> None:
    circle, lead = await team_of_one_lead(api)
    task = await new_task(api, circle, "parse CSV", requirements={"python": 3})
    as_lead = {"member_id": lead["id"]}

    # The owner is no member: they name the member who takes the step.
    claimed = await moved(api, task, "claim", as_lead)
    assert (claimed["status"], claimed["assignee_id"]) == ("in_progress", lead["id"])
    assert claimed["started_at"] is not None
    again = refusal(await act(api, task, "claim", as_lead), 409, "illegal_transition")
    assert again["details"]["allowed"] == ["in_review", "completed", "failed", "cancelled"]

    work = {"text": "rows = list(csv.reader(f))", "summary": "csv", "files": ["src/csv.py"]}
    submitted = await moved(api, task, "submit", {**work, **as_lead})
    assert submitted["status"] == "in_review"
    assert submitted["result"] == work

    # The author never reviews their own work, whatever the route.
    for verb, body in (
        ("review", {"verdict": "approved", **as_lead}),
        ("approve", as_lead),
        ("reject", as_lead),
    ):
        own = refusal(await act(api, task, verb, body), 403, "permission_denied")
        assert "author" in own["detail"], verb
    bad = await act(api, task, "review", {"verdict": "changes_requested", "feedback": " "})
    assert refusal(bad, 422, "invalid_input")
    assert (await detail(api, task))["reviews"] == []

    approved = await moved(api, task, "approve", {"feedback": "ship it"})
    assert (approved["status"], approved["finished_at"] is not None) == ("completed", True)

    shown = await detail(api, task)
    assert statuses(shown) == ["pending", "in_progress", "in_review", "completed"]
    movers = [(row["member_id"], row["user_id"], row["reason"]) for row in shown["history"]]
    owner = circle["owner_id"]
    # Each step is kept with the member it was taken for and the account that took it.
    assert movers[1:] == [
        (lead["id"], owner, "claimed"),
        (lead["id"], owner, "submitted"),
        (None, owner, "approved"),
    ]
    [escalation] = shown["decisions"]
    assert (escalation["kind"], escalation["member_id"]) == ("escalation", None)
    assert escalation["reason"] == "no member may review it: a person approves or rejects it"
    [review] = shown["reviews"]
    assert (review["reviewer_id"], review["user_id"], review["verdict"], review["feedback"]) == (
        None,
        owner,
        "approved",
        "ship it",
    )
    done = refusal(await act(api, task, "cancel"), 409, "illegal_transition")
    assert done["details"] == {"status": "completed", "wanted": "cancelled", "allowed": []}

    metrics = (await metrics_of(api, circle))[lead["id"]]
    assert (metrics["completed"], metrics["failed"], metrics["load"]) == (1, 0, 0)
    assert (metrics["approval_rate"], metrics["mean_review_rounds"]) == (1.0, 1.0)
    assert (metrics["name"], metrics["role"], metrics["reviews_given"]) == ("coder", "lead", 0)


async def test_the_owner_who_is_no_member_must_name_the_member(api: httpx.AsyncClient) -> None:
    circle, _ = await team_of_one_lead(api)
    task = await new_task(api, circle, "parse")
    for verb, body in (("claim", None), ("submit", {"text": "x"})):
        unnamed = refusal(await act(api, task, verb, body), 403, "permission_denied")
        assert "member_id" in unnamed["detail"] and "/members" in unnamed["hint"], verb
    assert (await detail(api, task))["status"] == "pending"


async def test_an_illegal_move_is_409_with_the_allowed_moves_and_changes_nothing(
    api: httpx.AsyncClient,
) -> None:
    circle, lead = await team_of_one_lead(api)
    task = await new_task(api, circle, "parse")
    answer = await act(api, task, "submit", {"text": "early", "member_id": lead["id"]})
    body = refusal(answer, 409, "illegal_transition")
    assert body["details"] == {
        "status": "pending",
        "wanted": "in_review",
        "allowed": ["offered", "in_progress", "blocked", "cancelled"],
    }
    assert "from pending it may become: offered, in_progress, blocked, cancelled" in body["hint"]
    for verb in ("approve", "reject"):
        decided = refusal(await act(api, task, verb), 409, "illegal_transition")
        assert decided["details"]["allowed"] == ["offered", "in_progress", "blocked", "cancelled"]
    # Offering needs an active circle.
    inactive = refusal(await act(api, task, "offer"), 409, "conflict")
    assert "activate it first" in inactive["detail"]
    shown = await detail(api, task)
    assert (shown["status"], statuses(shown), shown["reviews"]) == ("pending", ["pending"], [])


async def test_a_person_reworks_after_an_agent_reviewer_asks_for_changes(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    """The owner joins their circle as a person and authors the work over HTTP; the agent
    reviewer reviews through the worker: changes first, then approval."""
    await make_agent(api, "critic")
    circle = await new_circle(api, "pairs")
    author = await new_member(api, circle, user_id=circle["owner_id"], competencies={"python": 4})
    assert (author["user_id"], author["agent_id"]) == (circle["owner_id"], None)
    critic = await new_member(api, circle, agent="critic", role="reviewer")
    await posted(api, f"/circles/{circle['id']}/activate", expect=200)
    stub.add_reply(CHANGES, APPROVED)
    task = await new_task(api, circle, "parse", requirements={"python": 3})
    assert task["offered_to"] == author["id"]
    path = f"/circles/{circle['id']}/tasks/{task['id']}"

    # Without member_id the owner, now a member, acts as their own member.
    claimed = await moved(api, task, "claim")
    assert (claimed["status"], claimed["assignee_id"]) == ("in_progress", author["id"])
    await moved(api, task, "submit", {"text": "draft one"})
    sent_back = await status_becomes(api, path, ("changes_requested", "completed", "failed"))
    assert (sent_back["status"], sent_back["iteration"]) == ("changes_requested", 2)
    assert sent_back["feedback"] == "handle empty input"
    assert sent_back["assignee_id"] == author["id"]
    not_yet = refusal(await act(api, task, "submit", {"text": "x"}), 409, "illegal_transition")
    assert not_yet["details"]["allowed"] == ["in_progress", "failed", "cancelled"]
    others = refusal(
        await act(api, task, "claim", {"member_id": critic["id"]}), 403, "permission_denied"
    )
    assert "back with its author" in others["detail"]
    back = await moved(api, task, "claim")
    assert (back["status"], back["iteration"]) == ("in_progress", 2)
    await moved(api, task, "submit", {"text": "draft two"})
    done = await status_becomes(api, path, ("completed", "failed", "changes_requested"))
    assert (done["status"], done["result"]["text"]) == ("completed", "draft two")

    assert statuses(done) == [
        "pending",
        "offered",
        "in_progress",
        "in_review",
        "changes_requested",
        "in_progress",
        "in_review",
        "completed",
    ]
    reviews = [(r["iteration"], r["reviewer_id"], r["verdict"]) for r in done["reviews"]]
    assert reviews == [(1, critic["id"], "changes_requested"), (2, critic["id"], "approved")]
    assert kinds(done) == ["offer", "review", "review"]
    prompts = [r for r in stub.requests if r.path.endswith("/api/chat")]
    assert len(prompts) == 2  # the reviewer's two turns; the person's work took none
    metrics = await metrics_of(api, circle)
    assert (
        metrics[author["id"]]["approval_rate"],
        metrics[author["id"]]["mean_review_rounds"],
    ) == (
        0.5,
        2.0,
    )
    assert metrics[author["id"]]["tokens"] == 0
    assert metrics[critic["id"]]["reviews_given"] == 2


async def test_a_rejection_fails_the_task_and_the_tasks_waiting_for_it(
    api: httpx.AsyncClient,
) -> None:
    circle, lead = await team_of_one_lead(api)
    first = await new_task(api, circle, "first")
    then = await new_task(api, circle, "then", blocked_by=[first["id"]])
    assert then["status"] == "blocked"
    assert (await detail(api, then))["blocked_by"] == [first["id"]]
    as_lead = {"member_id": lead["id"]}
    await moved(api, first, "claim", as_lead)
    await moved(api, first, "submit", {"text": "wrong", **as_lead})
    rejected = await moved(api, first, "reject", {"feedback": "wrong format"})
    assert (rejected["status"], rejected["error"]) == ("failed", "wrong format")
    follower = await detail(api, then)
    assert follower["status"] == "failed"
    assert follower["history"][-1]["reason"] == f"task {first['id']} it waits for is failed"
    metrics = (await metrics_of(api, circle))[lead["id"]]
    assert (metrics["completed"], metrics["failed"], metrics["approval_rate"]) == (0, 1, 0.0)


async def test_a_task_waits_for_its_dependencies_and_a_cycle_is_refused_and_kept(
    api: httpx.AsyncClient,
) -> None:
    circle, lead = await team_of_one_lead(api)
    a, b, c = [await new_task(api, circle, name) for name in "abc"]

    def deps(task: Json) -> str:
        return f"/circles/{circle['id']}/tasks/{task['id']}/dependencies"

    waits = await posted(api, deps(b), {"blocked_by": a["id"]}, expect=200)
    assert waits["status"] == "blocked"
    waits = await posted(api, deps(c), {"blocked_by": b["id"]}, expect=200)
    assert waits["status"] == "blocked"
    assert (await detail(api, c))["blocked_by"] == [b["id"]]

    cycle = refusal(await api.post(deps(a), json={"blocked_by": c["id"]}), 409, "conflict")
    assert cycle["details"] == {"cycle": [a["id"], c["id"], b["id"], a["id"]]}
    assert "would close a cycle" in cycle["detail"]
    itself = refusal(await api.post(deps(a), json={"blocked_by": a["id"]}), 409, "conflict")
    assert itself["details"] == {"cycle": [a["id"], a["id"]]}
    assert (await detail(api, a))["blocked_by"] == []  # nothing was added
    kept = await conflicts(api, circle)
    assert [(k["kind"], k["status"], k["task_id"]) for k in kept] == [
        ("cycle", "resolved", a["id"]),
        ("cycle", "resolved", a["id"]),
    ]
    assert kept[1]["other_task_id"] == c["id"]
    assert kept[1]["detail"] == {"cycle": [a["id"], c["id"], b["id"], a["id"]]}
    assert kept[1]["resolution"] == "the dependency was refused"
    assert kept[1]["resolved_at"] is not None
    assert await conflicts(api, circle, open="true") == []

    for body in ({"blocked_by": 0}, {"blocked_by": "x"}, {}, {"blocked_by": 1, "extra": 1}):
        refusal(await api.post(deps(a), json=body), 422, "invalid_input")
    assert (await api.post(deps(a), json={"blocked_by": 999_999})).status_code == 404

    # When what it waits for completes, a task is pending again.
    as_lead = {"member_id": lead["id"]}
    await moved(api, a, "claim", as_lead)
    already = refusal(await api.post(deps(a), json={"blocked_by": c["id"]}), 409, "conflict")
    assert "only a pending or blocked task may wait" in already["detail"]
    await moved(api, a, "submit", {"text": "a", **as_lead})
    await moved(api, a, "approve")
    freed = await detail(api, b)
    assert freed["status"] == "pending"
    assert freed["history"][-1]["reason"] == f"task {a['id']} completed"
    assert (await detail(api, c))["status"] == "blocked"

    # Cancelling a task fails those that wait for it.
    cancelled = await moved(api, b, "cancel", {"reason": "dropped"})
    assert cancelled["status"] == "cancelled"
    assert (await detail(api, b))["history"][-1]["reason"] == "dropped"
    assert (await detail(api, c))["status"] == "failed"
    twice = refusal(await act(api, b, "cancel"), 409, "illegal_transition")
    assert twice["details"]["allowed"] == []
    never = refusal(
        await api.post(
            f"/circles/{circle['id']}/tasks", json={"title": "d", "blocked_by": [b["id"]]}
        ),
        409,
        "conflict",
    )
    assert "never completes" in never["detail"]


async def test_a_file_another_task_holds_is_refused_and_kept_as_an_open_conflict(
    api: httpx.AsyncClient,
) -> None:
    circle, lead = await team_of_one_lead(api)
    first = await new_task(api, circle, "first")
    second = await new_task(api, circle, "second")
    as_lead = {"member_id": lead["id"]}
    for task in (first, second):
        await moved(api, task, "claim", as_lead)
    await moved(api, first, "submit", {"text": "one", "files": ["src/a.py"], **as_lead})

    clash = await act(
        api, second, "submit", {"text": "two", "files": ["src/a.py", "src/b.py"], **as_lead}
    )
    body = refusal(clash, 409, "file_locked")
    assert body["details"] == {
        "paths": ["src/a.py"],
        "holder_task_id": first["id"],
        "holder_member_id": lead["id"],
        "member_id": lead["id"],
    }
    assert (await detail(api, second))["status"] == "in_progress"  # nothing moved
    [opened] = await conflicts(api, circle, open="true")
    assert (opened["kind"], opened["status"], opened["task_id"], opened["other_task_id"]) == (
        "file",
        "open",
        second["id"],
        first["id"],
    )
    assert opened["resolution"] is None

    # The holder ends: its files are free, the conflict resolved, the second hands in.
    await moved(api, first, "approve")
    assert await conflicts(api, circle, open="true") == []
    [resolved] = await conflicts(api, circle)
    assert resolved["id"] == opened["id"] and resolved["status"] == "resolved"
    assert resolved["resolution"] == f"task {first['id']} completed: files free"
    handed = await moved(api, second, "submit", {"text": "two", "files": ["src/a.py"], **as_lead})
    assert handed["status"] == "in_review"


async def test_an_offer_is_refused_with_its_reason_and_goes_on(api: httpx.AsyncClient) -> None:
    """The owner joins their own circle as a person: an offer to them queues no agent job."""
    circle = await new_circle(api, "solo")
    await posted(api, f"/circles/{circle['id']}/activate", expect=200)
    me = await new_member(api, circle, user_id=circle["owner_id"], competencies={"python": 2})
    task = await new_task(api, circle, "parse", requirements={"python": 2})
    assert (task["status"], task["offered_to"]) == ("offered", me["id"])
    assert task["offer_deadline"] is not None
    assert (await metrics_of(api, circle))[me["id"]]["load"] == 1

    refused = await moved(api, task, "refuse", {"reason": "on holiday"})
    assert (refused["status"], refused["offered_to"]) == ("pending", None)
    again = refusal(await act(api, task, "refuse"), 409, "conflict")
    assert again["details"] == {"status": "pending", "offered_to": None}

    shown = await detail(api, task)
    assert kinds(shown) == ["offer", "refused", "no_candidate"]
    offer, declined, nobody = shown["decisions"]
    assert offer["member_id"] == me["id"]
    assert offer["reason"].startswith("best of 1: python 2 (needs 2)")
    assert [s["member_id"] for s in offer["scores"]] == [me["id"]]
    assert (declined["member_id"], declined["reason"]) == (me["id"], "on holiday")
    assert nobody["reason"] == "no active member has the competencies and room for it"
    assert statuses(shown) == ["pending", "offered", "pending"]

    # Offered again on request, it still has no one for this attempt (said once); a lead
    # takes a task not offered to them.
    still = await moved(api, task, "offer")
    assert (still["status"], still["offered_to"]) == ("pending", None)
    assert kinds(await detail(api, task)) == ["offer", "refused", "no_candidate"]
    await api.patch(f"/circles/{circle['id']}/members/{me['id']}", json={"role": "lead"})
    claimed = await moved(api, task, "claim")
    assert (claimed["status"], claimed["assignee_id"]) == ("in_progress", me["id"])
    busy = refusal(await act(api, task, "offer"), 409, "illegal_transition")
    assert busy["details"]["allowed"] == ["in_review", "completed", "failed", "cancelled"]


async def test_a_claim_needs_the_competencies_and_room(api: httpx.AsyncClient) -> None:
    await make_agent(api, "coder")
    circle = await new_circle(api, "narrow", settings={"max_parallel_tasks": 1})
    lead = await new_member(api, circle, agent="coder", role="lead", competencies={"python": 3})
    as_lead = {"member_id": lead["id"]}
    hard = await new_task(api, circle, "hard", requirements={"python": 5, "rust": 1})
    lacking = refusal(await act(api, hard, "claim", as_lead), 409, "conflict")
    assert lacking["details"] == {"missing": {"python": 5, "rust": 1}}
    first, second = [await new_task(api, circle, name) for name in ("first", "second")]
    await moved(api, first, "claim", as_lead)
    full = refusal(await act(api, second, "claim", as_lead), 409, "conflict")
    assert "has 1 tasks already (at most 1)" in full["detail"]
    stranger = refusal(await act(api, second, "claim", {"member_id": 999_999}), 404, "not_found")
    assert stranger["detail"] == "member 999999 not found"
    await api.patch(f"/circles/{circle['id']}/members/{lead['id']}", json={"active": False})
    inactive = refusal(await act(api, second, "claim", as_lead), 403, "permission_denied")
    assert "only an active member" in inactive["detail"]
    for task in (hard, second):
        assert (await detail(api, task))["status"] == "pending"


async def test_agents_work_and_review_a_task_through_the_worker(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await make_agent(api, "coder")
    await make_agent(api, "critic")
    circle = await new_circle(api, "team")
    coder = await new_member(api, circle, agent="coder", competencies={"python": 4})
    critic = await new_member(api, circle, agent="critic", role="reviewer")
    await posted(api, f"/circles/{circle['id']}/activate", expect=200)
    stub.add_reply("rows = list(csv.reader(f))\nhandles quoting", APPROVED)

    task = await new_task(api, circle, "parse CSV", requirements={"python": 3})
    path = f"/circles/{circle['id']}/tasks/{task['id']}"
    done = await status_becomes(api, path, ("completed", "failed", "cancelled"))
    assert done["status"] == "completed", done
    assert done["assignee_id"] == coder["id"]
    assert done["result"]["text"] == "rows = list(csv.reader(f))\nhandles quoting"
    assert done["result"]["summary"] == "rows = list(csv.reader(f))"
    assert statuses(done) == ["pending", "offered", "in_progress", "in_review", "completed"]
    movers = [row["member_id"] for row in done["history"]]
    assert movers[2:] == [coder["id"], coder["id"], critic["id"]]
    offer, review = done["decisions"]
    assert (offer["kind"], offer["member_id"]) == ("offer", coder["id"])
    assert "python 4 (needs 3)" in offer["reason"]
    assert (review["kind"], review["member_id"]) == ("review", critic["id"])
    [verdict] = done["reviews"]
    assert (verdict["reviewer_id"], verdict["verdict"], verdict["feedback"]) == (
        critic["id"],
        "approved",
        "clean and tested",
    )
    chats = [r for r in stub.requests if r.path.endswith("/api/chat")]
    assert len(chats) == 2
    metrics = await metrics_of(api, circle)
    assert (metrics[coder["id"]]["completed"], metrics[coder["id"]]["approval_rate"]) == (1, 1.0)
    assert metrics[coder["id"]]["tokens"] > 0 and metrics[coder["id"]]["load"] == 0
    assert metrics[critic["id"]]["reviews_given"] == 1


# --- multi-user mode --------------------------------------------------------------------------


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> Json:
    answer = await client.get("/auth/me", headers=headers)
    assert answer.status_code == 200, answer.text
    found: Json = answer.json()
    return found


async def test_a_stranger_gets_404_on_every_route_of_a_circle(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    await make_agent(client, "A", headers=alice)
    await make_agent(client, "B", headers=bob)
    circle = await new_circle(client, "alices", alice)
    member = await new_member(client, circle, alice, agent="A")
    task = await new_task(client, circle, "t", alice)
    other = await new_task(client, circle, "u", alice)
    where = f"/circles/{circle['id']}"
    on_task = f"{where}/tasks/{task['id']}"
    as_member = {"member_id": member["id"]}
    routes: list[tuple[str, str, Json | None]] = [
        ("GET", where, None),
        ("PATCH", where, {"description": "mine now"}),
        ("POST", f"{where}/activate", None),
        ("POST", f"{where}/archive", None),
        ("GET", f"{where}/members", None),
        ("POST", f"{where}/members", {"agent": "B"}),
        ("PATCH", f"{where}/members/{member['id']}", {"active": False}),
        ("GET", f"{where}/metrics", None),
        ("GET", f"{where}/conflicts", None),
        ("GET", f"{where}/tasks", None),
        ("POST", f"{where}/tasks", {"title": "x"}),
        ("GET", on_task, None),
        ("POST", f"{on_task}/offer", None),
        ("POST", f"{on_task}/claim", as_member),
        ("POST", f"{on_task}/refuse", as_member),
        ("POST", f"{on_task}/submit", {"text": "x", **as_member}),
        ("POST", f"{on_task}/review", {"verdict": "approved"}),
        ("POST", f"{on_task}/approve", None),
        ("POST", f"{on_task}/reject", None),
        ("POST", f"{on_task}/cancel", None),
        ("POST", f"{on_task}/dependencies", {"blocked_by": other["id"]}),
        ("DELETE", where, None),
    ]
    for method, path, payload in routes:
        answer = await client.request(method, path, json=payload, headers=bob)
        body = refusal(answer, 404, "not_found")
        # The same answer as for a circle that does not exist: nothing tells them apart.
        assert body["detail"] == f"circle {circle['id']} not found", (method, path)
        missing = path.replace(where, "/circles/999999", 1)
        nothing = await client.request(method, missing, json=payload, headers=bob)
        assert nothing.status_code == 404, (method, missing, nothing.text)
        assert nothing.json()["detail"] == "circle 999999 not found"
    # Bob's attempts changed nothing.
    assert (await client.get(where, headers=alice)).json() == circle
    assert (await detail(client, task, alice))["status"] == "pending"
    assert (await client.get(f"{where}/members", headers=alice)).json() == [member]
    assert (await client.get("/circles", headers=bob)).json() == []
    assert (await client.get("/circles", params={"name": "alices"}, headers=bob)).json() == []
    assert (await client.get("/circles")).status_code == 401
    assert (await client.get(where)).status_code == 401


async def test_a_person_member_sees_the_circle_and_acts_as_themselves_only(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    bob_id = (await me(client, bob))["id"]
    await make_agent(client, "A", headers=alice)
    circle = await new_circle(client, "alices", alice)
    agent = await new_member(client, circle, alice, agent="A")
    person = await new_member(client, circle, alice, user_id=bob_id, competencies={"python": 4})
    assert (person["user_id"], person["agent_id"]) == (bob_id, None)
    assert person["name"] == (await me(client, bob))["email"]
    await posted(client, f"/circles/{circle['id']}/activate", headers=alice, expect=200)
    # Only Bob knows python: the task is offered to him (a person: no agent job).
    task = await new_task(client, circle, "parse", alice, requirements={"python": 3})
    assert task["offered_to"] == person["id"]

    where = f"/circles/{circle['id']}"
    for path in (where, f"{where}/members", f"{where}/tasks", f"{where}/metrics"):
        assert (await client.get(path, headers=bob)).status_code == 200, path
    assert (await client.get(f"{where}/conflicts", headers=bob)).status_code == 200
    assert (await detail(client, task, bob))["offered_to"] == person["id"]
    bobs_own = await new_circle(client, "bobs", bob)
    listed = (await client.get("/circles", headers=bob)).json()
    assert [c["id"] for c in listed] == [circle["id"], bobs_own["id"]]  # joined and owned
    named = (await client.get("/circles", params={"name": "alices"}, headers=bob)).json()
    assert [c["id"] for c in named] == [circle["id"]]
    assert [c["id"] for c in (await client.get("/circles", headers=alice)).json()] == [circle["id"]]

    # Bob manages nothing.
    other = await new_task(client, circle, "other", alice)
    for method, path, payload in [
        ("PATCH", where, {"description": "bob's now"}),
        ("POST", f"{where}/activate", None),
        ("POST", f"{where}/archive", None),
        ("POST", f"{where}/members", {"agent": "A"}),
        ("PATCH", f"{where}/members/{person['id']}", {"role": "lead"}),
        ("POST", f"{where}/tasks", {"title": "bob's"}),
        ("POST", f"{where}/tasks/{task['id']}/offer", None),
        ("POST", f"{where}/tasks/{task['id']}/cancel", None),
        ("POST", f"{where}/tasks/{task['id']}/dependencies", {"blocked_by": other["id"]}),
        ("DELETE", where, None),
    ]:
        answer = await client.request(method, path, json=payload, headers=bob)
        assert refusal(answer, 403, "permission_denied"), (method, path)
    # Bob acts as his own member only, never as the agent.
    as_agent = {"member_id": agent["id"]}
    for verb, body in (
        ("claim", as_agent),
        ("refuse", as_agent),
        ("submit", {"text": "x", **as_agent}),
        ("review", {"verdict": "approved", **as_agent}),
        ("approve", as_agent),
    ):
        denied = refusal(await act(client, task, verb, body, bob), 403, "permission_denied")
        assert f"your own member {person['id']}" in denied["detail"], verb
    assert (await detail(client, task, alice))["status"] == "offered"

    claimed = await moved(client, task, "claim", headers=bob)
    assert (claimed["status"], claimed["assignee_id"]) == ("in_progress", person["id"])
    mine = await moved(client, task, "submit", {"text": "done by hand"}, bob)
    assert mine["status"] == "in_review"
    # Bob does not approve his own work; Alice, the owner and no member, does.
    for verb in ("approve", "reject"):
        assert (await act(client, task, verb, headers=bob)).status_code == 403, verb
    approved = await moved(client, task, "approve", {"feedback": "thanks"}, alice)
    assert approved["status"] == "completed"
    shown = await detail(client, task, bob)
    history = [(r["to_status"], r["member_id"], r["user_id"]) for r in shown["history"]]
    alice_id = circle["owner_id"]
    assert history[2:] == [
        ("in_progress", person["id"], bob_id),
        ("in_review", person["id"], bob_id),
        ("completed", None, alice_id),
    ]
    [review] = shown["reviews"]
    assert (review["reviewer_id"], review["user_id"], review["feedback"]) == (
        None,
        alice_id,
        "thanks",
    )

    # An offer to Bob he declines goes on (nobody else knows python: it waits).
    second = await new_task(client, circle, "again", alice, requirements={"python": 1})
    assert second["offered_to"] == person["id"]
    declined = await moved(client, second, "refuse", {"reason": "busy"}, bob)
    assert (declined["status"], declined["offered_to"]) == ("pending", None)


async def test_a_person_asked_to_review_sends_the_work_back_then_approves(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """No worker runs here: the agent's rework job waits, and the owner acts for the agent."""
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    await make_agent(client, "A", headers=alice)
    circle = await new_circle(client, "alices", alice)
    author = await new_member(client, circle, alice, agent="A", role="lead")
    bob_id = (await me(client, bob))["id"]
    reviewer = await new_member(client, circle, alice, user_id=bob_id, role="reviewer")
    task = await new_task(client, circle, "parse", alice)
    as_author = {"member_id": author["id"]}
    await moved(client, task, "claim", as_author, alice)
    await moved(client, task, "submit", {"text": "draft one", **as_author}, alice)
    [asked] = (await detail(client, task, bob))["decisions"]
    assert (asked["kind"], asked["member_id"]) == ("review", reviewer["id"])
    assert asked["reason"].startswith("reviewer with general 0")

    sent_back = await moved(
        client, task, "review", {"verdict": "changes_requested", "feedback": "more tests"}, bob
    )
    assert (sent_back["status"], sent_back["iteration"]) == ("changes_requested", 2)
    assert (sent_back["feedback"], sent_back["assignee_id"]) == ("more tests", author["id"])
    others = refusal(await act(client, task, "claim", headers=bob), 403, "permission_denied")
    assert "back with its author" in others["detail"]
    back = await moved(client, task, "claim", as_author, alice)
    assert (back["status"], back["iteration"]) == ("in_progress", 2)
    await moved(client, task, "submit", {"text": "draft two", **as_author}, alice)
    done = await moved(client, task, "approve", {"feedback": "good"}, bob)
    assert (done["status"], done["result"]["text"]) == ("completed", "draft two")

    shown = await detail(client, task, alice)
    reviews = [
        (r["iteration"], r["reviewer_id"], r["user_id"], r["verdict"]) for r in shown["reviews"]
    ]
    assert reviews == [
        (1, reviewer["id"], bob_id, "changes_requested"),
        (2, reviewer["id"], bob_id, "approved"),
    ]
    assert statuses(shown)[-4:] == ["changes_requested", "in_progress", "in_review", "completed"]
    metrics = await metrics_of(client, circle, bob)
    assert (
        metrics[author["id"]]["approval_rate"],
        metrics[author["id"]]["mean_review_rounds"],
    ) == (
        0.5,
        2.0,
    )
    assert metrics[reviewer["id"]]["reviews_given"] == 2


class TwoReviewers:
    """Alice's circle asking two people, Bob and Carol, to review each attempt; its agent
    lead A authored the task (Alice acted for it), and agent L, another lead, settles."""

    def __init__(self, client: httpx.AsyncClient, headers: list[dict[str, str]]) -> None:
        self.client = client
        self.alice, self.bob, self.carol = headers
        self.circle: Json = {}
        self.task: Json = {}
        self.lead: Json = {}
        self.reviewers: list[Json] = []

    @classmethod
    async def submitted(cls, app: FastAPI, client: httpx.AsyncClient) -> TwoReviewers:
        team = cls(client, [await login(app, client) for _ in range(3)])
        alice = team.alice
        for name in ("A", "L"):
            await make_agent(client, name, headers=alice)
        team.circle = await new_circle(client, "alices", alice, settings={"reviewers_per_task": 2})
        author = await new_member(client, team.circle, alice, agent="A", role="lead")
        team.lead = await new_member(client, team.circle, alice, agent="L", role="lead")
        for who in (team.bob, team.carol):
            user_id = (await me(client, who))["id"]
            team.reviewers.append(
                await new_member(client, team.circle, alice, user_id=user_id, role="reviewer")
            )
        team.task = await new_task(client, team.circle, "parse", alice)
        as_author = {"member_id": author["id"]}
        await moved(client, team.task, "claim", as_author, alice)
        await moved(client, team.task, "submit", {"text": "draft", **as_author}, alice)
        return team


async def test_reviewers_who_disagree_are_a_conflict_the_lead_settles(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    team = await TwoReviewers.submitted(app, client)
    task, alice, reviewers = team.task, team.alice, team.reviewers
    asked = [d["member_id"] for d in (await detail(client, task, alice))["decisions"]]
    assert sorted(asked) == sorted(r["id"] for r in reviewers)

    waiting = await moved(client, task, "approve", None, team.bob)
    assert waiting["status"] == "in_review"  # one of two verdicts
    again = refusal(
        await act(client, task, "review", {"verdict": "approved"}, team.bob), 409, "conflict"
    )
    assert again["status"] == 409
    split = await moved(
        client, task, "review", {"verdict": "changes_requested", "feedback": "no"}, team.carol
    )
    assert split["status"] == "in_review"
    [opened] = await conflicts(client, team.circle, alice, open="true")
    assert (opened["kind"], opened["task_id"]) == ("disagreement", task["id"])
    assert opened["detail"]["verdicts"] == {
        str(reviewers[0]["id"]): "approved",
        str(reviewers[1]["id"]): "changes_requested",
    }
    escalation = (await detail(client, task, alice))["decisions"][-1]
    assert (escalation["kind"], escalation["member_id"]) == ("escalation", team.lead["id"])
    assert escalation["reason"].endswith("; the lead decides")

    # The owner gives the lead's verdict for the agent (no worker runs here).
    as_lead = {"verdict": "approved", "member_id": team.lead["id"]}
    settled = await moved(client, task, "review", as_lead, alice)
    assert settled["status"] == "completed"
    [resolved] = await conflicts(client, team.circle, team.bob)
    assert (resolved["status"], resolved["resolution"]) == (
        "resolved",
        "approved by the final reviewer",
    )


async def test_a_second_verdict_on_one_attempt_is_refused_with_a_clear_reason(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    team = await TwoReviewers.submitted(app, client)
    await moved(client, team.task, "approve", None, team.bob)
    again = await act(client, team.task, "review", {"verdict": "rejected"}, team.bob)
    body = refusal(again, 409, "conflict")
    assert "review" in body["detail"] and "hint" in body, body


async def test_a_circle_is_found_by_name_whatever_the_page_size(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice = await login(app, client)
    await new_circle(client, "first", alice)
    second = await new_circle(client, "second", alice)
    found = await client.get("/circles", params={"name": "second", "limit": 1}, headers=alice)
    assert found.status_code == 200, found.text
    assert [c["id"] for c in found.json()] == [second["id"]]


async def test_paging_through_the_circles_lists_each_once(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    joined = await new_circle(client, "alices", alice)
    await new_member(client, joined, alice, user_id=(await me(client, bob))["id"])
    owned = await new_circle(client, "bobs", bob)
    everything = (await client.get("/circles", headers=bob)).json()
    assert [c["id"] for c in everything] == [joined["id"], owned["id"]]
    pages = []
    for offset in (0, 1):
        page = await client.get("/circles", params={"limit": 1, "offset": offset}, headers=bob)
        pages += [c["id"] for c in page.json()]
    assert pages == [joined["id"], owned["id"]]


async def test_an_admin_sees_and_manages_every_circle(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, admin = await login(app, client), await login(app, client, "admin")
    viewer = await login(app, client, "viewer")
    mine = await new_circle(client, "alices", alice)
    theirs = await new_circle(client, "admins", admin)
    everyone = (await client.get("/circles", headers=admin)).json()
    assert [c["id"] for c in everyone] == [mine["id"], theirs["id"]]
    where = f"/circles/{mine['id']}"
    assert (await client.get(where, headers=admin)).json() == mine
    task = await new_task(client, mine, "from the admin", admin)
    assert task["created_by"] == (await me(client, admin))["id"]
    changed = await client.patch(where, json={"description": "seen"}, headers=admin)
    assert changed.status_code == 200 and changed.json()["owner_id"] == mine["owner_id"]
    assert (await moved(client, task, "cancel", headers=admin))["status"] == "cancelled"

    assert (await client.get("/circles", headers=viewer)).json() == []
    assert (await client.get(where, headers=viewer)).status_code == 404
    assert (await client.post("/circles", json={"name": "v"}, headers=viewer)).status_code == 403


async def test_api_keys_need_the_circles_scopes(multi: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = multi
    member, reader, writer, other = await keyed_member(
        app, client, "circles", "goals:read", "goals:write"
    )
    refused = refusal(
        await client.post("/circles", json={"name": "k"}, headers=reader), 403, "permission_denied"
    )
    assert "circles:write" in refused["detail"]
    assert (await client.post("/circles", json={"name": "k"}, headers=other)).status_code == 403
    circle = await new_circle(client, "keyed", writer)
    assert circle["owner_id"] == (await me(client, member))["id"]
    keyed = await new_member(client, circle, writer, agent="Keyed", role="lead")
    task = await new_task(client, circle, "t", writer)
    blocker = await new_task(client, circle, "first", member)
    where = f"/circles/{circle['id']}"
    on_task = f"{where}/tasks/{task['id']}"

    paths = (
        "/circles",
        where,
        f"{where}/members",
        f"{where}/metrics",
        f"{where}/conflicts",
        f"{where}/tasks",
        on_task,
    )
    await only_the_reader_reads(client, paths, reader, writer, other)
    as_lead = {"member_id": keyed["id"]}
    writes: list[tuple[str, str, Json | None]] = [
        ("PATCH", where, {"description": "x"}),
        ("POST", f"{where}/activate", None),
        ("POST", f"{where}/archive", None),
        ("POST", f"{where}/members", {"user_id": 1}),
        ("PATCH", f"{where}/members/{keyed['id']}", {"active": False}),
        ("POST", f"{where}/tasks", {"title": "x"}),
        ("POST", f"{on_task}/offer", None),
        ("POST", f"{on_task}/claim", as_lead),
        ("POST", f"{on_task}/refuse", as_lead),
        ("POST", f"{on_task}/submit", {"text": "x", **as_lead}),
        ("POST", f"{on_task}/review", {"verdict": "approved"}),
        ("POST", f"{on_task}/approve", None),
        ("POST", f"{on_task}/reject", None),
        ("POST", f"{on_task}/cancel", None),
        ("POST", f"{on_task}/dependencies", {"blocked_by": blocker["id"]}),
        ("DELETE", where, None),
    ]
    for method, path, payload in writes:
        for headers in (reader, other):
            denied = await client.request(method, path, json=payload, headers=headers)
            assert denied.status_code == 403, (method, path, denied.text)
            assert "circles:write" in denied.json()["detail"]
    assert (await detail(client, task, member))["status"] == "pending"
    assert (await client.get(where, headers=member)).json() == circle
    waits = await posted(
        client, f"{on_task}/dependencies", {"blocked_by": blocker["id"]}, writer, 200
    )
    assert waits["status"] == "blocked"
    await moved(client, blocker, "claim", as_lead, writer)
    await moved(client, blocker, "submit", {"text": "done", **as_lead}, writer)
    assert (await moved(client, blocker, "approve", headers=writer))["status"] == "completed"
    assert (await detail(client, task, reader))["status"] == "pending"
    admin = await login(app, client, "admin")
    as_member_only = await api_key(client, admin, "circles:read")  # no `admin` scope
    assert (await client.get(where, headers=as_member_only)).status_code == 404
    admin_key = await api_key(client, admin, "circles:read", "admin")
    assert (await client.get(where, headers=admin_key)).status_code == 200
    assert (await client.delete(where, headers=writer)).status_code == 204


# --- WebSocket: who may subscribe to a circle -------------------------------------------------


def bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def subscribe(app: FastAPI, name: str, headers: dict[str, str]) -> Json:
    """The answer to a subscription to `/ws/circles/{name}` of the user of `headers`."""
    query = f"access_token={bearer(headers)}"
    async with ASGIWebSocket(app, f"/ws/circles/{name}", query=query) as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["circle.*"]})
        return await ws.receive_json()


async def test_the_owner_and_a_person_member_subscribe_to_a_circle_and_a_stranger_may_not(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob, carol = [await login(app, client) for _ in range(3)]
    admin = await login(app, client, "admin")
    circle = await new_circle(client, "alices", alice)
    await new_member(client, circle, alice, user_id=(await me(client, bob))["id"])

    for headers in (alice, bob, admin):
        answer = await subscribe(app, "alices", headers)
        assert answer["type"] == "subscribed", answer
        assert answer["subjects"] == ["circle:alices"]
    for name in ("alices", "nobodys"):
        refused = await subscribe(app, name, carol)
        assert (refused["type"], refused["code"]) == ("error", "not_found"), refused
        assert refused["message"] == f"no circle {name!r}"  # the same for both

    # The member receives the circle's events as they happen.
    query = f"access_token={bearer(bob)}"
    async with ASGIWebSocket(app, "/ws/circles/alices", query=query) as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["circle.task.created"]})
        assert (await ws.receive_json())["type"] == "subscribed"
        task = await new_task(client, circle, "seen live", alice)
        while (message := await ws.receive_json(timeout=10))["type"] != "event":
            pass
    event = message["event"]
    assert (event["type"], event["subject"]) == ("circle.task.created", "circle:alices")
    assert (event["data"]["task_id"], event["data"]["title"]) == (task["id"], "seen live")

    # A stranger asking for the subject on the general socket is refused too.
    async with ASGIWebSocket(app, "/ws", query=f"access_token={bearer(carol)}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": ["circle:alices"]})
        assert (await ws.receive_json())["code"] == "not_found"


@pytest.fixture(name="beating")
async def beating_fixture(
    migrated_database_url: str, stub: LLMStubServer
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Multi-user mode whose sockets beat every 0.2 s (each beat checks the subscription)."""
    app = create_app(
        settings=load_settings(
            database_url=migrated_database_url,
            auth="required",
            secret_key="k" * 64,
            ws_heartbeat=0.2,
        )
    )
    async with client_for(app) as client:
        yield app, client
    await app.state.gathering.close()


async def test_a_subscription_ends_when_its_circle_name_passes_to_someone_else(
    beating: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = beating
    alice, bob = await login(app, client), await login(app, client)
    bobs = await new_circle(client, "team", bob)
    query = f"access_token={bearer(bob)}"
    async with ASGIWebSocket(app, "/ws/circles/team", query=query) as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["circle.*"]})
        assert (await ws.receive_json())["type"] == "subscribed"
        assert (await client.delete(f"/circles/{bobs['id']}", headers=bob)).status_code == 204
        alices = await new_circle(client, "team", alice)
        await new_task(client, alices, "alice's secret plan", alice)
        leaked: list[Json] = []
        try:
            while True:
                message = await ws.receive_json(timeout=10)
                if message["type"] == "event":
                    leaked.append(message["event"])
                    break
        except ConnectionError:
            pass
    assert leaked == []
    assert ws.close_code == 4403

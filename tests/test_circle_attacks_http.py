"""Hostile review: circles over HTTP in multi-user mode (no worker, no sweep)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgi_ws import ASGIWebSocket
from fastapi import FastAPI
from task_api import (
    login,
    make_agent,
    multi_fixture,  # noqa: F401
    stub_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration
Json = dict[str, Any]


async def post(
    client: httpx.AsyncClient, path: str, body: Json | None, headers: Any, expect: int = 201
) -> Json:
    answer = await client.post(path, json=body, headers=headers)
    assert answer.status_code == expect, (path, answer.status_code, answer.text)
    found: Json = answer.json()
    return found


async def me(client: httpx.AsyncClient, headers: Any) -> int:
    user_id: int = (await client.get("/auth/me", headers=headers)).json()["id"]
    return user_id


def bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


# --- an owner who is also a member of their circle ---------------------------------------------


async def test_an_owner_who_joined_their_circle_still_decides_as_a_person(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice = await login(app, client)
    alice_id = await me(client, alice)
    await make_agent(client, "A", headers=alice)
    circle = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{circle['id']}"
    agent = await post(
        client, f"{where}/members", {"agent": "A", "competencies": {"python": 1}}, alice
    )
    await post(client, f"{where}/members", {"user_id": alice_id, "role": "member"}, alice)
    await post(client, f"{where}/activate", None, alice, 200)
    task = await post(
        client, f"{where}/tasks", {"title": "t", "requirements": {"python": 1}}, alice
    )
    assert task["offered_to"] == agent["id"]
    on = f"{where}/tasks/{task['id']}"
    await post(client, f"{on}/claim", {"member_id": agent["id"]}, alice, 200)
    await post(client, f"{on}/submit", {"text": "x", "member_id": agent["id"]}, alice, 200)
    # No member may review (no reviewer, no lead): "a person approves or rejects it".
    answer = await client.post(f"{on}/approve", json=None, headers=alice)
    assert answer.status_code == 200, (
        f"the owner cannot decide as a person once they joined as a member: {answer.text}"
    )


# --- a deactivated (revoked) person member ------------------------------------------------------


async def test_a_deactivated_person_member_loses_access(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    bob_id = await me(client, bob)
    await make_agent(client, "A", headers=alice)
    circle = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{circle['id']}"
    await post(client, f"{where}/members", {"agent": "A"}, alice)
    bobm = await post(client, f"{where}/members", {"user_id": bob_id}, alice)
    conv = await post(client, f"{where}/conversations", {"topic": "plans"}, alice)
    # Alice revokes Bob (there is no DELETE of a member: `active: false` is the only way).
    answer = await client.patch(
        f"{where}/members/{bobm['id']}", json={"active": False}, headers=alice
    )
    assert answer.status_code == 200 and answer.json()["active"] is False
    seen = {
        "GET circle": (await client.get(where, headers=bob)).status_code,
        "GET tasks": (await client.get(f"{where}/tasks", headers=bob)).status_code,
        "inject": (
            await client.post(
                f"{where}/conversations/{conv['id']}/inject",
                json={"text": "still here"},
                headers=bob,
            )
        ).status_code,
        "summary": (
            await client.post(f"{where}/conversations/{conv['id']}/summary", headers=bob)
        ).status_code,
    }
    async with ASGIWebSocket(app, "/ws/circles/alices", query=f"access_token={bearer(bob)}") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["circle.*"]})
        seen["ws"] = (await ws.receive_json())["type"]
    assert seen == {
        "GET circle": 404,
        "GET tasks": 404,
        "inject": 404,
        "summary": 404,
        "ws": "error",
    }, seen


async def test_a_deactivated_person_lead_cannot_approve(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    bob_id = await me(client, bob)
    await make_agent(client, "A", headers=alice)
    circle = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{circle['id']}"
    agent = await post(client, f"{where}/members", {"agent": "A", "role": "lead"}, alice)
    bobm = await post(client, f"{where}/members", {"user_id": bob_id, "role": "lead"}, alice)
    task = await post(client, f"{where}/tasks", {"title": "t"}, alice)
    on = f"{where}/tasks/{task['id']}"
    await post(client, f"{on}/claim", {"member_id": agent["id"]}, alice, 200)
    await client.patch(f"{where}/members/{bobm['id']}", json={"active": False}, headers=alice)
    await post(client, f"{on}/submit", {"text": "x", "member_id": agent["id"]}, alice, 200)
    answer = await client.post(f"{on}/approve", headers=bob)
    assert answer.status_code in (403, 404), (
        f"a revoked lead approved: {answer.status_code} {answer.text}"
    )


# --- cross-circle member ids --------------------------------------------------------------------


async def test_an_owner_cannot_act_as_a_member_of_someone_elses_circle(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    await make_agent(client, "A", headers=alice)
    await make_agent(client, "B", headers=bob)
    bobs = await post(client, "/circles", {"name": "bobs"}, bob)
    bob_member = await post(client, f"/circles/{bobs['id']}/members", {"agent": "B"}, bob)
    alices = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{alices['id']}"
    agent = await post(client, f"{where}/members", {"agent": "A", "role": "lead"}, alice)
    task = await post(client, f"{where}/tasks", {"title": "t"}, alice)
    on = f"{where}/tasks/{task['id']}"
    await post(client, f"{on}/claim", {"member_id": agent["id"]}, alice, 200)
    await post(client, f"{on}/submit", {"text": "x", "member_id": agent["id"]}, alice, 200)
    # Alice names Bob's member (of Bob's circle) as the reviewer of her task.
    answer = await client.post(
        f"{on}/review", json={"verdict": "approved", "member_id": bob_member["id"]}, headers=alice
    )
    metrics = (await client.get(f"/circles/{bobs['id']}/metrics", headers=bob)).json()
    given = {m["member_id"]: m["reviews_given"] for m in metrics}[bob_member["id"]]
    assert answer.status_code in (403, 404, 422) and given == 0, (
        f"alice acted as bob's member: {answer.status_code}, "
        f"bob's member now has reviews_given={given}"
    )


# --- conversations: facilitator_id not checked unless the strategy is facilitator --------------


async def test_a_conversation_facilitator_of_no_member_is_a_clear_4xx(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice = await login(app, client)
    await make_agent(client, "A", headers=alice)
    circle = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{circle['id']}"
    await post(client, f"{where}/members", {"agent": "A"}, alice)
    answer = await client.post(
        f"{where}/conversations",
        json={"topic": "x", "strategy": "round_robin", "facilitator_id": 999999},
        headers=alice,
    )
    assert answer.status_code == 409, answer.text
    assert "cannot facilitate" in answer.text, f"unclear error: {answer.text}"


async def test_a_conversation_facilitator_of_another_circle_is_refused(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    await make_agent(client, "A", headers=alice)
    await make_agent(client, "B", headers=bob)
    bobs = await post(client, "/circles", {"name": "bobs"}, bob)
    bob_member = await post(client, f"/circles/{bobs['id']}/members", {"agent": "B"}, bob)
    circle = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{circle['id']}"
    await post(client, f"{where}/members", {"agent": "A"}, alice)
    answer = await client.post(
        f"{where}/conversations",
        json={"topic": "x", "strategy": "round_robin", "facilitator_id": bob_member["id"]},
        headers=alice,
    )
    assert answer.status_code == 409, (
        f"a member of another person's circle was stored as facilitator: {answer.status_code}"
    )


# --- listing and existence --------------------------------------------------------------------


async def test_the_name_filter_finds_a_circle_beyond_the_first_page(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice = await login(app, client)
    for name in ("one", "two", "three"):
        await post(client, "/circles", {"name": name}, alice)
    found = (
        await client.get("/circles", params={"name": "three", "limit": 1}, headers=alice)
    ).json()
    assert [c["name"] for c in found] == ["three"], found


async def test_ids_of_another_circle_are_404_through_this_circle(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """Held up: task and conversation ids of circle B through circle A's URL."""
    app, client = multi
    alice, bob = await login(app, client), await login(app, client)
    bob_id = await me(client, bob)
    await make_agent(client, "A", headers=alice)
    a = await post(client, "/circles", {"name": "a"}, alice)
    b = await post(client, "/circles", {"name": "b"}, alice)
    await post(client, f"/circles/{a['id']}/members", {"user_id": bob_id, "role": "lead"}, alice)
    await post(client, f"/circles/{b['id']}/members", {"agent": "A"}, alice)
    tb = await post(client, f"/circles/{b['id']}/tasks", {"title": "b's"}, alice)
    cb = await post(client, f"/circles/{b['id']}/conversations", {"topic": "b's"}, alice)
    via = f"/circles/{a['id']}"
    for method, path, body in [
        ("GET", f"{via}/tasks/{tb['id']}", None),
        ("POST", f"{via}/tasks/{tb['id']}/claim", None),
        ("POST", f"{via}/tasks/{tb['id']}/approve", None),
        ("GET", f"{via}/conversations/{cb['id']}/transcript", None),
        ("POST", f"{via}/conversations/{cb['id']}/inject", {"text": "hi"}),
        ("POST", f"{via}/conversations/{cb['id']}/summary", None),
    ]:
        answer = await client.request(method, path, json=body, headers=bob)
        assert answer.status_code == 404, (method, path, answer.text)


async def test_the_author_cannot_approve_their_own_work_by_acting_as_an_agent_lead(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice = await login(app, client)
    alice_id = await me(client, alice)
    await make_agent(client, "L", headers=alice)
    circle = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{circle['id']}"
    lead = await post(client, f"{where}/members", {"agent": "L", "role": "lead"}, alice)
    mine = await post(client, f"{where}/members", {"user_id": alice_id, "role": "lead"}, alice)
    task = await post(client, f"{where}/tasks", {"title": "t"}, alice)
    on = f"{where}/tasks/{task['id']}"
    await post(client, f"{on}/claim", None, alice, 200)  # as her own member
    done = await post(client, f"{on}/submit", {"text": "my work"}, alice, 200)
    assert done["assignee_id"] == mine["id"]
    assert (await client.post(f"{on}/approve", headers=alice)).status_code == 403  # as herself
    # ... but as the agent lead she manages, she approves her own work.
    answer = await client.post(f"{on}/approve", json={"member_id": lead["id"]}, headers=alice)
    assert answer.status_code == 403, f"the author approved her own work: {answer.json()['status']}"


async def test_a_conversation_of_an_archived_circle_does_not_start(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice = await login(app, client)
    await make_agent(client, "A", headers=alice)
    circle = await post(client, "/circles", {"name": "alices"}, alice)
    where = f"/circles/{circle['id']}"
    await post(client, f"{where}/members", {"agent": "A"}, alice)
    conv = await post(client, f"{where}/conversations", {"topic": "x"}, alice)
    await post(client, f"{where}/archive", None, alice, 200)
    shown = (await client.get(f"{where}/conversations/{conv['id']}", headers=alice)).json()
    started = await client.post(f"{where}/conversations/{conv['id']}/start", headers=alice)
    assert shown["status"] == "cancelled" or started.status_code == 409, (
        f"archiving left it {shown['status']}; start answered {started.status_code}"
    )

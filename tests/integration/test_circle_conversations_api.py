"""Circles' conversations over HTTP, on an app whose lifespan runs a worker, the model faked at
its HTTP wire: create, start (202), the transcript paged with `after`, a person's message, the
control routes and their 409s, the summary on demand, clear 409s for participants that cannot
speak; in multi-user mode a stranger learns nothing and a member may read and inject."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from task_api import (
    api_fixture,  # noqa: F401 - the fixture "api"
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    stub_fixture,  # noqa: F401 - the fixture "stub"
    tools_fixture,  # noqa: F401 - the fixture "tools"
)

from gathering.auth.users import UserStore
from gathering.testing import LLMStubServer

pytestmark = pytest.mark.integration


async def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


async def _circle(
    client: httpx.AsyncClient, names: tuple[str, ...], headers: dict[str, str] | None = None
) -> tuple[int, list[int]]:
    for name in names:
        await make_agent(client, name, headers=headers)
    circle = await _ok(
        await client.post("/circles", json={"name": "talkers"}, headers=headers), 201
    )
    members = []
    for name in names:
        made = await client.post(
            f"/circles/{circle['id']}/members", json={"agent": name}, headers=headers
        )
        members.append((await _ok(made, 201))["id"])
    return circle["id"], members


async def _settled(client: httpx.AsyncClient, path: str, limit: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        body: dict[str, Any] = await _ok(await client.get(path))
        if body["status"] in ("finished", "cancelled", "failed"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_conversation_runs_and_its_transcript_pages(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    circle_id, (ann, bob) = await _circle(api, ("ann", "bob"))
    base = f"/circles/{circle_id}/conversations"
    made = await _ok(await api.post(base, json={"topic": "naming things", "max_turns": 3}), 201)
    assert (made["status"], made["participants"], made["strategy"]) == (
        "created",
        [ann, bob],
        "round_robin",
    )
    stub.add_reply("a1", "b1", "a2", "in short: names matter")
    started = await _ok(await api.post(f"{base}/{made['id']}/start"), 202)
    assert started["status"] == "running"
    ended = await _settled(api, f"{base}/{made['id']}")
    assert (ended["status"], ended["finish_reason"], ended["turns"]) == (
        "finished",
        "max_turns",
        3,
    )
    assert ended["summary"] == "in short: names matter"
    said = await _ok(await api.get(f"{base}/{made['id']}/transcript"))
    assert [(m["n"], m["turn"], m["speaker"], m["content"]) for m in said] == [
        (1, 1, "ann", "a1"),
        (2, 2, "bob", "b1"),
        (3, 3, "ann", "a2"),
    ]
    page = await _ok(await api.get(f"{base}/{made['id']}/transcript", params={"after": 2}))
    assert [m["n"] for m in page] == [3]
    assert [c["id"] for c in await _ok(await api.get(base))] == [made["id"]]
    refused = await api.post(f"{base}/{made['id']}/resume")
    assert refused.status_code == 409 and "finished" in refused.json()["detail"]
    assert (await api.post(f"{base}/{made['id']}/inject", json={"text": "late"})).status_code == 409
    stub.add_reply("a fresh summary")
    await _ok(await api.post(f"{base}/{made['id']}/summary"), 202)
    deadline = time.monotonic() + 30
    while (await _ok(await api.get(f"{base}/{made['id']}")))["summary"] != "a fresh summary":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_person_speaks_and_controls_a_conversation(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    circle_id, _ = await _circle(api, ("ann", "bob"))
    base = f"/circles/{circle_id}/conversations"
    made = await _ok(await api.post(base, json={"topic": "plans", "max_turns": 4}), 201)
    said = await _ok(
        await api.post(f"{base}/{made['id']}/inject", json={"text": "Start with the budget."}),
        201,
    )
    assert (said["n"], said["turn"], said["speaker"]) == (1, None, "owner")
    assert (await api.post(f"{base}/{made['id']}/pause")).status_code == 409  # not running
    cancelled = await _ok(await api.post(f"{base}/{made['id']}/cancel"))
    assert (cancelled["status"], cancelled["finish_reason"]) == ("cancelled", "cancelled")
    assert (await api.post(f"{base}/{made['id']}/start")).status_code == 409
    assert stub.requests == []


async def test_bad_conversations_are_refused_clearly(api: httpx.AsyncClient) -> None:
    circle_id, (ann,) = await _circle(api, ("ann",))
    base = f"/circles/{circle_id}/conversations"
    for body, status, words in (
        ({"topic": "x", "participants": [ann + 100]}, 409, "cannot speak"),
        ({"topic": "x", "strategy": "facilitator"}, 409, "facilitate"),
        ({"topic": " "}, 422, ""),
        ({"topic": "x", "strategy": "loudest"}, 422, ""),
        ({"topic": "x", "max_turns": True}, 422, ""),
        ({"topic": "x", "max_turns": 0}, 422, ""),
        ({"topic": "x", "extra": 1}, 422, ""),
    ):
        answer = await api.post(base, json=body)
        assert answer.status_code == status, (body, answer.text)
        assert words in answer.text
    assert (await api.get(f"{base}/999")).status_code == 404
    other = await _ok(await api.post("/circles", json={"name": "elsewhere"}), 201)
    theirs = await _ok(await api.post(base, json={"topic": "mine"}), 201)
    assert (
        await api.get(f"/circles/{other['id']}/conversations/{theirs['id']}")
    ).status_code == 404


async def test_strangers_learn_nothing_and_members_read_and_speak(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    owner = await login(app, client)
    circle_id, _ = await _circle(client, ("ann",), headers=owner)
    base = f"/circles/{circle_id}/conversations"
    made = await _ok(await client.post(base, json={"topic": "t"}, headers=owner), 201)
    stranger = await login(app, client)
    for method, path in (
        ("GET", base),
        ("GET", f"{base}/{made['id']}"),
        ("GET", f"{base}/{made['id']}/transcript"),
        ("POST", f"{base}/{made['id']}/start"),
        ("POST", f"{base}/{made['id']}/inject"),
    ):
        body = {"text": "hi"} if path.endswith("inject") else None
        answer = await client.request(method, path, json=body, headers=stranger)
        assert answer.status_code == 404, (path, answer.text)
    person = await login(app, client)
    me = (await client.get("/auth/me", headers=person)).json()
    added = await client.post(
        f"/circles/{circle_id}/members", json={"user_id": me["id"]}, headers=owner
    )
    assert added.status_code == 201, added.text
    assert (await client.get(f"{base}/{made['id']}", headers=person)).status_code == 200
    said = await _ok(
        await client.post(f"{base}/{made['id']}/inject", json={"text": "hi"}, headers=person),
        201,
    )
    user = await UserStore(await app.state.gathering.database()).get(me["id"])
    assert user is not None and said["speaker"] == user.email
    assert (await client.post(f"{base}/{made['id']}/start", headers=person)).status_code == 403
    assert (await client.post(base, json={"topic": "mine"}, headers=person)).status_code == 403

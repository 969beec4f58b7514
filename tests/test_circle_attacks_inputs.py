"""Hostile review: hostile inputs on every circles route; nothing may be a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from task_api import (
    login,
    make_agent,
    multi_fixture,  # noqa: F401
    stub_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration
Json = dict[str, Any]

NUL = "a\x00b"
HOSTILE_TEXT = [NUL, "\ud800", "x" * 300_000, "\u202e\u0000", "💥" * 10]
HOSTILE_NUMBERS = [True, -1, 0, 2**63, 2**64, 1.5, "1", None, [], {}]


async def test_no_hostile_input_is_a_5xx(multi: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = multi
    alice = await login(app, client)
    alice_id = (await client.get("/auth/me", headers=alice)).json()["id"]
    await make_agent(client, "A", headers=alice)
    made = await client.post("/circles", json={"name": "alices"}, headers=alice)
    circle = made.json()
    where = f"/circles/{circle['id']}"
    agent = (
        await client.post(f"{where}/members", json={"agent": "A", "role": "lead"}, headers=alice)
    ).json()
    task = (await client.post(f"{where}/tasks", json={"title": "t"}, headers=alice)).json()
    other = (await client.post(f"{where}/tasks", json={"title": "u"}, headers=alice)).json()
    conv = (await client.post(f"{where}/conversations", json={"topic": "t"}, headers=alice)).json()
    on = f"{where}/tasks/{task['id']}"
    oc = f"{where}/conversations/{conv['id']}"
    me = {"member_id": agent["id"]}
    await client.post(f"{on}/claim", json=me, headers=alice)

    texts: list[tuple[str, str, Any]] = []
    for t in HOSTILE_TEXT:
        texts += [
            ("POST", "/circles", {"name": t}),
            ("POST", "/circles", {"name": "n" + str(len(texts)), "description": t}),
            ("PATCH", where, {"description": t}),
            ("PATCH", where, {"settings": {"review_types": [t]}}),
            ("POST", f"{where}/members", {"agent": t}),
            ("POST", f"{where}/members", {"agent": "A", "competencies": {t: 1}}),
            ("POST", f"{where}/tasks", {"title": t}),
            ("POST", f"{where}/tasks", {"title": "ok", "description": t}),
            ("POST", f"{where}/tasks", {"title": "ok", "task_type": t}),
            ("POST", f"{on}/refuse", {"reason": t, **me}),
            ("POST", f"{on}/cancel", {"reason": t}),
            ("POST", f"{other['id'] and where}/tasks/{other['id']}/cancel", {"reason": t}),
            ("POST", f"{on}/submit", {"text": t, **me}),
            ("POST", f"{on}/submit", {"text": "x", "summary": t, **me}),
            ("POST", f"{on}/submit", {"text": "x", "files": [t], **me}),
            ("POST", f"{on}/review", {"verdict": "changes_requested", "feedback": t}),
            ("POST", f"{on}/approve", {"feedback": t}),
            ("POST", f"{where}/conversations", {"topic": t}),
            ("POST", f"{where}/conversations", {"topic": "x", "stop_phrase": t}),
            ("POST", f"{oc}/inject", {"text": t}),
        ]
    for n in HOSTILE_NUMBERS:
        texts += [
            ("POST", f"{on}/claim", {"member_id": n}),
            ("POST", f"{on}/dependencies", {"blocked_by": n}),
            ("POST", f"{where}/tasks", {"title": "p", "priority": n}),
            ("POST", f"{where}/tasks", {"title": "p", "blocked_by": [n]}),
            ("POST", f"{where}/members", {"user_id": n}),
            ("POST", f"{where}/conversations", {"topic": "x", "participants": [n]}),
            ("POST", f"{where}/conversations", {"topic": "x", "max_turns": n}),
            ("PATCH", where, {"settings": {"max_parallel_tasks": n}}),
            ("GET", f"{where}/tasks?limit={n}", None),
            ("GET", f"{oc}/transcript?after={n}", None),
        ]
    for path_id in ("-1", "0", "9223372036854775808", "1e3", "true", "%00", "..", "1;DROP"):
        texts += [
            ("GET", f"/circles/{path_id}", None),
            ("GET", f"{where}/tasks/{path_id}", None),
            ("GET", f"{where}/conversations/{path_id}/transcript", None),
            ("POST", f"{where}/tasks/{path_id}/claim", me),
        ]
    fives: list[tuple[str, str, str, object, str]] = []
    for method, path, body in texts:
        try:
            raw = None if body is None else json.dumps(body).encode()
            answer = await client.request(
                method, path, content=raw, headers={**alice, "Content-Type": "application/json"}
            )
        except Exception as exc:
            fives.append((method, path[:80], str(body)[:80], "raised", repr(exc)[:300]))
            continue
        if answer.status_code >= 500:
            fives.append((method, path[:80], str(body)[:80], answer.status_code, answer.text[:200]))
    for t in [HOSTILE_TEXT[0], "%00", "\x01"]:
        for path in (f"{where}/tasks", "/circles"):
            key = "status" if path.endswith("tasks") else "name"
            answer = await client.get(path, params={key: t}, headers=alice)
            if answer.status_code >= 500:
                fives.append(("GET", path, t, answer.status_code, answer.text[:200]))
    assert not fives, "\n".join(map(str, fives))
    _ = alice_id

"""`GET /events`: a feed's backfill. Each user reads the events of their own subject, newest
first, paged back by cursor; an administrator reads every event; deltas are never kept."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gathering.api.app import create_app
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.events import Event, outbox

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def multi(migrated_database_url: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key="k" * 64
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield app, client
    await app.state.gathering.close()


async def _login(app: Any, client: httpx.AsyncClient, role: str = "member") -> tuple[int, dict]:
    email = f"t-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return user.id, {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_each_user_reads_their_own_events_newest_first_and_an_admin_every_one(
    multi: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = multi
    (alice, as_alice), (bob, as_bob) = await _login(app, client), await _login(app, client)
    _, as_admin = await _login(app, client, "admin")
    db = await app.state.gathering.database()
    written = [
        Event("task.started", {"n": n}, subject=f"user:{owner}")
        for n, owner in enumerate([alice, bob, alice, alice, bob])
    ]
    await outbox.write(db, [*written, Event("system.note", {"n": 5})])

    mine = (await client.get("/events", headers=as_alice)).json()
    assert [e["data"]["n"] for e in mine] == [3, 2, 0]
    assert {e["subject"] for e in mine} == {f"user:{alice}"}
    cursors = [e["cursor"] for e in mine]
    assert cursors == sorted(cursors, reverse=True)
    assert [e["data"]["n"] for e in (await client.get("/events", headers=as_bob)).json()] == [4, 1]

    everything = (await client.get("/events", headers=as_admin)).json()
    assert [e["data"]["n"] for e in everything] == [5, 4, 3, 2, 1, 0]

    first = (await client.get("/events", params={"limit": 2}, headers=as_alice)).json()
    older = await client.get(
        "/events", params={"limit": 2, "before": first[-1]["cursor"]}, headers=as_alice
    )
    assert [e["data"]["n"] for e in first + older.json()] == [3, 2, 0]


async def test_bounds_and_credentials(multi: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = multi
    _, as_alice = await _login(app, client)
    assert (await client.get("/events")).status_code == 401
    for params in ({"limit": 0}, {"limit": 201}, {"before": 0}, {"before": "x"}):
        refused = await client.get("/events", params=params, headers=as_alice)
        assert refused.status_code == 422, (params, refused.text)
    assert (await client.get("/events", params={"limit": 200}, headers=as_alice)).json() == []

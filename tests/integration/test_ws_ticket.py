"""`POST /auth/ws-ticket`: a one-time, 30-second ticket that opens one WebSocket, once across
instances, as the credential that asked for it and no more."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import httpx
import pytest
from asgi_ws import ASGIWebSocket  # tests/_support, on the path via conftest

from gathering.api.app import create_app
from gathering.auth.api_keys import ApiKeyStore
from gathering.auth.users import UserStore
from gathering.auth.ws_tickets import WsTicketStore
from gathering.config import load_settings

KEY = "t" * 64
PASSWORD = "correct horse battery staple"


@pytest.fixture
def multi(app_for):
    return app_for(auth="required", secret_key=KEY)


def client_for(application) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test")


async def new_user(application, *, is_admin: bool = False) -> tuple[int, str]:
    """A new user and the access token of a session started for them."""
    security = application.state.security
    user = await UserStore(await security.db()).create(
        f"tk-{secrets.token_hex(4)}@example.com", PASSWORD, is_admin=is_admin
    )
    pair = await (await security.services()).sessions.start(user.id)
    return user.id, pair.access.token


async def ticket_for(application, headers: dict[str, str]) -> str:
    async with client_for(application) as client:
        response = await client.post("/auth/ws-ticket", headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["expires_in"] == 30
    return str(body["ticket"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def pongs(ws: ASGIWebSocket) -> bool:
    await ws.send_json({"type": "ping"})
    try:
        return await ws.receive_json() == {"type": "pong"}
    except ConnectionError:
        return False


async def test_single_user_mode_answers_409(app_for):
    application = app_for()
    async with client_for(application) as client:
        response = await client.post("/auth/ws-ticket")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


async def test_without_credentials_401(multi):
    async with client_for(multi) as client:
        assert (await client.post("/auth/ws-ticket")).status_code == 401


async def test_a_ticket_opens_one_socket_as_its_user(multi):
    user_id, token = await new_user(multi)
    ticket = await ticket_for(multi, bearer(token))
    db = await multi.state.security.db()
    stored = await db.fetch_all("SELECT * FROM auth.ws_tickets")
    assert [row["ticket_hash"] for row in stored] == [hashlib.sha256(ticket.encode()).hexdigest()]
    assert ticket not in str(stored)  # only its hash is kept
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as ws:
        assert await pongs(ws)
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        subscribed = await ws.receive_json()
        assert subscribed["subjects"] == [f"user:{user_id}"]
    assert await db.fetch_val("SELECT count(*) FROM auth.ws_tickets") == 0
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as again:
        error = await again.receive_json()
        assert (error["type"], error["code"]) == ("error", "unauthenticated")
        assert await again.wait_closed() == 4401


async def test_a_ticket_in_the_auth_frame(multi):
    user_id, token = await new_user(multi)
    ticket = await ticket_for(multi, bearer(token))
    async with ASGIWebSocket(multi, "/ws") as ws:
        await ws.send_json({"type": "auth", "ticket": ticket})
        assert await ws.receive_json() == {"type": "authenticated", "user_id": user_id}
    async with ASGIWebSocket(multi, "/ws") as ws:
        await ws.send_json({"type": "auth", "ticket": ticket})
        assert (await ws.receive_json())["code"] == "unauthenticated"
        assert await ws.wait_closed() == 4401


@pytest.mark.parametrize("ticket", ["", "nope", "x" * 500])
async def test_unknown_tickets_close_4401(multi, ticket):
    async with ASGIWebSocket(multi, "/ws") as ws:
        await ws.send_json({"type": "auth", "ticket": ticket})
        assert (await ws.receive_json())["type"] == "error"
        assert await ws.wait_closed() == 4401


async def test_a_ticket_works_once_across_instances(multi, migrated_database_url):
    other = create_app(
        settings=load_settings(database_url=migrated_database_url, auth="required", secret_key=KEY)
    )
    try:
        _, token = await new_user(multi)
        ticket = await ticket_for(multi, bearer(token))
        async with ASGIWebSocket(other, "/ws", query=f"ticket={ticket}") as ws:
            assert await pongs(ws)
        async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as ws:
            assert await ws.wait_closed() == 4401

        # Presented at the same moment on both instances: exactly one wins.
        ticket = await ticket_for(multi, bearer(token))
        stores = [WsTicketStore(await app.state.security.db()) for app in (multi, other)]
        grants = await asyncio.gather(*(store.consume(ticket) for store in stores))
        assert sum(grant is not None for grant in grants) == 1
    finally:
        await other.state.gathering.close()


async def test_an_expired_ticket_is_refused_and_pruned(multi):
    _, token = await new_user(multi)
    ticket = await ticket_for(multi, bearer(token))
    db = await multi.state.security.db()
    await db.execute("UPDATE auth.ws_tickets SET expires_at = now() - interval '1 second'")
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as ws:
        assert await ws.wait_closed() == 4401
    stale = await ticket_for(multi, bearer(token))
    await db.execute("UPDATE auth.ws_tickets SET expires_at = now() - interval '1 second'")
    await ticket_for(multi, bearer(token))  # asking for a new one prunes the expired ones
    hashes = [row["ticket_hash"] for row in await db.fetch_all("SELECT * FROM auth.ws_tickets")]
    assert len(hashes) == 1 and hashlib.sha256(stale.encode()).hexdigest() not in hashes


async def test_a_ticket_of_a_user_disabled_meanwhile_is_refused(multi):
    user_id, token = await new_user(multi)
    ticket = await ticket_for(multi, bearer(token))
    await UserStore(await multi.state.security.db()).set_active(user_id, False)
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as ws:
        assert await ws.wait_closed() == 4401


async def test_a_ticket_stops_with_the_session_it_came_from(multi):
    _, token = await new_user(multi)
    ticket = await ticket_for(multi, bearer(token))
    second = await ticket_for(multi, bearer(token))
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        assert (await ws.receive_json())["type"] == "subscribed"
        async with client_for(multi) as client:
            assert (await client.post("/auth/logout", headers=bearer(token))).status_code == 204
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        assert await ws.wait_closed() == 4401  # the socket's session was ended
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={second}") as ws:
        assert await ws.wait_closed() == 4401  # and so were its tickets


async def test_api_keys_need_events_read_and_keep_their_limits(multi):
    admin_id, _ = await new_user(multi, is_admin=True)
    keys = ApiKeyStore(await multi.state.security.db())
    reader = await keys.create(admin_id, "reader", ["events:read"])
    other = await keys.create(admin_id, "other", ["agents:read"])
    async with client_for(multi) as client:
        refused = await client.post("/auth/ws-ticket", headers={"X-API-Key": other.secret})
    assert refused.status_code == 403
    ticket = await ticket_for(multi, {"X-API-Key": reader.secret})
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as ws:
        # The key's owner is an admin, but the key lacks `admin`: it sees only its user.
        await ws.send_json({"type": "subscribe", "subjects": ["circle:secret"]})
        assert (await ws.receive_json())["code"] == "not_found"
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        assert (await ws.receive_json())["subjects"] == [f"user:{admin_id}"]
        await keys.revoke(reader.key.id)
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        assert await ws.wait_closed() == 4401


async def test_an_admin_token_ticket_keeps_admin_rights(multi):
    _, token = await new_user(multi, is_admin=True)
    ticket = await ticket_for(multi, bearer(token))
    async with ASGIWebSocket(multi, "/ws", query=f"ticket={ticket}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": ["circle:any"]})
        assert (await ws.receive_json())["type"] == "subscribed"


async def test_a_project_subject_takes_the_keys_projects_read_scope(app_for, tmp_path):
    """A project's events carry its file names and activity: a key needs `projects:read`."""
    application = app_for(auth="required", secret_key=KEY, projects_root=tmp_path / "projects")
    user_id, token = await new_user(application)
    async with client_for(application) as client:
        made = await client.post("/projects", headers=bearer(token), json={"name": "quay"})
    assert made.status_code == 201, made.text
    subject = f"project:{made.json()['id']}"
    keys = ApiKeyStore(await application.state.security.db())
    events_only = await keys.create(user_id, "events", ["events:read"])
    with_projects = await keys.create(user_id, "both", ["events:read", "projects:read"])
    answers = []
    for key in (events_only, with_projects):
        ticket = await ticket_for(application, {"X-API-Key": key.secret})
        async with ASGIWebSocket(application, "/ws", query=f"ticket={ticket}") as ws:
            await ws.send_json({"type": "subscribe", "subjects": [subject]})
            answers.append(await ws.receive_json())
    assert answers[0]["type"] == "error" and "projects:read" in answers[0]["message"], answers
    assert answers[1]["type"] == "subscribed", answers

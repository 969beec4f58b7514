"""Roles: `admin`, `member`, `viewer` (read-only). The migration that brings them, and the one
dependency (the security gate) that keeps a viewer to safe methods on every route, present and
future, with its self-service exceptions: login, refresh, logout, its own password, WebSocket
subscriptions."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from asgi_ws import ASGIWebSocket  # tests/_support, on the path via conftest
from fastapi import APIRouter

from gathering.auth.principal import ALL_SCOPES, Principal, effective_role
from gathering.auth.users import UserStore
from gathering.db import discover_migrations
from gathering.errors import InvalidInputError

KEY = "r" * 64
PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(app_for):
    application = app_for(auth="required", secret_key=KEY)
    router = APIRouter(prefix="/late")

    @router.post("/things")
    async def make_thing() -> dict[str, bool]:
        return {"made": True}

    application.include_router(router)
    return application


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        yield ac


async def login(app, client, role: str) -> tuple[int, str, dict]:
    """A new user with `role`, logged in: (id, email, tokens)."""
    email = f"r-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return user.id, email, response.json()


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


UNSAFE_REQUESTS = [
    ("POST", "/agents", {"name": "Nope"}),
    ("PATCH", "/agents/1", {"name": "Renamed"}),
    ("DELETE", "/agents/1", None),
    ("POST", "/agents/1/chat", {"message": "hello"}),  # a chat turn
    ("POST", "/agents/1/chat/stream", {"message": "hello"}),
    ("POST", "/auth/api-keys", {"name": "k", "scopes": ["agents:read"]}),
    ("DELETE", "/auth/api-keys/1", None),
    ("PUT", "/users/1/role", {"role": "admin"}),
    ("POST", "/users", {"email": "x@example.com", "password": PASSWORD}),
    ("DELETE", "/memories/1", None),
    ("POST", "/late/things", None),  # a route added after the app was built
]


async def test_a_viewer_cannot_change_anything(app, client):
    viewer_id, _, tokens = await login(app, client, "viewer")
    for method, path, body in UNSAFE_REQUESTS:
        response = await client.request(method, path, json=body, headers=bearer(tokens))
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["detail"] == "a viewer has read-only access"
    db = await app.state.gathering.database()
    denials = await db.fetch_all(
        "SELECT details FROM auth.audit_log WHERE event = 'permission.denied' AND actor_id = $1",
        viewer_id,
    )
    assert len(denials) == len(UNSAFE_REQUESTS)
    assert {d["details"]["reason"] for d in denials} == {"read-only role"}
    assert await db.fetch_val("SELECT count(*) FROM agent.agents") == 0


async def test_a_member_passes_the_gate_where_a_viewer_does_not(app, client):
    _, _, tokens = await login(app, client, "member")
    made = await client.post("/late/things", headers=bearer(tokens))
    assert made.status_code == 200
    chat = await client.post("/agents/1/chat", json={"message": "hi"}, headers=bearer(tokens))
    assert chat.status_code == 404  # reached the route: there is no agent 1


async def test_a_viewer_reads(app, client):
    _, email, tokens = await login(app, client, "viewer")
    for path in ["/agents", "/auth/me", "/auth/api-keys", "/memories/knowledge"]:
        response = await client.get(path, headers=bearer(tokens))
        assert response.status_code == 200, (path, response.text)
    assert (await client.head("/agents", headers=bearer(tokens))).status_code != 403
    me = (await client.get("/auth/me", headers=bearer(tokens))).json()
    assert me["email"] == email and me["role"] == "viewer" and me["is_admin"] is False


async def test_a_viewer_may_search_knowledge_but_not_recall(app, client):
    _, _, tokens = await login(app, client, "viewer")
    search = await client.post(
        "/memories/knowledge/search", json={"query": "anything"}, headers=bearer(tokens)
    )
    assert search.status_code == 200, search.text
    document = await client.post(
        "/memories/knowledge",
        json={"title": "t", "content": "c", "scope": "global"},
        headers=bearer(tokens),
    )
    assert document.status_code == 403  # a write stays refused
    recall = await client.post(
        "/memories/agents/1/recall", json={"query": "anything"}, headers=bearer(tokens)
    )
    assert recall.status_code == 403  # a recall counts each memory's use: a write


async def test_a_viewer_keeps_its_self_service(app, client):
    _, email, tokens = await login(app, client, "viewer")
    refreshed = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    tokens = refreshed.json()
    changed = await client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a viewer's new passphrase"},
        headers=bearer(tokens),
    )
    assert changed.status_code == 200, changed.text
    ticket = await client.post("/auth/ws-ticket", headers=bearer(tokens))
    assert ticket.status_code == 201, ticket.text
    assert (await client.post("/auth/logout", headers=bearer(tokens))).status_code == 204
    assert (await client.get("/auth/me", headers=bearer(tokens))).status_code == 401
    again = await client.post(
        "/auth/login", json={"email": email, "password": "a viewer's new passphrase"}
    )
    assert again.status_code == 200


async def test_a_viewer_subscribes_over_websocket(app, client):
    viewer_id, _, tokens = await login(app, client, "viewer")
    async with ASGIWebSocket(app, "/ws", query=f"access_token={tokens['access_token']}") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        subscribed = await ws.receive_json()
        assert subscribed["type"] == "subscribed"
        assert subscribed["subjects"] == [f"user:{viewer_id}"]


async def test_a_viewers_api_key_is_read_only_whatever_its_scopes(app, client):
    viewer_id, _, viewer_tokens = await login(app, client, "viewer")
    db = await app.state.gathering.database()
    # A key made while the user was a member, with every scope.
    await db.execute("UPDATE auth.users SET role = 'member' WHERE id = $1", viewer_id)
    created = await client.post(
        "/auth/api-keys", json={"name": "k", "scopes": ["*"]}, headers=bearer(viewer_tokens)
    )
    assert created.status_code == 201
    await db.execute("UPDATE auth.users SET role = 'viewer' WHERE id = $1", viewer_id)
    key = {"X-API-Key": created.json()["key"]}
    assert (await client.get("/agents", headers=key)).status_code == 200
    assert (await client.post("/late/things", headers=key)).status_code == 403
    assert (await client.post("/agents", json={"name": "x"}, headers=key)).status_code == 403


async def test_an_admins_key_without_the_admin_scope_acts_as_a_member(app, client):
    _, _, tokens = await login(app, client, "admin")
    created = await client.post(
        "/auth/api-keys", json={"name": "k", "scopes": ["*:read"]}, headers=bearer(tokens)
    )
    key = {"X-API-Key": created.json()["key"]}
    assert (await client.get("/auth/me", headers=key)).json()["is_admin"] is False
    assert (await client.get("/users", headers=key)).status_code == 403


def test_the_principal_role_follows_is_admin():
    assert Principal(1, "a@x", True, "token").role == "admin"
    assert Principal(1, "a@x", False, "token", role="viewer").read_only
    assert Principal(1, "a@x", False, "token", role="admin").role == "member"
    assert not Principal(1, "a@x", False, "token").read_only
    assert effective_role("admin", ALL_SCOPES) == "admin"
    assert effective_role("admin", frozenset({"agents:*"})) == "member"
    assert effective_role("admin", frozenset({"admin"})) == "admin"
    assert effective_role("viewer", ALL_SCOPES) == "viewer"


async def test_a_user_store_role_and_is_admin_cannot_disagree(db):
    store = UserStore(db)
    with pytest.raises(InvalidInputError):
        await store.create("both@example.com", PASSWORD, role="viewer", is_admin=True)
    made = await store.create(f"a-{secrets.token_hex(3)}@example.com", PASSWORD, is_admin=True)
    assert made.role == "admin" and made.is_admin


# --- the migration --------------------------------------------------------------------------


async def test_the_migration_maps_is_admin_to_roles_and_checks_them(fresh_database_url):
    """Apply every migration before 0009, store accounts the old way, then apply 0009."""
    roles_migration = next(m for m in discover_migrations() if m.version == 9)
    async with await psycopg.AsyncConnection.connect(fresh_database_url, autocommit=True) as conn:
        for migration in discover_migrations():
            if migration.version < roles_migration.version:
                await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO auth.users (email, is_admin) VALUES"
            " ('boss@example.com', true), ('staff@example.com', false)"
        )
        await conn.execute(roles_migration.sql)
        cur = await conn.execute("SELECT email, role, is_admin FROM auth.users ORDER BY id")
        assert await cur.fetchall() == [
            ("local-owner@gathering.invalid", "admin", True),
            ("boss@example.com", "admin", True),
            ("staff@example.com", "member", False),
        ]
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(
                "UPDATE auth.users SET role = 'owner' WHERE email = 'staff@example.com'"
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("UPDATE auth.users SET role = 'member' WHERE is_local_owner")
        with pytest.raises(psycopg.errors.GeneratedAlways):
            await conn.execute(
                "UPDATE auth.users SET is_admin = true WHERE email = 'staff@example.com'"
            )
        await conn.execute("UPDATE auth.users SET role = 'viewer' WHERE email = 'boss@example.com'")
        cur = await conn.execute("SELECT is_admin FROM auth.users WHERE email = 'boss@example.com'")
        assert await cur.fetchone() == (False,)

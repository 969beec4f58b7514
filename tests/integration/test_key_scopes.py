"""Key management with an API key needs `keys:read` / `keys:write` (a token login needs
nothing more); a revoked key stops at once, on every instance; key changes are audited in the
transaction that makes them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from gathering.auth.users import UserStore

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(app_for):
    return app_for(auth="required", secret_key=KEY)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        yield ac


async def login_headers(app, client, role: str = "member") -> dict[str, str]:
    email = f"k-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def new_key(client, headers, scopes: list[str]) -> dict:
    created = await client.post(
        "/auth/api-keys", json={"name": "k", "scopes": scopes}, headers=headers
    )
    assert created.status_code == 201, created.text
    return created.json()


def with_key(key: dict) -> dict[str, str]:
    return {"X-API-Key": key["key"]}


async def test_a_key_without_key_scopes_can_neither_list_nor_revoke_keys(app, client):
    owner = await login_headers(app, client)
    everything = await new_key(client, owner, ["*"])
    reader = await new_key(client, owner, ["agents:read"])

    listed = await client.get("/auth/api-keys", headers=with_key(reader))
    assert listed.status_code == 403
    assert "keys:read" in listed.json()["detail"]
    revoke = await client.delete(f"/auth/api-keys/{everything['id']}", headers=with_key(reader))
    assert revoke.status_code == 403
    assert "keys:write" in revoke.json()["detail"]
    # The `*` key still works.
    assert (await client.get("/auth/me", headers=with_key(everything))).status_code == 200

    db = await app.state.gathering.database()
    denials = await db.fetch_all(
        "SELECT details FROM auth.audit_log WHERE event = 'permission.denied' ORDER BY id"
    )
    assert [d["details"]["scope"] for d in denials] == ["keys:read", "keys:write"]


async def test_keys_read_lists_and_keys_write_revokes(app, client):
    owner = await login_headers(app, client)
    victim = await new_key(client, owner, ["agents:read"])
    reader = await new_key(client, owner, ["keys:read"])
    writer = await new_key(client, owner, ["keys:write"])

    listed = await client.get("/auth/api-keys", headers=with_key(reader))
    assert listed.status_code == 200
    assert {k["id"] for k in listed.json()} == {victim["id"], reader["id"], writer["id"]}
    assert (
        await client.delete(f"/auth/api-keys/{victim['id']}", headers=with_key(reader))
    ).status_code == 403
    assert (await client.get("/auth/api-keys", headers=with_key(writer))).status_code == 403

    revoked = await client.delete(f"/auth/api-keys/{victim['id']}", headers=with_key(writer))
    assert revoked.status_code == 204
    # Creating keys with a key stays refused, whatever its scopes.
    created = await client.post(
        "/auth/api-keys", json={"name": "k", "scopes": ["agents:read"]}, headers=with_key(writer)
    )
    assert created.status_code == 403


@pytest.mark.parametrize("scopes", [["*"], ["keys:*"], ["*:read", "*:write"]])
async def test_wildcards_cover_the_key_scopes(app, client, scopes):
    owner = await login_headers(app, client)
    victim = await new_key(client, owner, ["agents:read"])
    key = await new_key(client, owner, scopes)
    assert (await client.get("/auth/api-keys", headers=with_key(key))).status_code == 200
    assert (
        await client.delete(f"/auth/api-keys/{victim['id']}", headers=with_key(key))
    ).status_code == 204


async def test_a_token_login_manages_keys_without_scopes(app, client):
    owner = await login_headers(app, client)
    key = await new_key(client, owner, ["agents:read"])
    assert (await client.get("/auth/api-keys", headers=owner)).status_code == 200
    assert (await client.delete(f"/auth/api-keys/{key['id']}", headers=owner)).status_code == 204


async def test_a_revoked_key_fails_at_once_here_and_on_another_instance(app, app_for, client):
    other_instance = app_for(auth="required", secret_key=KEY)
    owner = await login_headers(app, client)
    key = await new_key(client, owner, ["*"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other_instance), base_url="http://test"
    ) as other:
        assert (await other.get("/auth/me", headers=with_key(key))).status_code == 200
        assert (
            await client.delete(f"/auth/api-keys/{key['id']}", headers=owner)
        ).status_code == 204
        assert (await client.get("/auth/me", headers=with_key(key))).status_code == 401
        assert (await other.get("/auth/me", headers=with_key(key))).status_code == 401


async def test_a_failed_audit_write_leaves_the_key_unrevoked_and_uncreated(app, client):
    owner = await login_headers(app, client)
    key = await new_key(client, owner, ["*"])
    db = await app.state.gathering.database()
    await db.execute(
        "ALTER TABLE auth.audit_log ADD CONSTRAINT no_key_events CHECK (event NOT LIKE 'api_key.%') NOT VALID"
    )
    revoke = await client.delete(f"/auth/api-keys/{key['id']}", headers=owner)
    assert revoke.status_code == 503 and revoke.json()["code"] == "audit_write_failed"
    row = await db.fetch_one("SELECT revoked_at FROM auth.api_keys WHERE id = $1", key["id"])
    assert row["revoked_at"] is None
    assert (await client.get("/auth/me", headers=with_key(key))).status_code == 200

    created = await client.post(
        "/auth/api-keys", json={"name": "ghost", "scopes": ["*"]}, headers=owner
    )
    assert created.status_code == 503
    assert await db.fetch_val("SELECT count(*) FROM auth.api_keys WHERE name = 'ghost'") == 0


async def test_an_admin_key_needs_the_key_scopes_on_the_users_routes_too(app, client):
    boss = await login_headers(app, client, "admin")
    boss_id = (await client.get("/auth/me", headers=boss)).json()["id"]
    other = await new_key(client, boss, ["agents:read"])
    admin_only = with_key(await new_key(client, boss, ["admin"]))
    listed = await client.get(f"/users/{boss_id}/api-keys", headers=admin_only)
    revoked = await client.delete(f"/users/{boss_id}/api-keys/{other['id']}", headers=admin_only)
    assert listed.status_code == revoked.status_code == 403
    both = with_key(await new_key(client, boss, ["admin", "keys:read", "keys:write"]))
    assert (await client.get(f"/users/{boss_id}/api-keys", headers=both)).status_code == 200
    gone = await client.delete(f"/users/{boss_id}/api-keys/{other['id']}", headers=both)
    assert gone.status_code == 204

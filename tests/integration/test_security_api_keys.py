"""Service API keys, scopes, admin-only routes and ownership (someone else's is a 404)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Depends, Request

from gathering.api.app import create_app
from gathering.api.security import (
    Principal,
    current_principal,
    ensure_owner,
    not_found,
    optional_principal,
    public_route,
    require_admin,
    require_scope,
)
from gathering.auth.users import UserStore
from gathering.config import load_settings

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def app(migrated_database_url):
    application = create_app(
        settings=load_settings(database_url=migrated_database_url, auth="required", secret_key=KEY)
    )
    application.include_router(_probe_router())
    yield application
    await application.state.gathering.close()


def _probe_router() -> APIRouter:
    """Routes as later routers write them: scoped, admin-only, and owned resources."""
    router = APIRouter(prefix="/probe")

    @router.get("/write")
    async def write(principal: Principal = Depends(require_scope("agents:write"))) -> dict:
        return {"user": principal.user_id}

    @router.get("/admin")
    async def admin(principal: Principal = Depends(require_admin)) -> dict:
        return {"admin": principal.email}

    @router.get("/things/{owner_id}")
    async def thing(
        owner_id: int, request: Request, principal: Principal = Depends(current_principal)
    ) -> dict:
        if owner_id == 0:
            raise not_found("thing", owner_id)  # a thing that does not exist
        await ensure_owner(request, principal, owner_id, resource="thing", resource_id=owner_id)
        return {"owner": owner_id}

    @router.get("/maybe", dependencies=[Depends(public_route)])
    async def maybe(principal: Principal | None = Depends(optional_principal)) -> dict:
        return {"user": principal.user_id if principal else None}

    @router.get("/visible")
    async def visible(principal: Principal = Depends(current_principal)) -> dict:
        return {"owner_filter": principal.owner_filter}

    return router


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        yield ac


async def account(app, client, *, is_admin: bool = False) -> tuple[int, dict[str, str]]:
    """A new user, logged in: (id, auth headers)."""
    email = f"u-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(
        email, PASSWORD, is_admin=is_admin
    )
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    return user.id, {"Authorization": f"Bearer {response.json()['access_token']}"}


async def new_key(client, headers, scopes: list[str], **extra) -> dict:
    response = await client.post(
        "/auth/api-keys", json={"name": "ci", "scopes": scopes, **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_an_api_key_authenticates_as_its_owner_with_its_scopes(app, client):
    user_id, headers = await account(app, client)
    created = await new_key(client, headers, ["agents:read", "agents:write"])
    assert created["key"].startswith(f"gth_{created['prefix']}_")
    me = await client.get("/auth/me", headers={"X-API-Key": created["key"]})
    assert me.status_code == 200
    assert me.json() == {
        "id": user_id,
        "email": me.json()["email"],
        "is_admin": False,
        "role": "member",
        "auth_method": "api_key",
        "scopes": ["agents:read", "agents:write"],
    }


async def test_the_key_is_stored_hashed(app, client):
    _, headers = await account(app, client)
    created = await new_key(client, headers, ["*"])
    db = await app.state.gathering.database()
    row = await db.fetch_one("SELECT * FROM auth.api_keys WHERE id = $1", created["id"])
    secret = created["key"].split("_", 2)[2]
    assert secret not in str(row.values())
    assert len(row["secret_hash"]) == 64


async def test_scopes_are_enforced_and_denials_audited(app, client):
    user_id, headers = await account(app, client)
    reader = await new_key(client, headers, ["agents:read"])
    writer = await new_key(client, headers, ["agents:*"])
    denied = await client.get("/probe/write", headers={"X-API-Key": reader["key"]})
    assert denied.status_code == 403
    assert denied.json()["code"] == "permission_denied"
    assert (
        await client.get("/probe/write", headers={"X-API-Key": writer["key"]})
    ).status_code == 200
    assert (await client.get("/probe/write", headers=headers)).status_code == 200  # a user token
    db = await app.state.gathering.database()
    row = await db.fetch_one(
        "SELECT details FROM auth.audit_log WHERE event = 'permission.denied' AND actor_id = $1",
        user_id,
    )
    assert row["details"]["scope"] == "agents:write"


async def test_a_revoked_or_expired_or_wrong_key_is_401(app, client):
    _, headers = await account(app, client)
    created = await new_key(client, headers, ["*"])
    tampered = created["key"][:-2] + ("AA" if not created["key"].endswith("AA") else "BB")
    assert (await client.get("/auth/me", headers={"X-API-Key": tampered})).status_code == 401
    assert (
        await client.delete(f"/auth/api-keys/{created['id']}", headers=headers)
    ).status_code == 204
    assert (await client.get("/auth/me", headers={"X-API-Key": created["key"]})).status_code == 401
    expiring = await new_key(client, headers, ["*"], expires_in_days=1)
    db = await app.state.gathering.database()
    await db.execute(
        "UPDATE auth.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
        expiring["id"],
    )
    assert (await client.get("/auth/me", headers={"X-API-Key": expiring["key"]})).status_code == 401


async def test_a_disabled_owner_disables_their_keys(app, client):
    user_id, headers = await account(app, client)
    created = await new_key(client, headers, ["*"])
    await UserStore(await app.state.gathering.database()).set_active(user_id, False)
    assert (await client.get("/auth/me", headers={"X-API-Key": created["key"]})).status_code == 401


async def test_keys_cannot_mint_keys_and_only_admins_grant_admin(app, client):
    _, headers = await account(app, client)
    created = await new_key(client, headers, ["*"])
    minted = await client.post(
        "/auth/api-keys", json={"name": "x", "scopes": ["*"]}, headers={"X-API-Key": created["key"]}
    )
    assert minted.status_code == 403
    escalation = await client.post(
        "/auth/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=headers
    )
    assert escalation.status_code == 403


async def test_malformed_scopes_and_names_are_422(app, client):
    _, headers = await account(app, client)
    for body in (
        {"name": "x", "scopes": ["DROP TABLE"]},
        {"name": "x", "scopes": []},
        {"name": "bad\x00name", "scopes": ["*"]},
        {"name": "", "scopes": ["*"]},
    ):
        assert (await client.post("/auth/api-keys", json=body, headers=headers)).status_code == 422


async def test_an_admin_key_acts_as_admin_only_with_the_admin_scope(app, client):
    _, admin_headers = await account(app, client, is_admin=True)
    plain = await new_key(client, admin_headers, ["agents:read"])
    elevated = await new_key(client, admin_headers, ["admin"])
    assert (
        await client.get("/probe/admin", headers={"X-API-Key": plain["key"]})
    ).status_code == 403
    assert (
        await client.get("/probe/admin", headers={"X-API-Key": elevated["key"]})
    ).status_code == 200
    assert (await client.get("/probe/admin", headers=admin_headers)).status_code == 200


async def test_users_see_their_own_keys_admins_see_all(app, client):
    _, alice = await account(app, client)
    _, bob = await account(app, client)
    _, admin = await account(app, client, is_admin=True)
    alice_key = await new_key(client, alice, ["*"])
    bob_key = await new_key(client, bob, ["*"])
    alice_ids = {k["id"] for k in (await client.get("/auth/api-keys", headers=alice)).json()}
    admin_ids = {k["id"] for k in (await client.get("/auth/api-keys", headers=admin)).json()}
    assert alice_ids == {alice_key["id"]}
    assert {alice_key["id"], bob_key["id"]} <= admin_ids
    assert all("key" not in k for k in (await client.get("/auth/api-keys", headers=admin)).json())


async def test_someone_elses_key_is_a_404_identical_to_a_missing_one(app, client):
    _, alice = await account(app, client)
    _, bob = await account(app, client)
    bob_key = await new_key(client, bob, ["*"])
    theirs = await client.delete(f"/auth/api-keys/{bob_key['id']}", headers=alice)
    missing = await client.delete("/auth/api-keys/987654321", headers=alice)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"] == f"API key {bob_key['id']} not found"
    assert missing.json()["detail"] == "API key 987654321 not found"
    assert (await client.get("/auth/me", headers={"X-API-Key": bob_key["key"]})).status_code == 200


async def test_ownership_helper_hides_other_users_resources_from_non_admins(app, client):
    alice_id, alice = await account(app, client)
    bob_id, _ = await account(app, client)
    _, admin = await account(app, client, is_admin=True)
    assert (await client.get(f"/probe/things/{alice_id}", headers=alice)).status_code == 200
    foreign = await client.get(f"/probe/things/{bob_id}", headers=alice)
    absent = await client.get("/probe/things/0", headers=alice)
    assert foreign.status_code == absent.status_code == 404
    assert foreign.json()["code"] == absent.json()["code"] == "not_found"
    assert (await client.get(f"/probe/things/{bob_id}", headers=admin)).status_code == 200
    assert (await client.get("/probe/visible", headers=alice)).json() == {"owner_filter": alice_id}
    assert (await client.get("/probe/visible", headers=admin)).json() == {"owner_filter": None}


async def test_admin_only_routes_refuse_users_and_audit_it(app, client):
    user_id, headers = await account(app, client)
    response = await client.get("/probe/admin", headers=headers)
    assert response.status_code == 403
    db = await app.state.gathering.database()
    assert (
        await db.fetch_val(
            "SELECT count(*) FROM auth.audit_log WHERE event = 'permission.denied' AND actor_id = $1",
            user_id,
        )
        == 1
    )


async def test_logout_with_an_api_key_is_refused(app, client):
    _, headers = await account(app, client)
    created = await new_key(client, headers, ["*"])
    response = await client.post("/auth/logout", headers={"X-API-Key": created["key"]})
    assert response.status_code == 403


async def test_api_key_routes_need_multi_user_mode(migrated_database_url):
    application = create_app(settings=load_settings(database_url=migrated_database_url))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://test"
        ) as ac:
            assert (await ac.get("/auth/api-keys")).status_code == 409
    finally:
        await application.state.gathering.close()


async def test_public_routes_can_use_the_caller_when_there_is_one(app, client):
    user_id, headers = await account(app, client)
    assert (await client.get("/probe/maybe", headers=headers)).json() == {"user": user_id}
    assert (await client.get("/probe/maybe")).json() == {"user": None}
    forged = {"Authorization": "Bearer forged"}
    assert (await client.get("/probe/maybe", headers=forged)).json() == {"user": None}


async def test_a_proxys_basic_credentials_do_not_hide_the_api_key(app, client):
    _user_id, headers = await account(app, client)
    created = await new_key(client, headers, ["agents:read"])
    basic = {"Authorization": "Basic cHJveHk6cGFzcw==", "X-API-Key": created["key"]}
    me = await client.get("/auth/me", headers=basic)
    assert me.status_code == 200 and me.json()["auth_method"] == "api_key"
    assert (
        await client.get("/auth/me", headers={"Authorization": "Basic eDp5"})
    ).status_code == 401
    forged = {"Authorization": "Basic eDp5", "X-API-Key": created["key"] + "x"}
    assert (await client.get("/auth/me", headers=forged)).status_code == 401


async def test_someone_elses_key_answers_without_waiting_for_the_audit_write(app, client):
    # Waiting for the denial's audit row made "someone else's" slower than "missing": an
    # existence oracle. With the audit table locked, the 404 must still come; the row follows.
    _, alice = await account(app, client)
    _, bob = await account(app, client)
    bob_key = await new_key(client, bob, ["*"])
    db = await app.state.gathering.database()
    async with db.connection() as conn, conn.transaction():
        await conn.execute("LOCK TABLE auth.audit_log IN EXCLUSIVE MODE")
        theirs = await asyncio.wait_for(
            client.delete(f"/auth/api-keys/{bob_key['id']}", headers=alice), timeout=30
        )
        assert theirs.status_code == 404
    query = (
        "SELECT count(*) FROM auth.audit_log WHERE outcome = 'denied'"
        " AND details->>'resource_id' = $1"
    )
    for _ in range(200):
        if await db.fetch_val(query, str(bob_key["id"])) == 1:
            break
        await asyncio.sleep(0.05)
    assert await db.fetch_val(query, str(bob_key["id"])) == 1

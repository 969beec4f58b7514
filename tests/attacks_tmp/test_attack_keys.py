"""keys:read / keys:write bypassed by an admin-scoped key through /users/{id}/api-keys."""
from __future__ import annotations

import secrets

import httpx

from gathering.auth.users import UserStore

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_admin_scope_key_manages_keys_without_keys_scopes(app_for):
    app = app_for(auth="required", secret_key=KEY)
    email = f"k-{secrets.token_hex(4)}@example.com"
    boss = await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role="admin")
    async with client_for(app) as c:
        tok = (await c.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
        h = {"Authorization": f"Bearer {tok['access_token']}"}
        other = (await c.post("/auth/api-keys", json={"name": "ci", "scopes": ["agents:read"]}, headers=h)).json()
        admin_key = (await c.post("/auth/api-keys", json={"name": "adm", "scopes": ["admin"]}, headers=h)).json()
        kh = {"X-API-Key": admin_key["key"]}
        listed_direct = await c.get("/auth/api-keys", headers=kh)
        revoke_direct = await c.delete(f"/auth/api-keys/{other['id']}", headers=kh)
        listed_users = await c.get(f"/users/{boss.id}/api-keys", headers=kh)
        revoke_users = await c.delete(f"/users/{boss.id}/api-keys/{other['id']}", headers=kh)
    print(listed_direct.status_code, revoke_direct.status_code, listed_users.status_code, revoke_users.status_code)
    assert listed_direct.status_code == 403 and revoke_direct.status_code == 403  # the keys:* rule
    # ...which the /users routes do not apply:
    assert listed_users.status_code == 403 and revoke_users.status_code == 403, (
        listed_users.status_code, revoke_users.status_code)

"""When the rate-limit storage is down, login fails closed (503) by default, so failed logins
cannot be guessed uncounted; the API tiers stay open (security issue 11, item 10)."""

from __future__ import annotations

import httpx
import pytest

from gathering.auth.api_keys import ApiKeyStore
from gathering.auth.users import UserStore

KEY = "k" * 64
PASSWORD = "correct horse battery staple"
# Nothing listens on port 1 of the loopback: every Redis call is refused at once.
DOWN_STORAGE = "redis://127.0.0.1:1/0"


@pytest.fixture
def down_app(app_for):
    """`down_app(**settings)`: a multi-user app whose rate-limit storage is down."""

    def make(**settings):
        return app_for(
            auth="required",
            secret_key=KEY,
            rate_limit_enabled=True,
            rate_limit_storage=DOWN_STORAGE,
            **settings,
        )

    return make


async def _login_and_read(app) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
    """A login with the right password, one with a wrong one, and an authenticated read."""
    await UserStore(await app.state.gathering.database()).create(
        "ada@example.com", PASSWORD, is_admin=False
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        good = await client.post(
            "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        bad = await client.post(
            "/auth/login", json={"email": "ada@example.com", "password": "wrong password!"}
        )
        read = httpx.Response(599)
        if good.status_code == 200:
            token = good.json()["access_token"]
            read = await client.get("/agents", headers={"Authorization": f"Bearer {token}"})
    return good, bad, read


async def test_login_fails_closed_when_the_storage_is_down(down_app):
    good, bad, _ = await _login_and_read(down_app())
    for response in (good, bad):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "10"
        body = response.json()
        assert body["code"] == "login_unavailable"
        assert "failed attempts cannot be counted" in body["detail"]
        assert "GATHERING_RATE_LIMIT_STORAGE" in body["hint"]
        assert "GATHERING_AUTH_THROTTLE_FAIL=open" in body["hint"]
        assert "127.0.0.1:1" not in response.text  # the storage's address stays internal
        assert "access_token" not in body


async def test_fail_open_lets_logins_through_uncounted_and_the_api_stays_open(down_app):
    good, bad, read = await _login_and_read(down_app(auth_throttle_fail="open"))
    assert good.status_code == 200 and good.json()["access_token"]
    assert bad.status_code == 401
    assert read.status_code == 200  # the standard tier lets requests through


async def test_the_api_tiers_stay_open_while_login_is_closed(down_app):
    app = down_app()
    key_owner = await UserStore(await app.state.gathering.database()).create(
        "bot@example.com", PASSWORD, is_admin=False
    )
    issued = await ApiKeyStore(await app.state.gathering.database()).create(
        key_owner.id, "probe", ["*"]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        listed = await client.get("/agents", headers={"X-API-Key": issued.secret})
        health = await client.get("/health")
    assert listed.status_code == 200
    assert health.status_code == 200

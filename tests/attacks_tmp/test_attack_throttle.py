"""Password guessing through POST /users/me/password, which the login throttle does not see."""
from __future__ import annotations

import secrets

import httpx

from gathering.auth.users import UserStore

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_current_password_oracle_is_not_counted_by_the_login_throttle(app_for):
    """With a hijacked access token (but not the password), an attacker guesses the password
    on /users/me/password: failures are 422 'the current password is wrong' and are counted
    only by the generic strict tier (10/minute per user = 150 per 15 minutes), never by the
    per-account login throttle (5 per 15 minutes). The right guess also changes the password
    and ends every other session: an account takeover."""
    app = app_for(auth="required", secret_key=KEY, rate_limit_enabled=True,
                  login_attempts_per_account="3/15 minutes")
    email = f"t-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD)
    async with client_for(app) as c:
        tokens = (await c.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
        stolen = {"Authorization": f"Bearer {tokens['access_token']}"}
        statuses = []
        for i in range(9):
            r = await c.post("/users/me/password", headers=stolen,
                             json={"current_password": f"guess number {i}", "new_password": "attacker's passphrase"})
            statuses.append(r.status_code)
        # the right guess: takeover
        r = await c.post("/users/me/password", headers=stolen,
                         json={"current_password": PASSWORD, "new_password": "attacker's passphrase"})
        statuses.append(r.status_code)
        # the login throttle of the account never counted the 9 failures
        login = await c.post("/auth/login", json={"email": email, "password": "wrong wrong wrong"})
    print(statuses, login.status_code)
    assert statuses[:9] == [422] * 9 and statuses[9] == 200
    # Expected: after 3 failed password checks the account is throttled (429), as at login.
    assert 429 in statuses[:9], f"9 password guesses in a row, none throttled: {statuses}"

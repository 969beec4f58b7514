"""Auth lifecycle: login, token validation, refresh rotation, logout, revocation that survives a
restart, the signing key, constant-time checks and failed-login throttling.

Every app here runs in multi-user mode on one migrated database of this module; a "restart" is
a new app instance on the same database (its in-memory cache is gone, the database is not).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable

import httpx
import jwt
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from gathering.api.app import create_app
from gathering.auth import passwords
from gathering.auth.revocation import RevocationCache, RevocationStore
from gathering.auth.signing_key import key_file, load_signing_key
from gathering.auth.tokens import INVALID_CREDENTIALS, TokenClaims
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.db import Database
from gathering.errors import ConfigurationError

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database_url(test_server_url: str):
    name = f"gathering_test_auth_{secrets.token_hex(4)}"
    with psycopg.connect(test_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(test_server_url, dbname=name)
    with psycopg.connect(test_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
async def make_app(database_url: str) -> AsyncIterator[Callable[..., object]]:
    """Build apps in multi-user mode on the module's database; all closed afterwards."""
    apps = []

    def _make(**overrides: object):
        options = {"database_url": database_url, "auth": "required", "secret_key": KEY}
        application = create_app(settings=load_settings(**{**options, **overrides}))
        apps.append(application)
        return application

    yield _make
    for application in apps:
        await application.state.security.close()
        await application.state.gathering.close()


@pytest.fixture
async def app(make_app):
    return make_app()


def client_for(application, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://test", **kwargs
    )


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as ac:
        yield ac


async def new_user(application, *, is_admin: bool = False, active: bool = True) -> str:
    """A fresh account on `application`'s database; returns its email."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    store = UserStore(await application.state.gathering.database())
    user = await store.create(email, PASSWORD, is_admin=is_admin)
    if not active:
        await store.set_active(user.id, False)
    return email


@pytest.fixture
async def email(app) -> str:
    return await new_user(app)


async def login(ac: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    response = await ac.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def forge(claims: dict, *, key: str = KEY, algorithm: str = "HS256", **changes: object) -> str:
    return jwt.encode({**claims, **changes}, key, algorithm=algorithm)


async def me(ac: httpx.AsyncClient, token: str) -> httpx.Response:
    return await ac.get("/auth/me", headers=bearer(token))


# --- login --------------------------------------------------------------------------------------


async def test_login_returns_access_and_refresh_tokens_with_all_claims(client, email):
    tokens = await login(client, email)
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    for kind in ("access", "refresh"):
        claims = claims_of(tokens[f"{kind}_token"])
        assert {"jti", "sub", "exp", "iat", "type"} <= claims.keys()
        assert claims["type"] == kind
        assert claims["exp"] > claims["iat"]
    access, refresh = claims_of(tokens["access_token"]), claims_of(tokens["refresh_token"])
    assert access["jti"] != refresh["jti"]
    assert access["sub"] == refresh["sub"]
    assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "HS256"


async def test_access_token_authenticates(client, email):
    tokens = await login(client, email)
    response = await me(client, tokens["access_token"])
    assert response.status_code == 200
    assert response.json()["email"] == email
    assert response.json()["auth_method"] == "token"


async def test_email_is_case_insensitive(client, email):
    await login(client, email.upper())


async def test_wrong_password_unknown_user_and_disabled_user_answer_alike(client, app, email):
    disabled = await new_user(app, active=False)
    answers = [
        await client.post("/auth/login", json={"email": e, "password": p})
        for e, p in (
            (email, "wrong password!!"),
            ("nobody@example.com", PASSWORD),
            (disabled, PASSWORD),
        )
    ]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert len({a.content for a in answers}) == 1
    assert answers[0].json()["detail"] == "invalid email or password"
    assert all(a.headers["www-authenticate"].startswith("Bearer") for a in answers)


async def test_control_characters_in_a_login_are_a_plain_failure_and_audited(client, app):
    email = "evil\x00'--@example.com"
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 401
    db = await app.state.gathering.database()
    subject = await db.fetch_val(
        "SELECT subject FROM auth.audit_log WHERE event = 'auth.login' ORDER BY id DESC LIMIT 1"
    )
    assert subject == "evil\ufffd'--@example.com"


async def test_the_local_owner_cannot_log_in(client):
    response = await client.post(
        "/auth/login", json={"email": "local-owner@gathering.invalid", "password": PASSWORD}
    )
    assert response.status_code == 401


async def test_login_without_credentials_is_refused_with_422(client):
    assert (await client.post("/auth/login", json={})).status_code == 422


# --- token validation: every bad token is the same 401 --------------------------------------


async def test_no_credentials_is_401_with_www_authenticate(client):
    response = await client.get("/auth/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/problem+json")


def _none_alg(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


class Issued:
    """A login's tokens, and the access token's claims, for forging variants."""

    def __init__(self, tokens: dict) -> None:
        self.access, self.refresh = tokens["access_token"], tokens["refresh_token"]
        self.claims = claims_of(self.access)

    def without(self, claim: str) -> dict:
        return {k: v for k, v in self.claims.items() if k != claim}


NOW = int(time.time())
BAD_TOKENS: dict[str, Callable[[Issued], str]] = {
    "alg-none": lambda t: _none_alg(t.claims),
    "alg-none-capitalised": lambda t: _none_alg(t.claims).replace("bm9uZ", "Tm9uZ", 1),
    "algorithm-swap-hs512": lambda t: forge(t.claims, algorithm="HS512"),
    "algorithm-swap-hs384": lambda t: forge(t.claims, algorithm="HS384"),
    "wrong-signature": lambda t: forge(t.claims, key="x" * 48),
    "tampered-subject": lambda t: forge(t.claims, key="x" * 48, sub="1"),
    "refresh-as-access": lambda t: t.refresh,
    "wrong-type-claim": lambda t: forge(t.claims, type="refresh"),
    "unknown-type": lambda t: forge(t.claims, type="admin"),
    "expired": lambda t: forge(t.claims, iat=NOW - 7200, nbf=NOW - 7200, exp=NOW - 3600),
    "not-yet-valid-nbf": lambda t: forge(t.claims, nbf=int(time.time()) + 3600),
    "issued-in-the-future": lambda t: forge(t.claims, iat=int(time.time()) + 3600),
    "missing-jti": lambda t: forge(t.without("jti")),
    "missing-sub": lambda t: forge(t.without("sub")),
    "missing-exp": lambda t: forge(t.without("exp")),
    "missing-iat": lambda t: forge(t.without("iat")),
    "missing-type": lambda t: forge(t.without("type")),
    "wrong-issuer": lambda t: forge(t.claims, iss="someone-else"),
    "non-numeric-subject": lambda t: forge(t.claims, sub="admin"),
    "unknown-user": lambda t: forge(t.claims, sub="999999999"),
    "local-owner": lambda t: forge(t.claims, sub="1"),
    "garbage": lambda t: "not.a.jwt",
    "empty": lambda t: "",
    "truncated": lambda t: t.access[:-5],
}


@pytest.fixture
async def reference_401(client) -> bytes:
    response = await client.get("/auth/me", headers=bearer("x.y.z"))
    assert response.status_code == 401
    return response.content


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_invalid_tokens_are_401_with_byte_identical_bodies(
    client, email, reference_401, case
):
    token = BAD_TOKENS[case](Issued(await login(client, email)))
    response = await me(client, token)
    assert response.status_code == 401
    assert response.content == reference_401
    assert response.json()["detail"] == INVALID_CREDENTIALS
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_non_bearer_scheme_is_the_same_401(client, reference_401):
    response = await client.get("/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401 and response.content == reference_401


async def test_disabling_a_user_invalidates_their_live_token(client, app, email):
    tokens = await login(client, email)
    store = UserStore(await app.state.gathering.database())
    user = await store.find_by_email(email)
    await store.set_active(user.id, False)
    assert (await me(client, tokens["access_token"])).status_code == 401


# --- refresh rotation and reuse detection -----------------------------------------------------


async def refresh(ac: httpx.AsyncClient, token: str) -> httpx.Response:
    return await ac.post("/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_to_a_new_pair_in_the_same_session(client, email):
    first = await login(client, email)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert claims_of(second["refresh_token"])["fam"] == claims_of(first["refresh_token"])["fam"]
    assert (await me(client, second["access_token"])).status_code == 200


async def test_a_refresh_token_works_once(client, email):
    tokens = await login(client, email)
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200
    again = await refresh(client, tokens["refresh_token"])
    assert again.status_code == 401
    assert again.json()["detail"] == INVALID_CREDENTIALS


async def test_reuse_of_a_spent_refresh_token_revokes_the_whole_family(client, email):
    first = await login(client, email)
    second = (await refresh(client, first["refresh_token"])).json()
    assert (await refresh(client, first["refresh_token"])).status_code == 401  # reuse
    assert (await refresh(client, second["refresh_token"])).status_code == 401
    assert (await me(client, second["access_token"])).status_code == 401
    assert (await me(client, first["access_token"])).status_code == 401


async def test_reuse_does_not_touch_other_sessions(client, email):
    victim_session = await login(client, email)
    other_session = await login(client, email)
    await refresh(client, victim_session["refresh_token"])
    await refresh(client, victim_session["refresh_token"])
    assert (await me(client, other_session["access_token"])).status_code == 200
    assert (await refresh(client, other_session["refresh_token"])).status_code == 200


async def test_reuse_is_audited(client, app, email):
    tokens = await login(client, email)
    await refresh(client, tokens["refresh_token"])
    await refresh(client, tokens["refresh_token"])
    db = await app.state.gathering.database()
    row = await db.fetch_one(
        "SELECT outcome, target_id FROM auth.audit_log WHERE event = 'auth.refresh_reuse'"
        " AND target_id = $1",
        claims_of(tokens["refresh_token"])["fam"],
    )
    assert row is not None and row["outcome"] == "denied"


async def test_concurrent_refreshes_with_one_token_let_at_most_one_through(client, email):
    tokens = await login(client, email)
    results = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(3)))
    assert sorted(r.status_code for r in results) == [200, 401, 401]
    # the winner's new token died with the family when the others reused the spent one
    winner = next(r for r in results if r.status_code == 200).json()
    assert (await refresh(client, winner["refresh_token"])).status_code == 401


async def test_an_access_token_is_not_a_refresh_token(client, email):
    tokens = await login(client, email)
    assert (await refresh(client, tokens["access_token"])).status_code == 401


async def test_refresh_for_a_disabled_user_fails(client, app, email):
    tokens = await login(client, email)
    store = UserStore(await app.state.gathering.database())
    await store.set_active((await store.find_by_email(email)).id, False)
    assert (await refresh(client, tokens["refresh_token"])).status_code == 401


async def test_refresh_with_a_forged_or_unknown_token_fails(client, email):
    tokens = await login(client, email)
    claims = claims_of(tokens["refresh_token"])
    assert (await refresh(client, forge(claims, jti="never-issued"))).status_code == 401
    assert (await refresh(client, forge(claims, key="z" * 48))).status_code == 401


# --- logout and revocation --------------------------------------------------------------------


async def test_logout_revokes_the_access_token_and_its_session(client, email):
    tokens = await login(client, email)
    response = await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert (await me(client, tokens["access_token"])).status_code == 401
    assert (await refresh(client, tokens["refresh_token"])).status_code == 401


async def test_logout_leaves_other_sessions_alone(client, email):
    one, two = await login(client, email), await login(client, email)
    await client.post("/auth/logout", headers=bearer(one["access_token"]))
    assert (await me(client, two["access_token"])).status_code == 200


async def test_logout_needs_a_token(client):
    assert (await client.post("/auth/logout")).status_code == 401


async def test_revocation_is_persisted_in_postgres(client, app, email):
    tokens = await login(client, email)
    await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    db = await app.state.gathering.database()
    jti = claims_of(tokens["access_token"])["jti"]
    row = await db.fetch_one(
        "SELECT token_type, reason FROM auth.revoked_tokens WHERE jti = $1", jti
    )
    assert row == {"token_type": "access", "reason": "logout"}


async def test_revoked_token_is_still_rejected_after_a_restart(make_app, email):
    first = make_app()
    async with client_for(first) as ac:
        tokens = await login(ac, email)
        assert (
            await ac.post("/auth/logout", headers=bearer(tokens["access_token"]))
        ).status_code == 204
    await first.state.gathering.close()

    restarted = make_app()
    assert len(restarted.state.security.revocation_cache) == 0
    async with client_for(restarted) as ac:
        assert (await me(ac, tokens["access_token"])).status_code == 401
        assert (await refresh(ac, tokens["refresh_token"])).status_code == 401


async def test_reuse_revocation_survives_a_restart(make_app, email):
    first = make_app()
    async with client_for(first) as ac:
        tokens = await login(ac, email)
        rotated = (await refresh(ac, tokens["refresh_token"])).json()
        await refresh(ac, tokens["refresh_token"])  # reuse: family revoked
    await first.state.gathering.close()
    async with client_for(make_app()) as ac:
        assert (await me(ac, rotated["access_token"])).status_code == 401
        assert (await refresh(ac, rotated["refresh_token"])).status_code == 401


async def test_live_tokens_stay_valid_across_a_restart(make_app, email):
    first = make_app()
    async with client_for(first) as ac:
        tokens = await login(ac, email)
    await first.state.gathering.close()
    async with client_for(make_app()) as ac:
        assert (await me(ac, tokens["access_token"])).status_code == 200
        assert (await refresh(ac, tokens["refresh_token"])).status_code == 200


async def test_a_revocation_on_one_instance_is_seen_by_another_at_once(make_app, email):
    one, two = make_app(), make_app()
    async with client_for(one) as a, client_for(two) as b:
        tokens = await login(a, email)
        assert (await me(b, tokens["access_token"])).status_code == 200
        await a.post("/auth/logout", headers=bearer(tokens["access_token"]))
        assert (await me(b, tokens["access_token"])).status_code == 401


async def test_revocation_is_checked_in_the_database_when_the_cache_forgot_it(make_app, email):
    application = make_app(revocation_cache_size=1)
    async with client_for(application) as ac:
        first, second = await login(ac, email), await login(ac, email)
        await ac.post("/auth/logout", headers=bearer(first["access_token"]))
        await ac.post("/auth/logout", headers=bearer(second["access_token"]))
        assert len(application.state.security.revocation_cache) == 1
        assert (await me(ac, first["access_token"])).status_code == 401
        assert (await me(ac, second["access_token"])).status_code == 401


def test_revocation_cache_is_bounded_and_least_recently_used_goes_first():
    cache = RevocationCache(max_entries=2)
    later = time.time() + 60
    cache.add("a", later)
    cache.add("b", later)
    assert cache.contains("a")  # a is now the most recently used
    cache.add("c", later)
    assert len(cache) == 2
    assert cache.contains("a") and cache.contains("c") and not cache.contains("b")


def test_revocation_cache_forgets_expired_entries():
    cache = RevocationCache(max_entries=10)
    cache.add("already-expired", time.time() - 1)
    assert not cache.contains("already-expired")
    cache.add("soon", time.time() + 60)
    cache._entries["soon"] = time.time() - 1  # as if its minute had passed
    cache.add("live", time.time() + 60)
    assert cache.purge_expired() == 1
    assert not cache.contains("soon") and cache.contains("live")


async def test_purge_deletes_expired_revocations_and_sessions_only(app, email):
    db = await app.state.gathering.database()
    user = await UserStore(db).find_by_email(email)
    store = RevocationStore(db, RevocationCache(10))
    now = int(time.time())
    expired = TokenClaims("expired-jti", user.id, "access", "fam-x", now - 100, now - 10)
    live = TokenClaims("live-jti", user.id, "access", "fam-x", now, now + 600)
    await store.revoke_token(expired, "test")
    await store.revoke_token(live, "test")
    await db.execute(
        "INSERT INTO auth.token_families (id, user_id, expires_at) VALUES ('old-fam', $1, now() - interval '1 day')",
        user.id,
    )
    result = await store.purge_expired()
    assert result.revoked_tokens >= 1 and result.families >= 1
    remaining = {r["jti"] for r in await db.fetch_all("SELECT jti FROM auth.revoked_tokens")}
    assert "live-jti" in remaining and "expired-jti" not in remaining
    assert await db.fetch_val("SELECT count(*) FROM auth.token_families WHERE id = 'old-fam'") == 0


async def test_lifespan_start_loads_the_key_and_purges(make_app, email):
    application = make_app()

    def lifespan() -> None:  # TestClient runs the app in a loop of its own, and waits for it
        from starlette.testclient import TestClient

        with TestClient(application) as tc:
            assert application.state.security._tokens is not None
            assert tc.get("/health").status_code == 200

    await asyncio.to_thread(lifespan)


# --- the signing key ----------------------------------------------------------------------------


def test_single_user_mode_generates_a_private_key_once_and_reuses_it(tmp_path):
    settings = load_settings(data_dir=tmp_path, auth="single-user", secret_key=None)
    first = load_signing_key(settings)
    assert len(first) >= 32
    assert stat.S_IMODE(key_file(settings).stat().st_mode) == 0o600
    assert load_signing_key(settings) == first


def test_a_key_file_readable_by_others_is_restricted(tmp_path):
    settings = load_settings(data_dir=tmp_path, auth="single-user", secret_key=None)
    load_signing_key(settings)
    key_file(settings).chmod(0o644)
    load_signing_key(settings)
    assert stat.S_IMODE(key_file(settings).stat().st_mode) == 0o600


def test_a_truncated_key_file_is_refused(tmp_path):
    settings = load_settings(data_dir=tmp_path, auth="single-user", secret_key=None)
    key_file(settings).write_bytes(b"short")
    with pytest.raises(ConfigurationError, match="shorter than 32 bytes"):
        load_signing_key(settings)


def test_required_mode_with_an_external_database_needs_a_secret_key(database_url):
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        load_settings(auth="required", database_url=database_url, secret_key=None)


def test_a_short_secret_key_is_refused_without_echoing_it():
    with pytest.raises(ConfigurationError) as info:
        load_settings(secret_key="tooshort-but-secret")
    assert "32 bytes" in info.value.message
    assert "tooshort-but-secret" not in info.value.message


def test_the_conventional_secret_key_variable_is_read(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s" * 64)
    assert load_settings().secret_key.get_secret_value() == "s" * 64


def test_the_refresh_token_must_outlive_the_access_token():
    with pytest.raises(ConfigurationError, match="ACCESS_TOKEN_TTL"):
        load_settings(access_token_ttl=600, refresh_token_ttl=300)


async def test_tokens_signed_with_a_generated_key_survive_a_restart(tmp_path, database_url):
    options = {"data_dir": tmp_path, "database_url": database_url, "auth": "single-user"}
    first = create_app(settings=load_settings(**options, secret_key=None))
    second = create_app(settings=load_settings(**options, secret_key=None))
    try:
        issued = (await first.state.security.tokens()).issue(1, "access", "fam")
        claims = (await second.state.security.tokens()).decode(issued.token, "access")
        assert claims.jti == issued.claims.jti
    finally:
        for application in (first, second):
            await application.state.gathering.close()


# --- constant-time checks -----------------------------------------------------------------------


class _CountingHasher:
    def __init__(self, real) -> None:
        self.real, self.verified = real, []

    def verify(self, stored, password):
        self.verified.append(stored)
        return self.real.verify(stored, password)

    def __getattr__(self, name):
        return getattr(self.real, name)


async def test_unknown_accounts_cost_one_password_verification_like_known_ones(
    client, email, monkeypatch
):
    counting = _CountingHasher(passwords._hasher)
    monkeypatch.setattr(passwords, "_hasher", counting)
    await client.post("/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    await client.post("/auth/login", json={"email": email, "password": "wrong password!!"})
    assert len(counting.verified) == 2
    assert counting.verified[0] == passwords._dummy_hash()
    assert counting.verified[1] != passwords._dummy_hash()


async def test_passwords_longer_than_the_cap_never_match_but_still_cost_a_verification():
    stored = await passwords.hash_password("p" * passwords.MAX_PASSWORD_LENGTH)
    assert await passwords.verify_password(stored, "p" * passwords.MAX_PASSWORD_LENGTH)
    assert not await passwords.verify_password(stored, "p" * (passwords.MAX_PASSWORD_LENGTH + 1))
    assert not await passwords.verify_password("not-a-hash", "whatever")


async def test_password_policy_is_enforced_when_hashing():
    from gathering.errors import InvalidInputError

    for bad in ("short", "x" * (passwords.MAX_PASSWORD_LENGTH + 1), "twelve chars\x00!"):
        with pytest.raises(InvalidInputError):
            await passwords.hash_password(bad)
    assert passwords.needs_rehash("garbage")


async def test_api_keys_are_compared_with_compare_digest(client, email, monkeypatch):
    import hmac

    from gathering.auth import api_keys

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(api_keys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    for presented in ("gth_0123456789ab_secret", "garbage", "gth_nothex_x"):
        response = await client.get("/auth/me", headers={"X-API-Key": presented})
        assert response.status_code == 401
    assert len(calls) == 3  # malformed and unknown keys are compared all the same


# --- throttling of failed logins ----------------------------------------------------------------


async def test_failed_logins_throttle_the_account_even_for_the_right_password(make_app):
    application = make_app(login_attempts_per_account="3/15 minutes")
    victim, bystander = await new_user(application), await new_user(application)
    async with client_for(application) as ac:
        for _ in range(3):
            r = await ac.post("/auth/login", json={"email": victim, "password": "wrong password!!"})
            assert r.status_code == 401
        throttled = await ac.post("/auth/login", json={"email": victim, "password": PASSWORD})
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert throttled.json()["code"] == "rate_limited"
        await login(ac, bystander)
    db = await application.state.gathering.database()
    assert (
        await db.fetch_val(
            "SELECT count(*) FROM auth.audit_log WHERE event = 'auth.login_throttled' AND subject = $1",
            victim,
        )
        == 1
    )


async def test_concurrent_wrong_passwords_cannot_slip_past_the_account_limit(make_app):
    application = make_app(login_attempts_per_account="5/15 minutes")
    victim = await new_user(application)
    async with client_for(application) as ac:
        answers = await asyncio.gather(
            *(
                ac.post("/auth/login", json={"email": victim, "password": f"wrong guess {i}!!"})
                for i in range(20)
            )
        )
    codes = [r.status_code for r in answers]
    assert codes.count(401) <= 5 and codes.count(429) >= 15


async def test_failed_logins_throttle_the_client_address_across_accounts(make_app):
    application = make_app(login_attempts_per_ip="4/15 minutes")
    async with client_for(application) as ac:
        for i in range(4):
            r = await ac.post(
                "/auth/login", json={"email": f"guess{i}@example.com", "password": "x" * 12}
            )
            assert r.status_code == 401
        blocked = await ac.post(
            "/auth/login", json={"email": "another@example.com", "password": "x" * 12}
        )
        assert blocked.status_code == 429
    other_address = httpx.ASGITransport(app=application, client=("10.9.8.7", 1234))
    async with httpx.AsyncClient(transport=other_address, base_url="http://test") as other:
        email = await new_user(application)
        await login(other, email)


async def test_a_successful_login_clears_the_account_counter(make_app):
    application = make_app(login_attempts_per_account="3/15 minutes")
    email = await new_user(application)
    async with client_for(application) as ac:
        for _ in range(2):
            await ac.post("/auth/login", json={"email": email, "password": "wrong password!!"})
        await login(ac, email)
        for _ in range(2):
            await ac.post("/auth/login", json={"email": email, "password": "wrong password!!"})
        await login(ac, email)


# --- audit of the lifecycle ---------------------------------------------------------------------


async def test_login_logout_and_refresh_are_audited_with_origin(client, app, email):
    headers = {"User-Agent": "audit-test/1.0", "X-Request-ID": "req-" + secrets.token_hex(4)}
    await client.post(
        "/auth/login", json={"email": email, "password": "wrong password!!"}, headers=headers
    )
    tokens = (
        await client.post(
            "/auth/login", json={"email": email, "password": PASSWORD}, headers=headers
        )
    ).json()
    await client.post(
        "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=headers
    )
    await client.post("/auth/logout", headers={**headers, **bearer(tokens["access_token"])})
    db = await app.state.gathering.database()
    rows = await db.fetch_all(
        "SELECT event, outcome, ip, user_agent, request_id FROM auth.audit_log"
        " WHERE request_id = $1 ORDER BY id",
        headers["X-Request-ID"],
    )
    assert [(r["event"], r["outcome"]) for r in rows] == [
        ("auth.login", "failure"),
        ("auth.login", "success"),
        ("auth.refresh", "success"),
        ("auth.logout", "success"),
    ]
    assert all(r["ip"] == "127.0.0.1" and r["user_agent"] == "audit-test/1.0" for r in rows)


# --- first administrator -----------------------------------------------------------------------


async def test_first_admin_is_created_once_even_by_concurrent_starts(fresh_database_url):
    async with Database(url=fresh_database_url) as db:
        await db.run_migrations()
        stores = [UserStore(db) for _ in range(3)]
        results = await asyncio.gather(
            *(s.ensure_first_admin("root@example.com", None) for s in stores)
        )
        created = [r for r in results if r is not None]
        assert len(created) == 1
        assert created[0].user.is_admin and created[0].generated_password
        hashed = (await stores[0].find_by_email("root@example.com")).password_hash
        assert await passwords.verify_password(hashed, created[0].generated_password)
        assert await stores[0].ensure_first_admin("other@example.com", PASSWORD) is None


async def test_the_local_owner_is_recreated_if_it_was_deleted(fresh_database_url):
    async with Database(url=fresh_database_url) as db:
        await db.run_migrations()
        await db.execute("DELETE FROM auth.users WHERE is_local_owner")
        owner = await UserStore(db).local_owner()
        assert owner.is_local_owner and owner.is_admin and not owner.can_log_in


# --- single-user mode ---------------------------------------------------------------------------


async def test_single_user_mode_acts_as_the_local_owner_and_ignores_credentials(make_app):
    application = make_app(auth="single-user")
    async with client_for(application) as ac:
        plain = await ac.get("/auth/me")
        with_junk = await ac.get("/auth/me", headers=bearer("junk"))
    assert plain.status_code == with_junk.status_code == 200
    assert plain.json()["auth_method"] == "local" and plain.json()["is_admin"] is True
    assert plain.json() == with_junk.json()


async def test_single_user_mode_has_no_login(make_app):
    async with client_for(make_app(auth="single-user")) as ac:
        response = await ac.post(
            "/auth/login", json={"email": "a@example.com", "password": PASSWORD}
        )
    assert response.status_code == 409
    assert "GATHERING_AUTH=required" in response.json()["hint"]


def test_environment_of_the_suite_is_single_user():
    assert os.environ["GATHERING_AUTH"] == "single-user"

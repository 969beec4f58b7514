"""User administration over HTTP (`/users`) and from the CLI: create, list, disable and enable,
reset passwords, roles, a user's sessions and keys; a user's own password; the last admin; and
every change audited in the transaction that makes it (a failed audit write undoes it)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from typer.testing import CliRunner

from gathering.auth import admin as cli_admin
from gathering.auth.audit import AuditWriteError
from gathering.auth.passwords import verify_password
from gathering.auth.users import UserStore
from gathering.cli import app as cli_app
from gathering.config import get_settings, load_settings
from gathering.db import Database

KEY = "k" * 64
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def app(app_for):
    return app_for(auth="required", secret_key=KEY)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        yield ac


@pytest.fixture
async def db(app) -> Database:
    return await app.state.gathering.database()


@dataclass
class Account:
    id: int
    email: str
    headers: dict[str, str]
    refresh_token: str


async def login(client, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


async def account(app, client, role: str = "member") -> Account:
    """A new user with `role`, logged in."""
    email = f"u-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await login(client, email)).json()
    return Account(
        user.id,
        email,
        {"Authorization": f"Bearer {tokens['access_token']}"},
        tokens["refresh_token"],
    )


async def api_key(client, owner: Account, scopes: list[str]) -> dict:
    created = await client.post(
        "/auth/api-keys", json={"name": "k", "scopes": scopes}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    return created.json()


async def audit_rows(db: Database, event: str) -> list[dict]:
    return await db.fetch_all("SELECT * FROM auth.audit_log WHERE event = $1 ORDER BY id", event)


async def reject_audit_event(db: Database, event: str) -> None:
    """From now on, writing an audit entry `event` fails (a trigger on this test's database)."""
    await db.execute(
        "CREATE OR REPLACE FUNCTION public.reject_audit() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'audit entry refused by the test'; END $$"
    )
    await db.execute(
        "CREATE TRIGGER reject_audit BEFORE INSERT ON auth.audit_log FOR EACH ROW"
        f" WHEN (NEW.event = '{event}') EXECUTE FUNCTION public.reject_audit()"
    )


# --- administration -------------------------------------------------------------------------


async def test_an_admin_creates_lists_and_reads_users_and_the_creation_is_audited(app, client, db):
    boss = await account(app, client, "admin")
    created = await client.post(
        "/users",
        json={"email": "Grace@Example.com", "password": PASSWORD, "role": "viewer"},
        headers=boss.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == "grace@example.com" and body["role"] == "viewer"
    assert body["is_active"] is True and body["last_login_at"] is None
    assert (await login(client, "grace@example.com")).status_code == 200

    listed = await client.get("/users", headers=boss.headers)
    assert listed.status_code == 200
    assert {u["email"] for u in listed.json()} == {boss.email, "grace@example.com"}
    one = await client.get(f"/users/{body['id']}", headers=boss.headers)
    assert one.json()["email"] == "grace@example.com"
    # An id written as a whole decimal is the same id, as in /agents/{id} (the schema's integer).
    same = await client.get(f"/users/{body['id']}.0", headers=boss.headers)
    assert same.json() == one.json()

    [entry] = await audit_rows(db, "user.created")
    assert entry["actor_id"] == boss.id and entry["target_id"] == str(body["id"])
    assert entry["details"]["role"] == "viewer" and entry["details"]["via"] == "http"


async def test_user_administration_is_for_admins_only(app, client, db):
    member = await account(app, client)
    other = await account(app, client)
    for method, path, body in [
        ("GET", "/users", None),
        ("POST", "/users", {"email": "x@example.com", "password": PASSWORD}),
        ("GET", f"/users/{other.id}", None),
        ("POST", f"/users/{other.id}/disable", None),
        ("POST", f"/users/{other.id}/enable", None),
        ("PUT", f"/users/{member.id}/role", {"role": "admin"}),
        ("POST", f"/users/{other.id}/password", {"password": NEW_PASSWORD}),
        ("GET", f"/users/{other.id}/sessions", None),
        ("DELETE", f"/users/{other.id}/sessions/abc", None),
        ("GET", f"/users/{other.id}/api-keys", None),
        ("DELETE", f"/users/{other.id}/api-keys/1", None),
    ]:
        response = await client.request(method, path, json=body, headers=member.headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/users")).status_code == 401
    assert len(await audit_rows(db, "permission.denied")) == 11
    assert (await db.fetch_one("SELECT role FROM auth.users WHERE id = $1", member.id))[
        "role"
    ] == "member"


async def test_an_admin_api_key_needs_the_admin_scope(app, client):
    boss = await account(app, client, "admin")
    plain = await api_key(client, boss, ["*:read"])
    admin_key = await api_key(client, boss, ["admin"])
    assert (await client.get("/users", headers={"X-API-Key": plain["key"]})).status_code == 403
    assert (await client.get("/users", headers={"X-API-Key": admin_key["key"]})).status_code == 200


async def test_requests_are_validated(app, client):
    boss = await account(app, client, "admin")
    for body in [
        {"email": "a@example.com", "password": PASSWORD, "is_admin": True},  # unknown field
        {"email": "a@example.com", "password": "short"},
        {"email": "a@example.com", "password": PASSWORD, "role": "owner"},
        {"email": "not an email", "password": PASSWORD},
    ]:
        response = await client.post("/users", json=body, headers=boss.headers)
        assert response.status_code == 422, body
    duplicate = await client.post(
        "/users", json={"email": boss.email, "password": PASSWORD}, headers=boss.headers
    )
    assert duplicate.status_code == 409
    assert (await client.get("/users/0", headers=boss.headers)).status_code == 422
    assert (await client.get("/users/999999", headers=boss.headers)).status_code == 404


async def test_single_user_mode_has_no_user_administration(app_for):
    single = app_for()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=single), base_url="http://test"
    ) as ac:
        response = await ac.get("/users")
    assert response.status_code == 409


async def test_the_local_owner_is_neither_listed_nor_administrable(app, client, db):
    boss = await account(app, client, "admin")
    owner = await UserStore(db).local_owner()
    assert owner.id not in {
        u["id"] for u in (await client.get("/users", headers=boss.headers)).json()
    }
    for method, path, body in [
        ("GET", f"/users/{owner.id}", None),
        ("POST", f"/users/{owner.id}/disable", None),
        ("PUT", f"/users/{owner.id}/role", {"role": "viewer"}),
        ("POST", f"/users/{owner.id}/password", {"password": NEW_PASSWORD}),
        ("GET", f"/users/{owner.id}/sessions", None),
    ]:
        response = await client.request(method, path, json=body, headers=boss.headers)
        assert response.status_code == 404, (method, path)
    again = await UserStore(db).local_owner()
    assert again.is_active and again.role == "admin"


# --- disable, enable, reset: revocation -----------------------------------------------------


async def test_disabling_revokes_sessions_and_api_keys_at_once(app, client, db):
    boss = await account(app, client, "admin")
    user = await account(app, client)
    key = await api_key(client, user, ["*"])
    assert (await client.get("/auth/me", headers={"X-API-Key": key["key"]})).status_code == 200

    disabled = await client.post(f"/users/{user.id}/disable", headers=boss.headers)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["user"]["is_active"] is False
    assert disabled.json()["sessions_revoked"] == 1 and disabled.json()["api_keys_revoked"] == 1

    assert (await client.get("/auth/me", headers=user.headers)).status_code == 401
    assert (await client.get("/auth/me", headers={"X-API-Key": key["key"]})).status_code == 401
    refresh = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert refresh.status_code == 401
    assert (await login(client, user.email)).status_code == 401
    row = await db.fetch_one("SELECT revoked_at FROM auth.api_keys WHERE id = $1", key["id"])
    assert row["revoked_at"] is not None
    [entry] = await audit_rows(db, "user.disabled")
    assert entry["details"]["sessions_revoked"] == 1 and entry["details"]["api_keys_revoked"] == 1

    enabled = await client.post(f"/users/{user.id}/enable", headers=boss.headers)
    assert enabled.json()["user"]["is_active"] is True
    assert (await login(client, user.email)).status_code == 200
    # Enabling does not bring back what disabling revoked.
    assert (await client.get("/auth/me", headers={"X-API-Key": key["key"]})).status_code == 401
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 401
    assert len(await audit_rows(db, "user.enabled")) == 1


async def test_a_password_reset_revokes_sessions_and_api_keys(app, client, db):
    boss = await account(app, client, "admin")
    user = await account(app, client)
    key = await api_key(client, user, ["agents:read"])
    reset = await client.post(
        f"/users/{user.id}/password", json={"password": NEW_PASSWORD}, headers=boss.headers
    )
    assert reset.status_code == 200, reset.text
    assert reset.json()["sessions_revoked"] == 1 and reset.json()["api_keys_revoked"] == 1
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 401
    assert (await client.get("/auth/me", headers={"X-API-Key": key["key"]})).status_code == 401
    assert (await login(client, user.email)).status_code == 401
    assert (await login(client, user.email, NEW_PASSWORD)).status_code == 200
    [entry] = await audit_rows(db, "user.password_reset")
    assert entry["actor_id"] == boss.id and entry["target_id"] == str(user.id)
    assert NEW_PASSWORD not in str(entry["details"])


async def test_a_revoked_session_fails_on_another_instance_too(app, app_for, client):
    other_instance = app_for(auth="required", secret_key=KEY)
    boss = await account(app, client, "admin")
    user = await account(app, client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other_instance), base_url="http://test"
    ) as other:
        assert (await other.get("/auth/me", headers=user.headers)).status_code == 200
        await client.post(f"/users/{user.id}/disable", headers=boss.headers)
        await client.post(f"/users/{user.id}/enable", headers=boss.headers)
        # The user is active again, so only the revocation stops the old token there.
        assert (await other.get("/auth/me", headers=user.headers)).status_code == 401


# --- roles and the last admin ---------------------------------------------------------------


async def test_a_role_change_applies_to_the_next_request_of_existing_credentials(app, client, db):
    boss = await account(app, client, "admin")
    user = await account(app, client)
    assert (await client.get("/audit", headers=user.headers)).status_code == 403
    promoted = await client.put(
        f"/users/{user.id}/role", json={"role": "admin"}, headers=boss.headers
    )
    assert promoted.status_code == 200 and promoted.json()["user"]["role"] == "admin"
    assert promoted.json()["sessions_revoked"] == 0
    assert (await client.get("/audit", headers=user.headers)).status_code == 200

    demoted = await client.put(
        f"/users/{user.id}/role", json={"role": "viewer"}, headers=boss.headers
    )
    assert demoted.json()["user"]["role"] == "viewer"
    assert (await client.get("/audit", headers=user.headers)).status_code == 403
    entries = await audit_rows(db, "user.role_changed")
    assert [(e["details"]["old"], e["details"]["new"]) for e in entries] == [
        ("member", "admin"),
        ("admin", "viewer"),
    ]


async def test_the_last_active_admin_can_be_neither_disabled_nor_demoted(app, client, db):
    boss = await account(app, client, "admin")
    # Over HTTP only the last admin can act on it, and disabling oneself is refused anyway.
    response = await client.put(
        f"/users/{boss.id}/role", json={"role": "member"}, headers=boss.headers
    )
    assert response.status_code == 409, response.text
    assert "last active administrator" in response.json()["detail"]
    assert "another user an administrator" in response.json()["hint"]
    assert (await client.post(f"/users/{boss.id}/disable", headers=boss.headers)).status_code == 409
    row = await db.fetch_one("SELECT role, is_active FROM auth.users WHERE id = $1", boss.id)
    assert row == {"role": "admin", "is_active": True}
    assert await audit_rows(db, "user.disabled") == []

    # With a second active admin, the first may step down.
    second = await account(app, client, "admin")
    stepped = await client.put(
        f"/users/{boss.id}/role", json={"role": "member"}, headers=boss.headers
    )
    assert stepped.status_code == 200
    # A disabled admin does not count as the other admin.
    await UserStore(db).create("third@example.com", PASSWORD, role="admin")
    third = await UserStore(db).find_by_email("third@example.com")
    await UserStore(db).set_active(third.id, False)
    refused = await client.post(f"/users/{second.id}/disable", headers=second.headers)
    assert refused.status_code == 409


async def test_two_admins_demoting_each_other_at_once_leave_one(app, client, db):
    first = await account(app, client, "admin")
    second = await account(app, client, "admin")
    answers = await asyncio.gather(
        client.put(f"/users/{second.id}/role", json={"role": "member"}, headers=first.headers),
        client.put(f"/users/{first.id}/role", json={"role": "member"}, headers=second.headers),
    )
    assert sorted(a.status_code for a in answers) in ([200, 403], [200, 409])
    admins = await db.fetch_val(
        "SELECT count(*) FROM auth.users WHERE role = 'admin' AND NOT is_local_owner"
    )
    assert admins == 1


# --- a user's sessions and keys -------------------------------------------------------------


async def test_an_admin_lists_and_revokes_a_users_sessions(app, client, db):
    boss = await account(app, client, "admin")
    user = await account(app, client)
    second_login = (await login(client, user.email)).json()
    second = {"Authorization": f"Bearer {second_login['access_token']}"}
    sessions = await client.get(f"/users/{user.id}/sessions", headers=boss.headers)
    assert sessions.status_code == 200
    assert len(sessions.json()) == 2
    newest = sessions.json()[0]["id"]

    revoked = await client.delete(f"/users/{user.id}/sessions/{newest}", headers=boss.headers)
    assert revoked.status_code == 204
    statuses = {
        (await client.get("/auth/me", headers=user.headers)).status_code,
        (await client.get("/auth/me", headers=second)).status_code,
    }
    assert statuses == {200, 401}
    assert len((await client.get(f"/users/{user.id}/sessions", headers=boss.headers)).json()) == 1
    ended = await client.get(
        f"/users/{user.id}/sessions", params={"ended": True}, headers=boss.headers
    )
    assert {s["revoke_reason"] for s in ended.json()} == {None, "revoked by admin"}
    again = await client.delete(f"/users/{user.id}/sessions/{newest}", headers=boss.headers)
    assert again.status_code == 404
    # A session is revoked through its own user only.
    other = await client.delete(f"/users/{boss.id}/sessions/{newest}", headers=boss.headers)
    assert other.status_code == 404
    [entry] = await audit_rows(db, "session.revoked")
    assert entry["target_id"] == newest and entry["details"]["user_id"] == user.id


async def test_an_admin_lists_and_revokes_a_users_api_keys(app, client, db):
    boss = await account(app, client, "admin")
    user = await account(app, client)
    key = await api_key(client, user, ["agents:read"])
    boss_key = await api_key(client, boss, ["agents:read"])
    listed = await client.get(f"/users/{user.id}/api-keys", headers=boss.headers)
    assert [k["id"] for k in listed.json()] == [key["id"]]
    wrong_user = await client.delete(
        f"/users/{user.id}/api-keys/{boss_key['id']}", headers=boss.headers
    )
    assert wrong_user.status_code == 404
    revoked = await client.delete(f"/users/{user.id}/api-keys/{key['id']}", headers=boss.headers)
    assert revoked.status_code == 204
    assert (await client.get("/auth/me", headers={"X-API-Key": key["key"]})).status_code == 401
    assert (await client.get("/auth/me", headers={"X-API-Key": boss_key["key"]})).status_code == 200
    [entry] = await audit_rows(db, "api_key.revoked")
    assert entry["actor_id"] == boss.id and entry["details"]["user_id"] == user.id


# --- a user's own password ------------------------------------------------------------------


async def test_changing_ones_own_password_ends_the_other_sessions_only(app, client, db):
    user = await account(app, client)
    other_login = (await login(client, user.email)).json()
    other = {"Authorization": f"Bearer {other_login['access_token']}"}
    key = await api_key(client, user, ["agents:read"])

    changed = await client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=user.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"sessions_revoked": 1}
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 200
    assert (await client.get("/auth/me", headers=other)).status_code == 401
    refresh = await client.post(
        "/auth/refresh", json={"refresh_token": other_login["refresh_token"]}
    )
    assert refresh.status_code == 401
    mine = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert mine.status_code == 200
    assert (await client.get("/auth/me", headers={"X-API-Key": key["key"]})).status_code == 200
    assert (await login(client, user.email)).status_code == 401
    assert (await login(client, user.email, NEW_PASSWORD)).status_code == 200
    [entry] = await audit_rows(db, "user.password_changed")
    assert entry["outcome"] == "success" and entry["actor_id"] == user.id


async def test_changing_ones_own_password_needs_the_current_one_and_a_token(app, client, db):
    user = await account(app, client)
    wrong = await client.post(
        "/users/me/password",
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        headers=user.headers,
    )
    assert wrong.status_code == 403
    assert wrong.json()["details"] == {"field": "current_password"}
    weak = await client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=user.headers,
    )
    assert weak.status_code == 422
    key = await api_key(client, user, ["*"])
    by_key = await client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-API-Key": key["key"]},
    )
    assert by_key.status_code == 403
    assert (await login(client, user.email)).status_code == 200
    [failure] = await audit_rows(db, "user.password_changed")
    assert failure["outcome"] == "failure"


# --- audit in the same transaction ------------------------------------------------------------


async def test_a_failed_audit_write_undoes_a_disable(app, client, db):
    boss = await account(app, client, "admin")
    user = await account(app, client)
    key = await api_key(client, user, ["*"])
    await reject_audit_event(db, "user.disabled")

    response = await client.post(f"/users/{user.id}/disable", headers=boss.headers)
    assert response.status_code == 503
    assert response.json()["code"] == "audit_write_failed"
    assert "the change was not made" in response.json()["detail"]
    assert "refused by the test" not in response.text  # the database's words stay in the log
    row = await db.fetch_one("SELECT is_active FROM auth.users WHERE id = $1", user.id)
    assert row["is_active"] is True
    key_row = await db.fetch_one("SELECT revoked_at FROM auth.api_keys WHERE id = $1", key["id"])
    assert key_row["revoked_at"] is None
    # Nothing was revoked, in the database nor in this instance's cache.
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 200
    assert (await client.get("/auth/me", headers={"X-API-Key": key["key"]})).status_code == 200


async def test_a_failed_audit_write_undoes_a_reset_and_a_role_change(app, client, db):
    boss = await account(app, client, "admin")
    user = await account(app, client)
    await reject_audit_event(db, "user.password_reset")
    reset = await client.post(
        f"/users/{user.id}/password", json={"password": NEW_PASSWORD}, headers=boss.headers
    )
    assert reset.status_code == 503
    assert (await login(client, user.email)).status_code == 200
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 200

    await db.execute("DROP TRIGGER reject_audit ON auth.audit_log")
    await db.execute(
        "CREATE TRIGGER reject_audit BEFORE INSERT ON auth.audit_log FOR EACH ROW"
        " WHEN (NEW.event = 'user.role_changed') EXECUTE FUNCTION public.reject_audit()"
    )
    role = await client.put(f"/users/{user.id}/role", json={"role": "admin"}, headers=boss.headers)
    assert role.status_code == 503
    assert (await UserStore(db).get(user.id)).role == "member"
    created = await client.post(
        "/users", json={"email": "new@example.com", "password": PASSWORD}, headers=boss.headers
    )
    assert created.status_code == 201  # other events are written as usual


async def test_a_failed_audit_write_undoes_a_user_creation(app, client, db):
    boss = await account(app, client, "admin")
    await reject_audit_event(db, "user.created")
    created = await client.post(
        "/users", json={"email": "ghost@example.com", "password": PASSWORD}, headers=boss.headers
    )
    assert created.status_code == 503
    assert await UserStore(db).find_by_email("ghost@example.com") is None


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def cli_database(monkeypatch, fresh_database_url):
    monkeypatch.setenv("GATHERING_DATABASE_URL", fresh_database_url)
    get_settings.cache_clear()
    yield fresh_database_url
    get_settings.cache_clear()


def test_the_cli_sets_roles_and_audits_them(cli_database):
    runner = CliRunner()
    created = runner.invoke(
        cli_app,
        ["users", "create", "viv@example.com", "--role", "viewer", "--password", PASSWORD],
    )
    assert created.exit_code == 0, created.output
    assert "created viewer viv@example.com" in created.output
    assert "viewer" in runner.invoke(cli_app, ["users", "list"]).output
    changed = runner.invoke(cli_app, ["users", "role", "viv@example.com", "member"])
    assert changed.exit_code == 0, changed.output
    assert "viv@example.com is now member" in changed.output
    refused = runner.invoke(cli_app, ["users", "role", "viv@example.com", "owner"])
    assert refused.exit_code != 0

    async def check() -> None:
        async with Database(url=cli_database, min_size=0, max_size=1) as db:
            assert (await UserStore(db).find_by_email("viv@example.com")).role == "member"
            [entry] = await audit_rows(db, "user.role_changed")
            assert entry["subject"] == "cli" and entry["actor_id"] is None
            assert entry["details"] == {
                "email": "viv@example.com",
                "via": "cli",
                "old": "viewer",
                "new": "member",
            }

    asyncio.run(check())


async def test_the_cli_operator_may_disable_the_last_admin_and_its_keys_are_revoked(
    fresh_database_url,
):
    settings = load_settings(database_url=fresh_database_url)
    user = await cli_admin.create_user(settings, "op@example.com", PASSWORD, role="admin")
    async with Database(url=fresh_database_url, min_size=0, max_size=2) as db:
        await db.execute(
            "INSERT INTO auth.api_keys (user_id, name, prefix, secret_hash) VALUES ($1, 'k', $2, 'x')",
            user.id,
            secrets.token_hex(6),
        )
    change = await cli_admin.set_user_active(settings, "op@example.com", active=False)
    assert change.user.is_active is False and change.api_keys_revoked == 1
    reset = await cli_admin.reset_password(settings, "op@example.com", NEW_PASSWORD)
    assert reset.user.email == "op@example.com"
    async with Database(url=fresh_database_url, min_size=0, max_size=2) as db:
        stored = await UserStore(db).find_by_email("op@example.com")
        assert await verify_password(stored.password_hash, NEW_PASSWORD)
        events = [r["event"] for r in await db.fetch_all("SELECT event FROM auth.audit_log")]
        assert events == ["user.created", "user.disabled", "user.password_reset"]


async def test_a_failed_audit_write_undoes_a_cli_change(fresh_database_url):
    settings = load_settings(database_url=fresh_database_url)
    await cli_admin.create_user(settings, "cli@example.com", PASSWORD, role="member")
    async with Database(url=fresh_database_url, min_size=0, max_size=2) as db:
        await reject_audit_event(db, "user.disabled")
        with pytest.raises(AuditWriteError):
            await cli_admin.set_user_active(settings, "cli@example.com", active=False)
        assert (await UserStore(db).find_by_email("cli@example.com")).is_active is True


async def test_login_refresh_and_logout_are_undone_when_their_audit_entry_fails(app, client, db):
    ada = await account(app, client)
    families = "SELECT count(*) FROM auth.token_families WHERE user_id = $1"
    before = await db.fetch_val(families, ada.id)

    await reject_audit_event(db, "auth.login")
    refused = await login(client, ada.email)
    assert refused.status_code == 503 and refused.json()["code"] == "audit_write_failed"
    assert await db.fetch_val(families, ada.id) == before  # no session without its entry
    await db.execute("DROP TRIGGER reject_audit ON auth.audit_log")

    await reject_audit_event(db, "auth.refresh")
    refresh = {"refresh_token": ada.refresh_token}
    assert (await client.post("/auth/refresh", json=refresh)).status_code == 503
    await db.execute("DROP TRIGGER reject_audit ON auth.audit_log")
    rotated = await client.post("/auth/refresh", json=refresh)  # it was not spent
    assert rotated.status_code == 200, rotated.text
    assert len(await audit_rows(db, "auth.refresh")) == 1

    headers = {"Authorization": f"Bearer {rotated.json()['access_token']}"}
    await reject_audit_event(db, "auth.logout")
    assert (await client.post("/auth/logout", headers=headers)).status_code == 503
    open_sessions = (
        "SELECT count(*) FROM auth.token_families WHERE user_id = $1 AND revoked_at IS NULL"
    )
    assert await db.fetch_val(open_sessions, ada.id) == before
    await db.execute("DROP TRIGGER reject_audit ON auth.audit_log")
    assert await audit_rows(db, "auth.logout") == []
    # Nor does this instance's cache go on refusing the token that was not logged out.
    assert (await client.get("/auth/me", headers=headers)).status_code == 200


async def test_a_login_checked_before_a_reset_gets_no_session(app, client, monkeypatch):
    # The password is verified against the old hash; the admin's reset commits before the
    # session is created: the login must be refused, never leave a session the reset missed.
    import gathering.api.routers.auth as auth_router

    victim = await account(app, client)
    boss = await account(app, client, "admin")
    real_verify = auth_router.verify_password
    verified, reset_done = asyncio.Event(), asyncio.Event()

    async def verify_then_wait(stored_hash, password):
        ok = await real_verify(stored_hash, password)
        if password == PASSWORD:
            verified.set()
            await reset_done.wait()
        return ok

    monkeypatch.setattr(auth_router, "verify_password", verify_then_wait)
    attempt = asyncio.create_task(login(client, victim.email))
    await asyncio.wait_for(verified.wait(), 30)
    reset = await client.post(
        f"/users/{victim.id}/password", json={"password": NEW_PASSWORD}, headers=boss.headers
    )
    assert reset.status_code == 200, reset.text
    reset_done.set()
    assert (await asyncio.wait_for(attempt, 30)).status_code == 401
    db = await app.state.gathering.database()
    open_sessions = await db.fetch_val(
        "SELECT count(*) FROM auth.token_families WHERE user_id = $1 AND revoked_at IS NULL",
        victim.id,
    )
    assert open_sessions == 0


async def test_racing_logins_never_outlive_a_reset(app, client):
    # Unforced: logins with the old password fired a few ms after each reset (bounded).
    boss = await account(app, client, "admin")
    db = await app.state.gathering.database()
    for attempt in range(8):
        victim = await account(app, client)
        reset = asyncio.create_task(
            client.post(
                f"/users/{victim.id}/password",
                json={"password": NEW_PASSWORD},
                headers=boss.headers,
            )
        )
        await asyncio.sleep(0.002 * (attempt % 4))
        raced = await login(client, victim.email)
        assert (await reset).status_code == 200
        if raced.status_code == 200:
            headers = {"Authorization": f"Bearer {raced.json()['access_token']}"}
            assert (await client.get("/auth/me", headers=headers)).status_code == 401
        open_sessions = await db.fetch_val(
            "SELECT count(*) FROM auth.token_families WHERE user_id = $1 AND revoked_at IS NULL",
            victim.id,
        )
        assert open_sessions == 0


async def test_an_api_key_created_during_a_disable_does_not_survive_it(app, client, monkeypatch):
    from gathering.auth.api_keys import ApiKeyStore

    victim = await account(app, client)
    boss = await account(app, client, "admin")
    real_create = ApiKeyStore.create
    entered, go = asyncio.Event(), asyncio.Event()

    async def create_later(self, *args, **kwargs):
        entered.set()
        await go.wait()
        return await real_create(self, *args, **kwargs)

    monkeypatch.setattr(ApiKeyStore, "create", create_later)
    creating = asyncio.create_task(
        client.post(
            "/auth/api-keys", json={"name": "persist", "scopes": ["*"]}, headers=victim.headers
        )
    )
    await asyncio.wait_for(entered.wait(), 30)
    disabling = asyncio.create_task(
        client.post(f"/users/{victim.id}/disable", headers=boss.headers)
    )
    await asyncio.sleep(0.3)  # the disable waits on the key's transaction
    go.set()
    created = await asyncio.wait_for(creating, 30)
    assert (await asyncio.wait_for(disabling, 30)).status_code == 200
    assert (
        await client.post(f"/users/{victim.id}/enable", headers=boss.headers)
    ).status_code == 200
    if created.status_code == 201:  # it was made first: the disable revoked it
        key = {"X-API-Key": created.json()["key"]}
        assert (await client.get("/auth/me", headers=key)).status_code == 401
    else:
        assert created.status_code in (401, 404), created.text


async def test_current_password_guesses_are_throttled_for_the_user_alone(app_for):
    # A stolen access token must not give unlimited guesses at the password; nor may a
    # stranger's failed logins stop the user changing a password they know (or the reverse).
    app = app_for(
        auth="required",
        secret_key=KEY,
        rate_limit_enabled=True,
        login_attempts_per_account="3/15 minutes",
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        victim = await account(app, client)
        statuses = []
        for guess in range(5):
            response = await client.post(
                "/users/me/password",
                json={"current_password": f"guess {guess}", "new_password": NEW_PASSWORD},
                headers=victim.headers,
            )
            statuses.append(response.status_code)
        assert statuses[:2] == [403, 403] and statuses[-1] == 429, statuses
        assert (await login(client, victim.email)).status_code == 200  # login is not locked

        owner = await account(app, client)
        for _ in range(4):  # a stranger exhausts the owner's login attempts
            await login(client, owner.email, "not the password")
        assert (await login(client, owner.email)).status_code == 429
        changed = await client.post(
            "/users/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=owner.headers,
        )
        assert changed.status_code == 200, changed.text


async def _gate_both(monkeypatch, owner, name: str) -> None:
    """Make `owner.name` wait (at most 1 s) until a second call arrives, to force an overlap."""
    real = getattr(owner, name)
    arrived, both = 0, asyncio.Event()

    async def gated(self, *args, **kwargs):
        nonlocal arrived
        result = await real(self, *args, **kwargs)
        arrived += 1
        if arrived >= 2:
            both.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both.wait(), 1)
        return result

    monkeypatch.setattr(owner, name, gated)


async def test_two_logins_to_one_account_at_once_both_succeed(app, client, monkeypatch):
    ada = await account(app, client)
    await _gate_both(monkeypatch, UserStore, "lock")
    both = await asyncio.wait_for(
        asyncio.gather(login(client, ada.email), login(client, ada.email)), 30
    )
    assert [response.status_code for response in both] == [200, 200]


async def test_two_admins_resetting_each_other_never_deadlock(app, client, monkeypatch):
    from gathering.auth.accounts import AccountAdmin

    first, second = await account(app, client, "admin"), await account(app, client, "admin")
    await _gate_both(monkeypatch, AccountAdmin, "_confirm_actor")
    answers = await asyncio.wait_for(
        asyncio.gather(
            client.post(
                f"/users/{second.id}/password",
                json={"password": NEW_PASSWORD},
                headers=first.headers,
            ),
            client.post(
                f"/users/{first.id}/password",
                json={"password": NEW_PASSWORD + " two"},
                headers=second.headers,
            ),
        ),
        30,
    )
    # One goes first; the other then finds its own session ended by it.
    assert sorted(response.status_code for response in answers) == [200, 401]


async def test_an_admin_cannot_disable_or_reset_their_own_account(app, client):
    boss = await account(app, client, "admin")
    await account(app, client, "admin")  # not the last admin: that is not the reason
    disabled = await client.post(f"/users/{boss.id}/disable", headers=boss.headers)
    reset = await client.post(
        f"/users/{boss.id}/password", json={"password": NEW_PASSWORD}, headers=boss.headers
    )
    assert disabled.status_code == reset.status_code == 409
    assert "/users/me/password" in reset.json()["hint"]
    assert (await client.get("/auth/me", headers=boss.headers)).status_code == 200

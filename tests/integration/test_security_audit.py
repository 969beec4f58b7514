"""`GET /audit`: administrators only, filterable, paged, newest first."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gathering.api.app import create_app
from gathering.auth.audit import AuditLog, RequestOrigin
from gathering.auth.users import UserStore
from gathering.config import load_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def app(migrated_database_url):
    application = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key="k" * 64
        )
    )
    yield application
    await application.state.gathering.close()


@pytest.fixture
async def client(app):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        yield ac


async def login_as(app, client, *, is_admin: bool) -> tuple[int, dict[str, str]]:
    email = f"a-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(
        email, PASSWORD, is_admin=is_admin
    )
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return user.id, {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_audit_is_for_admins_only_and_a_refusal_is_itself_audited(app, client):
    user_id, user = await login_as(app, client, is_admin=False)
    _, admin = await login_as(app, client, is_admin=True)
    assert (await client.get("/audit")).status_code == 401
    assert (await client.get("/audit", headers=user)).status_code == 403
    denied = await client.get(
        "/audit", params={"event": "permission.denied", "actor_id": user_id}, headers=admin
    )
    assert denied.status_code == 200
    [entry] = denied.json()
    assert entry["outcome"] == "denied" and entry["details"]["path"] == "/audit"


async def test_filters_by_event_outcome_subject_and_ip(app, client):
    _, admin = await login_as(app, client, is_admin=True)
    await client.post("/auth/login", json={"email": "ghost@example.com", "password": "x" * 12})
    failures = (
        await client.get(
            "/audit",
            params={"event": "auth.login", "outcome": "failure", "subject": "ghost@example.com"},
            headers=admin,
        )
    ).json()
    assert len(failures) == 1
    assert failures[0]["ip"] == "127.0.0.1" and failures[0]["details"]["reason"] == "unknown user"
    by_ip = (await client.get("/audit", params={"ip": "203.0.113.1"}, headers=admin)).json()
    assert by_ip == []


async def test_newest_first_with_paging_and_time_window(app, client):
    _, admin = await login_as(app, client, is_admin=True)
    audit = AuditLog(await app.state.gathering.database())
    for i in range(5):
        await audit.record("test.event", "success", subject=f"s{i}", origin=RequestOrigin(ip="::1"))
    page = (
        await client.get("/audit", params={"event": "test.event", "limit": 2}, headers=admin)
    ).json()
    assert [e["subject"] for e in page] == ["s4", "s3"]
    rest = (
        await client.get(
            "/audit",
            params={"event": "test.event", "before_id": page[-1]["id"], "limit": 10},
            headers=admin,
        )
    ).json()
    assert [e["subject"] for e in rest] == ["s2", "s1", "s0"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    window = await client.get(
        "/audit", params={"event": "test.event", "since": future}, headers=admin
    )
    assert window.json() == []
    until = await client.get(
        "/audit", params={"event": "test.event", "until": future}, headers=admin
    )
    assert len(until.json()) == 5


async def test_bad_filters_are_422(app, client):
    _, admin = await login_as(app, client, is_admin=True)
    for params in (
        {"limit": 0},
        {"limit": 10_000},
        {"outcome": "maybe"},
        {"since": "yesterday"},
        {"since": "1700000000"},  # seconds are not a date-time
        {"since": "2026-11-30"},  # nor is a date alone
        {"until": "2026-11-30T08:00:00"},  # nor a time without its offset
    ):
        assert (await client.get("/audit", params=params, headers=admin)).status_code == 422

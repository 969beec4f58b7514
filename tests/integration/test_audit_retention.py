"""Audit retention (`GATHERING_AUDIT_RETENTION_DAYS`, pruned by one instance) and the audit
query API's filters by actor, action, resource and time."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gathering.api.security.audit_retention import AuditRetentionComponent
from gathering.auth.audit import AuditLog
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.errors import ConfigurationError

KEY = "a" * 64
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


async def wait_for(condition: Callable[[], bool], attempts: int = 400) -> None:
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("condition not reached")


async def aged_entries(db, event: str, ages_in_days: list[int]) -> None:
    for age in ages_in_days:
        await db.execute(
            "INSERT INTO auth.audit_log (event, outcome, subject, occurred_at)"
            " VALUES ($1, 'success', $2, now() - make_interval(days => $3))",
            event,
            f"{age} days old",
            age,
        )


# --- the setting ------------------------------------------------------------------------------


def test_the_retention_defaults_to_a_year_and_reads_the_environment(monkeypatch):
    assert load_settings().audit_retention_days == 365
    monkeypatch.setenv("GATHERING_AUDIT_RETENTION_DAYS", "30")
    assert load_settings().audit_retention_days == 30
    monkeypatch.setenv("GATHERING_AUDIT_RETENTION_DAYS", "0")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert "GATHERING_AUDIT_RETENTION_DAYS" in str(refused.value)


# --- pruning --------------------------------------------------------------------------------


async def test_entries_older_than_the_retention_are_pruned_and_the_pruning_noted(app):
    db = await app.state.gathering.database()
    await aged_entries(db, "test.aged", [400, 366, 364, 1, 0])
    audit = AuditLog(db)
    assert await audit.apply_retention(365) == 2
    kept = await db.fetch_all(
        "SELECT subject FROM auth.audit_log WHERE event = 'test.aged' ORDER BY id"
    )
    assert [row["subject"] for row in kept] == ["364 days old", "1 days old", "0 days old"]
    [noted] = await db.fetch_all("SELECT * FROM auth.audit_log WHERE event = 'audit.pruned'")
    assert noted["details"] == {"deleted": 2, "retention_days": 365}
    assert await audit.apply_retention(365) == 0
    assert (
        await db.fetch_val("SELECT count(*) FROM auth.audit_log WHERE event = 'audit.pruned'") == 1
    )


async def test_pruning_goes_in_batches(app):
    db = await app.state.gathering.database()
    await aged_entries(db, "test.aged", [500] * 7 + [2])
    assert await AuditLog(db).prune(timedelta(days=365), batch_size=3) == 7
    assert await db.fetch_val("SELECT count(*) FROM auth.audit_log WHERE event = 'test.aged'") == 1


async def test_one_instance_prunes_as_a_singleton_duty(app_for):
    first = app_for(auth="required", secret_key=KEY, audit_retention_days=30)
    second = app_for(auth="required", secret_key=KEY, audit_retention_days=30)
    db = await first.state.gathering.database()
    await aged_entries(db, "test.aged", [31, 45, 29])
    duties = [
        AuditRetentionComponent(first.state.security, interval=0.05),
        AuditRetentionComponent(second.state.security, interval=0.05),
    ]
    for duty in duties:
        await duty.start()
    try:
        await wait_for(lambda: any(d.duty is not None and d.duty.runs >= 2 for d in duties))
        details = sorted([(await d.health()).detail for d in duties])
        assert details == ["leader", "standby"]
        assert [(await d.health()).ok for d in duties] == [True, True]
    finally:
        for duty in duties:
            await duty.stop()
    remaining = await db.fetch_all("SELECT subject FROM auth.audit_log WHERE event = 'test.aged'")
    assert [row["subject"] for row in remaining] == ["29 days old"]
    assert (
        await db.fetch_val("SELECT count(*) FROM auth.audit_log WHERE event = 'audit.pruned'") == 1
    )


async def test_the_app_runs_the_retention_duty_as_a_lifecycle_component(app_for):
    application = app_for(audit_retention_days=1)  # single-user: readiness shows details
    db = await application.state.gathering.database()
    await aged_entries(db, "test.aged", [3])
    [component] = [
        c for c in application.state.gathering.lifecycle.components if c.name == "audit_retention"
    ]
    assert isinstance(component, AuditRetentionComponent)
    async with application.router.lifespan_context(application):
        await wait_for(lambda: component.duty is not None and component.duty.runs >= 1)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://test"
        ) as ac:
            ready = await ac.get("/health/ready")
        assert ready.json()["checks"]["audit_retention"] == {"ok": True, "detail": "leader"}
        db = await application.state.gathering.database()
        assert (
            await db.fetch_val("SELECT count(*) FROM auth.audit_log WHERE event = 'test.aged'") == 0
        )


# --- the query API ----------------------------------------------------------------------------


async def login_as(app, client, role: str) -> tuple[int, dict[str, str]]:
    email = f"q-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return user.id, {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_admins_filter_by_actor_action_resource_and_time(app, client):
    boss_id, boss = await login_as(app, client, "admin")
    member_id, _ = await login_as(app, client, "member")
    await client.post(f"/users/{member_id}/disable", headers=boss)
    await client.post(f"/users/{member_id}/enable", headers=boss)
    await client.put(f"/users/{member_id}/role", json={"role": "viewer"}, headers=boss)

    async def query(**params: object) -> list[dict]:
        response = await client.get("/audit", params=params, headers=boss)
        assert response.status_code == 200, response.text
        return response.json()

    on_member = await query(target_type="user", target_id=str(member_id))
    assert [e["event"] for e in on_member] == ["user.role_changed", "user.enabled", "user.disabled"]
    family = await query(event="user.*", actor_id=boss_id)
    assert [e["event"] for e in family] == ["user.role_changed", "user.enabled", "user.disabled"]
    assert await query(event="user.*", actor_id=member_id) == []
    assert [e["event"] for e in await query(event="user.enabled")] == ["user.enabled"]
    # `_` and `%` in a family are literal, not wildcards.
    assert await query(event="user_*") == []
    assert await query(event="u%.*") == []
    now = datetime.now(UTC)
    assert len(await query(target_type="user", since=(now - timedelta(minutes=5)).isoformat())) == 3
    assert await query(target_type="user", until=(now - timedelta(minutes=5)).isoformat()) == []
    logins = await query(event="auth.login", outcome="success")
    assert {e["actor_id"] for e in logins} == {boss_id, member_id}


async def test_the_audit_query_stays_admin_only_and_validated(app, client):
    _, viewer = await login_as(app, client, "viewer")
    _, member = await login_as(app, client, "member")
    assert (
        await client.get("/audit", params={"event": "user.*"}, headers=viewer)
    ).status_code == 403
    assert (
        await client.get("/audit", params={"target_type": "user"}, headers=member)
    ).status_code == 403
    _, boss = await login_as(app, client, "admin")
    too_long = await client.get("/audit", params={"target_type": "x" * 51}, headers=boss)
    assert too_long.status_code == 422

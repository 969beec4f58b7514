"""Advisory locks: one holder across connections, transaction scope, fail-closed duties."""

from __future__ import annotations

import asyncio

import pytest

from gathering.config import load_settings
from gathering.db import Database
from gathering.db.locks import LockKey, SingletonDuty, advisory_key, session_lock, transaction_lock
from gathering.errors import LockUnavailableError

FAST_FAIL = load_settings(db_connect_timeout=1)


async def _wait_for(condition, limit: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), limit)


def test_keys_are_stable_and_namespaced():
    assert advisory_key("scheduler") == advisory_key("scheduler")
    assert LockKey("schedule", "1").value != LockKey("pipeline", "1").value
    assert LockKey("schedule", "1").value != LockKey("schedule", "2").value
    assert -(2**63) <= LockKey("x").value < 2**63
    assert str(LockKey("schedule", "7")) == "schedule:7"


async def test_only_one_connection_holds_a_session_lock(db):
    other = Database(url=db.url)
    async with other:
        key = LockKey("test", "exclusive")
        async with session_lock(db, key) as first:
            assert first is not None
            async with session_lock(other, key) as second:
                assert second is None
        async with session_lock(other, key) as after_release:
            assert after_release is not None


async def test_waiting_session_lock_gets_it_after_release(db):
    other = Database(url=db.url)
    async with other:
        key = LockKey("test", "wait")
        order: list[str] = []
        async with session_lock(db, key):

            async def waiter() -> None:
                async with session_lock(other, key, wait=True):
                    order.append("second")

            task = asyncio.create_task(waiter())
            await asyncio.sleep(0.3)
            order.append("first releases")
        await asyncio.wait_for(task, 10)
        assert order == ["first releases", "second"]


async def test_transaction_lock_is_released_at_commit(db):
    other = Database(url=db.url)
    async with other:
        key = LockKey("test", "xact")
        async with db.transaction() as tx:
            assert await transaction_lock(tx, key)
            async with other.transaction() as tx2:
                assert not await transaction_lock(tx2, key)
        async with other.transaction() as tx2:
            assert await transaction_lock(tx2, key, wait=True)


async def test_singleton_duty_runs_on_one_instance_only(db):
    other = Database(url=db.url)
    async with other:
        key = LockKey("test", "duty")
        runs = {"a": 0, "b": 0}

        async def work_a() -> None:
            runs["a"] += 1

        async def work_b() -> None:
            runs["b"] += 1

        first = SingletonDuty(db, key, work_a, interval=0.05)
        second = SingletonDuty(other, key, work_b, interval=0.05)
        await first.start()
        await _wait_for(lambda: first.holding)
        await second.start()
        await _wait_for(lambda: runs["a"] >= 5)
        assert runs["b"] == 0 and second.health() == (True, "standby")
        assert first.health() == (True, "leader")
        await first.stop()  # the leader leaves: the standby takes over
        await _wait_for(lambda: runs["b"] >= 2)
        await second.stop()


async def test_a_failing_run_is_counted_reported_and_retried_not_fatal(db):
    from gathering.observability import DUTY_FAILURES

    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise RuntimeError(f"boom {attempts}\nsecond line")

    counted = DUTY_FAILURES.labels(duty="flaky")._value.get()
    duty = SingletonDuty(db, LockKey("flaky"), flaky, interval=0.01, retry_max=0.05)
    await duty.start()
    try:
        await _wait_for(lambda: duty.failures == 3)
        ok, detail = duty.health()
        assert ok and "3 run(s) failed in a row: RuntimeError: boom 3" in detail
        assert "second line" not in detail
        await _wait_for(lambda: duty.runs >= 2)  # it came back and runs again
        assert duty.health() == (True, "leader") and duty.last_failure is None
        assert DUTY_FAILURES.labels(duty="flaky")._value.get() - counted == 3
    finally:
        await duty.stop()


async def test_locks_fail_closed_when_the_database_stops(private_postgres):
    database = Database(url=private_postgres.url, settings=FAST_FAIL, min_size=0, max_size=2)
    await database.connect()
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1

    duty = SingletonDuty(
        database, LockKey("test", "fail-closed"), work, interval=0.05, retry_max=0.2
    )
    try:
        await duty.start()
        await _wait_for(lambda: duty.holding and runs > 0)
        private_postgres.stop()
        await _wait_for(lambda: duty.problem is not None)
        ok, reason = duty.health()
        assert not ok and "cannot check advisory lock test:fail-closed" in reason
        stopped_at = runs
        await asyncio.sleep(0.5)
        assert runs == stopped_at  # nothing ran while the lock could not be checked
        with pytest.raises(LockUnavailableError):
            async with session_lock(database, LockKey("test", "other")):
                pass
        private_postgres.start()
        await _wait_for(lambda: duty.problem is None and runs > stopped_at, limit=20)
    finally:
        await duty.stop()
        await database.disconnect()


async def test_readiness_says_why_a_duty_is_stopped(private_postgres):
    import httpx

    from gathering.api.app import create_app
    from gathering.api.lifecycle import DutyComponent

    settings = load_settings(database_url=private_postgres.url, db_connect_timeout=1)
    app = create_app(settings=settings)
    state = app.state.gathering
    database = await state.database()

    async def work() -> None:
        return None

    duty = DutyComponent(
        "scheduler",
        SingletonDuty(database, LockKey("test", "ready"), work, interval=0.05, retry_max=0.2),
    )
    state.lifecycle.add(duty)
    await state.lifecycle.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await _wait_for(lambda: duty.duty.holding)
            ready = await client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"]["scheduler"] == {"ok": True, "detail": "leader"}
            private_postgres.stop()
            await _wait_for(lambda: duty.duty.problem is not None)
            not_ready = await client.get("/health/ready")
        assert not_ready.status_code == 503
        assert "scheduler: cannot check advisory lock test:ready" in not_ready.json()["reason"]
    finally:
        await state.lifecycle.stop()

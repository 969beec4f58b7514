"""Async database concurrency: handlers do not serialize on SQL; the pool survives restarts."""

from __future__ import annotations

import asyncio

import httpx

from gathering.api.app import create_app
from gathering.config import load_settings
from gathering.db import Database
from gathering.errors import DatabaseUnavailableError

CONCURRENT = 6

FAST_FAIL = load_settings(db_connect_timeout=1)


async def _max_concurrent_sleepers(db: Database, until: asyncio.Task) -> int:
    """Watch pg_stat_activity: the largest number of pg_sleep queries running at once."""
    seen = 0
    while not until.done():
        running = await db.fetch_val(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'active' AND query LIKE $1",
            "SELECT pg_sleep(%",
        )
        seen = max(seen, int(running))
        await asyncio.sleep(0.02)
    return seen


async def test_concurrent_requests_wait_in_sql_side_by_side(test_server_url, migrated_database_url):
    settings = load_settings(
        database_url=migrated_database_url,
        debug_endpoints=True,
        env="development",
        db_pool_max_size=CONCURRENT + 2,
    )
    app = create_app(settings=settings)
    transport = httpx.ASGITransport(app=app)
    observer = Database(url=migrated_database_url, min_size=0, max_size=1)
    await observer.connect()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health/ready")).status_code == 200

            async def requests() -> list[int]:
                responses = await asyncio.gather(
                    *(
                        client.get("/_debug/db-sleep", params={"seconds": 1.5})
                        for _ in range(CONCURRENT)
                    )
                )
                return [r.status_code for r in responses]

            batch = asyncio.create_task(requests())
            peak = await _max_concurrent_sleepers(observer, batch)
            assert await batch == [200] * CONCURRENT
        # All N handlers were inside PostgreSQL at the same moment: nothing serialized them.
        assert peak == CONCURRENT
    finally:
        await observer.disconnect()
        await app.state.gathering.close()


async def test_pool_recovers_after_the_database_restarts(private_postgres):
    database = Database(url=private_postgres.url, settings=FAST_FAIL, min_size=2, max_size=4)
    await database.connect()
    try:
        assert await database.fetch_val("SELECT 1") == 1
        private_postgres.stop()
        try:
            await database.fetch_val("SELECT 1")
            raised = None
        except DatabaseUnavailableError as exc:
            raised = exc
        assert raised is not None
        private_postgres.start()
        # Every pooled connection died with the server; each is replaced, none fails a query.
        results = await asyncio.gather(*(database.fetch_val("SELECT 2") for _ in range(8)))
        assert results == [2] * 8
    finally:
        await database.disconnect()

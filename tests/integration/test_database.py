"""The `Database` API against a real PostgreSQL (the seed's examples first)."""

from __future__ import annotations

import asyncio

import pytest

from gathering.db import Database, redact_url
from gathering.db.database import ALIVE_BYPASS_SECONDS
from gathering.errors import (
    ConflictError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidInputError,
)


@pytest.mark.asyncio
async def test_insert_agent(test_db):
    result = await test_db.execute(
        """
        INSERT INTO agent.agents (name, provider, model)
        VALUES ($1, $2, $3)
        RETURNING id
        """,
        "TestAgent",
        "openai",
        "gpt-4o",
    )
    assert result["id"] is not None
    agent = await test_db.fetch_one(
        "SELECT * FROM agent.agents WHERE id = $1",
        result["id"],
    )
    assert agent["name"] == "TestAgent"
    assert agent["provider"] == "openai"


async def test_clean_tables_isolates_tests(test_db):
    assert await test_db.fetch_val("SELECT count(*) FROM agent.agents") == 0


async def test_execute_without_rows_returns_none(test_db):
    assert await test_db.execute("UPDATE agent.agents SET model = $1", "x") is None


async def test_fetch_all_and_fetch_val(test_db):
    for name in ("a", "b", "c"):
        await test_db.execute("INSERT INTO agent.agents (name, model) VALUES ($1, $2)", name, "m")
    rows = await test_db.fetch_all("SELECT name FROM agent.agents ORDER BY name")
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert await test_db.fetch_val("SELECT count(*) FROM agent.agents WHERE name > $1", "a") == 2
    assert await test_db.fetch_val("SELECT name FROM agent.agents WHERE name = $1", "zz") is None
    assert await test_db.fetch_one("SELECT * FROM agent.agents WHERE name = $1", "zz") is None


async def test_placeholders_may_repeat_and_come_out_of_order(test_db):
    row = await test_db.fetch_one("SELECT $2::int AS b, $1::text AS a, $2::int + 1 AS c", "x", 5)
    assert row == {"b": 5, "a": "x", "c": 6}


async def test_parameters_are_bound_not_interpolated(test_db):
    hostile = "x'); DROP TABLE agent.agents; --"
    await test_db.execute("INSERT INTO agent.agents (name, model) VALUES ($1, $2)", hostile, "m")
    assert await test_db.fetch_val("SELECT name FROM agent.agents") == hostile


async def test_transaction_commits(test_db):
    async with test_db.transaction() as tx:
        await tx.execute("INSERT INTO agent.agents (name, model) VALUES ($1, $2)", "t1", "m")
        await test_db.execute("INSERT INTO agent.agents (name, model) VALUES ($1, $2)", "t2", "m")
    assert await test_db.fetch_val("SELECT count(*) FROM agent.agents") == 2


async def test_transaction_rolls_back_on_error(test_db):
    with pytest.raises(RuntimeError):
        async with test_db.transaction():
            await test_db.execute(
                "INSERT INTO agent.agents (name, model) VALUES ($1, $2)", "t", "m"
            )
            raise RuntimeError("boom")
    assert await test_db.fetch_val("SELECT count(*) FROM agent.agents") == 0


async def test_nested_transaction_is_a_savepoint(test_db):
    async with test_db.transaction():
        await test_db.execute(
            "INSERT INTO agent.agents (name, model) VALUES ($1, $2)", "outer", "m"
        )
        with pytest.raises(ValueError):
            async with test_db.transaction():
                await test_db.execute(
                    "INSERT INTO agent.agents (name, model) VALUES ($1, $2)", "inner", "m"
                )
                raise ValueError("undo inner only")
    names = [r["name"] for r in await test_db.fetch_all("SELECT name FROM agent.agents")]
    assert names == ["outer"]


async def test_transaction_is_invisible_to_other_connections_until_commit(test_db):
    async with test_db.transaction():
        await test_db.execute("INSERT INTO agent.agents (name, model) VALUES ($1, $2)", "t", "m")

        async def count_elsewhere() -> int:
            # a fresh task has its own context, so it borrows another pooled connection
            return int(await test_db.fetch_val("SELECT count(*) FROM agent.agents"))

        assert await asyncio.create_task(count_elsewhere()) == 0
    assert await test_db.fetch_val("SELECT count(*) FROM agent.agents") == 1


async def test_constraint_violation_is_a_typed_error(test_db):
    with pytest.raises(InvalidInputError) as info:
        await test_db.execute("INSERT INTO agent.agents (name, model) VALUES ($1, $2)", " ", "m")
    assert isinstance(info.value, DatabaseError)
    assert info.value.details["sqlstate"] == "23514"


async def test_unique_violation_is_a_conflict(test_db):
    await test_db.execute("CREATE TEMP TABLE u (k text PRIMARY KEY)")
    async with test_db.transaction():
        await test_db.execute("CREATE TEMP TABLE IF NOT EXISTS u2 (k text PRIMARY KEY)")
        await test_db.execute("INSERT INTO u2 VALUES ($1)", "a")
        with pytest.raises(ConflictError):
            async with test_db.transaction():
                await test_db.execute("INSERT INTO u2 VALUES ($1)", "a")


async def test_syntax_error_is_a_database_error(test_db):
    with pytest.raises(DatabaseError) as info:
        await test_db.fetch_all("SELEC 1")
    assert info.value.details["sqlstate"] == "42601"


async def test_test_databases_are_isolated_and_dropped(test_server_url):
    first, second = Database(test=True), Database(test=True)
    async with first, second:
        await first.execute("INSERT INTO agent.agents (name, model) VALUES ($1, $2)", "only", "m")
        assert await second.fetch_val("SELECT count(*) FROM agent.agents") == 0
        name = await first.fetch_val("SELECT current_database()")
    probe = Database(url=test_server_url)
    async with probe:
        assert (
            await probe.fetch_val("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
        )


async def test_using_a_database_before_connect_says_so():
    database = Database(test=True)
    with pytest.raises(DatabaseUnavailableError, match="not connected"):
        await database.fetch_val("SELECT 1")
    with pytest.raises(DatabaseUnavailableError):
        _ = database.url


async def test_connect_twice_is_harmless(db):
    await db.connect()
    assert await db.fetch_val("SELECT 1") == 1
    assert "gathering_test_" in repr(db)


async def test_unreachable_server_is_a_clear_error():
    database = Database(url="postgresql://nobody@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseUnavailableError) as info:
        await database.connect()
    assert "127.0.0.1:1" in info.value.message
    assert "DATABASE_URL" in (info.value.hint or "")


async def test_raw_connection_uses_dollar_placeholders(db):
    async with db.connection() as conn:
        cur = await conn.execute("SELECT $1::int * 2 AS v", (21,))
        assert await cur.fetchone() == {"v": 42}


def test_redact_url_hides_the_password():
    assert (
        redact_url("postgresql://u:secret@db.example:5433/app")
        == "postgresql://u@db.example:5433/app"
    )
    assert redact_url("host=/run/pg dbname=x user=y") == "postgresql://y@/x?host=/run/pg"
    assert redact_url("postgresql://a b") == "<invalid database URL>"


async def test_a_connection_the_server_dropped_is_replaced(db):
    pool = Database(url=db.url, min_size=1, max_size=1)
    async with pool:
        pid = await pool.fetch_val("SELECT pg_backend_pid()")
        # Given back just now, the connection is trusted without a round trip: a query on it
        # fails cleanly (503 at the API), and the pool replaces it.
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(DatabaseUnavailableError):
            await pool.fetch_val("SELECT 1")
        assert await pool.fetch_val("SELECT 1") == 1
        # Idle for longer than the bypass window, it is checked as it leaves the pool.
        pid = await pool.fetch_val("SELECT pg_backend_pid()")
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(ALIVE_BYPASS_SECONDS + 0.1)
        assert await pool.fetch_val("SELECT pg_backend_pid()") != pid


async def test_pooled_statements_have_a_timeout_lock_waits_and_migrations_do_not(db):
    from gathering.config import load_settings
    from gathering.db.locks import LockKey, session_lock

    settings = load_settings(db_statement_timeout=0.3)
    slow = Database(url=db.url, settings=settings, min_size=0, max_size=2)
    async with slow:
        assert await slow.fetch_val("SHOW statement_timeout") == "300ms"
        with pytest.raises(DatabaseBusyError, match="GATHERING_DB_STATEMENT_TIMEOUT"):
            await slow.fetch_val("SELECT pg_sleep(2)")
        # A lock wait longer than the timeout is not cut, and the session gets its timeout back.
        key = LockKey("test", "statement-timeout")
        async with session_lock(db, key):

            async def waiter() -> str:
                async with session_lock(slow, key, wait=True) as conn:
                    assert conn is not None
                    return str(await (await conn.execute("SHOW statement_timeout")).fetchone())

            waiting = asyncio.create_task(waiter())
            await asyncio.sleep(1.0)
            assert not waiting.done()
        assert "300ms" in await asyncio.wait_for(waiting, 10)
        off = Database(url=db.url, settings=load_settings(db_statement_timeout=0), max_size=1)
        async with off:
            assert await off.fetch_val("SHOW statement_timeout") == "0"

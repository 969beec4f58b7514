"""Migrations: ordered, recorded once, atomic, and safe with several instances at once."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.rows import dict_row

from gathering.db import Database, discover_migrations, migrations_runner
from gathering.db.migrations_runner import Migration
from gathering.errors import MigrationError


def test_shipped_migrations_are_numbered_in_order():
    migrations = discover_migrations()
    assert migrations[0].filename == "0001_initial.sql"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})


async def test_fresh_database_reports_pending_then_current(fresh_database_url):
    async with Database(url=fresh_database_url) as database:
        before = await database.migration_status()
        assert not before.is_current
        assert "not applied" in (before.problem() or "")
        applied = await database.run_migrations()
        assert [m.version for m in applied] == [m.version for m in discover_migrations()]
        after = await database.migration_status()
        assert after.is_current and after.problem() is None
        assert after.vector is True  # the embedded server ships pgvector
        assert await database.run_migrations() == []


async def test_concurrent_instances_apply_each_migration_once(fresh_database_url):
    instances = [Database(url=fresh_database_url, min_size=0, max_size=1) for _ in range(6)]
    await asyncio.gather(*(d.connect() for d in instances))
    try:
        results = await asyncio.gather(*(d.run_migrations() for d in instances))
        assert sum(len(r) for r in results) == len(discover_migrations())
        rows = await instances[0].fetch_all(
            "SELECT version, count(*) AS n FROM public.schema_migrations GROUP BY version"
        )
        assert all(r["n"] == 1 for r in rows)
    finally:
        await asyncio.gather(*(d.disconnect() for d in instances))


async def test_failing_migration_rolls_back_and_names_the_file(fresh_database_url, monkeypatch):
    shipped = discover_migrations()
    broken = Migration(
        999, "broken", "CREATE TABLE half_done (id int); SELECT * FROM no_such_table;"
    )
    monkeypatch.setattr(migrations_runner, "discover_migrations", lambda: [*shipped, broken])
    async with Database(url=fresh_database_url) as database:
        with pytest.raises(MigrationError) as info:
            await database.run_migrations()
        assert "0999_broken.sql" in info.value.message
        assert "no_such_table" in info.value.message
        assert await database.fetch_val("SELECT to_regclass('public.half_done')") is None
        versions = await database.fetch_all("SELECT version FROM public.schema_migrations")
        assert 999 not in {r["version"] for r in versions}
        # the good ones before it were kept
        assert {m.version for m in shipped} <= {r["version"] for r in versions}


async def test_edited_migration_is_refused(fresh_database_url):
    async with Database(url=fresh_database_url) as database:
        await database.run_migrations()
        await database.execute(
            "UPDATE public.schema_migrations SET checksum = 'x' WHERE version = 1"
        )
        status = await database.migration_status()
        assert status.changed == ["0001_initial.sql"] and not status.is_current
        with pytest.raises(MigrationError, match=r"0001_initial\.sql"):
            await database.run_migrations()


async def test_unknown_applied_version_is_reported(fresh_database_url):
    async with Database(url=fresh_database_url) as database:
        await database.run_migrations()
        await database.execute(
            "INSERT INTO public.schema_migrations (version, name, checksum, duration_ms)"
            " VALUES (9000, 'future', 'x', 0)"
        )
        assert (await database.migration_status()).unknown == [9000]
        assert await database.run_migrations() == []


def test_duplicate_versions_are_refused(monkeypatch, tmp_path):
    class Entry:
        def __init__(self, name: str) -> None:
            self.name = name

        def read_text(self, encoding: str) -> str:
            return "SELECT 1"

    class Folder:
        def iterdir(self):
            return [Entry("0001_a.sql"), Entry("0001_b.sql"), Entry("README")]

    monkeypatch.setattr(migrations_runner.importlib.resources, "files", lambda _: Folder())
    migrations_runner._shipped_migrations.cache_clear()
    try:
        with pytest.raises(MigrationError, match="share version 0001"):
            migrations_runner.discover_migrations()
    finally:
        monkeypatch.undo()
        migrations_runner._shipped_migrations.cache_clear()


async def test_server_without_pgvector_still_migrates(fresh_database_url, monkeypatch):
    """Hide pgvector from the migration to act like a server that lacks it."""
    shipped = await asyncio.to_thread(discover_migrations)
    without_vector = [
        Migration(m.version, m.name, m.sql.replace("name = 'vector'", "name = 'no-such-ext'"))
        for m in shipped
    ]
    monkeypatch.setattr(migrations_runner, "discover_migrations", lambda: without_vector)
    async with Database(url=fresh_database_url) as database:
        await database.run_migrations()
        status = await database.migration_status()
        assert status.vector is False and status.is_current


async def test_a_server_without_pgvector_migrates(no_vector_server_url):
    """The machine's PostgreSQL 15 has no pgvector: start-up must still work there."""
    database = Database(url=no_vector_server_url, test=True)
    async with database:
        status = await database.migration_status()
        assert status.is_current and status.vector is False


async def test_a_held_migration_lock_is_waited_for_a_bounded_time(fresh_database_url):
    async with await psycopg.AsyncConnection.connect(fresh_database_url, autocommit=True) as holder:
        await holder.execute("SELECT pg_advisory_lock(%s)", (migrations_runner.MIGRATION_LOCK_KEY,))
        async with await psycopg.AsyncConnection.connect(
            fresh_database_url,
            autocommit=True,
            cursor_factory=psycopg.AsyncRawCursor,
            row_factory=dict_row,
        ) as conn:
            with pytest.raises(MigrationError, match="migration lock"):
                await migrations_runner.apply_migrations(conn, wait=0.3)
        await holder.execute(
            "SELECT pg_advisory_unlock(%s)", (migrations_runner.MIGRATION_LOCK_KEY,)
        )
        async with await psycopg.AsyncConnection.connect(
            fresh_database_url,
            autocommit=True,
            cursor_factory=psycopg.AsyncRawCursor,
            row_factory=dict_row,
        ) as conn:
            assert await migrations_runner.apply_migrations(conn, wait=0.3)  # all of them, now

"""Migrated template databases: test databases are cloned from one instead of migrated.

`CREATE DATABASE … TEMPLATE …` copies a migrated schema in milliseconds, where applying every
migration takes a fraction of a second. The template is named after the migrations it holds
(their checksums), built once per server under an advisory lock (several processes may ask at
once), and marked `IS_TEMPLATE` only when complete, so a half-built one is never cloned.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from gathering.db.locks import advisory_key
from gathering.db.migrations_runner import apply_migrations, discover_migrations
from gathering.db.named_queries import queries_of

TEMPLATE_PREFIX = "gathering_template_"
_SQL = queries_of("gathering.db")

Connection = psycopg.AsyncConnection[Any]
Connect = Callable[[str], Awaitable[Connection]]


async def plain_connection(url: str) -> Connection:
    """An autocommit connection with `$n` placeholders and dict rows, as `Database` uses."""
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row, cursor_factory=psycopg.AsyncRawCursor
    )


def template_name() -> str:
    """The template's name for the migrations of this code (they change, it changes)."""
    digest = hashlib.blake2b(digest_size=6)
    for migration in discover_migrations():
        digest.update(f"{migration.version}:{migration.checksum};".encode())
    return f"{TEMPLATE_PREFIX}{digest.hexdigest()}"


async def create_migrated_database(
    server_url: str, name: str, connect: Connect = plain_connection
) -> None:
    """Create database `name` on `server_url` as a copy of the migrated template (building the
    template first when this server has none for these migrations)."""
    template = await ensure_template(server_url, connect)
    admin = await connect(server_url)
    try:
        await admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    finally:
        await admin.close()


async def ensure_template(server_url: str, connect: Connect) -> str:
    """The name of the complete template on `server_url`, built now if needed."""
    name = await asyncio.to_thread(template_name)  # reads the migration files the first time
    admin = await connect(server_url)
    try:
        if await _is_complete(admin, name):
            return name
        await admin.execute(_SQL["advisory_lock"], (advisory_key("db-template"),))
        try:
            if not await _is_complete(admin, name):
                await _build(admin, server_url, name, connect)
        finally:
            await admin.execute(_SQL["advisory_unlock"], (advisory_key("db-template"),))
    finally:
        await admin.close()
    return name


async def _is_complete(admin: Connection, name: str) -> bool:
    cur = await admin.execute(_SQL["is_template"], (name,))
    row = await cur.fetchone()
    return bool(row and row["datistemplate"])


async def _build(admin: Connection, server_url: str, name: str, connect: Connect) -> None:
    """Drop what a crashed build or older migrations left, create, migrate, mark complete."""
    cur = await admin.execute(_SQL["databases_like"], (f"{TEMPLATE_PREFIX}%",))
    for row in await cur.fetchall():
        stale = sql.Identifier(str(row["datname"]))
        await admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(stale))
        await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(stale))
    await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn = await connect(make_conninfo(server_url, dbname=name))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    await admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))

"""Numbered SQL migrations shipped in `gathering.db.migrations`, applied under an advisory lock.

Each file `NNNN_name.sql` runs in its own transaction together with its row in
`public.schema_migrations`, so a migration is either wholly applied and recorded, or not at all.
A module `NNNN_name.py` stands for SQL that a dependency ships (procrastinate's schema): its
`sql()` returns the text, and the checksum pins it, so a new version of the dependency that
changed it stops the start instead of leaving the schema behind.
Instances that start together serialize on one advisory lock and each migration runs once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import importlib.resources
import re
import time
from dataclasses import dataclass, field

import psycopg
import structlog

from gathering.db.locks import LockKey, advisory_key, wait_for_lock
from gathering.db.named_queries import queries_of
from gathering.errors import MigrationError

log = structlog.get_logger(__name__)

MIGRATIONS_PACKAGE = "gathering.db.migrations"
MIGRATION_LOCK_KEY = advisory_key("migrations")
MIGRATION_LOCK_WAIT = 600.0  # seconds to wait for another process applying migrations
_SQL = queries_of("gathering.db")
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.(?P<kind>sql|py)$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str = field(repr=False)
    suffix: str = "sql"  # "py" when a module gives the SQL

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.{self.suffix}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass
class MigrationStatus:
    """Where a database stands against the migrations this code ships."""

    applied: list[int] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    vector: bool = False

    @property
    def is_current(self) -> bool:
        """True when every shipped migration is applied unchanged."""
        return not self.pending and not self.changed

    def problem(self) -> str | None:
        """Why the schema is not current, in one sentence; None when it is."""
        if self.changed:
            return f"migrations changed after they were applied: {', '.join(self.changed)}"
        if self.pending:
            names = ", ".join(m.filename for m in self.pending)
            return f"{len(self.pending)} migration(s) not applied: {names}"
        return None


def discover_migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order (read once per process)."""
    return list(_shipped_migrations())


@functools.cache
def _shipped_migrations() -> tuple[Migration, ...]:
    found: dict[int, Migration] = {}
    for entry in importlib.resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = _FILE_NAME.match(entry.name)
        if not match:
            continue
        version = int(match["version"])
        if version in found:
            raise MigrationError(
                f"two migrations share version {version:04d}: "
                f"{found[version].filename} and {entry.name}",
                hint="renumber one of them",
            )
        if match["kind"] == "sql":
            text = entry.read_text(encoding="utf-8")
        else:
            module = importlib.import_module(f"{MIGRATIONS_PACKAGE}.{entry.name[:-3]}")
            text = module.sql()
        found[version] = Migration(version, match["name"], text, match["kind"])
    return tuple(found[v] for v in sorted(found))


async def _has_vector(conn: psycopg.AsyncConnection[dict[str, object]]) -> bool:
    cur = await conn.execute(_SQL["has_vector"])
    return await cur.fetchone() is not None


async def _table_exists(conn: psycopg.AsyncConnection[dict[str, object]]) -> bool:
    cur = await conn.execute(_SQL["migrations_table_exists"])
    row = await cur.fetchone()
    return bool(row and row["ok"])


async def read_status(conn: psycopg.AsyncConnection[dict[str, object]]) -> MigrationStatus:
    """Compare the database's `schema_migrations` with the shipped migrations."""
    shipped = await asyncio.to_thread(discover_migrations)  # reads the files the first time
    status = MigrationStatus(vector=await _has_vector(conn))
    recorded: dict[int, str] = {}
    if await _table_exists(conn):
        cur = await conn.execute(_SQL["applied_migrations"])
        recorded = {int(str(r["version"])): str(r["checksum"]) for r in await cur.fetchall()}
    known = {m.version for m in shipped}
    status.applied = sorted(recorded)
    status.unknown = sorted(set(recorded) - known)
    for migration in shipped:
        checksum = recorded.get(migration.version)
        if checksum is None:
            status.pending.append(migration)
        elif checksum != migration.checksum:
            status.changed.append(migration.filename)
    return status


async def apply_migrations(
    conn: psycopg.AsyncConnection[dict[str, object]], *, wait: float = MIGRATION_LOCK_WAIT
) -> list[Migration]:
    """Apply every pending migration on `conn` (an autocommit connection); return those applied.

    Waits at most `wait` seconds for another process applying migrations, else `MigrationError`.
    """
    if not await wait_for_lock(conn, LockKey("migrations"), wait):
        raise MigrationError(
            f"another process has held the migration lock for more than {wait:g}s",
            hint="wait for the other instance to finish migrating, or find the session holding"
            " it: SELECT pid FROM pg_locks WHERE locktype = 'advisory'",
        )
    try:
        await conn.execute(_CREATE_TABLE)
        status = await read_status(conn)
        if status.changed:
            raise MigrationError(
                status.problem() or "",
                hint="never edit an applied migration; add a new numbered file instead",
            )
        if status.unknown:
            log.warning(
                "database has migrations this code does not know; is this an older release?",
                versions=status.unknown,
            )
        applied = []
        for migration in status.pending:
            started = time.perf_counter()
            try:
                async with conn.transaction():
                    # A migration may rewrite big tables: no statement timeout for it.
                    await conn.execute("SET LOCAL statement_timeout = 0")
                    await conn.execute(migration.sql)
                    await conn.execute(
                        _SQL["record_migration"],
                        (
                            migration.version,
                            migration.name,
                            migration.checksum,
                            int((time.perf_counter() - started) * 1000),
                        ),
                    )
            except psycopg.Error as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise MigrationError(
                    f"migration {migration.filename} failed and was rolled back: {first_line}",
                    hint="fix the migration or the database, then run `gathering db migrate`",
                    details={"migration": migration.filename, "sqlstate": exc.sqlstate},
                ) from exc
            log.info("migration applied", migration=migration.filename)
            applied.append(migration)
        if not await _has_vector(conn):
            log.warning(
                "pgvector is not installed on this PostgreSQL server: semantic search is off, "
                "full-text search still works"
            )
        return applied
    finally:
        if not conn.closed and not conn.broken:
            await conn.execute(_SQL["advisory_unlock"], (MIGRATION_LOCK_KEY,))

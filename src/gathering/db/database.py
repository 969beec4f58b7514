"""`Database`: an async PostgreSQL pool (psycopg 3) with `$1, $2` placeholders and dict rows."""

from __future__ import annotations

import asyncio
import contextvars
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import unquote

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gathering.config import Settings, get_settings, redact_credentials, split_url_password
from gathering.db.embedded import start_embedded
from gathering.db.migrations_runner import Migration, MigrationStatus, apply_migrations, read_status
from gathering.db.named_queries import queries_of
from gathering.db.templates import create_migrated_database
from gathering.errors import (
    ConfigurationError,
    ConflictError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidInputError,
)

log = structlog.get_logger(__name__)

Row: TypeAlias = dict[str, Any]
Connection: TypeAlias = psycopg.AsyncConnection[Row]

TEST_DATABASE_PREFIX = "gathering_test_"
ALIVE_BYPASS_SECONDS = 0.5  # a connection given back this recently is not checked again
EMBEDDED_DATABASE = "gathering"


def redact_url(url: str) -> str:
    """`url` with its password hidden, fit for messages and logs.

    A password with an unencoded "@", "/" or ":" spills into what libpq reads as the host, port
    or database (`bob:a@b@host` is password "a" at host "b@host"), so a URL whose password libpq
    does not read whole is shown as it would be without its userinfo password: everything from
    the first ":" after the user to the last "@" is dropped."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<invalid database URL>"
    without_password, password = split_url_password(url)
    if password is not None and unquote(password) != params.get("password"):
        try:
            params = conninfo_to_dict(without_password)
        except psycopg.ProgrammingError:
            return "<invalid database URL>"
    host = str(params.get("host") or "localhost")
    user, dbname = params.get("user") or "", params.get("dbname") or ""
    if host.startswith("/"):
        shown = f"postgresql://{user}@/{dbname}?host={host}"
    else:
        host = f"[{host}]" if ":" in host and "," not in host else host  # IPv6
        shown = f"postgresql://{user}@{host}:{params.get('port') or '5432'}/{dbname}"
    # Belt and braces: no password, nor any fragment of one, whatever libpq made of the URL.
    return redact_credentials(shown, url)


def _connection_kwargs() -> dict[str, Any]:
    return {"row_factory": dict_row, "cursor_factory": psycopg.AsyncRawCursor, "autocommit": True}


def _session_options(url: str, statement_timeout: float) -> dict[str, str]:
    """The pool's startup options: `statement_timeout` (kept by RESET) after the URL's own."""
    if statement_timeout <= 0:
        return {}
    given = conninfo_to_dict(url).get("options") or ""
    timeout = f"-c statement_timeout={statement_timeout * 1000:.0f}"
    return {"options": f"{given} {timeout}".strip()}


class _AliveCheck:
    """Check each connection as it leaves the pool, so that after a server restart dead
    connections are replaced instead of failing the next query; one given back less than
    `ALIVE_BYPASS_SECONDS` ago is taken as alive without a round trip (as HikariCP's
    `aliveBypassWindowMs` does), which saves a busy server a query per checkout."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()

    async def returned(self, conn: Connection) -> None:
        self._returned[conn] = time.monotonic()

    async def check(self, conn: Connection) -> None:
        returned = self._returned.pop(conn, None)
        if returned is None or time.monotonic() - returned >= ALIVE_BYPASS_SECONDS:
            await AsyncConnectionPool.check_connection(conn)


def _translate(exc: psycopg.Error) -> DatabaseError:
    """Map a driver error to the matching `gathering.errors` class."""
    text = (str(exc).strip().splitlines() or [repr(exc)])[0]
    details = {"sqlstate": exc.sqlstate} if exc.sqlstate else {}
    if isinstance(exc, psycopg.errors.UniqueViolation):
        error: DatabaseError = _DatabaseConflict(text, details=details)
    elif isinstance(exc, psycopg.errors.IntegrityError | psycopg.errors.DataError):
        error = _DatabaseInvalid(text, details=details)
    elif isinstance(exc, psycopg.OperationalError) and (
        # no answer at all, a connection failure, or the server shutting down or restarting
        exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
    ):
        error = DatabaseUnavailableError(f"lost the database connection: {text}", details=details)
    elif isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
        error = DatabaseBusyError(text, details=details)
    elif isinstance(exc, psycopg.errors.QueryCanceled):
        error = DatabaseBusyError(
            f"{text} (longer than GATHERING_DB_STATEMENT_TIMEOUT, or cancelled by an operator)",
            details=details,
        )
    else:
        error = DatabaseError(text, details=details)
    error.__cause__ = exc
    return error


class _DatabaseConflict(DatabaseError, ConflictError):
    code = "conflict"
    http_status = 409


class _DatabaseInvalid(DatabaseError, InvalidInputError):
    code = "invalid_input"
    http_status = 422


class Queries:
    """The query methods shared by `Database` and the connection inside a transaction."""

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        raise NotImplementedError
        yield  # pragma: no cover

    @asynccontextmanager
    async def _cursor(
        self, query: str, args: Sequence[Any]
    ) -> AsyncIterator[psycopg.AsyncCursor[Row]]:
        async with self._connection() as conn:
            try:
                cur = await conn.execute(query, args or None)
                yield cur
            except psycopg.Error as exc:
                raise _translate(exc) from exc

    async def execute(self, query: str, *args: Any) -> Row | None:
        """Run a statement; return its first row as a dict when it returns rows, else None."""
        async with self._cursor(query, args) as cur:
            return await cur.fetchone() if cur.description is not None else None

    async def fetch_one(self, query: str, *args: Any) -> Row | None:
        """The first row of a query as a dict, or None when there is none."""
        async with self._cursor(query, args) as cur:
            return await cur.fetchone()

    async def fetch_all(self, query: str, *args: Any) -> list[Row]:
        """Every row of a query, as dicts."""
        async with self._cursor(query, args) as cur:
            return await cur.fetchall()

    async def fetch_val(self, query: str, *args: Any) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = await self.fetch_one(query, *args)
        return next(iter(row.values())) if row else None


class OnConnection(Queries):
    """Queries run on one borrowed connection; in autocommit, each is its own transaction."""

    def __init__(self, conn: Connection) -> None:
        self.connection = conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        yield self.connection


class Transaction(OnConnection):
    """Queries run on one connection inside one transaction (see `Database.transaction`)."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        # Tasks spawned inside the block inherit the context; only the owner uses this connection.
        self.owner = asyncio.current_task()


class Database(Queries):
    """A pool of connections to one PostgreSQL database.

    `Database()` uses `DATABASE_URL`, or the embedded server when it is unset;
    `Database(url=...)` a given server; `Database(test=True)` a fresh, migrated database of its
    own (on `GATHERING_TEST_DATABASE_URL`'s server, else the embedded one), created on connect
    and dropped on disconnect.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        test: bool = False,
        settings: Settings | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.test = test
        self._requested_url = url
        self._url: str | None = None
        self._test_database: str | None = None
        self._server_url: str | None = None
        # The data directory of the embedded server this pool started, if it did.
        self.embedded_pgdata: Path | None = None
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._min_size = self.settings.db_pool_min_size if min_size is None else min_size
        self._max_size = self.settings.db_pool_max_size if max_size is None else max_size
        self._current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
            f"gathering_db_tx_{id(self)}", default=None
        )
        self._connect_lock = asyncio.Lock()

    def __repr__(self) -> str:
        where = redact_url(self._url) if self._url else "not connected"
        return f"<Database {where}>"

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The connection string in use (only after `connect()`)."""
        if self._url is None:
            raise DatabaseUnavailableError(
                "the database is not connected", hint="call `await db.connect()` first"
            )
        return self._url

    def session_options(self) -> dict[str, str]:
        """The startup options of this pool's connections (its statement timeout), for another
        pool on the same database (procrastinate's)."""
        return _session_options(self.url, self.settings.db_statement_timeout)

    @property
    def is_connected(self) -> bool:
        return self._pool is not None

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (size, available, waiting requests, ...)."""
        return self._pool.get_stats() if self._pool is not None else {}

    async def _server(self) -> str:
        if self._requested_url:
            return self._requested_url
        if self.test and self.settings.test_database_url:
            return self.settings.test_database_url
        if not self.test and self.settings.database_url:
            return self.settings.database_url
        server = await asyncio.to_thread(start_embedded, self.settings.embedded_pgdata)
        self.embedded_pgdata = self.settings.embedded_pgdata
        if self.test:
            return server
        await self._ensure_database(server, EMBEDDED_DATABASE)
        return make_conninfo(server, dbname=EMBEDDED_DATABASE)

    async def _ensure_database(self, server_url: str, name: str) -> None:
        conn = await self._open_connection(server_url)
        try:
            cur = await conn.execute(queries_of("gathering.db")["database_exists"], (name,))
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another process created it at the same moment
        except psycopg.errors.UniqueViolation:
            pass  # the same race, reported by the catalog
        finally:
            await conn.close()

    async def connect(self) -> None:
        """Open the pool (starting the embedded server or creating the test database first)."""
        async with self._connect_lock:
            if self._pool is not None:
                return
            server_url = await self._server()
            url = server_url
            if self.test:  # a copy of the migrated template (see db/templates.py)
                name = f"{TEST_DATABASE_PREFIX}{secrets.token_hex(6)}"
                await create_migrated_database(server_url, name, self._open_connection)
                self._test_database, self._server_url = name, server_url
                url = make_conninfo(server_url, dbname=name)
            await self._probe(url)
            freshness = _AliveCheck()
            pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
                url,
                min_size=self._min_size,
                max_size=self._max_size,
                kwargs=_connection_kwargs()
                | _session_options(url, self.settings.db_statement_timeout),
                open=False,
                timeout=self.settings.db_connect_timeout,
                check=freshness.check,
                reset=freshness.returned,
                name="gathering",
            )
            try:
                await pool.open(wait=True, timeout=self.settings.db_connect_timeout)
            except PoolTimeout as exc:
                raise DatabaseUnavailableError(
                    f"could not open connections to {redact_url(url)} in time"
                ) from exc
            self._pool, self._url = pool, url
            log.debug("database connected", url=redact_url(url))
        if self.test:
            await self.run_migrations()

    async def disconnect(self) -> None:
        """Close the pool (and drop the database of a test instance)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        if self._test_database and self._server_url:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self._test_database)
            )
            await self._admin(self._server_url, drop)
            self._test_database = None

    async def abandon(self) -> None:
        """Forget a pool whose event loop is gone (it cannot be closed from another loop);
        a test database is still dropped, which also ends its connections."""
        self._pool = None
        if self._test_database and self._server_url:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self._test_database)
            )
            await self._admin(self._server_url, drop)
            self._test_database = None

    async def __aenter__(self) -> Database:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def _open_connection(self, url: str) -> Connection:
        try:
            return await psycopg.AsyncConnection.connect(
                url,
                connect_timeout=max(1, int(self.settings.db_connect_timeout)),
                **_connection_kwargs(),
            )
        except psycopg.ProgrammingError as exc:  # libpq could not parse it; it may quote it
            reason = redact_credentials(" ".join(str(exc).split()), url)
            raise ConfigurationError(
                f"{redact_url(url)} is not a PostgreSQL URL libpq can read: {reason}",
                hint="percent-encode special characters of the password (`@` as %40, a space "
                "as %20) in DATABASE_URL",
            ) from None
        except psycopg.OperationalError as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            reason = redact_credentials(reason, url)  # the driver may quote the conninfo
            raise DatabaseUnavailableError(
                f"could not connect to PostgreSQL at {redact_url(url)}: {reason}",
                hint="check that the server is running and DATABASE_URL is right, "
                "or unset DATABASE_URL to use the embedded database",
            ) from None

    async def _probe(self, url: str) -> None:
        conn = await self._open_connection(url)
        await conn.close()

    async def _admin(self, url: str, statement: sql.Composed) -> None:
        conn = await self._open_connection(url)
        try:
            await conn.execute(statement)
        except psycopg.Error as exc:
            raise _translate(exc) from exc
        finally:
            await conn.close()

    # --- connections and transactions --------------------------------------------------------

    def _require_pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            raise DatabaseUnavailableError(
                "the database is not connected", hint="call `await db.connect()` first"
            )
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        current = self._current.get()
        if current is not None and current.owner is asyncio.current_task():
            yield current.connection
            return
        try:
            async with self._require_pool().connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise DatabaseUnavailableError(
                f"no database connection could be had within {self.settings.db_connect_timeout:g}s"
                " (the database may be down, or every pooled connection busy)",
                hint="check the database; if it is up, raise GATHERING_DB_POOL_MAX_SIZE"
                " or look for slow queries",
            ) from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Borrow one raw psycopg connection (autocommit, `$n` placeholders, dict rows)."""
        async with self._connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Run the enclosed queries in one transaction; nested blocks become savepoints.

        Inside the block, calls on this `Database` from the same task use the transaction's
        connection too; other tasks (even ones started inside the block) use their own.
        """
        async with self._connection() as conn:
            tx = Transaction(conn)
            token = self._current.set(tx)
            try:
                async with conn.transaction():
                    yield tx
            except psycopg.Error as exc:
                raise _translate(exc) from exc
            finally:
                self._current.reset(token)

    # --- schema ---------------------------------------------------------------------------

    async def run_migrations(self) -> list[Migration]:
        """Apply pending migrations (exactly once across instances); return those applied."""
        conn = await self._open_connection(self.url)
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    async def migration_status(self) -> MigrationStatus:
        """Which shipped migrations this database has, lacks, or has in another version."""
        async with self._connection() as conn:
            return await read_status(conn)

"""The sql_query tool: one read-only SQL statement on the database an administrator configured.

Each call opens one short-lived connection and, before the statement runs, refuses:

- a database that is GatheRing's own (the URL names the server and database of
  `DATABASE_URL` or of the embedded server, or the database holds GatheRing's tables),
  unless the administrator allows it;
- a role that is a superuser, or may become one (`SET ROLE`), or may run programs, read and
  write the server's files or end other sessions (`SERVER_ROLES`): a read-only transaction
  still lets such a role run `COPY ... TO PROGRAM`, which executes code on the database
  server, or `pg_terminate_backend` on the sessions of other roles.

The statement then runs in a `READ ONLY` transaction that is always rolled back, opened before
the statement with a query of ours (so `SET TRANSACTION READ WRITE` comes too late), on a
session whose later transactions are read-only too, under `statement_timeout` and
`lock_timeout`. It is sent with the extended query protocol, which carries exactly one
statement (`SELECT 1; DROP TABLE t` is refused by the server as a whole). Rows are streamed
and cut at the row cap; cells and the whole answer are cut at a size cap, and the answer says
what was cut.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import math
import os
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gathering.config import redact_credentials
from gathering.db.database import redact_url
from gathering.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidInputError,
    PermissionDeniedError,
    ToolTimeoutError,
)

DEFAULT_ROWS = 200
MAX_ROWS = 1_000
MAX_STATEMENT_CHARS = 100_000
MAX_CELL_CHARS = 2_000  # a longer value is cut, with a marker
MAX_RESULT_CHARS = 40_000  # rows beyond this (as JSON) are left out; under the tool's cap
CONNECT_TIMEOUT = 10  # seconds (libpq's connect_timeout is whole seconds, at least 2)
MIN_STATEMENT_SECONDS = 0.1
TIME_MARGIN = 0.25  # seconds kept back from the call's deadline to roll back and answer
IDLE_GRACE = 10.0  # seconds a session may sit idle in its transaction past the statement's time
APPLICATION_NAME = "gathering-sql-tool"

# Tables whose presence says "this is a GatheRing database" whatever the URL says.
GATHERING_TABLES = (("agent", "agents"), ("agent", "memories"), ("public", "schema_migrations"))
# Predefined roles that act outside a read-only transaction: programs and files of the server,
# and signals that end other sessions (GatheRing's own, on a shared server).
SERVER_ROLES = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_signal_backend",
)

_SET_UP_HINT = (
    "create a role that may only read, e.g. CREATE ROLE gathering_reader LOGIN PASSWORD '...'; "
    "GRANT CONNECT ON DATABASE app TO gathering_reader; GRANT USAGE ON SCHEMA public TO "
    "gathering_reader; GRANT SELECT ON ALL TABLES IN SCHEMA public TO gathering_reader; and "
    "put it in GATHERING_SQL_TOOL_URL"
)

_CHECK = """
SELECT
  session_user AS role,
  EXISTS (
    SELECT 1 FROM pg_catalog.pg_roles r
    WHERE (r.rolsuper OR r.rolname = ANY(%(server_roles)s::text[]))
      AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')
  ) AS privileged,
  (
    SELECT count(*) FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE (n.nspname || '.' || c.relname) = ANY(%(gathering_tables)s::text[])
  ) = %(gathering_table_count)s AS gathering_schema
"""


@dataclass(frozen=True)
class SqlTarget:
    """Where sql_query connects, and what it must not read (from the settings)."""

    url: str | None
    own_urls: tuple[str, ...] = ()
    allow_own_database: bool = False
    max_seconds: float = 30.0


@dataclass(frozen=True)
class _Place:
    """Which server (hosts, port) and database a URL names, as libpq would read it."""

    hosts: frozenset[str]
    port: str
    dbname: str


def _place(url: str) -> _Place:
    params = conninfo_to_dict(url)
    hosts = {
        _host(host)
        for field in ("host", "hostaddr")
        for host in str(params.get(field) or "").split(",")
        if host.strip()
    }
    user = str(params.get("user") or "")
    return _Place(
        frozenset(hosts or {"local"}),
        str(params.get("port") or "5432").split(",")[0],
        str(params.get("dbname") or user),
    )


def _host(host: str) -> str:
    """A host as compared: loopback names and addresses (and libpq's default, the local
    socket) are one host; a socket directory is its resolved path."""
    host = host.strip().lower().strip("[]")
    if not host or host == "localhost":
        return "local"
    if host.startswith("/"):
        return os.path.normpath(host)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return "local" if address.is_loopback else str(address)


def is_same_database(url: str, other: str) -> bool:
    """Whether `url` and `other` name the same database on the same server, as far as their
    text says (a host alias is not seen: the check after connecting catches it)."""
    try:
        first, second = _place(url), _place(other)
    except psycopg.ProgrammingError:
        return False
    return (
        first.dbname == second.dbname
        and first.port == second.port
        and bool(first.hosts & second.hosts)
    )


def embedded_urls(pgdata: Path, dbname: str) -> tuple[str, ...]:
    """The URLs of the embedded server running on `pgdata` (none when it is not running):
    its socket directory and, if it listens on TCP, its addresses (from postmaster.pid).
    Reads a file: call it off the event loop."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return ()
    if len(lines) < 5 or not lines[3].strip():
        return ()
    port = lines[3].strip()
    hosts = [lines[4].strip()] if lines[4].strip() else []
    if len(lines) > 5:
        hosts += [h.strip() for h in lines[5].split(",") if h.strip() and h.strip() != "*"]
    return tuple(
        psycopg.conninfo.make_conninfo(host=host, port=port, dbname=dbname) for host in hosts
    )


def check_statement(statement: str) -> str:
    """`statement` if it can be sent: text, not blank, no NUL, within the size limit."""
    if not isinstance(statement, str) or not statement.strip():
        raise InvalidInputError("give one SQL statement", hint="e.g. SELECT count(*) FROM orders")
    if "\x00" in statement:
        raise InvalidInputError("the statement contains a NUL character")
    if len(statement) > MAX_STATEMENT_CHARS:
        raise InvalidInputError(f"the statement is longer than {MAX_STATEMENT_CHARS} characters")
    return statement


def statement_seconds(target: SqlTarget, deadline: float | None) -> float:
    """How long the statement may run: the configured cap, or less when the call's deadline
    (a `time.monotonic()` value) is nearer."""
    seconds = target.max_seconds
    if deadline is not None:
        seconds = min(seconds, deadline - time.monotonic() - TIME_MARGIN)
    return max(seconds, MIN_STATEMENT_SECONDS)


async def run_query(
    statement: str,
    target: SqlTarget,
    *,
    max_rows: int = DEFAULT_ROWS,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Run one read-only `statement` on `target.url` and return
    `{"columns", "rows", "row_count", "truncated"}`, plus `"note"` saying what was cut, or
    that the statement returned no rows.

    Raises `ConfigurationError` (no URL, GatheRing's own database, a privileged role),
    `DatabaseUnavailableError` (cannot connect), `PermissionDeniedError` (the statement
    writes, or the role may not read that), `ToolTimeoutError` (longer than the timeout) and
    `InvalidInputError` (any other error of the statement, with PostgreSQL's message).
    """
    statement = check_statement(statement)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= MAX_ROWS:
        raise InvalidInputError(f"max_rows must be an integer from 1 to {MAX_ROWS}")
    url = _configured_url(target)
    seconds = statement_seconds(target, deadline)
    conn = await _connect(url, seconds)
    try:
        try:
            await conn.execute("BEGIN TRANSACTION READ ONLY")
            await _refuse_unsafe_targets(conn, url, target)
            # The deadline again, after connecting, for the statement itself.
            seconds = statement_seconds(target, deadline)
            await conn.execute(
                "SELECT pg_catalog.set_config('statement_timeout', %(ms)s, true),"
                " pg_catalog.set_config('lock_timeout', %(ms)s, true)",
                {"ms": f"{seconds * 1000:.0f}"},
            )
        except psycopg.Error as exc:
            raise DatabaseError(
                "sql_query could not prepare its read-only transaction: "
                + redact_credentials(" ".join(str(exc).split()), url),
                hint="check the database server and the role of GATHERING_SQL_TOOL_URL",
            ) from None
        try:
            return await _stream(conn, statement, max_rows)
        except psycopg.Error as exc:
            raise _statement_error(exc, seconds, url) from None
    finally:
        await _close(conn)


def _configured_url(target: SqlTarget) -> str:
    if not target.url:
        raise ConfigurationError(
            "sql_query has no database to read: GATHERING_SQL_TOOL_URL is not set",
            hint="an administrator sets GATHERING_SQL_TOOL_URL=postgresql://reader@host/db "
            "(a role that may only SELECT) and restarts the server",
        )
    if not target.allow_own_database:
        for own in target.own_urls:
            if is_same_database(target.url, own):
                raise _own_database(target.url)
    return target.url


def _own_database(url: str, *, by_tables: bool = False) -> ConfigurationError:
    what = (
        "leads to a database holding GatheRing's tables"
        if by_tables
        else "names GatheRing's own database"
    )
    return ConfigurationError(
        f"GATHERING_SQL_TOOL_URL ({redact_url(url)}) {what}; sql_query does not read "
        "GatheRing's own database",
        hint="point GATHERING_SQL_TOOL_URL at another database, or (if the agents may read "
        "every user, key and memory) set GATHERING_SQL_TOOL_ALLOW_OWN_DATABASE=true",
    )


async def _connect(url: str, seconds: float) -> psycopg.AsyncConnection[Any]:
    ms, idle_ms = f"{seconds * 1000:.0f}", f"{(seconds + IDLE_GRACE) * 1000:.0f}"
    try:
        given = str(conninfo_to_dict(url).get("options") or "")
        # Every transaction of the session starts read-only, no statement outlives the call,
        # and a session its caller left hanging ends on its own.
        options = (
            f"{given} -c default_transaction_read_only=on -c statement_timeout={ms}"
            f" -c lock_timeout={ms} -c idle_in_transaction_session_timeout={idle_ms}"
        ).strip()
        return await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            options=options,
            application_name=APPLICATION_NAME,
        )
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"GATHERING_SQL_TOOL_URL is not a PostgreSQL URL libpq can read: "
            f"{redact_credentials(str(exc).strip(), url)}",
            hint="write it as postgresql://user:password@host:5432/dbname (percent-encode "
            "special characters of the password)",
        ) from None
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise DatabaseUnavailableError(
            f"sql_query could not connect to {redact_url(url)}: {redact_credentials(reason, url)}",
            hint="check that the server is up and that GATHERING_SQL_TOOL_URL (host, port, "
            "user, password, database) is right",
        ) from None


async def _refuse_unsafe_targets(
    conn: psycopg.AsyncConnection[Any], url: str, target: SqlTarget
) -> None:
    cursor = await conn.execute(
        _CHECK,
        {
            "server_roles": list(SERVER_ROLES),
            "gathering_tables": [f"{schema}.{table}" for schema, table in GATHERING_TABLES],
            "gathering_table_count": len(GATHERING_TABLES),
        },
    )
    found = await cursor.fetchone()
    assert found is not None
    role, privileged, gathering_schema = found
    if privileged:
        raise ConfigurationError(
            f"sql_query refuses to run as the role {role!r}: it is a superuser, may become "
            "one, or may run programs, use the server's files or end other sessions "
            "(COPY ... TO PROGRAM would run code on the database server)",
            hint=_SET_UP_HINT,
        )
    if gathering_schema and not target.allow_own_database:
        raise _own_database(url, by_tables=True)


async def _stream(
    conn: psycopg.AsyncConnection[Any], statement: str, max_rows: int
) -> dict[str, Any]:
    """Stream the statement's rows (one statement: `stream` uses the extended protocol)."""
    cursor = conn.cursor()
    rows: list[list[Any]] = []
    size = 0
    cut: str | None = None
    # Closed on break: psycopg then cancels the rest of the result.
    rows_of = cast(AsyncGenerator[Any, None], cursor.stream(statement))
    try:
        async with contextlib.aclosing(rows_of) as stream:
            async for row in stream:
                if len(rows) == max_rows:
                    cut = f"only the first {max_rows} rows are shown (max_rows); there are more"
                    break
                cells = [_cell(value) for value in row]
                size += len(json.dumps(cells, ensure_ascii=False)) + 1
                if size > MAX_RESULT_CHARS and rows:
                    cut = (
                        f"only the first {len(rows)} rows are shown: the answer is cut at "
                        f"{MAX_RESULT_CHARS} characters; select fewer columns or rows"
                    )
                    break
                rows.append(cells)
    except psycopg.ProgrammingError as exc:
        # psycopg's stream() ends this way after a command that returns no rows (SET, ...):
        # the command has run (inside the read-only transaction, rolled back below).
        if exc.sqlstate is not None or "didn't produce a result" not in str(exc):
            raise
        return {**_answer([], [], None), "note": "the statement ran; it returns no rows"}
    columns = [column.name for column in cursor.description or ()]
    if not rows and not columns:
        return {
            **_answer([], [], None),
            "note": "no rows (column names come with rows; see information_schema.columns)",
        }
    return _answer(columns, rows, cut)


def _answer(columns: list[str], rows: list[list[Any]], cut: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "columns": columns,
        "rows": rows,
        "row_count": len(rows),
        "truncated": cut is not None,
    }
    if cut is not None:
        answer["note"] = cut
    return answer


def _cut(text: str) -> str:
    if len(text) <= MAX_CELL_CHARS:
        return text
    return f"{text[:MAX_CELL_CHARS]}…[cut: {len(text) - MAX_CELL_CHARS} more characters]"


def _cell(value: Any) -> Any:
    """A value as JSON the model reads: numbers, text, booleans and null as they are; exact
    decimals, times, UUIDs and other types as text; bytes as hex; every cell at most
    `MAX_CELL_CHARS` characters."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return _cut("\\x" + data[: MAX_CELL_CHARS // 2 + 1].hex()) if data else "\\x"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID | datetime.timedelta):
        return str(value)
    if isinstance(value, list | tuple | dict):
        nested = _nested(value)
        text = json.dumps(nested, ensure_ascii=False)
        return nested if len(text) <= MAX_CELL_CHARS else _cut(text)
    return _cut(str(value))


def _nested(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _nested(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nested(item) for item in value]
    return _cell(value)


def _statement_error(exc: psycopg.Error, seconds: float, url: str) -> Exception:
    message = redact_credentials(" ".join(str(exc).split()), url)
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return ToolTimeoutError(
            f"the statement did not finish within {seconds:g}s and was cancelled",
            hint="narrow it (WHERE, LIMIT, fewer joins), or raise "
            "GATHERING_SQL_TOOL_STATEMENT_TIMEOUT",
        )
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return PermissionDeniedError(
            f"sql_query only reads; the database refused: {message}",
            hint="use SELECT (or WITH ... SELECT, EXPLAIN); nothing was changed",
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PermissionDeniedError(
            f"the database refused: {message}",
            hint="the configured role may not do this; read what it may SELECT",
        )
    if isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
    ):
        return DatabaseUnavailableError(
            f"sql_query lost its database connection: {message}",
            hint="try again; if it goes on, check the database server",
        )
    sqlstate = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    return InvalidInputError(
        f"the statement failed{sqlstate}: {message}",
        hint=_statement_hint(exc),
    )


def _statement_hint(exc: psycopg.Error) -> str:
    text = str(exc)
    if "multiple commands" in text:
        return "send one statement per call, without a second one after ';'"
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
        return (
            "list what exists: SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    return "fix the statement and call again (one read-only statement, PostgreSQL syntax)"


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    """Roll back whatever the statement did, then close (closing alone also ends it)."""
    try:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the connection is closed below; the server rolls back what it left open
    finally:
        await conn.close()

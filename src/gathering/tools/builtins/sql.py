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
statement (`SELECT 1; DROP TABLE t` is refused by the server as a whole).

The answer is capped on the server, before anything is sent: a query (SELECT, WITH, VALUES,
TABLE) runs as a subquery of ours that stops after the row cap and sends each row as JSON text
whose values are already cut at the cell cap and whose whole is cut at the answer cap, so
neither this process's memory nor its event loop depends on what the query returns. The
statement is first checked alone (`PREPARE`), which proves it one complete statement that
cannot close our subquery early. Commands that return no rows (SET, COMMIT, DO, ...) run as
they are; those that return rows we cannot cap (EXPLAIN, SHOW, FETCH, EXECUTE, CALL) and
writes are refused before they are sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
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
MAX_CELL_CHARS = 2_000  # a longer value is cut (by the server), with a marker
MAX_RESULT_CHARS = 40_000  # rows beyond this (as JSON) are left out; under the tool's cap
MAX_MESSAGE_CHARS = 2_000  # an error message of the statement is cut too
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


# What a statement is, by its first keyword (PostgreSQL's grammar decides a statement's kind by
# its first token). Queries are capped on the server (`_WRAPPED`); commands that never return
# rows run as they are; the rest is refused before anything is sent.
_QUERY_WORDS = frozenset({"(", "select", "with", "values", "table"})
_COMMAND_WORDS = frozenset(
    {
        "abort", "alter", "analyse", "analyze", "begin", "checkpoint", "close", "cluster",
        "comment", "commit", "copy", "create", "deallocate", "declare", "discard", "do", "drop",
        "end", "grant", "import", "listen", "load", "lock", "move", "notify", "prepare",
        "reassign", "refresh", "reindex", "release", "reset", "revoke", "rollback", "savepoint",
        "security", "set", "start", "truncate", "unlisten", "vacuum",
    }
)  # fmt: skip
_WRITE_WORDS = frozenset({"insert", "update", "delete", "merge"})
_QUERY_HINT = "sql_query runs SELECT, WITH ... SELECT, VALUES or TABLE"
_UNCAPPED_HINTS = {
    "explain": "EXPLAIN's output can hold values of any size that cannot be cut before they "
    "are sent, so sql_query does not run it; " + _QUERY_HINT + " (time a query by running it "
    "with a LIMIT)",
    "show": "read a setting with SELECT current_setting('name'), or SELECT name, setting "
    "FROM pg_settings",
    "call": "call a function with SELECT f(...); procedures are not run",
    "fetch": "cursors do not outlive a call; " + _QUERY_HINT,
    "execute": "prepared statements do not outlive a call; " + _QUERY_HINT,
}
_WORD = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_TRAILING = re.compile(r"[ \t\n\r\f\v;]+\Z")
_CHECK_NAME = "gathering_sql_statement"
_ANSWER_CUT = f"…[cut: the answer is at most {MAX_RESULT_CHARS} characters]"
# The statement as a subquery whose rows leave the server already cut: at most `limit` rows,
# each as a JSON array of its values (any value longer than MAX_CELL_CHARS as JSON, or as text
# for a string, replaced by its cut text and a marker) cut at MAX_RESULT_CHARS + 1 characters;
# the column names (in order, repeated names kept) come with the first row. `_PREPARE` has
# proved the statement one complete query first, so it cannot close this subquery early.
_VALUE_TEXT = (
    "CASE WHEN pg_catalog.json_typeof(e.value) = 'string' THEN e.value #>> '{}'"
    " ELSE e.value::text END"
)
_WRAPPED = """SELECT pg_catalog.left(n.names, {row_chars}), pg_catalog.left(n.cells, {row_chars})
FROM (
 SELECT
  CASE WHEN pg_catalog.row_number() OVER () = 1 THEN (
   SELECT pg_catalog.json_agg(e.key ORDER BY e.i)::text
   FROM pg_catalog.json_each(r.j) WITH ORDINALITY AS e(key, value, i)
  ) END AS names,
  (
   SELECT pg_catalog.json_agg(
    CASE WHEN pg_catalog.length(v.t) <= {cell_chars} THEN e.value
    ELSE pg_catalog.to_json(pg_catalog.concat(
     pg_catalog.left(v.t, {cell_chars}), '…[cut: ',
     pg_catalog.length(v.t) - {cell_chars}, ' more characters]'))
    END ORDER BY e.i)::text
   FROM pg_catalog.json_each(r.j) WITH ORDINALITY AS e(key, value, i),
    LATERAL (SELECT {value_text} AS t) AS v
  ) AS cells
 FROM (SELECT pg_catalog.row_to_json(q) AS j FROM (
{statement}
) AS q LIMIT {limit}) AS r
) AS n"""


def statement_kind(statement: str) -> str:
    """The statement's first keyword, lower case, as PostgreSQL's scanner reads it: past
    whitespace, comments (`--`, and `/* */` nested) and empty statements (`;`); "(" for a
    parenthesized query; "" when there is none or it is not an ASCII word."""
    i, n = 0, len(statement)
    while i < n:
        if statement[i] in " \t\n\r\f\v;":
            i += 1
        elif statement.startswith("--", i):
            while i < n and statement[i] not in "\n\r":
                i += 1
        elif statement.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    return ""
                if statement.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif statement.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif statement[i] == "(":
            return "("
        else:
            word = _WORD.match(statement, i)
            return word.group().lower() if word and word.group().isascii() else ""
    return ""


def _refuse_uncapped(kind: str) -> None:
    """Refuse, before connecting, a statement whose rows could not be capped (or a write)."""
    if kind in _QUERY_WORDS or kind in _COMMAND_WORDS:
        return
    if kind in _WRITE_WORDS:
        raise PermissionDeniedError(
            f"sql_query only reads; {kind.upper()} is refused and nothing was sent",
            hint="use SELECT (or WITH ... SELECT, VALUES, TABLE); nothing was changed",
        )
    if kind in _UNCAPPED_HINTS:
        raise InvalidInputError(
            f"sql_query does not run {kind.upper()}: its rows cannot be capped before they "
            "are sent",
            hint=_UNCAPPED_HINTS[kind],
        )
    raise InvalidInputError(
        "sql_query does not know this statement: it must start with SELECT, WITH, VALUES, "
        "TABLE or '(' (or be a command that returns no rows, such as SET)",
        hint=_QUERY_HINT + ", one statement per call",
    )


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
    kind = statement_kind(statement)
    _refuse_uncapped(kind)
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
            if kind in _QUERY_WORDS:
                return await _query(conn, statement, max_rows)
            return await _command(conn, statement)
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


async def _query(
    conn: psycopg.AsyncConnection[Any], statement: str, max_rows: int
) -> dict[str, Any]:
    """Run a query capped on the server (`_WRAPPED`): this process receives at most
    `max_rows` + 1 rows of at most MAX_RESULT_CHARS + 1 characters each, and stops reading
    once the answer is full, whatever the query computes."""
    statement = _TRAILING.sub("", statement)
    # Alone first (parsed, not run): one complete statement, so the subquery holds all of it.
    # binary=True makes psycopg use the extended protocol (one statement): without parameters
    # it would send the simple protocol, which runs `PREPARE ... AS SELECT 1; DELETE ...`.
    await conn.cursor().execute(f"PREPARE {_CHECK_NAME} AS\n{statement}", binary=True)
    await conn.execute(f"DEALLOCATE {_CHECK_NAME}")
    wrapped = _WRAPPED.format(
        statement=statement,
        limit=max_rows + 1,
        cell_chars=MAX_CELL_CHARS,
        row_chars=MAX_RESULT_CHARS + 1,
        value_text=_VALUE_TEXT,
    )
    columns: list[str] = []
    rows: list[list[Any]] = []
    size = 0
    cut: str | None = None
    # Closed on break: psycopg then cancels the rest of the result.
    rows_of = cast(AsyncGenerator[Any, None], conn.cursor().stream(wrapped))
    async with contextlib.aclosing(rows_of) as stream:
        async for names, cells in stream:
            if not rows:
                columns = _names(names)
            if len(rows) == max_rows:
                cut = f"only the first {max_rows} rows are shown (max_rows); there are more"
                break
            # A row cut by the server cannot fit after another one: it is not even read.
            whole = len(cells or "") <= MAX_RESULT_CHARS
            if whole or not rows:
                values, whole = _values(cells, len(columns))
                size += len(json.dumps(values, ensure_ascii=False)) + 1
            if rows and (not whole or size > MAX_RESULT_CHARS):
                cut = (
                    f"only the first {len(rows)} rows are shown: the answer is cut at "
                    f"{MAX_RESULT_CHARS} characters; select fewer columns or rows"
                )
                break
            rows.append(values)
            if not whole:
                cut = (
                    f"the row is cut at {MAX_RESULT_CHARS} characters (its last values are "
                    "left out); select fewer or shorter columns"
                )
                break
    if not rows:
        return {
            **_answer([], [], None),
            "note": "no rows (column names come with rows; see information_schema.columns)",
        }
    return _answer(columns, rows, cut)


def _names(text: str | None) -> list[str]:
    if text is None:
        return []
    if len(text) > MAX_RESULT_CHARS:
        raise InvalidInputError(
            f"the statement's column names are longer than {MAX_RESULT_CHARS} characters",
            hint="select fewer columns",
        )
    return [str(name) for name in json.loads(text)]


# Numbers with a fraction or an exponent stay as PostgreSQL wrote them (exact decimals, and
# floats, as text); integers are JSON numbers.
_DECODER = json.JSONDecoder(parse_float=str)
_SEPARATOR = re.compile(r"\s*([,\]])\s*")


def _values(text: str | None, count: int) -> tuple[list[Any], bool]:
    """A row's values from the server's JSON array text (at most MAX_RESULT_CHARS + 1
    characters), and whether it was whole: when it was cut, the values that arrived whole,
    then `_ANSWER_CUT` for the rest (`count` values in all)."""
    if text is None:  # a row without columns
        return [], True
    if len(text) <= MAX_RESULT_CHARS:
        return cast(list[Any], _DECODER.decode(text)), True
    values: list[Any] = []
    index = 1  # past "["
    while len(values) < count - 1:
        try:
            value, end = _DECODER.raw_decode(text, index)
        except ValueError:
            break
        separator = _SEPARATOR.match(text, end)
        if separator is None:  # a number cut short parses: it must be followed by ", "
            break
        values.append(value)
        index = separator.end()
    return [*values, *[_ANSWER_CUT] * max(count - len(values), 1)], False


async def _command(conn: psycopg.AsyncConnection[Any], statement: str) -> dict[str, Any]:
    """Run a command that returns no rows (SET, COMMIT, DO, ...), as it is."""
    rows_of = cast(AsyncGenerator[Any, None], conn.cursor().stream(statement))
    try:
        async with contextlib.aclosing(rows_of) as stream:
            async for _row in stream:  # none of these commands returns rows
                raise InvalidInputError(
                    "the command returned rows sql_query cannot cap", hint=_QUERY_HINT
                )
    except psycopg.ProgrammingError as exc:
        # psycopg's stream() ends this way after a command that returns no rows (SET, ...):
        # the command has run (inside the read-only transaction, rolled back below).
        if exc.sqlstate is not None or "didn't produce a result" not in str(exc):
            raise
    return {**_answer([], [], None), "note": "the statement ran; it returns no rows"}


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


def _cut(text: str, limit: int = MAX_CELL_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[cut: {len(text) - limit} more characters]"


def _statement_error(exc: psycopg.Error, seconds: float, url: str) -> Exception:
    # An error may quote a value of any size (e.g. 'x...'::int): cut before reworking it.
    text = str(exc)
    message = _cut(
        redact_credentials(" ".join(text[: 2 * MAX_MESSAGE_CHARS].split()), url),
        MAX_MESSAGE_CHARS,
    )
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return ToolTimeoutError(
            f"the statement did not finish within {seconds:g}s and was cancelled",
            hint="narrow it (WHERE, LIMIT, fewer joins), or raise "
            "GATHERING_SQL_TOOL_STATEMENT_TIMEOUT",
        )
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return PermissionDeniedError(
            f"sql_query only reads; the database refused: {message}",
            hint="use SELECT (or WITH ... SELECT, VALUES, TABLE); nothing was changed",
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

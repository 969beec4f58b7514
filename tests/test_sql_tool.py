"""sql_query on a real PostgreSQL: a throwaway database and roles of this module's own on the
test server, read through the tool, and attacked: writes, a read-write transaction, two
statements, session settings, COPY TO PROGRAM, sleeping past the timeout, privileged roles
and GatheRing's own database must all fail, and leave the data as it was."""

from __future__ import annotations

import asyncio
import json
import resource
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from loop_watch import LoopWatch
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gathering.config import get_settings
from gathering.db import Database
from gathering.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidInputError,
    PermissionDeniedError,
    ToolArgumentsError,
    ToolTimeoutError,
)
from gathering.tools.builtins import sql as sql_tool
from gathering.tools.context import ToolContext
from gathering.tools.registry import registry

ROWS = 2_500


@dataclass(frozen=True)
class SqlServer:
    """The module's database, and a URL per role: `writer` owns the tables (only the
    read-only transaction stops it), `reader` may only SELECT, `programmer` may run
    programs, `signaller` may end other sessions, `climber` may SET ROLE to a superuser,
    `admin` is the server's superuser."""

    admin_url: str
    writer: str
    reader: str
    programmer: str
    signaller: str
    climber: str
    admin: str


def _role_url(server: str, dbname: str, role: str | None, password: str | None) -> str:
    params = {"dbname": dbname}
    if role is not None:
        params |= {"user": role, "password": password or ""}
    return make_conninfo(server, **params)


@pytest.fixture(scope="module")
def sql_server(test_server_url: str) -> Iterator[SqlServer]:
    suffix = secrets.token_hex(4)
    dbname = f"sqltool_{suffix}"
    password = secrets.token_urlsafe(16)
    names = ("writer", "reader", "programmer", "signaller", "climber")
    roles = {name: f"sqltool_{name}_{suffix}" for name in names}
    superuser = str(conninfo_to_dict(test_server_url).get("user") or "postgres")
    with psycopg.connect(test_server_url, autocommit=True) as conn:
        for role in roles.values():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
        for role, predefined in (
            ("programmer", "pg_execute_server_program"),
            ("signaller", "pg_signal_backend"),
        ):
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(predefined), sql.Identifier(roles[role])
                )
            )
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(superuser), sql.Identifier(roles["climber"])
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(roles["writer"])
            )
        )
    admin_url = make_conninfo(test_server_url, dbname=dbname)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(roles["writer"])))
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer text, total numeric(10, 2),"
            " placed_at timestamptz, tags text[], data jsonb, blob bytea)"
        )
        conn.execute(
            "INSERT INTO orders SELECT i, 'customer ' || i, i * 1.5,"
            " timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',"
            " ARRAY['a', 'b'], jsonb_build_object('n', i), '\\x00ff'::bytea"
            " FROM generate_series(1, %s) AS i",
            (ROWS,),
        )
        conn.execute("CREATE SEQUENCE counter")
        conn.execute("CREATE TABLE secrets (value text)")
        conn.execute("INSERT INTO secrets VALUES ('hidden')")
        for name in ("reader", "programmer", "climber"):
            conn.execute(
                sql.SQL("GRANT SELECT ON orders TO {}").format(sql.Identifier(roles[name]))
            )
    yield SqlServer(
        admin_url=admin_url,
        **{
            name: _role_url(test_server_url, dbname, role, password) for name, role in roles.items()
        },
        admin=admin_url,
    )
    with psycopg.connect(test_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        for role in roles.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def use(settings_env, sql_server: SqlServer):  # type: ignore[no-untyped-def]
    """`use("writer")`: point sql_query at the module's database as that role."""

    def apply(role: str = "writer", **settings: object) -> None:
        settings_env(sql_tool_url=getattr(sql_server, role), **settings)

    return apply


async def query(statement: str, context: ToolContext | None = None, **arguments: object) -> dict:
    output = await registry.execute(
        "sql_query", {"query": statement, **arguments}, context or ToolContext()
    )
    return json.loads(output)


def _count(url: str, table: str = "orders") -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        row = found.fetchone()
        assert row is not None
        return int(row[0])


async def orders_left(sql_server: SqlServer) -> int:
    return await asyncio.to_thread(_count, sql_server.admin_url)


# --- configuration ------------------------------------------------------------------------


async def test_without_a_configured_url_it_refuses_and_says_what_to_set(settings_env):
    settings_env(sql_tool_url="")
    with pytest.raises(ConfigurationError) as refused:
        await query("SELECT 1")
    assert "GATHERING_SQL_TOOL_URL" in refused.value.message
    assert "GATHERING_SQL_TOOL_URL=postgresql://" in (refused.value.hint or "")


def test_the_tool_is_registered_as_a_read_only_data_tool():
    tool = registry.require("sql_query")
    assert (tool.effect, tool.category, tool.default_policy) == ("read", "data", "allow")
    properties = tool.spec.parameters["properties"]
    assert properties["max_rows"]["maximum"] == 1000 and properties["max_rows"]["default"] == 200
    assert properties["query"]["maxLength"] == sql_tool.MAX_STATEMENT_CHARS


# --- reading ------------------------------------------------------------------------------


async def test_a_select_returns_columns_and_json_rows(use):
    use("reader")
    answer = await query(
        "SELECT id, customer, total, placed_at, tags, data, blob, NULL AS nothing,"
        " 100 * 0.5 > 1 AS big, '50%' AS ratio FROM orders WHERE id <= 2 ORDER BY id"
    )
    assert answer["columns"] == [
        "id", "customer", "total", "placed_at", "tags", "data", "blob", "nothing", "big", "ratio",
    ]  # fmt: skip
    assert answer["rows"][0] == [
        1, "customer 1", "1.50", "2024-01-01T01:00:00+00:00", ["a", "b"], {"n": 1}, "\\x00ff",
        None, True, "50%",
    ]  # fmt: skip
    assert (answer["row_count"], answer["truncated"]) == (2, False)
    assert "note" not in answer


async def test_rows_are_capped_and_the_answer_says_so(use):
    use("reader")
    capped = await query("SELECT id FROM orders ORDER BY id")
    assert capped["row_count"] == 200 and capped["truncated"] is True
    assert capped["rows"][-1] == [200] and "200 rows" in capped["note"]
    widest = await query("SELECT id FROM orders ORDER BY id", max_rows=1000)
    assert widest["row_count"] == 1000 and widest["truncated"] is True
    exact = await query("SELECT id FROM orders WHERE id <= 7", max_rows=7)
    assert exact["row_count"] == 7 and exact["truncated"] is False
    with pytest.raises(ToolArgumentsError) as refused:
        await query("SELECT 1", max_rows=1001)
    assert refused.value.details["errors"][0]["path"] == "max_rows"


async def test_long_cells_and_large_answers_are_cut(use):
    use("reader")
    cell = await query("SELECT repeat('x', 10000) AS long")
    text = cell["rows"][0][0]
    assert text.startswith("x" * sql_tool.MAX_CELL_CHARS) and text.endswith("more characters]")
    assert len(text) < sql_tool.MAX_CELL_CHARS + 100
    wide = await query("SELECT repeat('y', 1900) FROM generate_series(1, 500)", max_rows=1000)
    assert wide["truncated"] is True and wide["row_count"] < 30
    assert "characters" in wide["note"]
    assert len(json.dumps(wide)) < sql_tool.MAX_RESULT_CHARS + 1_000


async def test_a_statement_without_rows_says_so(use):
    use("reader")
    command = await query("SET search_path TO public")
    assert command["note"] == "the statement ran; it returns no rows"
    assert (command["rows"], command["row_count"], command["truncated"]) == ([], 0, False)
    empty = await query("SELECT id FROM orders WHERE false")
    assert empty["rows"] == [] and "information_schema.columns" in empty["note"]


async def test_errors_of_the_statement_come_back_with_a_hint(use):
    use("reader")
    with pytest.raises(InvalidInputError) as missing:
        await query("SELECT * FROM no_such_table")
    assert "no_such_table" in missing.value.message and "42P01" in missing.value.message
    assert "information_schema.tables" in (missing.value.hint or "")
    with pytest.raises(PermissionDeniedError) as hidden:
        await query("SELECT * FROM secrets")
    assert "permission denied" in hidden.value.message


# --- attacks: nothing is written ------------------------------------------------------------

WRITES = [
    "INSERT INTO orders (id) VALUES (999999)",
    "UPDATE orders SET total = 0",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "TRUNCATE orders",
    "CREATE TABLE intruder (x int)",
    "ALTER TABLE orders ADD COLUMN intruder int",
    "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone",
    "SELECT nextval('counter')",
    "SELECT * FROM orders FOR UPDATE",
    "COPY orders FROM STDIN",
    "GRANT SELECT ON secrets TO PUBLIC",
]


@pytest.mark.parametrize("statement", WRITES)
async def test_writes_are_refused_even_for_the_tables_owner(use, sql_server, statement):
    use("writer")  # owns the tables: only the read-only transaction stands in the way
    with pytest.raises((PermissionDeniedError, InvalidInputError)) as refused:
        await query(statement)
    assert refused.value.hint
    assert await orders_left(sql_server) == ROWS


@pytest.mark.parametrize(
    "statement",
    [
        "SET TRANSACTION READ WRITE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SELECT set_config('transaction_read_only', 'off', true)",
        "COMMIT; DROP TABLE orders",
        "ROLLBACK; DELETE FROM orders",
        "SELECT 1; SELECT 2",
        "SELECT 1; DELETE FROM orders",
        "DO $$ BEGIN COMMIT; DELETE FROM orders; END $$",
        "DO $$ BEGIN PERFORM set_config('transaction_read_only', 'off', true);"
        " EXECUTE 'DELETE FROM orders'; END $$",
        "CALL no_such_procedure()",
        "BEGIN; DELETE FROM orders; COMMIT",
    ],
)
async def test_escapes_from_the_read_only_transaction_fail(use, sql_server, statement):
    use("writer")
    try:
        answer = await query(statement)
    except (PermissionDeniedError, InvalidInputError):
        pass
    else:  # a statement that ran harmlessly (a SET of the session) wrote nothing either
        assert answer["row_count"] <= 1
    assert await orders_left(sql_server) == ROWS
    # The next call (a new session) is as read-only as ever.
    with pytest.raises(PermissionDeniedError):
        await query("DELETE FROM orders")
    assert await orders_left(sql_server) == ROWS


async def test_two_statements_are_refused_with_a_hint(use):
    use("writer")
    with pytest.raises(InvalidInputError) as refused:
        await query("SELECT 1; SELECT 2")
    assert "one statement" in (refused.value.hint or "")


async def test_a_session_setting_does_not_outlive_its_call(use, sql_server):
    use("writer")
    changed = await query("SELECT set_config('default_transaction_read_only', 'off', false)")
    assert changed["rows"] == [["off"]]
    with pytest.raises(PermissionDeniedError):
        await query("DELETE FROM orders")
    commit = await query("COMMIT")  # ends the read-only transaction; nothing follows it
    assert commit["row_count"] == 0
    assert await orders_left(sql_server) == ROWS


async def test_copy_to_program_never_runs(use, tmp_path):
    marker = Path("/tmp") / f"gathering-sqltool-{secrets.token_hex(6)}"
    statement = f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"
    use("writer")  # an ordinary role: PostgreSQL refuses it
    with pytest.raises(PermissionDeniedError):
        await query(statement)
    # Roles that could run it are refused before the statement is sent.
    for role in ("admin", "programmer", "climber"):
        use(role)
        with pytest.raises(ConfigurationError) as refused:
            await query(statement)
        assert "COPY ... TO PROGRAM" in refused.value.message, role
        assert "GRANT SELECT" in (refused.value.hint or "")
    await asyncio.sleep(0.2)
    assert not await asyncio.to_thread(marker.exists)


async def test_a_role_that_may_end_other_sessions_is_refused(use):
    use("signaller")
    with pytest.raises(ConfigurationError) as refused:
        await query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity")
    assert "end other sessions" in refused.value.message


# --- attacks: time ----------------------------------------------------------------------------


async def _sessions_left(sql_server: SqlServer) -> int:
    def count() -> int:
        with psycopg.connect(sql_server.admin_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (sql_tool.APPLICATION_NAME,),
            ).fetchone()
            assert row is not None
            return int(row[0])

    return await asyncio.to_thread(count)


async def _no_sessions_left(sql_server: SqlServer) -> None:
    deadline = time.monotonic() + 5
    while await _sessions_left(sql_server):
        assert time.monotonic() < deadline, "a sql_query session outlived its call"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT pg_sleep(30)",
        "SELECT set_config('statement_timeout', '0', true), pg_sleep(30)",
        "DO $$ BEGIN PERFORM set_config('statement_timeout', '0', false);"
        " PERFORM pg_sleep(30); END $$",
        "SELECT count(*) FROM generate_series(1, 1000000000)",
    ],
)
async def test_a_statement_is_stopped_at_its_timeout(use, sql_server, statement):
    use("reader", sql_tool_statement_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError) as stopped:
        await query(statement)
    assert time.monotonic() - started < 5
    assert "GATHERING_SQL_TOOL_STATEMENT_TIMEOUT" in (stopped.value.hint or "")
    await _no_sessions_left(sql_server)


async def test_the_calls_own_deadline_bounds_the_statement(use, sql_server):
    use("reader")  # the statement cap (30 s) is longer than the call
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError):
        await registry.execute("sql_query", {"query": "SELECT pg_sleep(30)"}, seconds=1.5)
    assert time.monotonic() - started < 5
    await _no_sessions_left(sql_server)


# --- GatheRing's own database -----------------------------------------------------------------


async def test_gatherings_own_database_is_refused(settings_env):
    own = get_settings().database_url
    assert own
    settings_env(sql_tool_url=own)
    with pytest.raises(ConfigurationError) as refused:
        await query("SELECT email FROM auth.users")
    assert "own database" in refused.value.message
    assert "GATHERING_SQL_TOOL_ALLOW_OWN_DATABASE=true" in (refused.value.hint or "")


async def test_the_database_a_call_came_through_is_refused(settings_env, db: Database):
    settings_env(sql_tool_url=db.url)
    with pytest.raises(ConfigurationError) as refused:
        await query("SELECT 1", ToolContext(db=db))
    assert "own database" in refused.value.message


async def test_a_gathering_database_under_another_name_is_refused(
    settings_env, migrated_database_url, sql_server
):
    # Another spelling of a GatheRing database (here a copy, read as an ordinary role) is
    # recognised by its tables once connected.
    reader = conninfo_to_dict(sql_server.reader)
    url = make_conninfo(migrated_database_url, user=reader["user"], password=reader["password"])
    settings_env(sql_tool_url=url)
    with pytest.raises(ConfigurationError) as refused:
        await query("SELECT current_database()")
    assert "own database" in refused.value.message
    settings_env(sql_tool_url=url, sql_tool_allow_own_database="true")
    answer = await query("SELECT current_database()")
    assert answer["rows"] == [[conninfo_to_dict(migrated_database_url)["dbname"]]]


def test_urls_of_the_same_database_are_recognised(tmp_path):
    same = sql_tool.is_same_database
    assert same("postgresql://a@localhost/app", "postgresql://b:pw@127.0.0.1:5432/app")
    assert same("postgresql://[::1]:5432/app", "host=localhost dbname=app")
    assert same("host=/tmp/sock/ dbname=app", "host=/tmp/sock dbname=app port=5432")
    assert not same("postgresql://localhost/app", "postgresql://localhost/other")
    assert not same("postgresql://localhost:5433/app", "postgresql://localhost/app")
    assert not same("postgresql://db.example/app", "postgresql://localhost/app")
    pgdata = tmp_path / "pgdata"
    assert sql_tool.embedded_urls(pgdata, "gathering") == ()
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text(
        f"123\n{pgdata}\n1700000000\n5433\n/tmp/pgserver-sock\n127.0.0.1\n1 2\nready\n"
    )
    urls = sql_tool.embedded_urls(pgdata, "gathering")
    assert same("postgresql:///gathering?host=/tmp/pgserver-sock&port=5433", urls[0])
    assert same("postgresql://127.0.0.1:5433/gathering", urls[1])


# --- connection failures --------------------------------------------------------------------


async def test_an_unreachable_server_is_reported_without_its_password(settings_env):
    password = secrets.token_urlsafe(12)
    settings_env(sql_tool_url=f"postgresql://someone:{password}@127.0.0.1:9/app")
    with pytest.raises(DatabaseUnavailableError) as failed:
        await query("SELECT 1")
    assert password not in str(failed.value.to_dict())
    assert "GATHERING_SQL_TOOL_URL" in (failed.value.hint or "")


# --- attacks: size ----------------------------------------------------------------------------


async def test_a_huge_value_neither_stalls_the_event_loop_nor_fills_memory(use):
    use("reader")
    async with LoopWatch() as watch:
        await query("SELECT array_agg(g) FROM generate_series(1, 5000000) g")
    assert watch.longest < 0.5, f"the event loop stalled {watch.longest:.2f}s converting one cell"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = await query("SELECT repeat('x', 150000000)")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100, f"a cell shown as 2,000 characters grew the process {grown_mib:.0f} MiB"
    assert answer["rows"][0][0].endswith(
        f"[cut: {150000000 - sql_tool.MAX_CELL_CHARS} more characters]"
    )


def _capped(answer: dict) -> None:
    """Every value and the whole answer within the caps."""
    assert len(json.dumps(answer, ensure_ascii=False)) < sql_tool.MAX_RESULT_CHARS + 2_000
    for row in answer["rows"]:
        for value in row:
            assert len(json.dumps(value, ensure_ascii=False)) < sql_tool.MAX_CELL_CHARS + 100


async def test_a_wide_row_is_cut_by_the_server_and_says_so(use):
    use("reader")
    columns = ", ".join(f"repeat('a', 1900) AS c{i}" for i in range(40))
    answer = await query(f"SELECT {columns} FROM generate_series(1, 5)")
    assert answer["columns"] == [f"c{i}" for i in range(40)]
    assert answer["row_count"] == 1 and answer["truncated"] is True
    row = answer["rows"][0]
    assert len(row) == 40 and row[0] == "a" * 1900 and row[-1].startswith("…[cut: the answer")
    assert "cut at 40000 characters" in answer["note"]
    _capped(answer)


async def test_values_keep_their_column_order_names_and_kinds(use):
    use("reader")
    answer = await query(
        "SELECT 2 AS b, 1 AS a, 3 AS b, 1.5::float8 AS f, 2::numeric AS n,"
        " 12345678901234567890 AS big, 'NaN'::float8 AS nan, ARRAY[repeat('z', 3000)] AS arr"
    )
    assert answer["columns"] == ["b", "a", "b", "f", "n", "big", "nan", "arr"]
    row = answer["rows"][0]
    assert row[:7] == [2, 1, 3, "1.5", 2, 12345678901234567890, "NaN"]
    assert row[7].startswith('["zzz') and row[7].endswith("more characters]")
    nothing = await query("SELECT FROM generate_series(1, 2)")
    assert (nothing["columns"], nothing["rows"]) == ([], [[], []])


async def test_an_error_quoting_a_huge_value_is_cut(use):
    use("reader")
    with pytest.raises(InvalidInputError) as refused:
        await query("SELECT repeat('x', 1000000)::int")
    assert "22P02" in refused.value.message
    assert len(refused.value.message) < sql_tool.MAX_MESSAGE_CHARS + 200


# The statement runs inside a subquery of ours: text that tries to close it early (and add a
# UNION or a LIMIT of its own outside our caps), or to hide a second statement, must fail.
ESCAPES = [
    "SELECT 1) AS q LIMIT 1) AS r) AS n UNION ALL SELECT repeat('x', 100000),"
    " repeat('x', 100000) --",
    "SELECT 1 AS a\n) AS q) AS r) AS n UNION ALL SELECT NULL, repeat('y', 100000) FROM (SELECT (1",
    "SELECT 1) AS q; SELECT repeat('x', 100000) --",
    "SELECT 1 /* ) AS q) AS r) AS n UNION ALL SELECT NULL, repeat('x', 100000) --",
    "SELECT 1 -- ) AS q LIMIT 1) AS r) AS n UNION ALL SELECT NULL, repeat('x', 100000)",
    "SELECT $x$ ) AS q) AS r) AS n UNION ALL SELECT NULL, repeat('x', 100000) --",
    "SELECT ' ) AS q) AS r) AS n UNION ALL SELECT NULL, repeat('x', 100000) --",
    "(SELECT 1)) AS q) AS r) AS n, LATERAL (SELECT repeat('x', 100000)) AS z --",
]


@pytest.mark.parametrize("statement", ESCAPES)
async def test_the_statement_cannot_close_its_subquery_early(use, statement):
    use("reader")
    try:
        answer = await query(statement)
    except InvalidInputError:
        return
    _capped(answer)
    assert "x" * (sql_tool.MAX_CELL_CHARS + 1) not in json.dumps(answer)


async def test_a_hidden_second_statement_never_runs(use, sql_server):
    # psycopg sends a statement without parameters with the simple protocol, which runs them
    # all: the check of the statement (PREPARE) must not.
    use("writer")
    for statement in (
        "SELECT 1; COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE;"
        " DELETE FROM orders",
        "SELECT 1; ROLLBACK; SET default_transaction_read_only = off; DROP TABLE orders",
        "WITH x AS (SELECT 1) SELECT * FROM x; COMMIT; DELETE FROM orders",
    ):
        with pytest.raises(InvalidInputError) as refused:
            await query(statement)
        assert "one statement" in (refused.value.hint or ""), statement
    assert await orders_left(sql_server) == ROWS


@pytest.mark.parametrize(
    "statement",
    [
        "/* /* */ SET x = 1 */ SELECT repeat('x', 100000)",
        "-- SET x = 1\nSELECT repeat('x', 100000)",
        ";SELECT repeat('x', 100000)",
        "\n\t ((SELECT repeat('x', 100000)))",
        "select repeat('x', 100000);;\n",
        "VALUES (repeat('x', 100000))",
        "WITH t AS (SELECT repeat('x', 100000) AS v) TABLE t",
        "SELECT repeat('x', 100000) -- a comment without a newline",
    ],
)
async def test_every_spelling_of_a_query_is_capped(use, statement):
    use("reader")
    try:
        answer = await query(statement)
    except InvalidInputError:
        return
    _capped(answer)
    assert answer["rows"][0][0].endswith(
        f"[cut: {100000 - sql_tool.MAX_CELL_CHARS} more characters]"
    )


def test_statements_are_told_apart_as_postgresql_reads_them():
    kind = sql_tool.statement_kind
    assert kind("  select 1") == "select" and kind("(VALUES (1))") == "("
    assert kind("/* a /* nested */ SET */ SELECT 1") == "select"
    assert kind("/* a /* nested */ comment */ SET x = 1") == "set"
    assert (
        kind("-- SELECT\r\nSHOW all") == "show" and kind(";;WITH x AS (SELECT 1) TABLE x") == "with"
    )
    assert kind("/* unterminated SELECT 1") == "" and kind("") == "" and kind("\u00e9select") == ""
    assert kind("SELECTx") == "selectx" and kind('"select" 1') == ""


@pytest.mark.parametrize(
    ("statement", "hint"),
    [
        ("EXPLAIN VERBOSE SELECT repeat('x', 150000000)", "does not run it"),
        ("EXPLAIN ANALYZE DELETE FROM orders", "does not run it"),
        ("/* */ explain SELECT 1", "does not run it"),
        ("SHOW search_path", "current_setting"),
        ("FETCH ALL FROM c", "cursors"),
        ("EXECUTE p", "prepared statements"),
        ("CALL p(repeat('x', 150000000))", "SELECT f(...)"),
        ("frobnicate the table", "one statement per call"),
    ],
)
async def test_statements_whose_rows_cannot_be_capped_are_refused(use, sql_server, statement, hint):
    use("writer")
    with pytest.raises(InvalidInputError) as refused:
        await query(statement)
    assert hint in (refused.value.hint or "")
    assert await orders_left(sql_server) == ROWS


async def test_writes_are_refused_before_they_are_sent(use, sql_server):
    use("writer")
    with pytest.raises(PermissionDeniedError) as refused:
        await query("/* */ DELETE FROM orders RETURNING repeat(customer, 10000000)")
    assert "nothing was sent" in refused.value.message
    assert await orders_left(sql_server) == ROWS

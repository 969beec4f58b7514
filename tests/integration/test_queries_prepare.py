"""Every named statement of every package's `queries.sql`, prepared and planned on the migrated
schema: a typo, a renamed column or a parameter of no known type fails here, not in production.

Each statement is sent to the server as `PREPARE` (parse, analysis, parameter types, as the
driver's own server-side prepare does) and then `EXPLAIN EXECUTE` with NULL arguments (the
planner runs over every part of it; nothing is executed).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import gathering
from gathering.db import Database
from gathering.db.named_queries import FILE_NAME, parse_queries, queries_of

SRC = Path(gathering.__file__).parent
PACKAGES = sorted(
    ".".join(("gathering", *path.parent.relative_to(SRC).parts)) for path in SRC.rglob(FILE_NAME)
)
STATEMENTS = [(package, name) for package in PACKAGES for name in queries_of(package)]


async def prepare_and_plan(conn: psycopg.AsyncConnection, text: str) -> str | None:
    """None when the server parses, analyses and plans `text`; else its error message."""
    try:
        await conn.execute(sql.SQL("PREPARE gathering_check AS {}").format(sql.SQL(text)))
    except psycopg.Error as exc:
        return str(exc).strip()
    try:
        cur = await conn.execute(
            "SELECT cardinality(parameter_types) FROM pg_prepared_statements"
            " WHERE name = 'gathering_check'"
        )
        row = await cur.fetchone()
        assert row is not None
        arguments = sql.SQL(", ").join([sql.NULL] * row[0])
        explain = sql.SQL("EXPLAIN EXECUTE gathering_check")
        await conn.execute(explain + (sql.SQL("({})").format(arguments) if row[0] else sql.SQL("")))
        return None
    except psycopg.Error as exc:
        return str(exc).strip()
    finally:
        await conn.execute("DEALLOCATE gathering_check")


@pytest.fixture
async def conn(test_db: Database) -> AsyncIterator[psycopg.AsyncConnection]:
    """A plain connection to the session's migrated database (nothing here changes data)."""
    connection = await psycopg.AsyncConnection.connect(test_db.url, autocommit=True)
    yield connection
    await connection.close()


def test_the_query_files_are_found() -> None:
    assert {"gathering.agents", "gathering.auth", "gathering.db", "gathering.events"} <= set(
        PACKAGES
    )
    for package in PACKAGES:  # shipped as package data, read the way the code reads them
        assert importlib.resources.files(package).joinpath(FILE_NAME).is_file()


@pytest.mark.parametrize(("package", "name"), STATEMENTS, ids=[f"{p}:{n}" for p, n in STATEMENTS])
async def test_every_named_statement_prepares_on_the_migrated_schema(
    conn: psycopg.AsyncConnection, package: str, name: str
) -> None:
    error = await prepare_and_plan(conn, queries_of(package)[name])
    assert error is None, f"{package}/{FILE_NAME}: {name}: {error}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_named_statement_is_used(package: str) -> None:
    """A statement no module names is dead text that the prepare test would keep alive."""
    source = "\n".join(path.read_text() for path in SRC.rglob("*.py"))
    unused = [name for name in queries_of(package) if not re.search(rf"\"{name}\"", source)]
    assert unused == []


# --- the guard rail, shown failing -------------------------------------------------------------

BROKEN = """\
-- name: fine --
SELECT id, email FROM auth.users WHERE id = $1

-- name: missing_column --
SELECT id, emial FROM auth.users WHERE id = $1

-- name: missing_table --
UPDATE auth.userz SET is_active = $2 WHERE id = $1

-- name: untyped_parameter --
SELECT count(*) FROM auth.users WHERE $1 IS NULL
"""


async def test_the_check_fails_on_a_broken_statement(conn: psycopg.AsyncConnection) -> None:
    queries = parse_queries(BROKEN, "broken/queries.sql")
    errors = {name: await prepare_and_plan(conn, queries[name]) for name in queries}
    assert errors["fine"] is None
    assert 'column "emial" does not exist' in str(errors["missing_column"])
    assert 'relation "auth.userz" does not exist' in str(errors["missing_table"])
    assert "could not determine data type of parameter $1" in str(errors["untyped_parameter"])

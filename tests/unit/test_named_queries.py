"""The loader of `queries.sql` files: names, descriptions, and the errors of a malformed file."""

from __future__ import annotations

import pytest

from gathering.db.named_queries import (
    QueryFileError,
    UnknownQueryError,
    parse_queries,
    queries_of,
)

FILE = """\
-- The statements of a package.

-- name: one_user --
-- One account by id.
SELECT * FROM auth.users
WHERE id = $1;

-- a section -----------------------------------------------------------------------------

-- name: count_users --
SELECT count(*) FROM auth.users -- every one
"""


def test_statements_are_read_by_name_with_their_description() -> None:
    queries = parse_queries(FILE, "x/queries.sql")
    assert list(queries) == ["one_user", "count_users"]
    assert queries["one_user"] == "SELECT * FROM auth.users\nWHERE id = $1"
    assert queries["count_users"] == "SELECT count(*) FROM auth.users -- every one"
    assert queries.statements["one_user"].description == "One account by id."
    assert queries.statements["count_users"].description == ""
    assert "one_user" in queries and "nope" not in queries


def test_an_unknown_name_is_a_clear_error() -> None:
    queries = parse_queries(FILE, "x/queries.sql")
    with pytest.raises(UnknownQueryError, match=r"x/queries.sql has no query named 'one_usr'"):
        queries["one_usr"]
    with pytest.raises(KeyError):  # a Mapping: `get` and `in` work as usual
        queries["one_usr"]
    assert queries.get("one_usr") is None


def test_a_duplicate_name_is_refused() -> None:
    text = FILE + "\n-- name: one_user --\nSELECT 1\n"
    with pytest.raises(QueryFileError, match=r"x/queries.sql:13: a second query named 'one_user'"):
        parse_queries(text, "x/queries.sql")


@pytest.mark.parametrize(
    "body",
    ["", "\n\n", "-- only a comment\n", "-- a comment\n\n-- another\n;\n"],
    ids=["empty", "blank", "comment", "comments-and-semicolon"],
)
def test_a_header_without_a_statement_is_refused(body: str) -> None:
    text = f"-- name: empty --\n{body}-- name: next --\nSELECT 1\n"
    with pytest.raises(QueryFileError, match="query 'empty' has no statement"):
        parse_queries(text, "x/queries.sql")
    with pytest.raises(QueryFileError, match="query 'last' has no statement"):
        parse_queries(f"-- name: last --\n{body}", "x/queries.sql")


@pytest.mark.parametrize("name", ["Upper", "with-dash", "", "1st", "two words"])
def test_a_malformed_name_is_refused(name: str) -> None:
    with pytest.raises(QueryFileError, match="is not a query name"):
        parse_queries(f"-- name: {name} --\nSELECT 1\n")


def test_sql_before_the_first_header_is_refused() -> None:
    with pytest.raises(QueryFileError, match=r":2: SQL before the first"):
        parse_queries("-- fine\nSELECT 1\n-- name: one --\nSELECT 1\n")


def test_package_files_are_read_once() -> None:
    assert queries_of("gathering.auth") is queries_of("gathering.auth")
    assert "user_by_id" in queries_of("gathering.auth")

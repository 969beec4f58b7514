"""Named SQL statements, kept in a `queries.sql` file in the package that runs them.

    -- name: user_by_id --
    -- One account by id.
    SELECT * FROM auth.users WHERE id = $1

Each statement follows a `-- name: <name> --` header; the comment lines right after the header
describe it and are not sent. `queries_of("gathering.auth")` reads a package's file once per
process; `queries["user_by_id"]` is the statement's text, and an unknown name is a clear error.
Every statement of every file is prepared on the migrated schema by a test
(`tests/integration/test_queries_prepare.py`).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gathering.errors import GatheringError

FILE_NAME = "queries.sql"
_HEADER = re.compile(r"^--\s*name:\s*(?P<name>.*?)\s*--\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class QueryFileError(GatheringError):
    """A `queries.sql` file that cannot be read as named statements."""

    code = "query_file_error"


class UnknownQueryError(KeyError):
    """A statement name that its file does not define."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class NamedQuery:
    """One statement: its name, the comment describing it, and its text."""

    name: str
    description: str
    text: str


class NamedQueries(Mapping[str, str]):
    """The statements of one file, by name: `queries["name"]` is the statement's text."""

    def __init__(self, source: str, statements: Mapping[str, NamedQuery]) -> None:
        self.source = source
        self.statements = dict(statements)

    def __getitem__(self, name: str) -> str:
        try:
            return self.statements[name].text
        except KeyError:
            raise UnknownQueryError(f"{self.source} has no query named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.statements

    def __iter__(self) -> Iterator[str]:
        return iter(self.statements)

    def __len__(self) -> int:
        return len(self.statements)

    def __repr__(self) -> str:
        return f"<NamedQueries {self.source}: {len(self)} statements>"


def _statement(name: str, lines: list[str], source: str) -> NamedQuery:
    comments = []
    while lines and (lines[0].startswith("--") or not lines[0].strip()):
        comment = lines.pop(0).removeprefix("--").strip()
        if comment:
            comments.append(comment)
    while lines and (lines[-1].lstrip().startswith("--") or not lines[-1].strip()):
        lines.pop()  # a section comment before the next header
    text = "\n".join(lines).strip().removesuffix(";").rstrip()
    if not text:
        raise QueryFileError(f"{source}: query {name!r} has no statement")
    return NamedQuery(name, " ".join(comments), text)


def parse_queries(text: str, source: str = FILE_NAME) -> NamedQueries:
    """The named statements of `text` (a `queries.sql` file named `source` in errors).

    Raises `QueryFileError` for a malformed or duplicate name, a header without a statement,
    and SQL before the first header (comments and blank lines may come first)."""
    found: dict[str, NamedQuery] = {}
    name: str | None = None
    lines: list[str] = []

    def close() -> None:
        if name is not None:
            found[name] = _statement(name, lines, source)

    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line.strip())
        if header is None:
            if name is None and line.strip() and not line.lstrip().startswith("--"):
                raise QueryFileError(f"{source}:{number}: SQL before the first `-- name: ... --`")
            lines.append(line)
            continue
        close()
        name, lines = header["name"], []
        if not _NAME.match(name):
            raise QueryFileError(f"{source}:{number}: {name!r} is not a query name")
        if name in found:
            raise QueryFileError(f"{source}:{number}: a second query named {name!r}")
    close()
    return NamedQueries(source, found)


@functools.cache
def queries_of(package: str) -> NamedQueries:
    """The statements of `package`'s `queries.sql` (read once per process)."""
    resource = importlib.resources.files(package).joinpath(FILE_NAME)
    return parse_queries(resource.read_text(encoding="utf-8"), f"{package}/{FILE_NAME}")

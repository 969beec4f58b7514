"""The transactional outbox `events.outbox`: write durable events, read them back, prune them.

A durable event is a row written with the caller's own transaction connection, so it commits
or rolls back with the state change it describes. Migration `0002_events.sql` does the rest in
the database, whoever writes the row: at commit, a deferred trigger takes a transaction-level
advisory lock and only then gives each new row its cursor, so cursor order equals commit order
(a reader that has seen cursor N will never see a smaller one appear later), and it sends
`NOTIFY gathering_events, '<cursor>'`, which PostgreSQL delivers only once the commit is done.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg

from gathering.db.database import Queries, Row
from gathering.db.locks import advisory_key
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_value
from gathering.errors import InvalidInputError
from gathering.events.patterns import compile_pattern
from gathering.events.types import Event

CHANNEL = "gathering_events"
# Written as a literal into 0002_events.sql (a test checks that the two agree).
OUTBOX_LOCK_KEY = advisory_key("events", "outbox")

_SQL = queries_of("gathering.events")


def payload(events: Sequence[Event]) -> str:
    """`events` as the JSON rows `write_events` takes, for a statement that writes them with
    other work of its own (the pipelines' `settle_and_chain`)."""
    rows = [
        {
            "id": str(e.id),
            "type": e.type,
            "subject": e.subject,
            "data": storable_value(dict(e.data)),  # jsonb refuses NUL and lone surrogates
            "occurred_at": e.occurred_at.isoformat(),
            "source": e.source,
            "correlation_id": e.correlation_id,
        }
        for e in events
    ]
    try:
        return json.dumps(rows, allow_nan=False, default=_not_json)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"durable event data must be JSON-serializable: {exc}",
            hint="put only dicts, lists, strings, numbers, booleans and None in `data`",
        ) from None


def _not_json(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


async def write(queries: Queries, events: Sequence[Event]) -> list[Event]:
    """Write `events` to the outbox on `queries` (a `Transaction`, or the `Database`).

    Returns the events written, in order. An event whose id is already in the outbox is
    skipped and left out. Cursors are given at commit: the events returned have none yet.
    """
    if not events:
        return []
    rows = await queries.fetch_all(_SQL["write_events"], payload(events))
    written = {r["id"] for r in rows}
    return [e for e in events if e.id in written]


def _select(
    since_cursor: int,
    limit: int,
    subjects: Sequence[str] | None,
    patterns: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    if limit < 1:
        raise InvalidInputError(f"limit must be at least 1, got {limit}")
    regexes: list[str] | None = None
    if patterns is not None and "*" not in patterns:
        regexes = [compile_pattern(p).regex for p in patterns]
    subject_list = None if subjects is None else list(subjects)
    return _SQL["events_since"], [since_cursor, limit, subject_list, regexes]


async def read_since(
    queries: Queries,
    since_cursor: int,
    *,
    limit: int = 1000,
    subjects: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
) -> list[Event]:
    """Durable events after `since_cursor`, in cursor order.

    `subjects` keeps events about those subjects only; `patterns` those whose type matches
    one of the patterns (see `gathering.events.patterns`).
    """
    query, args = _select(since_cursor, limit, subjects, patterns)
    return [Event.from_row(r) for r in await queries.fetch_all(query, *args)]


async def read_latest(
    queries: Queries,
    *,
    before: int | None = None,
    limit: int = 50,
    subjects: Sequence[str] | None = None,
) -> list[Event]:
    """The newest durable events (before cursor `before`, when given), newest first; about
    `subjects` only when given. For a feed's backfill: page back with the last one's cursor."""
    if limit < 1:
        raise InvalidInputError(f"limit must be at least 1, got {limit}")
    subject_list = None if subjects is None else list(subjects)
    rows = await queries.fetch_all(_SQL["latest_events"], before, limit, subject_list)
    return [Event.from_row(r) for r in rows]


async def read_since_on(
    conn: psycopg.AsyncConnection[Row], since_cursor: int, *, limit: int
) -> list[Event]:
    """`read_since` on a raw connection, whose driver errors reach the caller unchanged."""
    query, args = _select(since_cursor, limit, None, None)
    cur = await conn.execute(query, args)
    return [Event.from_row(r) for r in await cur.fetchall()]


async def latest_cursor_on(conn: psycopg.AsyncConnection[Row]) -> int:
    """The highest committed cursor (0 for an empty outbox).

    Every row committed later gets a higher cursor (see the module docstring), so a listener
    that starts here misses nothing that commits after this call.
    """
    cur = await conn.execute(_SQL["latest_cursor"])
    row = await cur.fetchone()
    return int(row["cursor"]) if row else 0


async def prune(queries: Queries, older_than: timedelta, *, batch_size: int = 10_000) -> int:
    """Delete outbox rows recorded more than `older_than` ago; return how many.

    Deletes in batches so that no statement holds many row locks for long. A listener that
    was behind the pruned rows cannot deliver them any more: keep `older_than` well above
    the longest time an instance may be cut off.
    """
    if older_than <= timedelta(0):
        raise InvalidInputError(f"older_than must be positive, got {older_than}")
    total = 0
    while True:
        row = await queries.fetch_one(_SQL["prune_events"], older_than, batch_size)
        deleted = int(row["n"]) if row else 0
        total += deleted
        if deleted < batch_size:
            return total

"""The ledger's totals for the Prometheus exposition, read at scrape time and kept a few
seconds, so that many scrapers (or a fast one) cost the database one read per window.

A read first folds the ledger rows written since the last fold into the rollup (migration
0028; one instance folds at a time, the others read without folding), then sums the rollup
and the rows still queued: its cost follows the rows written since the last scrape, not the
ledger's age. A fold that fails (a read-only standby) leaves the read to answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from gathering.db import Database
from gathering.db.locks import LockKey, transaction_lock
from gathering.db.named_queries import queries_of
from gathering.errors import DatabaseError

CACHE_SECONDS = 5.0
MAX_SERIES = 500
"""(kind, provider, model) groups exported as their own series: the first ones folded; the
spending of every later group is summed into one series per kind with provider and model
`other`, for good (a series that changed sides would go down, and a counter must not)."""

FOLD_BATCH = 5_000
"""Ledger rows one fold transaction takes (short: its locks are held for milliseconds)."""
FOLD_ROUNDS = 20
"""Fold transactions one read runs at most (a larger backlog is folded over several reads;
the sums count the rows still queued all along)."""
FOLD_LOCK = LockKey("usage", "spending-fold")

_SQL = queries_of("gathering.usage")
log = structlog.get_logger(__name__)


class SpendingTotals:
    """The ledger's sums per kind, provider and model, cached for `CACHE_SECONDS`; one read
    at a time (scrapes arriving during a read wait for it and share its rows)."""

    def __init__(self, cache_seconds: float = CACHE_SECONDS) -> None:
        self.cache_seconds = cache_seconds
        self._read_at = float("-inf")
        self._rows: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    async def read(self, db: Database) -> list[dict[str, Any]]:
        """The sums, from the database at most once per `cache_seconds`."""
        if time.monotonic() - self._read_at < self.cache_seconds:
            return self._rows
        async with self._lock:
            if time.monotonic() - self._read_at >= self.cache_seconds:
                self._rows = await read_spending(db)
                self._read_at = time.monotonic()
        return self._rows


async def read_spending(db: Database) -> list[dict[str, Any]]:
    """Fold the new ledger rows into the rollup (unless another instance is folding), then
    the sums per kind, provider and model (`MAX_SERIES` groups, the rest as `other`)."""
    try:
        for _ in range(FOLD_ROUNDS):
            async with db.transaction() as tx:
                if not await transaction_lock(tx, FOLD_LOCK):
                    break  # another instance is folding
                if await tx.fetch_val(_SQL["fold_spending"], FOLD_BATCH) < FOLD_BATCH:
                    break
    except DatabaseError as exc:  # the sums are exact without it, only dearer to read
        log.warning("spending rollup not folded", error=exc.message)
    return await db.fetch_all(_SQL["spending_totals"], MAX_SERIES)

"""PostgreSQL advisory locks: typed keys, session and transaction scope, fail-closed duties.

Every use has its own namespace, so keys of different duties never collide. A duty guarded by
a lock runs only while the lock is provably held: when the database cannot be reached the
lock cannot be checked, so the duty stops (fail closed) and `health()` says why.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import structlog

from gathering.errors import GatheringError, LockUnavailableError

if TYPE_CHECKING:
    from gathering.db.database import Connection, Database, Transaction

log = structlog.get_logger(__name__)


def advisory_key(namespace: str, name: str = "") -> int:
    """A stable signed 64-bit lock key for `name` inside `namespace` (e.g. "migrations")."""
    digest = hashlib.blake2b(f"gathering:{namespace}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class LockKey:
    """A named advisory lock: `LockKey("scheduler")`, `LockKey("schedule", "42")`."""

    namespace: str
    name: str = ""

    @property
    def value(self) -> int:
        return advisory_key(self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}:{self.name}" if self.name else self.namespace


def _unavailable(key: LockKey, exc: BaseException) -> LockUnavailableError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return LockUnavailableError(
        f"cannot check advisory lock {key}: {reason}",
        hint="the guarded work stays stopped until the database is reachable again",
    )


@asynccontextmanager
async def session_lock(
    db: Database, key: LockKey, *, wait: bool = False
) -> AsyncIterator[Connection | None]:
    """Hold `key` for the block on a dedicated connection; yield it, or None when busy.

    With `wait=True` it blocks until the lock is free. Raises `LockUnavailableError` when the
    database cannot be reached.
    """
    try:
        async with db.connection() as conn:
            function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
            cur = await conn.execute(f"SELECT {function}($1) AS ok", (key.value,))
            row = await cur.fetchone()
            acquired = wait or bool(row and row["ok"])
            try:
                yield conn if acquired else None
            finally:
                if acquired and not conn.closed and not conn.broken:
                    await conn.execute("SELECT pg_advisory_unlock($1)", (key.value,))
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise _unavailable(key, exc) from exc
    except LockUnavailableError:
        raise
    except GatheringError as exc:
        if exc.http_status == 503:
            raise _unavailable(key, exc) from exc
        raise


async def transaction_lock(tx: Transaction, key: LockKey, *, wait: bool = False) -> bool:
    """Take `key` until the end of the transaction `tx`; False when another holder has it."""
    if wait:
        await tx.execute("SELECT pg_advisory_xact_lock($1)", key.value)
        return True
    return bool(await tx.fetch_val("SELECT pg_try_advisory_xact_lock($1)", key.value))


class SingletonDuty:
    """Run `work()` every `interval` seconds on exactly one instance: the lock holder.

    Fail closed: before each run the held lock's connection is checked; if that fails the duty
    stops at once, `health()` reports the reason, and acquisition is retried with backoff.
    """

    def __init__(
        self,
        db: Database,
        key: LockKey,
        work: Callable[[], Awaitable[None]],
        *,
        interval: float = 1.0,
        retry_max: float = 10.0,
    ) -> None:
        self.db, self.key, self.work = db, key, work
        self.interval, self.retry_max = interval, retry_max
        self.holding = False
        self.runs = 0
        self.problem: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"duty:{self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.holding = False

    def health(self) -> tuple[bool, str]:
        """(ok, detail): not ok while the lock cannot be checked."""
        if self.problem:
            return False, self.problem
        return True, "leader" if self.holding else "standby"

    async def _loop(self) -> None:
        delay = self.interval
        while True:
            try:
                async with session_lock(self.db, self.key) as conn:
                    self.problem = None
                    if conn is None:
                        delay = self.interval
                    else:
                        await self._lead(conn)
            except LockUnavailableError as exc:
                self.holding = False
                self.problem = exc.message
                log.warning("singleton duty stopped: lock unavailable", duty=str(self.key))
                delay = min(self.retry_max, max(self.interval, delay * 2))
            await asyncio.sleep(delay)

    async def _lead(self, conn: Connection) -> None:
        while True:
            # A session lock lives as long as its connection: a live connection proves the
            # lock is still ours, a dead one raises and stops the duty.
            await conn.execute("SELECT 1")
            self.holding = True
            await self.work()
            self.runs += 1
            await asyncio.sleep(self.interval)

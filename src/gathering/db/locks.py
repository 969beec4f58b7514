"""PostgreSQL advisory locks: typed keys, session and transaction scope, fail-closed duties.

Every use has its own namespace, so keys of different duties never collide. A duty guarded by
a lock runs only while the lock is provably held: when the database cannot be reached the
lock cannot be checked, so the duty stops (fail closed) and `health()` says why.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import structlog

from gathering.cancellation import cancel_and_wait
from gathering.db.named_queries import queries_of
from gathering.errors import GatheringError, LockUnavailableError
from gathering.observability import DUTY_FAILURES

if TYPE_CHECKING:
    from gathering.db.database import Connection, Database, Transaction

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.db")


@functools.lru_cache(maxsize=4096)
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
    db: Database, key: LockKey, *, wait: bool = False, wait_at_most: float | None = None
) -> AsyncIterator[Connection | None]:
    """Hold `key` for the block on a dedicated connection; yield it, or None when busy.

    With `wait=True` it blocks until the lock is free, or for at most `wait_at_most` seconds (then
    it yields None). Raises `LockUnavailableError` when the database cannot be reached.
    """
    body_failed = False  # errors of the guarded block pass through unchanged
    try:
        async with db.connection() as conn:
            acquired = await _acquire(conn, key, wait=wait, wait_at_most=wait_at_most)
            try:
                yield conn if acquired else None
            except BaseException:
                body_failed = True
                raise
            finally:
                if acquired:
                    await release_lock(conn, key)
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if body_failed:
            raise
        raise _unavailable(key, exc) from exc
    except LockUnavailableError:
        raise
    except GatheringError as exc:
        if exc.http_status == 503 and not body_failed:
            raise _unavailable(key, exc) from exc
        raise


async def _acquire(
    conn: Connection, key: LockKey, *, wait: bool, wait_at_most: float | None
) -> bool:
    cur = await conn.execute(_SQL["try_advisory_lock"], (key.value,))
    row = await cur.fetchone()
    if (row and row["ok"]) or not wait:
        return bool(row and row["ok"])
    return await wait_for_lock(conn, key, wait_at_most)


async def wait_for_lock(conn: Connection, key: LockKey, wait_at_most: float | None) -> bool:
    """Block on `conn` until it holds `key`, or `wait_at_most` seconds; False when they ran
    out. A wait cut short (cancelled, failed) closes `conn`, so it holds nothing after."""
    if wait_at_most is not None and wait_at_most <= 0:
        return False
    try:
        # lock_timeout bounds the wait inside the server, and the wait is exempt from the
        # pool's statement_timeout; RESET gives the session its own settings back after.
        milliseconds = "0" if wait_at_most is None else f"{wait_at_most * 1000:.0f}"
        await conn.execute(_SQL["lock_wait_settings"], (milliseconds,))
        try:
            await conn.execute(_SQL["advisory_lock"], (key.value,))
        except psycopg.errors.LockNotAvailable:
            return False
        finally:
            if not conn.closed and not conn.broken:
                await conn.execute("RESET lock_timeout")
                await conn.execute("RESET statement_timeout")
        return True
    except BaseException:
        await conn.close()
        raise


async def release_lock(conn: Connection, key: LockKey) -> None:
    """Release `key` held by `conn` (closing `conn` if that fails: the server then frees it)."""
    if conn.closed or conn.broken:
        return  # the server released the lock with the session
    try:
        await conn.execute(_SQL["advisory_unlock"], (key.value,))
    except psycopg.Error:
        await conn.close()  # the server frees the lock with the session; the caller's error,
        # if any, is the one worth raising
    except BaseException:
        await conn.close()
        raise


async def transaction_lock(tx: Transaction, key: LockKey, *, wait: bool = False) -> bool:
    """Take `key` until the end of the transaction `tx`; False when another holder has it."""
    if wait:
        await tx.execute(_SQL["advisory_xact_lock"], key.value)
        return True
    return bool(await tx.fetch_val(_SQL["try_advisory_xact_lock"], key.value))


class SingletonDuty:
    """Run `work()` every `interval` seconds on exactly one instance: the lock holder.

    Fail closed: before each run the held lock's connection is checked; if that fails the duty
    stops at once, `health()` reports the reason, and acquisition is retried with backoff.
    A run that raises is logged and counted (`gathering_duty_failures_total`); the lock is let
    go (another instance may do better) and the duty tries again with backoff, saying so in
    `health()` until a run succeeds.
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
        self.failures = 0  # consecutive failed runs
        self.last_failure: str | None = None
        self.problem: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"duty:{self.key}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self.holding = False

    def health(self) -> tuple[bool, str]:
        """(ok, detail): not ok while the lock cannot be checked; failing runs are reported."""
        if self.problem:
            return False, self.problem
        role = "leader" if self.holding else "standby"
        if self.failures:
            return True, f"{role}; {self.failures} run(s) failed in a row: {self.last_failure}"
        return True, role

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
            except Exception as exc:  # one failing run must not end the duty for good
                self.holding = False
                self.failures += 1
                self.last_failure = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300]
                DUTY_FAILURES.labels(duty=self.key.namespace).inc()
                log.exception(
                    "singleton duty run failed", duty=str(self.key), failures=self.failures
                )
                delay = min(self.retry_max, max(self.interval, delay * 2))
            await asyncio.sleep(delay)

    async def _lead(self, conn: Connection) -> None:
        while True:
            # A session lock lives as long as its connection: a live connection proves the
            # lock is still ours, a dead one raises and stops the duty.
            try:
                await conn.execute(_SQL["ping"])
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise _unavailable(self.key, exc) from exc
            self.holding = True
            await self.work()
            self.runs += 1
            self.failures, self.last_failure = 0, None
            await asyncio.sleep(self.interval)

"""Keeps the embedded PostgreSQL running: when it dies (an OOM kill, a crash), it is started
again on the same data directory, with backoff, by one process at a time.

Only a server GatheRing started itself is watched (never one named by DATABASE_URL). A
restart only ever removes stale lock files (`postmaster.pid` and the socket's lock, whose
process is gone, a zombie, or not this data directory's postgres; see
`embedded.clear_stale_lock_files`); the data is never touched.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from gathering.cancellation import cancel_and_wait
from gathering.db.embedded import postmaster_alive, start_embedded

log = structlog.get_logger(__name__)

CHECK_INTERVAL = 1.0  # seconds between two looks at the postmaster
FIRST_BACKOFF = 0.5  # seconds before a failed restart is tried again, doubling ...
MAX_BACKOFF = 30.0  # ... up to this


@dataclass(frozen=True)
class SupervisorState:
    """What the supervisor last saw: `ok`, and a detail for readiness."""

    ok: bool
    detail: str


@contextmanager
def supervision_lock(pgdata: Path) -> Iterator[bool]:
    """Try to become the one process restarting `pgdata`'s server: yields False when another
    process holds the lock (it is restarting the server)."""
    path = pgdata.parent / f".{pgdata.name}.supervisor.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def restart_embedded(pgdata: Path) -> bool:
    """Start `pgdata`'s server again if it is dead; False when another process is doing it.

    Blocking: run it in a thread. Raises what starting raises (`DatabaseUnavailableError`).
    """
    with supervision_lock(pgdata) as mine:
        if not mine:
            return False
        start_embedded(pgdata)
        return True


class EmbeddedSupervisor:
    """Watches the embedded server of `pgdata` and restarts it when it dies."""

    def __init__(self, pgdata: Path, *, interval: float = CHECK_INTERVAL) -> None:
        self.pgdata = pgdata  # resolved by `start`, off the event loop
        self.interval = interval
        self.restarts = 0
        self.state = SupervisorState(True, "watching the embedded PostgreSQL")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching (in this event loop)."""
        if self._task is None:
            self.pgdata = await asyncio.to_thread(self.pgdata.resolve)
            self._task = asyncio.create_task(self._watch(), name="embedded-postgres-supervisor")

    async def stop(self) -> None:
        """Stop watching (the server itself is left as it is)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if await asyncio.to_thread(postmaster_alive, self.pgdata):
                continue
            await self._bring_back()

    async def _bring_back(self) -> None:
        backoff, attempt = FIRST_BACKOFF, 0
        log.error("the embedded PostgreSQL died; restarting it", pgdata=str(self.pgdata))
        while True:
            attempt += 1
            self.state = SupervisorState(False, f"restarting (attempt {attempt})")
            started = time.monotonic()
            try:
                mine = await asyncio.to_thread(restart_embedded, self.pgdata)
            except Exception as exc:  # a start that failed: try again later
                log.warning(
                    "the embedded PostgreSQL did not start",
                    attempt=attempt,
                    error=str(exc)[:500],
                    retry_in=backoff,
                )
            else:
                # Done only once this process has started it, or adopted it from the one that
                # did: pgserver must know the new postmaster to stop it when this process exits.
                if mine and await asyncio.to_thread(postmaster_alive, self.pgdata):
                    self.restarts += 1
                    log.warning(
                        "the embedded PostgreSQL is back",
                        attempt=attempt,
                        seconds=round(time.monotonic() - started, 2),
                    )
                    self.state = SupervisorState(
                        True, f"watching the embedded PostgreSQL (restarted {self.restarts}x)"
                    )
                    return
                if not mine:  # look again soon: adopting it is quick once the other is done
                    self.state = SupervisorState(
                        False, f"restarting (attempt {attempt}, by another process)"
                    )
                    await asyncio.sleep(FIRST_BACKOFF)
                    continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

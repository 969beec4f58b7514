"""`OutboxListener`: brings every durable event to this instance exactly once, in cursor order.

It holds one dedicated autocommit connection (not from the pool, so a busy pool never starves
it) on which it `LISTEN`s to `gathering_events`. A notification only says "something new":
the listener then reads the rows after its own cursor, on the same connection, and hands them
over one by one before advancing. It also reads on start, after every reconnect, and every
`poll_interval` seconds, so a lost notification delays an event but never loses it. Because
cursor order equals commit order (see `gathering.events.outbox`), reading `cursor > last` in
order delivers each committed event once, and events of one subject in the order they
committed. The poll doubles as a health check of the connection.

procrastinate, our job queue, also LISTENs, but only to wake its workers; it offers no way to
fan a row out to every instance, so this loop is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row

from gathering.cancellation import cancel_and_wait
from gathering.db.database import Database, Row
from gathering.errors import DatabaseUnavailableError
from gathering.events import outbox
from gathering.events.types import Event

log = structlog.get_logger(__name__)

APPLICATION_NAME = "gathering-events-listener"


class OutboxListener:
    """Reads `events.outbox` after its cursor and passes each event to `deliver`, in order."""

    def __init__(
        self,
        db: Database,
        deliver: Callable[[Event], Awaitable[None]],
        *,
        channel: str = outbox.CHANNEL,
        poll_interval: float = 1.0,
        page_size: int = 1000,
        read_timeout: float = 30.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        self._db = db
        self._deliver = deliver
        self.channel = channel
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.read_timeout = read_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.cursor: int | None = None
        self.delivered = 0
        self.reads = 0
        self.notifications = 0
        self.reconnects = 0
        self._conn: psycopg.AsyncConnection[Row] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (None while disconnected)."""
        return self._conn.info.backend_pid if self.connected and self._conn else None

    async def start(self, since_cursor: int | None = None) -> None:
        """Connect and LISTEN, then deliver every event committed after `since_cursor`.

        By default, a listener started again goes on from its own cursor, and a new one from
        the newest committed cursor (only events committed from now on). Raises
        `DatabaseUnavailableError` when the database cannot be reached.
        """
        if self.running:
            return
        try:
            self._conn = await self._connect()
            if since_cursor is not None:
                self.cursor = since_cursor
            elif self.cursor is None:
                # LISTEN came first: nothing committed after this read can be missed.
                self.cursor = await outbox.latest_cursor_on(self._conn)
        except psycopg.Error as exc:
            await self._disconnect()
            raise DatabaseUnavailableError(
                f"the event listener could not start: {str(exc).strip() or type(exc).__name__}"
            ) from exc
        self._task = asyncio.create_task(self._run(), name="gathering-events-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._disconnect()

    async def _connect(self) -> psycopg.AsyncConnection[Row]:
        conn: psycopg.AsyncConnection[Row] = await psycopg.AsyncConnection.connect(
            self._db.url,
            autocommit=True,
            row_factory=dict_row,
            cursor_factory=psycopg.AsyncRawCursor,
            application_name=APPLICATION_NAME,
            connect_timeout=max(1, int(self._db.settings.db_connect_timeout)),
        )
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _run(self) -> None:
        delay = self.reconnect_delay
        while True:
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                    self.reconnects += 1
                    log.info("event listener reconnected", cursor=self.cursor)
                await self._catch_up(self._conn)
                delay = self.reconnect_delay
                await self._wait_for_news(self._conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Lost connection, failed read, or a bug in delivery: start over from the
                # cursor on a new connection. Exponential backoff with jitter, hand-written:
                # three lines do not justify a dependency.
                log.warning(
                    "event listener failed; reconnecting",
                    error=str(exc).strip() or type(exc).__name__,
                    retry_in=round(delay, 3),
                    cursor=self.cursor,
                )
                await self._disconnect()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311
                delay = min(delay * 2, self.max_reconnect_delay)

    async def _catch_up(self, conn: psycopg.AsyncConnection[Row]) -> None:
        while True:
            assert self.cursor is not None
            async with asyncio.timeout(self.read_timeout):
                events = await outbox.read_since_on(conn, self.cursor, limit=self.page_size)
            self.reads += 1
            for event in events:
                await self._deliver(event)
                assert event.cursor is not None
                self.cursor = event.cursor
                self.delivered += 1
            if len(events) < self.page_size:
                return

    async def _wait_for_news(self, conn: psycopg.AsyncConnection[Row]) -> None:
        """Return on a notification of a cursor not yet read, or after `poll_interval`."""
        # aclosing: the generator holds the connection's lock until it is closed.
        async with contextlib.aclosing(conn.notifies(timeout=self.poll_interval)) as notes:
            async for note in notes:
                self.notifications += 1
                try:
                    newest = int(note.payload)
                except ValueError:
                    return
                if self.cursor is None or newest > self.cursor:
                    return

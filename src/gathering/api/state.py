"""Per-app resources: settings, the lazily connected database, components, drain state."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import structlog

from gathering.agents import Agent
from gathering.api.draining import DrainState
from gathering.api.lifecycle import (
    BackgroundWorkComponent,
    DatabaseComponent,
    EmbeddedDatabaseComponent,
    EventBusComponent,
    JobsComponent,
    Lifecycle,
    LocalModelComponent,
    McpComponent,
)
from gathering.config import Settings
from gathering.db import Database
from gathering.events import EventBus
from gathering.jobs import JobQueue

log = structlog.get_logger(__name__)


class AppState:
    """What one app instance holds. The database connects on first use or at start-up."""

    def __init__(
        self, settings: Settings, *, testing: bool = False, database: Database | None = None
    ):
        self.settings = settings
        self.testing = testing
        self._database = database
        self._owns_database = database is None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.drain = DrainState()
        # Live agents by id, so concurrent messages to one agent queue on one lock.
        self.agents: OrderedDict[int, Agent] = OrderedDict()
        # Work that outlives its request (e.g. a streamed turn whose client left); drain
        # counts it as in flight.
        self.background: set[asyncio.Task[None]] = set()
        self._events: EventBus | None = None
        self._jobs: JobQueue | None = None
        self.lifecycle = Lifecycle(
            [
                DatabaseComponent(self),
                EmbeddedDatabaseComponent(self),
                EventBusComponent(self),
                McpComponent(),
                JobsComponent(self),
                BackgroundWorkComponent(self),
                LocalModelComponent(self),
            ]
        )

    async def database(self) -> Database:
        """The connected, migrated database of this app."""
        loop = asyncio.get_running_loop()
        if self._database is not None and self._database.is_connected and self._loop is loop:
            return self._database
        async with self._lock:
            if self._database is not None and self._owns_database and self._loop is not loop:
                # A pool belongs to the event loop that opened it; a new loop gets its own.
                log.debug("event loop changed; opening a new database pool")
                await self._database.abandon()
                self._database = None
                self._events = None  # its listener lived in the old loop too
                self._jobs = None  # and so did the job queue's pool
            if self._database is None:
                self._database = Database(test=self.testing, settings=self.settings)
                self._owns_database = True
            if not self._database.is_connected:
                await self._database.connect()
                if self.settings.auto_migrate:
                    await self._database.run_migrations()
            self._loop = loop
            return self._database

    async def event_bus(self) -> EventBus:
        """The app's event bus, listening for durable events of every instance."""
        if self._events is not None and self._loop is asyncio.get_running_loop():
            return self._events
        database = await self.database()
        async with self._lock:
            if self._events is None or self._events.db is not database:
                settings = self.settings
                bus = EventBus(
                    database,
                    poll_interval=settings.events_poll_interval,
                    retention=timedelta(days=settings.events_retention_days),
                )
                await bus.start()
                self._events = bus
            return self._events

    async def job_queue(self) -> JobQueue:
        """The app's job queue (procrastinate on the app's database), open."""
        database = await self.database()
        async with self._lock:
            if self._jobs is None or self._jobs.db is not database:
                self._jobs = await JobQueue(database).open()
            return self._jobs

    async def close_job_queue(self) -> None:
        """Close the job queue's pool."""
        jobs, self._jobs = self._jobs, None
        if jobs is not None:
            await jobs.close()

    def running_event_bus(self) -> EventBus | None:
        """The event bus if it was started, without starting it."""
        return self._events

    async def close_event_bus(self) -> None:
        """Stop the event bus: queued handlers get `shutdown_timeout` seconds to finish."""
        bus, self._events = self._events, None
        if bus is not None:
            await bus.close(grace=self.settings.shutdown_timeout)

    def connected_database(self) -> Database | None:
        """The database if it is connected now, without connecting it."""
        return (
            self._database if self._database is not None and self._database.is_connected else None
        )

    def run_in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` past the end of its request; drain and shutdown wait for it."""
        task = asyncio.create_task(work, name=name)
        self.background.add(task)
        self.drain.request_started()

        def finished(done: asyncio.Task[None]) -> None:
            self.background.discard(done)
            self.drain.request_finished()

        task.add_done_callback(finished)

    async def close(self) -> None:
        """Release what this app opened, after background work has had its chance (the
        lifecycle's `BackgroundWorkComponent` gives it that before the event bus stops)."""
        if self.background:
            await asyncio.wait(set(self.background), timeout=self.settings.shutdown_timeout)
        await self.close_job_queue()
        await self.close_event_bus()
        if self._database is not None and self._owns_database:
            await self._database.disconnect()
        self._loop = None

"""Per-app resources: settings, the lazily connected database, components, drain state."""

from __future__ import annotations

import asyncio

import structlog

from gathering.api.draining import DrainState
from gathering.api.lifecycle import DatabaseComponent, Lifecycle
from gathering.config import Settings
from gathering.db import Database

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
        self.lifecycle = Lifecycle([DatabaseComponent(self)])

    async def database(self) -> Database:
        """The connected, migrated database of this app."""
        loop = asyncio.get_running_loop()
        if self._database is not None and self._database.is_connected and self._loop is loop:
            return self._database
        async with self._lock:
            if self._database is None or self._loop is not loop:
                if self._database is not None and self._owns_database and self._loop is not loop:
                    # A pool belongs to the event loop that opened it; a new loop gets its own.
                    log.debug("event loop changed; opening a new database pool")
                    self._database = None
                if self._database is None:
                    self._database = Database(test=self.testing, settings=self.settings)
                    self._owns_database = True
            if not self._database.is_connected:
                await self._database.connect()
                if self.settings.auto_migrate:
                    await self._database.run_migrations()
            self._loop = loop
            return self._database

    def connected_database(self) -> Database | None:
        """The database if it is connected now, without connecting it."""
        return (
            self._database if self._database is not None and self._database.is_connected else None
        )

    async def close(self) -> None:
        """Release what this app opened."""
        if self._database is not None and self._owns_database:
            await self._database.disconnect()
        self._loop = None

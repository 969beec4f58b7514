"""Integration tests share the session database and start each test with empty tables."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi import FastAPI

from gathering.api.app import create_app
from gathering.config import load_settings
from gathering.db import Database


@pytest.fixture(autouse=True)
async def clean_tables(test_db: Database) -> AsyncIterator[None]:
    """Clean tables before each test."""
    await test_db.execute("TRUNCATE agent.agents CASCADE")
    yield


@pytest.fixture
async def app_for(migrated_database_url: str) -> AsyncIterator[Callable[..., FastAPI]]:
    """`app_for(**settings)`: an app on this test's own migrated database, closed after it."""
    apps: list[FastAPI] = []

    def make(**settings: Any) -> FastAPI:
        app = create_app(settings=load_settings(database_url=migrated_database_url, **settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.state.gathering.close()

"""Integration tests share the session database and start each test with empty tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gathering.db import Database


@pytest.fixture(autouse=True)
async def clean_tables(test_db: Database) -> AsyncIterator[None]:
    """Clean tables before each test."""
    await test_db.execute("TRUNCATE agent.agents CASCADE")
    yield

"""Rows the memory and knowledge tests need, written straight to the database."""

from __future__ import annotations

import secrets

from gathering.db import Database


async def new_agent(db: Database, name: str | None = None, owner_id: int | None = None) -> int:
    """A stored agent (of the local owner unless `owner_id`); its id."""
    row = await db.execute(
        "INSERT INTO agent.agents (name, model, owner_id) VALUES ($1, 'm', $2) RETURNING id",
        name or f"agent-{secrets.token_hex(3)}",
        owner_id,
    )
    assert row is not None
    return int(row["id"])


async def new_user(db: Database) -> int:
    """A stored user; its id."""
    row = await db.execute(
        "INSERT INTO auth.users (email) VALUES ($1) RETURNING id",
        f"u-{secrets.token_hex(4)}@example.com",
    )
    assert row is not None
    return int(row["id"])

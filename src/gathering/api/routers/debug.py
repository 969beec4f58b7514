"""Helpers for operational tests, mounted only with GATHERING_DEBUG_ENDPOINTS=true."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query

from gathering.api.deps import DbDep

router = APIRouter(prefix="/_debug", tags=["debug"], include_in_schema=False)


@router.get("/sleep")
async def sleep(seconds: float = Query(1.0, ge=0, le=60)) -> dict[str, float]:
    """Answer after `seconds` (a request that stays in flight)."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@router.get("/db-sleep")
async def db_sleep(db: DbDep, seconds: float = Query(1.0, ge=0, le=60)) -> dict[str, float]:
    """Answer after waiting `seconds` inside PostgreSQL (a handler blocked on SQL)."""
    await db.fetch_val("SELECT pg_sleep($1)", seconds)
    return {"slept": seconds}

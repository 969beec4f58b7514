"""`GET /events`: the latest durable events a caller may see, newest first, for a feed's
backfill before it follows `/ws` with `since` = the newest one's cursor (no gap, no repeat).

An administrator sees every event; anyone else the events of their own subject `user:<id>`,
which is what `/ws` gives a subscription that names no subject. API keys need `events:read`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from gathering.api.deps import MAX_ID, DbDep, EventsReader
from gathering.api.fields import WholeNumber
from gathering.api.security import rate_limit
from gathering.events import outbox

router = APIRouter(prefix="/events", tags=["events"])


class EventOut(BaseModel):
    """One event as the WebSocket sends it."""

    type: str
    data: dict[str, Any]
    subject: str | None
    id: str
    occurred_at: datetime
    source: str | None
    correlation_id: str | None
    cursor: int | None


@router.get(
    "", summary="The latest events you may see, newest first", dependencies=[rate_limit("relaxed")]
)
async def latest_events(
    principal: EventsReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=200)] = 50,
    before: Annotated[
        WholeNumber | None, Query(ge=1, le=MAX_ID, description="Page: older than this cursor")
    ] = None,
) -> list[EventOut]:
    """Durable events (text deltas are never kept); then follow `/ws` with `since` set to the
    first one's cursor."""
    subjects = None if principal.is_admin else [f"user:{principal.user_id}"]
    events = await outbox.read_latest(db, before=before, limit=limit, subjects=subjects)
    return [EventOut.model_validate(event.to_dict()) for event in events]

"""Prometheus metrics at /metrics: for admins and a scraper's token, or anyone when
`GATHERING_METRICS_ACCESS=public`. Spending (cost, tokens, calls) comes from the usage ledger
in PostgreSQL, read at scrape time (cached a few seconds): the same on every instance, and kept
across restarts."""

from __future__ import annotations

import asyncio
import hmac
import weakref

import structlog
from fastapi import APIRouter, Depends, Request, Response

from gathering.api.deps import app_state, get_db
from gathering.api.security import current_principal, require_admin
from gathering.catalog.settings import secret_matches
from gathering.db import Database
from gathering.errors import DatabaseError
from gathering.observability import (
    SPENDING,
    metrics_payload,
    record_event_stats,
    record_pool_stats,
)
from gathering.usage.spending_metrics import SpendingTotals

log = structlog.get_logger(__name__)
router = APIRouter(tags=["operations"])
_SPENDING: weakref.WeakKeyDictionary[Database, SpendingTotals] = weakref.WeakKeyDictionary()


def _presents_metrics_token(request: Request) -> bool:
    """Whether the request carries `Authorization: Bearer <GATHERING_METRICS_TOKEN>`."""
    token = app_state(request).settings.metrics_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    expected = token.get_secret_value().encode()
    return hmac.compare_digest(presented.strip().encode(), expected)


async def _presents_stored_metrics_token(request: Request) -> bool:
    """Whether the request carries the token an admin stored (`PUT /settings/metrics_token`),
    read from the database now, so a new token works on every instance at once."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    db = await get_db(request)
    return await secret_matches(db, "metrics_token", presented.strip(), app_state(request).settings)


async def metrics_reader(request: Request) -> None:
    """Dependency: anyone with `GATHERING_METRICS_ACCESS=public` or in single-user mode (every
    caller is the local owner, an admin); else the scrape token or an admin (401 without
    credentials, 403 for other users, audited)."""
    settings = app_state(request).settings
    if settings.metrics_access == "public" or not settings.auth_required:
        return
    if _presents_metrics_token(request):
        return
    if settings.metrics_token is None and await _presents_stored_metrics_token(request):
        return
    await require_admin(request, await current_principal(request))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Admins, or a scraper sending `Authorization: Bearer <GATHERING_METRICS_TOKEN>`; "
    "anyone when GATHERING_METRICS_ACCESS=public.",
    response_class=Response,
    dependencies=[Depends(metrics_reader)],
    responses={
        200: {
            "description": "The Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request) -> Response:
    database = app_state(request).connected_database()
    if database is not None:
        record_pool_stats(database.pool_stats())
        totals = _SPENDING.setdefault(database, SpendingTotals())
        try:
            SPENDING.set_totals(await totals.read(database))
        except DatabaseError as exc:  # the other metrics still answer; spending stays as read
            log.warning("spending metrics not read from the ledger", error=exc.message)
    bus = app_state(request).running_event_bus()
    if bus is not None:
        record_event_stats(bus.stats())
    # Off the loop: the process collector reads /proc, and the exposition is CPU work.
    payload, content_type = await asyncio.to_thread(metrics_payload)
    return Response(payload, media_type=content_type)

"""Prometheus metrics at /metrics: for admins and a scraper's token, or anyone when
`GATHERING_METRICS_ACCESS=public`."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Depends, Request, Response

from gathering.api.deps import app_state
from gathering.api.security import current_principal, require_admin
from gathering.observability import metrics_payload, record_event_stats, record_pool_stats

router = APIRouter(tags=["operations"])


def _presents_metrics_token(request: Request) -> bool:
    """Whether the request carries `Authorization: Bearer <GATHERING_METRICS_TOKEN>`."""
    token = app_state(request).settings.metrics_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    expected = token.get_secret_value().encode()
    return hmac.compare_digest(presented.strip().encode(), expected)


async def metrics_reader(request: Request) -> None:
    """Dependency: anyone with `GATHERING_METRICS_ACCESS=public` or in single-user mode (every
    caller is the local owner, an admin); else the scrape token or an admin (401 without
    credentials, 403 for other users, audited)."""
    settings = app_state(request).settings
    if settings.metrics_access == "public" or not settings.auth_required:
        return
    if _presents_metrics_token(request):
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
    bus = app_state(request).running_event_bus()
    if bus is not None:
        record_event_stats(bus.stats())
    # Off the loop: the process collector reads /proc, and the exposition is CPU work.
    payload, content_type = await asyncio.to_thread(metrics_payload)
    return Response(payload, media_type=content_type)

"""Prometheus metrics at /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gathering.api.deps import app_state
from gathering.observability import metrics_payload, record_event_stats, record_pool_stats

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    database = app_state(request).connected_database()
    if database is not None:
        record_pool_stats(database.pool_stats())
    bus = app_state(request).running_event_bus()
    if bus is not None:
        record_event_stats(bus.stats())
    payload, content_type = metrics_payload()
    return Response(payload, media_type=content_type)

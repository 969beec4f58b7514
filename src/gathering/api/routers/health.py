"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gathering import __version__
from gathering.api.deps import app_state
from gathering.errors import GatheringError

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/health/ready",
    summary="Readiness: database reachable and migrations current",
    responses={503: {"description": "Not ready; `reason` says why"}},
)
async def ready(request: Request) -> JSONResponse:
    checks: dict[str, Any] = {}
    reason: str | None = None
    try:
        db = await app_state(request).database()
        await db.fetch_val("SELECT 1")
        checks["database"] = "ok"
        status = await db.migration_status()
        checks["migrations"] = "current" if status.is_current else "behind"
        checks["vector"] = status.vector
        reason = status.problem()
    except GatheringError as exc:
        checks.setdefault("database", "unavailable")
        reason = str(exc)
    if reason:
        return JSONResponse({"status": "not_ready", "reason": reason, "checks": checks}, 503)
    return JSONResponse({"status": "ready", "checks": checks})

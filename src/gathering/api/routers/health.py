"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gathering import __version__
from gathering.api.deps import app_state
from gathering.api.errors import UNAVAILABLE_RETRY_AFTER

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/health/ready",
    summary="Readiness: not draining, database reachable, migrations current, components healthy",
    responses={503: {"description": "Not ready; `reason` says why"}},
)
async def ready(request: Request) -> JSONResponse:
    state = app_state(request)
    if state.drain.draining:
        body = {"status": "not_ready", "reason": "shutting down", "checks": {}}
        return JSONResponse(body, 503, headers={"Retry-After": "1"})
    report = await state.lifecycle.health()
    checks = {name: {"ok": h.ok, "detail": h.detail} for name, h in report.items()}
    problems = [f"{name}: {h.detail}" for name, h in report.items() if not h.ok]
    if problems:
        return JSONResponse(
            {"status": "not_ready", "reason": "; ".join(problems), "checks": checks},
            503,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )
    return JSONResponse({"status": "ready", "checks": checks})

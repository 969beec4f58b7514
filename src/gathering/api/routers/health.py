"""Liveness and readiness probes.

Readiness tells every caller whether the server is ready and which components it checks; the
details (each component's state, which may name the database's user, host and name) go only
to admins. In single-user mode every caller is the local owner, an admin, on this machine.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gathering import __version__
from gathering.api.deps import app_state
from gathering.api.errors import UNAVAILABLE_RETRY_AFTER
from gathering.api.security import optional_principal
from gathering.errors import GatheringError

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


async def _shows_details(request: Request) -> bool:
    """Whether the caller may see each component's detail: an admin (every local caller in
    single-user mode). Credentials that cannot be checked (the database is down) show none."""
    if not app_state(request).settings.auth_required:
        return True
    try:
        principal = await optional_principal(request)
    except GatheringError:
        return False
    return principal is not None and principal.is_admin


@router.get(
    "/health/ready",
    summary="Readiness: not draining, database reachable, migrations current, components healthy",
    description="Anyone gets the status and, per component, whether it is ok; an admin also "
    "gets each component's `detail` and a `reason` naming the problems.",
    responses={503: {"description": "Not ready; `reason` says why"}},
)
async def ready(request: Request) -> JSONResponse:
    state = app_state(request)
    if state.drain.draining:
        body = {"status": "not_ready", "reason": "shutting down", "checks": {}}
        return JSONResponse(body, 503, headers={"Retry-After": "1"})
    report = await state.lifecycle.health()
    details = await _shows_details(request)
    checks: dict[str, dict[str, Any]] = {
        name: {"ok": h.ok, "detail": h.detail} if details else {"ok": h.ok}
        for name, h in report.items()
    }
    failing = [name for name, h in report.items() if not h.ok]
    if failing:
        if details:
            reason = "; ".join(f"{name}: {report[name].detail}" for name in failing)
        else:
            reason = f"not ready: {', '.join(failing)}"
        return JSONResponse(
            {"status": "not_ready", "reason": reason, "checks": checks},
            503,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )
    return JSONResponse({"status": "ready", "checks": checks})

"""`install_security(app, settings)`: the middleware, the app-wide gate, state and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

from gathering.api.lifecycle import Component
from gathering.api.security.dependencies import security_gate
from gathering.api.security.headers import SecurityHeadersMiddleware
from gathering.api.security.hosts import HostOriginGuard
from gathering.api.security.state import SecurityState
from gathering.config import Settings
from gathering.errors import GatheringError

log = structlog.get_logger(__name__)

EXPOSED_HEADERS = [
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Request-ID",
]


class SecurityComponent(Component):
    """Loads the signing key at start, purges expired revocations hourly, closes the limiter."""

    name = "security"
    purge_interval = 3600.0

    def __init__(self, security: SecurityState) -> None:
        self.security = security
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.security.tokens()
        await self._purge()
        self._purger = asyncio.create_task(self._purge_periodically(), name="security-purge")

    async def _purge(self) -> None:
        purged = await (await self.security.services()).revocations.purge_expired()
        log.debug(
            "expired revocations purged", tokens=purged.revoked_tokens, sessions=purged.families
        )

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            try:
                await self._purge()
            except GatheringError as exc:
                log.warning("could not purge expired revocations", error=str(exc))

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        await self.security.close()


def install_security(app: FastAPI, settings: Settings) -> None:
    """Put `app` behind the security layer. Call before any `include_router`."""
    security = SecurityState(settings, app.state.gathering)
    app.state.security = security
    app.router.dependencies.append(Depends(security_gate))
    # Added innermost first: headers wrap CORS, which wraps the Host/Origin guard.
    app.add_middleware(HostOriginGuard, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    lifecycle = getattr(app.state.gathering, "lifecycle", None)
    if lifecycle is not None:
        lifecycle.add(SecurityComponent(security))

"""The FastAPI application: `create_app()` and the module-level `app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gathering import __version__
from gathering.api.errors import install_error_handlers
from gathering.api.routers import health
from gathering.api.state import AppState
from gathering.config import Settings, get_settings
from gathering.db import Database


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.gathering
    await state.database()
    try:
        yield
    finally:
        await state.close()


def create_app(
    testing: bool = False, *, settings: Settings | None = None, database: Database | None = None
) -> FastAPI:
    """Build an app. `testing=True` gives it an isolated database of its own."""
    app = FastAPI(
        title="GatheRing",
        version=__version__,
        summary="Collaborative multi-agent AI framework and server",
        lifespan=_lifespan,
    )
    app.state.gathering = AppState(settings or get_settings(), testing=testing, database=database)
    install_error_handlers(app)
    app.include_router(health.router)
    return app


app = create_app()

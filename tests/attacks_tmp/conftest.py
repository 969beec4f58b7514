"""Attack tests (temporary; not part of the project)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi import FastAPI

from gathering.api.app import create_app
from gathering.config import load_settings


@pytest.fixture
async def app_for(fresh_database_url: str) -> AsyncIterator[Callable[..., FastAPI]]:
    apps: list[FastAPI] = []

    def make(**settings: Any) -> FastAPI:
        app = create_app(settings=load_settings(database_url=fresh_database_url, **settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        try:
            await app.state.security.close()
        except Exception:
            pass
        await app.state.gathering.close()

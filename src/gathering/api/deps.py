"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import HTTPConnection

from gathering.api.state import AppState
from gathering.db import Database


def app_state(request: HTTPConnection) -> AppState:
    """The `AppState` of the app serving this request (or WebSocket)."""
    state: AppState = request.app.state.gathering
    return state


async def get_db(request: Request) -> Database:
    """The app's connected database."""
    return await app_state(request).database()

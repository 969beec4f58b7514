"""FastAPI dependencies shared by the routers, and their typed aliases:

async def chat(agent_id: AgentId, principal: AgentsWriter, db: DbDep) -> ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.requests import HTTPConnection

from gathering.agents import AgentRecord, PostgresAgentStore
from gathering.api.fields import WholeNumber
from gathering.api.security.dependencies import (
    account_services,
    current_principal,
    ensure_owner,
    not_found,
    require_admin,
    require_scope,
)
from gathering.api.security.state import AuthServices
from gathering.api.state import AppState
from gathering.auth.principal import Principal
from gathering.db import Database
from gathering.errors import NotFoundError
from gathering.events import EventBus

MAX_ID = 2**63 - 1


def app_state(request: HTTPConnection) -> AppState:
    """The `AppState` of the app serving this request (or WebSocket)."""
    state: AppState = request.app.state.gathering
    return state


async def get_db(request: Request) -> Database:
    """The app's connected database."""
    return await app_state(request).database()


async def get_bus(request: Request) -> EventBus:
    """The app's running event bus."""
    return await app_state(request).event_bus()


DbDep = Annotated[Database, Depends(get_db)]
BusDep = Annotated[EventBus, Depends(get_bus)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
AccountsDep = Annotated[AuthServices, Depends(account_services)]
AgentId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The agent's id")]
AgentsReader = Annotated[Principal, Depends(require_scope("agents:read"))]
AgentsWriter = Annotated[Principal, Depends(require_scope("agents:write"))]
MemoriesReader = Annotated[Principal, Depends(require_scope("memories:read"))]
MemoriesWriter = Annotated[Principal, Depends(require_scope("memories:write"))]
EventsReader = Annotated[Principal, Depends(require_scope("events:read"))]


async def owned_agent(
    request: Request, principal: Principal, db: Database, agent_id: int
) -> AgentRecord:
    """The stored agent `agent_id`; 404 when it does not exist or is not the caller's."""
    try:
        record = await PostgresAgentStore(db).load_agent(agent_id)
    except NotFoundError:
        raise not_found("agent", agent_id) from None
    await ensure_owner(request, principal, record.owner_id, resource="agent", resource_id=agent_id)
    return record

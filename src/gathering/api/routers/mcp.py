"""`/mcp/servers`: the MCP servers whose tools the caller's agents may be given.

The config file's servers (`GATHERING_MCP_CONFIG`) are everyone's; a caller adds their own
streamable-HTTP servers here, for all their agents or one (`only_for_agent`). A stdio server runs a
command on the host, so the API never adds one: use the config file or `gathering mcp add`.
Each server's state is this instance's connection to it. API keys need `tools:read` to list
and `tools:write` to add or remove.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import MAX_ID, DbDep, owned_agent
from gathering.api.fields import Integer
from gathering.api.routers.tools import ToolOut, ToolsReader, tool_fields
from gathering.api.security import Principal, rate_limit, require_scope
from gathering.tools.function import Effect
from gathering.tools.mcp import McpServer, mcp_hub
from gathering.tools.mcp.connection import State
from gathering.tools.mcp.hub import require_server
from gathering.tools.mcp.servers import (
    SERVER_NAME,
    Transport,
    add_server,
    remove_server,
    visible_servers,
)

router = APIRouter(tags=["mcp"])
ToolsWriter = Annotated[Principal, Depends(require_scope("tools:write"))]
ServerName = Annotated[
    str, Path(min_length=1, max_length=30, pattern=SERVER_NAME.pattern, description="A server")
]


class McpServerIn(BaseModel):
    """A streamable-HTTP MCP server (stdio servers come from the config file or the CLI)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=30,
        pattern=SERVER_NAME.pattern,
        description="Its tools are named <name>__<tool>",
    )
    url: str = Field(
        max_length=2048,
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$",
        description="e.g. https://example.com/mcp (a host name or IPv4 address; no user info)",
    )
    only_for_agent: Integer | None = Field(
        default=None, ge=1, le=MAX_ID, description="Only this agent sees it; null: all yours"
    )
    effect: Effect = Field(
        default="external", description="The effect class of its tools (external: asked first)"
    )


class McpHealthOut(BaseModel):
    state: State = Field(description="This instance's connection (idle: not used yet)")
    tools: int
    last_error: str | None
    connected_at: float | None = Field(description="Unix time of the current connection")
    reconnects: int


class McpServerOut(BaseModel):
    id: int | None = Field(description="null: a server of the config file")
    name: str
    source: Literal["config", "database"]
    transport: Transport
    url: str | None = Field(description="null for a server of the config file, but to admins")
    command: str | None = Field(description="A stdio server's program (as url)")
    args: list[str] = Field(description="Its arguments (empty as url)")
    effect: Effect
    only_for_agent: int | None = Field(description="The one agent that sees it; null: all")
    health: McpHealthOut


class McpServerDetailOut(McpServerOut):
    tool_list: list[ToolOut] = Field(description="Its tools as agents see them")
    skipped: dict[str, str] = Field(description="Its tools left out, with why")


_IDLE = {"state": "idle", "tools": 0, "last_error": None, "connected_at": None, "reconnects": 0}


def _server_out(server: McpServer, principal: Principal) -> dict[str, Any]:
    """What the caller sees of `server`: a server of the config file is the administrator's,
    and its command, arguments, URL and errors (which may carry secrets) are theirs to see."""
    health = mcp_hub().health(server)
    out = server.to_dict() | {"health": health.to_dict() if health else dict(_IDLE)}
    if server.id is None and not principal.is_admin:
        out |= {"url": None, "command": None, "args": []}
        if out["health"]["last_error"] is not None:
            out["health"] = out["health"] | {
                "last_error": "unavailable (an administrator sees why)"
            }
    return out


@router.get("/mcp/servers", summary="List MCP servers", dependencies=[rate_limit("relaxed")])
async def list_servers(principal: ToolsReader, db: DbDep) -> list[McpServerOut]:
    """The config file's servers and the caller's own (for all their agents or one)."""
    servers = await visible_servers(db, principal.user_id, None, every_agent=True)
    return [McpServerOut.model_validate(_server_out(server, principal)) for server in servers]


@router.get(
    "/mcp/servers/{name}",
    summary="An MCP server, its health and its tools",
    responses={404: {"description": "No such server of the caller's"}},
)
async def get_server(name: ServerName, principal: ToolsReader, db: DbDep) -> McpServerDetailOut:
    """Connects when this instance has not yet (waiting up to GATHERING_MCP_CONNECT_TIMEOUT)."""
    servers = await visible_servers(db, principal.user_id, None, every_agent=True)
    server = require_server(servers, name)
    hub = mcp_hub()
    (connection,) = await hub.connections_for([server])
    tools, skipped = hub.tools_of(connection)
    detail = _server_out(server, principal) | {
        "tool_list": [ToolOut.model_validate(tool_fields(tool)) for tool in tools],
        "skipped": skipped,
    }
    return McpServerDetailOut.model_validate(detail)


@router.post(
    "/mcp/servers",
    summary="Add an MCP server",
    status_code=status.HTTP_201_CREATED,
    dependencies=[rate_limit("strict")],
    responses={
        404: {"description": "The agent is not found"},
        409: {"description": "The name is taken, or the owner has the most servers allowed"},
    },
)
async def create_server(
    body: McpServerIn, request: Request, principal: ToolsWriter, db: DbDep
) -> McpServerOut:
    """Its tools then appear in GET /agents/{id}/tools, to enable per agent. Its URL must
    pass the egress policy (GATHERING_EGRESS_ALLOWED_*) each time it is connected."""
    if body.only_for_agent is not None:
        await owned_agent(request, principal, db, body.only_for_agent)
    server = McpServer(
        name=body.name,
        transport="http",
        url=body.url,
        effect=body.effect,
        agent_id=body.only_for_agent,
    )
    stored = await add_server(db, server, principal.user_id)
    return McpServerOut.model_validate(_server_out(stored, principal))


@router.delete(
    "/mcp/servers/{name}",
    summary="Remove an MCP server",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={404: {"description": "No such server of the caller's"}},
)
async def delete_server(name: ServerName, principal: ToolsWriter, db: DbDep) -> Response:
    """Agents lose its tools from their next turn (their settings for them are kept)."""
    removed = await remove_server(db, principal.user_id, name)
    await mcp_hub().forget(removed)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

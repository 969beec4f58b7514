"""`McpHub`: this process's connections to MCP servers, and their tools as registry tools.

An MCP server's tool `search` becomes the registry tool `<server>__search` (OpenAI and
Anthropic refuse dots in tool names), with the server's description and JSON Schema (a tool
whose schema is not valid JSON Schema is left out, and said so in the server's health), the
server's effect class (`external` unless configured), category `mcp`. Agents enable and
govern such a tool like any other (`tool.agent_tools`, policies, approvals).

Each event loop has its own hub (`mcp_hub()`); whoever runs the loop closes it (the API's
lifespan, the CLI), which stops stdio servers' processes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import weakref
from collections.abc import Iterable
from typing import Any

import structlog
from mcp_types import CallToolResult, Tool

from gathering.config import get_settings
from gathering.db.database import Queries
from gathering.errors import InvalidInputError, NotFoundError, ToolFailedError
from gathering.llm.types import ToolSpec
from gathering.tools.context import ToolContext
from gathering.tools.egress import policy_from_settings
from gathering.tools.function import FunctionTool
from gathering.tools.mcp.connection import Health, McpConnection
from gathering.tools.mcp.servers import SEPARATOR, McpServer, visible_servers
from gathering.tools.registry import ToolRegistry, loaded_registry

log = structlog.get_logger(__name__)

CONTEXT_PARAMETER = "__gathering_context__"  # never a name in an MCP tool's schema
MAX_DESCRIPTION_CHARS = 2_000
IDLE_SECONDS = 600.0  # a connection unused this long is closed


def _text_of(result: CallToolResult) -> str:
    """A call's result as the model reads it: its text blocks, else its structured content,
    and a note for each block of another kind (images, audio, resources)."""
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        if isinstance(text, str):
            parts.append(text)
        else:
            kind = getattr(block, "type", "content")
            mime = getattr(block, "mime_type", None)
            parts.append(f"[{kind}{' ' + mime if mime else ''} not shown]")
    if not any(p and not p.startswith("[") for p in parts) and result.structured_content:
        parts.insert(0, json.dumps(result.structured_content, default=str))
    return "\n".join(parts)


async def _call(connection: McpConnection, remote: str, **arguments: Any) -> str:
    context: ToolContext = arguments.pop(CONTEXT_PARAMETER)
    deadline = context.deadline or time.monotonic() + get_settings().tool_timeout
    result = await connection.call(remote, arguments, deadline=deadline)
    text = _text_of(result)
    if result.is_error:
        raise ToolFailedError(
            f"MCP tool {connection.server.name}{SEPARATOR}{remote} answered with an error: "
            f"{text[:2000]}"
        )
    return text


def registry_tool(connection: McpConnection, tool: Tool) -> FunctionTool:
    """The registry tool of the server's `tool` (`InvalidInputError` when it cannot be one:
    a name that does not fit, a schema that is not valid JSON Schema)."""
    server = connection.server
    name = f"{server.name}{SEPARATOR}{tool.name}"
    schema = tool.input_schema
    if CONTEXT_PARAMETER in (schema.get("properties") or {}):
        raise InvalidInputError(f"its schema has the reserved property {CONTEXT_PARAMETER}")
    spec = ToolSpec(name, (tool.description or "")[:MAX_DESCRIPTION_CHARS], schema)
    return FunctionTool(
        spec=spec,
        handler=functools.partial(_call, connection, tool.name),
        effect=server.effect,
        category="mcp",
        plugin=f"mcp:{server.name}",
        context_parameter=CONTEXT_PARAMETER,
    )


class McpHub:
    """The connections of one event loop, by server (see the module docstring)."""

    def __init__(self) -> None:
        self._connections: dict[tuple[int | None, str], McpConnection] = {}
        self._tools: dict[tuple[int | None, str], tuple[int, list[FunctionTool], dict[str, str]]]
        self._tools = {}
        self._closing: set[asyncio.Task[None]] = set()

    def connection(self, server: McpServer) -> McpConnection:
        """The connection to `server` (a changed server gets a new one; the old is closed).
        Connections unused for `IDLE_SECONDS` are closed on the way (a server removed on
        another instance, an owner gone quiet); a later use connects again."""
        now = time.monotonic()
        for key, idle in list(self._connections.items()):
            if key != server.key and now - idle.last_used > IDLE_SECONDS:
                self._drop(key)
        current = self._connections.get(server.key)
        if current is not None and current.server == server and current.state != "closed":
            current.last_used = now
            return current
        if current is not None:
            self._drop(server.key)
        # Servers of the config file are the admin's: their URLs are not the egress policy's.
        egress = policy_from_settings() if server.id is not None else None
        made = McpConnection(server, egress=egress)
        self._connections[server.key] = made
        made.start()
        return made

    def _drop(self, key: tuple[int | None, str]) -> None:
        """Forget a connection and close it in the background."""
        connection = self._connections.pop(key)
        self._tools.pop(key, None)
        closing = asyncio.get_running_loop().create_task(connection.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def tools_of(self, connection: McpConnection) -> tuple[list[FunctionTool], dict[str, str]]:
        """The registry tools of the connection's last listing, and each tool left out with
        why (built once per listing)."""
        key = connection.server.key
        cached = self._tools.get(key)
        if cached is not None and cached[0] == connection.listings:
            return cached[1], cached[2]
        made: list[FunctionTool] = []
        skipped: dict[str, str] = {}
        for tool in connection.tools:
            try:
                made.append(registry_tool(connection, tool))
            except InvalidInputError as error:
                skipped[tool.name] = str(error)
        if skipped:
            log.warning("MCP tools left out", server=connection.server.name, skipped=skipped)
        self._tools[key] = (connection.listings, made, skipped)
        return made, skipped

    async def connections_for(self, servers: Iterable[McpServer]) -> list[McpConnection]:
        """The connections to `servers`, each past its first attempt to connect (bounded by
        `GATHERING_MCP_CONNECT_TIMEOUT`; one still connecting then has no tools yet)."""
        connections = [self.connection(server) for server in servers]
        seconds = get_settings().mcp_connect_timeout + 1
        await asyncio.gather(*(c.first_attempt(seconds) for c in connections))
        return connections

    async def tools_for(
        self, queries: Queries, owner_id: int | None, agent_id: int | None = None
    ) -> list[FunctionTool]:
        """The tools of every MCP server the owner's agent sees (`agent_id` None: the owner's
        servers for all agents)."""
        servers = await visible_servers(queries, owner_id, agent_id)
        tools: list[FunctionTool] = []
        for connection in await self.connections_for(servers):
            tools.extend(self.tools_of(connection)[0])
        return tools

    async def forget(self, server: McpServer) -> None:
        """Close the connection to a removed `server`."""
        connection = self._connections.pop(server.key, None)
        self._tools.pop(server.key, None)
        if connection is not None:
            await connection.close()

    def states(self) -> dict[str, str]:
        """Each server this hub connects to, by name, with its connection's state."""
        return {c.server.name: c.state for c in self._connections.values()}

    def health(self, server: McpServer) -> Health | None:
        """The health of this process's connection to `server` (None: never connected)."""
        connection = self._connections.get(server.key)
        return None if connection is None or connection.server != server else connection.health()

    async def close(self) -> None:
        """Close every connection (stdio servers' processes stop)."""
        connections, self._connections = list(self._connections.values()), {}
        self._tools.clear()
        await asyncio.gather(*(c.close() for c in connections), *self._closing)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, McpHub] = weakref.WeakKeyDictionary()


def mcp_hub() -> McpHub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = McpHub()
    return hub


async def close_mcp_hub() -> None:
    """Close the running loop's hub, if it has one."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.close()


async def registry_for(
    queries: Queries, owner_id: int | None, agent_id: int | None = None
) -> ToolRegistry:
    """The process's registry plus the tools of the MCP servers the owner's agent sees (a
    name the registry already has keeps its registry tool)."""
    base = await loaded_registry()
    extra = await mcp_hub().tools_for(queries, owner_id, agent_id)
    if not extra:
        return base
    merged = ToolRegistry(base.list())
    for tool in extra:
        if tool.name not in merged:
            merged.register(tool)
    return merged


def require_server(servers: Iterable[McpServer], name: str) -> McpServer:
    """The server called `name` among `servers`; `NotFoundError` otherwise."""
    for server in servers:
        if server.name == name:
            return server
    raise NotFoundError(
        f"no MCP server named {name!r}",
        hint="GET /mcp/servers (or `gathering mcp list`) lists the servers you see",
    )

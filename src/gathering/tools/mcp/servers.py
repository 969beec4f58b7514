"""Where MCP servers are configured: the config file (`GATHERING_MCP_CONFIG`, every owner sees
its servers) and `tool.mcp_servers` (an owner's servers, for all their agents or one).

A stdio server runs a command on the host, so it comes only from the config file or the CLI
(someone with the host's shell); the API adds streamable-HTTP servers only.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from gathering.config import get_settings
from gathering.db.database import Database, Queries
from gathering.db.locks import LockKey, transaction_lock
from gathering.db.named_queries import queries_of
from gathering.errors import ConfigurationError, ConflictError, InvalidInputError, NotFoundError
from gathering.tools.function import EFFECTS, Effect

_SQL = queries_of("gathering.tools")
Transport = Literal["stdio", "http"]
SERVER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
NAME_HINT = "1-30 lowercase letters, digits or '-', starting with a letter"
SEPARATOR = "__"  # tool names are <server>__<tool>: providers refuse dots in tool names
MAX_ARGS = 64
MAX_SERVERS = 20  # stored servers per owner


@dataclass(frozen=True)
class McpServer:
    """One MCP server: how to reach it and the effect class its tools get.

    `id` is None for a server of the config file (which every owner sees); `agent_id` limits a
    stored server to one agent. `env` and `headers` (config file only) may hold secrets: they
    are never shown.
    """

    name: str
    transport: Transport
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    effect: Effect = "external"
    id: int | None = None
    owner_id: int | None = None
    agent_id: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.effect not in EFFECTS:
            raise InvalidInputError(
                f"MCP server {self.name!r}: unknown effect {self.effect!r}",
                hint=f"one of: {', '.join(EFFECTS)}",
            )
        if self.transport == "http":
            if not self.url or self.command is not None:
                raise InvalidInputError(f"MCP server {self.name!r}: an http server needs a url")
            check_http_url(self.url)
        elif self.transport == "stdio":
            if not self.command or self.url is not None:
                raise InvalidInputError(f"MCP server {self.name!r}: a stdio server needs a command")
            if len(self.args) > MAX_ARGS or not all(isinstance(a, str) for a in self.args):
                raise InvalidInputError(
                    f"MCP server {self.name!r}: args must be at most {MAX_ARGS} strings"
                )
        else:
            raise InvalidInputError(
                f"MCP server {self.name!r}: unknown transport {self.transport!r}",
                hint="stdio (a command) or http (a streamable-HTTP url)",
            )

    @property
    def key(self) -> tuple[int | None, str]:
        """What names this server among all (an owner's names and the file's are apart)."""
        return (self.id, self.name)

    @property
    def source(self) -> str:
        return "config" if self.id is None else "database"

    def to_dict(self) -> dict[str, Any]:
        """What the API and CLI show (never `env` or `headers` values)."""
        return {
            "id": self.id,
            "name": self.name,
            "source": self.source,
            "transport": self.transport,
            "url": self.url,
            "command": self.command,
            "args": list(self.args),
            "effect": self.effect,
            "only_for_agent": self.agent_id,
        }


def check_name(name: object) -> str:
    """`name` if it is a valid server name, else `InvalidInputError`."""
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise InvalidInputError(f"invalid MCP server name {name!r}", hint=f"use {NAME_HINT}")
    return name


def check_http_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL with a host and no credentials, else
    `InvalidInputError`. What the host resolves to, and whether it answers, is checked at each
    connection (its state and error show in `GET /mcp/servers`)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"invalid MCP server url {str(url)[:200]!r}",
            hint="an absolute http:// or https:// URL, e.g. https://example.com/mcp",
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError(
            "an MCP server url must not carry a user name or password",
            hint="give credentials as headers in the config file (GATHERING_MCP_CONFIG)",
        )
    return url


# --- the config file --------------------------------------------------------------------------


def _str_map(value: object, what: str, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigurationError(f"MCP server {name!r}: {what} must map names to strings")
    return dict(value)


def server_from_entry(name: str, entry: object) -> McpServer:
    """One server of the config file: `{"command", "args", "env"}` (stdio) or
    `{"url", "headers"}` (streamable HTTP), each with an optional `"effect"`."""
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"MCP server {name!r}: its entry must be an object")
    unknown = set(entry) - {"command", "args", "env", "url", "headers", "effect"}
    if unknown:
        raise ConfigurationError(
            f"MCP server {name!r}: unknown keys {sorted(unknown)}",
            hint="use command/args/env (stdio) or url/headers (http), and effect",
        )
    args = entry.get("args", [])
    if not isinstance(args, list):
        raise ConfigurationError(f"MCP server {name!r}: args must be a list of strings")
    try:
        return McpServer(
            name=name,
            transport="http" if "url" in entry else "stdio",
            url=entry.get("url"),
            command=entry.get("command"),
            args=tuple(args),
            env=_str_map(entry.get("env"), "env", name),
            headers=_str_map(entry.get("headers"), "headers", name),
            effect=entry.get("effect", "external"),
        )
    except InvalidInputError as error:
        raise ConfigurationError(str(error), hint=error.hint) from None


def read_config_file(path: Path) -> list[McpServer]:
    """The servers of an MCP config file: `{"servers": {name: entry}}` (`"mcpServers"`, as
    other MCP clients write it, is read too)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"the MCP config file {path} does not exist",
            hint="create it, or unset GATHERING_MCP_CONFIG",
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the MCP config file {path}: {exc}",
            hint='it is JSON: {"servers": {"name": {"command": ..., "args": [...]}}}',
        ) from None
    servers = data.get("servers", data.get("mcpServers")) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigurationError(
            f'the MCP config file {path} has no "servers" object',
            hint='write {"servers": {"name": {"url": "https://..."}}}',
        )
    return [server_from_entry(name, entry) for name, entry in servers.items()]


_read: dict[Path, tuple[McpServer, ...]] = {}


async def config_servers() -> list[McpServer]:
    """The servers of `GATHERING_MCP_CONFIG` (none when it is unset); the file is read once
    per process (restart to apply a change)."""
    path = get_settings().mcp_config
    if path is None:
        return []
    if path not in _read:
        _read[path] = tuple(await asyncio.to_thread(read_config_file, path))
    return list(_read[path])


# --- stored servers ---------------------------------------------------------------------------


def _stored(row: Mapping[str, Any]) -> McpServer:
    return McpServer(
        name=row["name"],
        transport=row["transport"],
        url=row["url"],
        command=row["command"],
        args=tuple(row["args"]),
        effect=row["effect"],
        id=int(row["id"]),
        owner_id=int(row["owner_id"]),
        agent_id=row["agent_id"],
    )


async def visible_servers(
    queries: Queries,
    owner_id: int | None,
    agent_id: int | None = None,
    *,
    every_agent: bool = False,
) -> list[McpServer]:
    """The servers an owner's agent sees (`agent_id` None: the owner's servers for all their
    agents; `every_agent`: the owner's servers for any agent too): the config file's, then the
    owner's own. A stored server whose name the file also uses is left out: the file's wins."""
    servers = await config_servers()
    taken = {server.name for server in servers}
    if owner_id is not None:
        rows = await queries.fetch_all(_SQL["visible_mcp_servers"], owner_id, agent_id, every_agent)
        servers.extend(_stored(row) for row in rows if row["name"] not in taken)
    return servers


async def add_server(db: Database, server: McpServer, owner_id: int) -> McpServer:
    """Store `server` for the owner (for all their agents, or `server.agent_id`'s); at most
    `MAX_SERVERS` per owner (counted under a lock of the owner's servers, so concurrent adds
    cannot pass it)."""
    if any(s.name == server.name for s in await config_servers()):
        raise ConflictError(
            f"the MCP server name {server.name!r} is taken by the config file",
            hint="choose another name",
        )
    async with db.transaction() as tx:
        await transaction_lock(tx, LockKey("mcp-servers", str(owner_id)), wait=True)
        if server.agent_id is not None:
            agent_owner = await tx.fetch_val(_SQL["agent_owner_of"], server.agent_id)
            if agent_owner is None or int(agent_owner) != owner_id:
                raise NotFoundError(f"agent {server.agent_id} not found")
        if await tx.fetch_val(_SQL["mcp_server_named"], owner_id, server.name) is not None:
            raise ConflictError(
                f"you already have an MCP server named {server.name!r}",
                hint="remove it first, or choose another name",
            )
        if await tx.fetch_val(_SQL["count_mcp_servers"], owner_id) >= MAX_SERVERS:
            raise ConflictError(
                f"you have {MAX_SERVERS} MCP servers, the most one owner may have",
                hint="remove one you no longer use (gathering mcp remove NAME)",
            )
        row = await tx.fetch_one(
            _SQL["add_mcp_server"],
            owner_id,
            server.agent_id,
            server.name,
            server.transport,
            server.url,
            server.command,
            json.dumps(list(server.args)),
            server.effect,
        )
    assert row is not None
    return _stored(row)


async def remove_server(queries: Queries, owner_id: int, name: str) -> McpServer:
    """Delete the owner's server `name`; `NotFoundError` when they have none by that name."""
    row = await queries.fetch_one(_SQL["remove_mcp_server"], owner_id, check_name(name))
    if row is None:
        raise NotFoundError(
            f"no MCP server named {name!r} of yours",
            hint="a server of the config file is removed by editing GATHERING_MCP_CONFIG",
        )
    return _stored(row)

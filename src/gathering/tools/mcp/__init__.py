"""MCP client: servers from the config file or `tool.mcp_servers`, kept connected, their tools
offered to agents as `<server>__<tool>` (see `hub`)."""

from gathering.tools.mcp.hub import McpHub, close_mcp_hub, mcp_hub, registry_for
from gathering.tools.mcp.servers import McpServer

__all__ = ["McpHub", "McpServer", "close_mcp_hub", "mcp_hub", "registry_for"]

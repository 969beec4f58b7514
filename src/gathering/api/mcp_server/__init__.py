"""GatheRing as an MCP server (`gathering mcp serve`): MCP clients chat with the caller's
agents, search their knowledge base and recall their memories (docs/mcp.md).

- `runtime`: what the server process holds (database, event bus, duties, account stores)
  and who calls it;
- `tools`: the MCP tools, on one `MCPServer`;
- `http_app`: the streamable HTTP transport behind the API's request defences;
- `command`: the command itself, registered on the `mcp` group of `gathering.cli`.

This package imports nothing at start-up: the SDK loads when the command runs.
"""

"""A real MCP server for the MCP client's tests, built with the SDK's server (`MCPServer`,
formerly FastMCP): `python mcp_test_server.py stdio` or `python mcp_test_server.py http PORT`.

Its tools: `echo`, `pid` (its process id, so a test can tell a restarted server), `slow`
(sleeps, so a test can kill it mid-call), `boom` (answers with an error), and `counter` (adds
one to a file, so a test can count how many times a call really ran).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("gathering-test")


@server.tool()
def echo(text: str) -> str:
    """Say `text` back."""
    return f"echo: {text}"


@server.tool()
def pid() -> str:
    """This server's process id."""
    return str(os.getpid())


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "slept"


@server.tool()
def boom() -> str:
    """Always fails."""
    raise RuntimeError("it went boom")


@server.tool()
def counter(path: str) -> str:
    """Add one to the number in the file `path` (a count of real runs)."""
    file = Path(path)
    count = int(file.read_text()) + 1 if file.exists() else 1
    file.write_text(str(count))
    return str(count)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))

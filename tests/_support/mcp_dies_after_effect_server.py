"""An MCP server (raw JSON-RPC on stdio) whose tool `act` appends its pid to the file LOG
(the effect), then, the first time (while the file MARKER does not exist), dies before it
answers: `python mcp_dies_after_effect_server.py LOG MARKER`."""

import json
import os
import sys
from pathlib import Path

LOG, MARKER = Path(sys.argv[1]), Path(sys.argv[2])


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    request_id, method = message.get("id"), message.get("method")
    if request_id is None:
        continue
    if method == "initialize":
        answer = {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "dies", "version": "1"},
        }
    elif method == "tools/list":
        answer = {"tools": [{"name": "act", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        with LOG.open("a") as log:
            log.write(f"{os.getpid()}\n")
        if not MARKER.exists():
            MARKER.touch()
            os._exit(1)  # the effect happened, and the answer never comes
        answer = {"content": [{"type": "text", "text": "done"}]}
    else:
        answer = {}
    send({"jsonrpc": "2.0", "id": request_id, "result": answer})

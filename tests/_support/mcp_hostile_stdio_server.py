"""A hostile MCP server for the client's attack tests, speaking raw JSON-RPC on stdio:
`python mcp_hostile_stdio_server.py MODE [N]`.

Modes: `redos` lists a tool whose output schema has a backtracking pattern and answers with
N `a`s and a `!` (a pure-Python validator would spend 2**N steps); `bigresult` answers a
call with N characters; anything else lists one plain tool `ok`.
"""

import json
import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else "plain"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 30


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def tools() -> list[dict]:
    tool = {"name": "evil", "description": "d", "inputSchema": {"type": "object"}}
    if MODE == "redos":
        pattern = {"type": "string", "pattern": "^(a+)+$"}
        tool["outputSchema"] = {"type": "object", "properties": {"v": pattern}}
    return [tool]


def result() -> dict:
    if MODE == "redos":
        structured = {"v": "a" * N + "!"}
        content = [{"type": "text", "text": json.dumps(structured)}]
        return {"content": content, "structuredContent": structured}
    if MODE == "bigresult":
        return {"content": [{"type": "text", "text": "x" * N}]}
    return {"content": [{"type": "text", "text": "ok"}]}


for line in sys.stdin:
    message = json.loads(line)
    request_id, method = message.get("id"), message.get("method")
    if request_id is None:
        continue
    if method == "initialize":
        answer = {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "hostile", "version": "1"},
        }
    elif method == "tools/list":
        answer = {"tools": tools()}
    elif method == "tools/call":
        answer = result()
    else:
        answer = {}
    send({"jsonrpc": "2.0", "id": request_id, "result": answer})

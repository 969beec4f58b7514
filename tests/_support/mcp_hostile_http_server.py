"""A hostile streamable-HTTP MCP server (raw asyncio, JSON answers):
`python mcp_hostile_http_server.py PORT MODE N`. Mode `big` answers a tool call with N
characters; any other mode answers with "ok"."""

import asyncio
import json
import sys

PORT, MODE, N = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def answer(message: dict) -> dict:
    method = message["method"]
    if method == "initialize":
        return {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "hostile-http", "version": "1"},
        }
    if method == "tools/list":
        return {"tools": [{"name": "big", "inputSchema": {"type": "object"}}]}
    if method == "tools/call":
        return {"content": [{"type": "text", "text": "x" * N if MODE == "big" else "ok"}]}
    return {}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            if not head.startswith(b"POST"):
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                continue
            message = json.loads(body)
            if "id" not in message:
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                continue
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": answer(message)}
            out = json.dumps(reply).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(out) + out
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())

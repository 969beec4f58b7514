"""Drive an ASGI app's WebSocket endpoint in the test's own event loop (no thread, no server),
so a test can publish on the app's event bus and read the socket side by side."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class ASGIWebSocket:
    """`async with ASGIWebSocket(app, "/ws") as ws: await ws.send_json(...); await ws.receive_json()`."""

    def __init__(self, app: Any, path: str, *, query: str = "", host: str = "test") -> None:
        self.app, self.path, self.query, self.host = app, path, query, host
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.accepted = False

    async def __aenter__(self) -> ASGIWebSocket:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": self.query.encode(),
            "headers": [(b"host", self.host.encode())],
            "server": (self.host, 80),
            "client": ("127.0.0.1", 50000),
            "subprotocols": [],
        }
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))
        await self.to_app.put({"type": "websocket.connect"})
        first = await self._next(5)
        if first["type"] == "websocket.accept":
            self.accepted = True
        elif first["type"] == "websocket.close":
            self.close_code = first.get("code", 1000)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        assert self.task is not None
        try:
            await asyncio.wait_for(self.task, 10)
        except Exception:  # the app may end with the disconnect it was told about
            pass

    async def _next(self, timeout: float) -> dict[str, Any]:
        return await asyncio.wait_for(self.from_app.get(), timeout)

    async def send_json(self, data: Any) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": json.dumps(data)})

    async def send_text(self, text: str) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": text})

    async def receive_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next JSON message; raises `ConnectionError` with the code when the app closed."""
        message = await self._next(timeout)
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            raise ConnectionError(self.close_code)
        return json.loads(message["text"])  # type: ignore[no-any-return]

    async def wait_closed(self, timeout: float = 5.0) -> int:
        """Read until the app closes the socket; return the close code."""
        while True:
            message = await self._next(timeout)
            if message["type"] == "websocket.close":
                self.close_code = message.get("code", 1000)
                return self.close_code

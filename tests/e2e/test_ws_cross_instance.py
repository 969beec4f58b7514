"""Two real server processes on one database: an event from one reaches the other's sockets."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from live_server import LiveServer

pytestmark = pytest.mark.slow


def test_an_event_published_in_one_server_reaches_a_socket_of_the_other(fresh_database_url):
    first = LiveServer(GATHERING_DATABASE_URL=fresh_database_url)
    second = LiveServer(GATHERING_DATABASE_URL=fresh_database_url)
    first_port, second_port = first.port, second.port
    try:
        first.wait_ready()
        second.wait_ready()

        async def scenario() -> dict:
            uri = f"ws://127.0.0.1:{second_port}/ws"
            async with websockets.connect(uri) as ws:
                await ws.send(json.dumps({"type": "subscribe", "patterns": ["agent.*"]}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first_port}") as api:
                    created = await api.post("/agents", json={"name": "Hop", "provider": "openai"})
                    assert created.status_code == 201
                async with asyncio.timeout(15):
                    while True:
                        message = json.loads(await ws.recv())
                        if message["type"] == "event":
                            return message["event"]

        event = asyncio.run(scenario())
        assert event["type"] == "agent.created"
        assert event["data"]["name"] == "Hop"
    finally:
        for server in (first, second):
            server.stop()

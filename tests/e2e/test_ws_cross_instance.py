"""Two real server processes on one database: an event from one reaches the other's sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
import websockets

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(database_url: str) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    env = dict(os.environ, GATHERING_DATABASE_URL=database_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "gathering", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )
    return process, port


def _wait_ready(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server on port {port} did not become ready")


def test_an_event_published_in_one_server_reaches_a_socket_of_the_other(fresh_database_url):
    first, first_port = _start(fresh_database_url)
    second, second_port = _start(fresh_database_url)
    try:
        _wait_ready(first_port, first)
        _wait_ready(second_port, second)

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
        for process in (first, second):
            process.terminate()
        for process in (first, second):
            process.wait(timeout=30)

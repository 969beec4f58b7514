"""WebSocket attacks."""
from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest
from asgi_ws import ASGIWebSocket

from gathering.auth.users import UserStore

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(app_for):
    return app_for(auth="required", secret_key=KEY, ws_max_per_address=3)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def token_for(app, role="member"):
    email = f"w-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    async with client_for(app) as c:
        tokens = (await c.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return user.id, tokens["access_token"]


async def test_unauthenticated_binary_frame_crashes_the_socket_handler(app):
    """Before any authentication, one binary frame raises KeyError('text') out of the
    endpoint (Starlette's receive_text), i.e. an unhandled exception and a traceback in the
    server log per connection, instead of a clean close (1003) from the protocol handler."""
    ws = ASGIWebSocket(app, "/ws")
    await ws.__aenter__()
    assert ws.accepted
    await ws.to_app.put({"type": "websocket.receive", "bytes": b"\x00\x01"})
    done, _ = await asyncio.wait({ws.task}, timeout=3)
    assert ws.task in done
    exc = ws.task.exception()
    # Expected: the handler closes the socket itself (no exception escapes the endpoint).
    assert exc is None, f"unhandled exception escaped the WebSocket endpoint: {exc!r}"


async def test_subscribe_with_a_unicode_digit_subject_crashes_the_socket_handler(app):
    """`agent:¹` passes `str.isdigit()` but `int()` refuses it: ValueError escapes
    `_may_see`/_subscribe (only GatheringError is caught), killing the connection with an
    unhandled exception instead of an `invalid_input`/`not_found` error frame."""
    _, token = await token_for(app)
    ws = ASGIWebSocket(app, "/ws", query=f"access_token={token}")
    await ws.__aenter__()
    await ws.send_json({"type": "subscribe", "patterns": ["*"], "subjects": ["agent:\u00b9"]})
    done, _ = await asyncio.wait({ws.task}, timeout=3)
    reply = None
    if ws.task not in done:
        reply = await ws.receive_json()
        await ws.__aexit__(None, None, None)
    else:
        exc = ws.task.exception()
        assert exc is None, f"unhandled exception escaped the WebSocket endpoint: {exc!r}"
    assert reply is not None and reply["type"] == "error"

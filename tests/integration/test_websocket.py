"""WebSocket: the seed's ping example, authentication, subscriptions, replay, slow clients."""

from __future__ import annotations

import secrets

import httpx
import pytest
from asgi_ws import ASGIWebSocket  # tests/_support, on the path via conftest
from starlette.testclient import TestClient

from gathering.api.app import app, create_app
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.events import Event

KEY = "w" * 64
PASSWORD = "correct horse battery staple"


def test_websocket_connection():
    client = TestClient(app)
    with client.websocket_connect("/ws/circles/test") as ws:
        ws.send_json({"type": "ping"})
        response = ws.receive_json()
        assert response["type"] == "pong"


@pytest.fixture
async def single(migrated_database_url):
    application = create_app(settings=load_settings(database_url=migrated_database_url))
    yield application
    await application.state.gathering.close()


@pytest.fixture
async def multi(migrated_database_url):
    application = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key=KEY, ws_auth_grace=0.3
        )
    )
    yield application
    await application.state.security.close()
    await application.state.gathering.close()


def _http(application) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test")


async def _user_token(application, *, is_admin: bool = False) -> tuple[int, str]:
    email = f"ws-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await application.state.gathering.database()).create(
        email, PASSWORD, is_admin=is_admin
    )
    async with _http(application) as client:
        response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    return user.id, response.json()["access_token"]


async def _next_event(ws: ASGIWebSocket) -> dict:
    while True:
        message = await ws.receive_json(timeout=10)
        if message["type"] == "event":
            return message["event"]


async def test_state_changes_reach_subscribers(single):
    async with ASGIWebSocket(single, "/ws") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["agent.*"]})
        subscribed = await ws.receive_json()
        assert subscribed["type"] == "subscribed"
        async with _http(single) as client:
            created = await client.post("/agents", json={"name": "Wsy", "provider": "openai"})
            agent_id = created.json()["id"]
            await client.delete(f"/agents/{agent_id}")
        first, second = await _next_event(ws), await _next_event(ws)
    assert (first["type"], first["subject"]) == ("agent.created", f"agent:{agent_id}")
    assert second["type"] == "agent.deleted"
    assert second["cursor"] > first["cursor"]


async def test_reconnecting_with_since_replays_missed_events(single):
    async with _http(single) as client:
        for name in ("One", "Two"):
            await client.post("/agents", json={"name": name, "provider": "openai"})
    async with ASGIWebSocket(single, "/ws") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["agent.created"], "since": 0})
        await ws.receive_json()
        replayed = [await _next_event(ws), await _next_event(ws)]
    assert [e["data"]["name"] for e in replayed] == ["One", "Two"]
    async with ASGIWebSocket(single, "/ws") as ws:
        await ws.send_json(
            {"type": "subscribe", "patterns": ["agent.created"], "since": replayed[0]["cursor"]}
        )
        await ws.receive_json()
        assert (await _next_event(ws))["data"]["name"] == "Two"


async def test_heartbeats_carry_the_cursor(migrated_database_url):
    application = create_app(
        settings=load_settings(database_url=migrated_database_url, ws_heartbeat=0.1)
    )
    try:
        async with ASGIWebSocket(application, "/ws") as ws:
            await ws.send_json({"type": "subscribe", "patterns": ["nothing.*"]})
            await ws.receive_json()
            beat = await ws.receive_json()
            assert beat["type"] == "heartbeat" and "cursor" in beat
    finally:
        await application.state.gathering.close()


async def test_ping_answers_before_authentication(multi):
    async with ASGIWebSocket(multi, "/ws") as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}


async def test_anything_else_before_authentication_closes_4401(multi):
    async with ASGIWebSocket(multi, "/ws") as ws:
        await ws.send_json({"type": "subscribe"})
        assert (await ws.receive_json())["code"] == "unauthenticated"
        assert await ws.wait_closed() == 4401


async def test_silence_past_the_grace_closes_4401(multi):
    async with ASGIWebSocket(multi, "/ws") as ws:
        assert await ws.wait_closed() == 4401


@pytest.mark.parametrize("token", ["not-a-jwt", "", "eyJhbGciOiJub25lIn0.e30."])
async def test_bad_tokens_close_4401(multi, token):
    async with ASGIWebSocket(multi, "/ws") as ws:
        await ws.send_json({"type": "auth", "token": token})
        assert (await ws.receive_json())["type"] == "error"
        assert await ws.wait_closed() == 4401
    async with ASGIWebSocket(multi, "/ws", query=f"access_token={token or 'x'}") as ws:
        assert await ws.wait_closed() == 4401


async def test_auth_message_and_query_token_authenticate(multi):
    user_id, token = await _user_token(multi)
    async with ASGIWebSocket(multi, "/ws") as ws:
        await ws.send_json({"type": "auth", "token": token})
        assert await ws.receive_json() == {"type": "authenticated", "user_id": user_id}
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        subscribed = await ws.receive_json()
        assert subscribed["subjects"] == [f"user:{user_id}"]  # a user sees only their own
    async with ASGIWebSocket(multi, "/ws", query=f"access_token={token}") as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}


async def test_subjects_are_checked_against_ownership(multi):
    _, owner_token = await _user_token(multi)
    _, other_token = await _user_token(multi)
    async with _http(multi) as client:
        created = await client.post(
            "/agents",
            json={"name": "Mine", "provider": "openai"},
            headers={"Authorization": f"Bearer {owner_token}"},
        )
    subject = f"agent:{created.json()['id']}"
    async with ASGIWebSocket(multi, "/ws", query=f"access_token={other_token}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": [subject]})
        refused = await ws.receive_json()
        assert refused["type"] == "error" and refused["code"] == "not_found"
        await ws.send_json({"type": "subscribe", "subjects": ["circle:secret"]})
        assert (await ws.receive_json())["type"] == "error"
    async with ASGIWebSocket(multi, "/ws", query=f"access_token={owner_token}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": [subject], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"
        assert (await _next_event(ws))["type"] == "agent.created"


async def test_invalid_messages_get_clear_errors(single):
    async with ASGIWebSocket(single, "/ws") as ws:
        await ws.send_text("{not json")
        assert (await ws.receive_json())["code"] == "invalid_message"
        await ws.send_json({"type": "subscribe", "patterns": []})
        assert (await ws.receive_json())["code"] == "invalid_input"
        await ws.send_json({"type": "unsubscribe"})
        assert (await ws.receive_json())["type"] == "unsubscribed"


async def test_a_client_too_slow_is_closed_4429(migrated_database_url):
    application = create_app(
        settings=load_settings(database_url=migrated_database_url, ws_queue_size=10)
    )
    try:
        async with ASGIWebSocket(application, "/ws") as ws:
            await ws.send_json({"type": "subscribe", "patterns": ["flood.*"]})
            await ws.receive_json()
            bus = await application.state.gathering.event_bus()
            for i in range(200):  # published faster than the socket drains its queue
                await bus.publish(Event("flood.tick", {"i": i}))
            assert await ws.wait_closed(timeout=10) == 4429
    finally:
        await application.state.gathering.close()


async def test_draining_closes_sockets_with_1001(single):
    async with ASGIWebSocket(single, "/ws") as ws:
        await ws.send_json({"type": "ping"})
        await ws.receive_json()
        single.state.gathering.drain.begin()
        assert await ws.wait_closed() == 1001


async def test_a_logged_out_socket_cannot_subscribe_again(multi):
    _, token = await _user_token(multi)
    async with ASGIWebSocket(multi, "/ws", query=f"access_token={token}") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        assert (await ws.receive_json())["type"] == "subscribed"
        async with _http(multi) as client:
            out = await client.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
            assert out.status_code == 204
        await ws.send_json({"type": "subscribe", "patterns": ["*"], "since": 0})
        assert await ws.wait_closed() == 4401


async def test_a_failed_replay_is_reported_and_closes_the_socket(single, monkeypatch):
    from gathering.errors import DatabaseUnavailableError
    from gathering.events import outbox

    async def broken(*args, **kwargs):
        raise DatabaseUnavailableError("lost the database connection to db.internal:5432")

    monkeypatch.setattr(outbox, "read_since", broken)
    async with ASGIWebSocket(single, "/ws") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["*"], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"
        error = await ws.receive_json()
        assert error["type"] == "error" and error["code"] == "database_unavailable"
        assert "db.internal" not in error["message"]
        assert await ws.wait_closed() == 1011

"""WebSocket review: a demoted administrator's socket stops receiving what it may no longer see
(close 4403), a binary frame is answered and closed with 1003, and no malformed frame (an id in
non-ASCII digits, JSON nested too deep) nor a fault of ours while handling a frame kills the
handler with an exception; the socket's slots are given back every time."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_ws import ASGIWebSocket  # tests/_support, on the path via conftest

import gathering.api.routers.ws as ws_module
from gathering.auth.users import UserStore
from gathering.events import Event

KEY = "r" * 64
PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    id: int
    token: str
    headers: dict[str, str]


def client_for(application) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test")


async def account(application, role: str = "member") -> Account:
    """A new user with `role`, logged in over HTTP."""
    email = f"rev-{secrets.token_hex(4)}@example.com"
    database = await application.state.gathering.database()
    user = await UserStore(database).create(email, PASSWORD, role=role)
    async with client_for(application) as client:
        login = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    return Account(user.id, token, {"Authorization": f"Bearer {token}"})


async def set_role(application, boss: Account, user: Account, role: str) -> None:
    async with client_for(application) as client:
        changed = await client.put(
            f"/users/{user.id}/role", json={"role": role}, headers=boss.headers
        )
        assert changed.status_code == 200, changed.text
        me = await client.get("/auth/me", headers=user.headers)
        assert me.json()["role"] == role


async def publish_about(application, user_id: int, note: str) -> None:
    bus = await application.state.gathering.event_bus()
    await bus.publish(Event("secret.thing", {"note": note}, subject=f"user:{user_id}"))


async def until_closed(ws: ASGIWebSocket, max_messages: int = 50) -> tuple[int, list[Any]]:
    """Read until the app closes the socket (at most `max_messages` frames, each within 5 s):
    the close code and the events received meanwhile."""
    events = []
    for _ in range(max_messages):
        try:
            message = await ws.receive_json(timeout=5)
        except ConnectionError as closed:
            return closed.args[0], events
        if message["type"] == "event":
            events.append(message["event"])
    raise AssertionError(f"the socket is still open after {max_messages} frames: {events}")


def open_sockets(application) -> tuple[int, int]:
    limits = application.state.security.socket_limits
    return len(limits.by_address), len(limits.by_user)


async def ended_cleanly(application, ws: ASGIWebSocket) -> None:
    """The endpoint returned without an exception and gave its slots back."""
    assert ws.task is not None and ws.task.done()
    assert ws.task.exception() is None, f"an exception escaped: {ws.task.exception()!r}"
    assert open_sockets(application) == (0, 0)


# --- 2. a demoted administrator -------------------------------------------------------------


@pytest.fixture
def every_event_checked(monkeypatch):
    """Check the credentials before every event (not at most once a second), so that the first
    event after a demotion shows whether it is still delivered, without waiting on a clock."""
    monkeypatch.setattr(ws_module, "RECHECK_SECONDS", 0.0)


async def test_a_demoted_admin_subscribed_to_every_event_is_closed_before_the_next_one(
    app_for, every_event_checked
):
    application = app_for(auth="required", secret_key=KEY, ws_heartbeat=600)
    victim = await account(application)
    boss = await account(application, "admin")
    demoted = await account(application, "admin")
    async with ASGIWebSocket(application, "/ws", query=f"access_token={demoted.token}") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        subscribed = await ws.receive_json()
        assert subscribed["type"] == "subscribed" and subscribed["subjects"] is None
        await publish_about(application, victim.id, "seen while admin")
        assert (await ws.receive_json())["event"]["data"] == {"note": "seen while admin"}

        await set_role(application, boss, demoted, "member")
        await publish_about(application, victim.id, "after the demotion")
        code, events = await until_closed(ws)
    assert code == ws_module.CLOSE_FORBIDDEN == 4403
    assert events == []
    await ended_cleanly(application, ws)


async def test_an_idle_demoted_admin_socket_closes_at_the_next_heartbeat(app_for):
    application = app_for(auth="required", secret_key=KEY, ws_heartbeat=0.2)
    boss = await account(application, "admin")
    demoted = await account(application, "admin")
    async with ASGIWebSocket(application, "/ws", query=f"access_token={demoted.token}") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["*"]})
        assert (await ws.receive_json())["type"] == "subscribed"
        await set_role(application, boss, demoted, "viewer")
        code, events = await until_closed(ws)
    assert (code, events) == (4403, [])
    await ended_cleanly(application, ws)


async def test_a_demoted_admin_loses_other_users_subjects_and_circles(app_for, every_event_checked):
    application = app_for(auth="required", secret_key=KEY, ws_heartbeat=600)
    victim = await account(application)
    boss = await account(application, "admin")
    demoted = await account(application, "admin")
    query = f"access_token={demoted.token}"
    async with (
        ASGIWebSocket(application, "/ws", query=query) as by_subject,
        ASGIWebSocket(application, "/ws/circles/council", query=query) as by_circle,
    ):
        await by_subject.send_json({"type": "subscribe", "subjects": [f"user:{victim.id}"]})
        assert (await by_subject.receive_json())["type"] == "subscribed"
        await by_circle.send_json({"type": "subscribe"})
        assert (await by_circle.receive_json())["subjects"] == ["circle:council"]

        await set_role(application, boss, demoted, "member")
        await publish_about(application, victim.id, "after the demotion")
        bus = await application.state.gathering.event_bus()
        await bus.publish(Event("circle.message", {"note": "after"}, subject="circle:council"))
        assert await until_closed(by_subject) == (4403, [])
        assert await until_closed(by_circle) == (4403, [])
    assert open_sockets(application) == (0, 0)


async def test_a_demoted_admin_keeps_a_subscription_to_their_own_events(
    app_for, every_event_checked
):
    application = app_for(auth="required", secret_key=KEY, ws_heartbeat=600)
    boss = await account(application, "admin")
    demoted = await account(application, "admin")
    async with ASGIWebSocket(application, "/ws", query=f"access_token={demoted.token}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": [f"user:{demoted.id}"]})
        assert (await ws.receive_json())["type"] == "subscribed"
        await set_role(application, boss, demoted, "member")
        await publish_about(application, demoted.id, "mine")
        assert (await ws.receive_json())["event"]["data"] == {"note": "mine"}
        # A new subscribe is checked against the role of now.
        await ws.send_json({"type": "subscribe", "subjects": [f"user:{boss.id}"]})
        assert (await ws.receive_json())["code"] == "not_found"
        await ws.send_json({"type": "subscribe"})
        assert (await ws.receive_json())["subjects"] == [f"user:{demoted.id}"]


# --- 7a. binary frames ----------------------------------------------------------------------


async def test_a_binary_frame_before_authentication_gets_an_error_and_1003(app_for):
    application = app_for(auth="required", secret_key=KEY)
    async with ASGIWebSocket(application, "/ws") as ws:
        await ws.to_app.put({"type": "websocket.receive", "bytes": b"\x00\x01"})
        error = await ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "invalid_frame")
        assert await ws.wait_closed() == 1003
    await ended_cleanly(application, ws)


async def test_a_binary_frame_after_authentication_gets_an_error_and_1003(app_for):
    application = app_for(auth="required", secret_key=KEY)
    user = await account(application)
    async with ASGIWebSocket(application, "/ws", query=f"access_token={user.token}") as ws:
        await ws.send_json({"type": "subscribe"})
        assert (await ws.receive_json())["type"] == "subscribed"
        await ws.to_app.put({"type": "websocket.receive", "bytes": b'{"type": "ping"}'})
        assert (await ws.receive_json())["code"] == "invalid_frame"
        assert await ws.wait_closed() == 1003
    await ended_cleanly(application, ws)


# --- 7b. malformed frames and faults while handling one -------------------------------------


async def test_subjects_with_ids_that_are_not_ascii_digits_are_refused(app_for):
    application = app_for(auth="required", secret_key=KEY)
    user = await account(application)
    async with ASGIWebSocket(application, "/ws", query=f"access_token={user.token}") as ws:
        for subject in ("agent:\u00b9", "agent:\u0663", "agent:" + "9" * 19, "agent:" + "9" * 40):
            await ws.send_json({"type": "subscribe", "subjects": [subject]})
            error = await ws.receive_json()
            assert (error["type"], error["code"]) == ("error", "not_found"), subject
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}  # the handler is still there
    await ended_cleanly(application, ws)


async def test_json_nested_too_deep_is_an_invalid_message(app_for):
    application = app_for(auth="required", secret_key=KEY)
    user = await account(application)
    async with ASGIWebSocket(application, "/ws", query=f"access_token={user.token}") as ws:
        await ws.send_text("[" * 50_000)
        error = await ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "invalid_message")
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}
    await ended_cleanly(application, ws)


async def test_a_fault_while_handling_a_frame_gets_an_error_and_the_socket_stays(
    app_for, monkeypatch
):
    application = app_for(auth="required", secret_key=KEY)
    user = await account(application)

    async def broken(*_: object) -> str | None:
        raise LookupError("a bug of ours")

    monkeypatch.setattr(ws_module, "_may_see", broken)  # fault injection, not a mock of a store
    async with ASGIWebSocket(application, "/ws", query=f"access_token={user.token}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": ["agent:1"]})
        error = await ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "internal_error")
        assert "a bug of ours" not in error["message"]
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}
    await ended_cleanly(application, ws)

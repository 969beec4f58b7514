"""WebSocket limits: the absolute auth deadline, sockets per address and per user (released on
every exit path), messages per socket, the cost of subscribe, and sockets opened while draining."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import pytest
from asgi_ws import ASGIWebSocket  # tests/_support, on the path via conftest

from gathering.api.app import create_app
from gathering.api.security.ws_limits import SocketLease, SocketSlots, TokenBucket
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.errors import ConfigurationError
from gathering.events import Event

KEY = "l" * 64
PASSWORD = "correct horse battery staple"
ADDRESS = "127.0.0.1"  # the harness's client address


def multi_user(app_for, **settings):
    return app_for(auth="required", secret_key=KEY, **settings)


async def access_token(application) -> tuple[int, str]:
    """A new user and an access token of a session started for them."""
    security = application.state.security
    user = await UserStore(await security.db()).create(
        f"lim-{secrets.token_hex(4)}@example.com", PASSWORD
    )
    pair = await (await security.services()).sessions.start(user.id)
    return user.id, pair.access.token


def open_sockets(application) -> tuple[int, int]:
    """How many address and user slots the app holds, over every key."""
    limits = application.state.security.socket_limits
    return len(limits.by_address), len(limits.by_user)


async def test_pings_do_not_extend_the_auth_deadline(app_for):
    application = multi_user(app_for, ws_auth_grace=0.3, ws_message_rate=1000)
    async with ASGIWebSocket(application, "/ws") as ws:
        with pytest.raises(ConnectionError) as closed:
            for _ in range(200):  # far past the grace: each ping would reset an idle timer
                await ws.send_json({"type": "ping"})
                assert await ws.receive_json() == {"type": "pong"}
                await asyncio.sleep(0.05)
        assert closed.value.args[0] == 4401


async def test_sockets_per_address_are_capped_and_given_back(app_for):
    application = app_for(ws_max_per_address=2)
    async with ASGIWebSocket(application, "/ws"), ASGIWebSocket(application, "/ws"):
        async with ASGIWebSocket(application, "/ws") as third:
            assert third.accepted
            assert await third.wait_closed() == 4430
    async with ASGIWebSocket(application, "/ws"):
        async with ASGIWebSocket(application, "/ws") as again:  # the others gave theirs back
            await again.send_json({"type": "ping"})
            assert await again.receive_json() == {"type": "pong"}
    assert application.state.security.socket_limits.by_address.count(ADDRESS) == 0


async def test_sockets_per_user_are_capped(app_for):
    application = multi_user(app_for, ws_max_per_user=2)
    user_id, token = await access_token(application)
    _, other_token = await access_token(application)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            ws = await stack.enter_async_context(
                ASGIWebSocket(application, "/ws", query=f"access_token={token}")
            )
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json() == {"type": "pong"}
        async with ASGIWebSocket(application, "/ws", query=f"access_token={token}") as third:
            assert await third.wait_closed() == 4430
        async with ASGIWebSocket(application, "/ws") as by_frame:
            await by_frame.send_json({"type": "auth", "token": token})
            assert await by_frame.wait_closed() == 4430
        async with ASGIWebSocket(application, "/ws") as someone_else:
            await someone_else.send_json({"type": "auth", "token": other_token})
            assert (await someone_else.receive_json())["type"] == "authenticated"
        limits = application.state.security.socket_limits
        assert limits.by_user.count(str(user_id)) == 2
    assert open_sockets(application) == (0, 0)


async def test_slots_are_given_back_on_every_exit_path(app_for):
    application = multi_user(app_for, ws_message_burst=2, ws_message_rate=0.001)
    _, token = await access_token(application)
    query = f"access_token={token}"

    # The client leaves.
    async with ASGIWebSocket(application, "/ws", query=query) as ws:
        await ws.send_json({"type": "ping"})
        await ws.receive_json()
        assert open_sockets(application) == (1, 1)
    assert open_sockets(application) == (0, 0)

    # The server closes: failed authentication, too many messages.
    async with ASGIWebSocket(application, "/ws", query="access_token=not-a-jwt") as ws:
        assert await ws.wait_closed() == 4401
        await asyncio.wait_for(ws.task, 5)
        assert open_sockets(application) == (0, 0)
    async with ASGIWebSocket(application, "/ws", query=query) as ws:
        for _ in range(3):
            await ws.send_json({"type": "ping"})
        assert await ws.wait_closed() == 4429
        await asyncio.wait_for(ws.task, 5)
        assert open_sockets(application) == (0, 0)

    # The session is cancelled (any exception out of it).
    ws = await ASGIWebSocket(application, "/ws", query=query).__aenter__()
    await ws.send_json({"type": "ping"})
    await ws.receive_json()
    assert ws.task is not None and open_sockets(application) == (1, 1)
    ws.task.cancel()
    await asyncio.gather(ws.task, return_exceptions=True)
    assert open_sockets(application) == (0, 0)

    # The server drains.
    async with ASGIWebSocket(application, "/ws", query=query) as ws:
        await ws.send_json({"type": "ping"})
        await ws.receive_json()
        application.state.gathering.drain.begin()
        assert await ws.wait_closed() == 1001
    assert open_sockets(application) == (0, 0)


async def test_too_many_messages_get_an_error_then_4429(app_for):
    application = app_for(ws_message_burst=3, ws_message_rate=0.001)
    async with ASGIWebSocket(application, "/ws") as ws:
        for _ in range(4):
            await ws.send_json({"type": "ping"})
        assert [await ws.receive_json() for _ in range(3)] == [{"type": "pong"}] * 3
        error = await ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "rate_limited")
        assert await ws.wait_closed() == 4429


async def test_a_frame_too_big_is_refused(app_for):
    application = app_for()
    async with ASGIWebSocket(application, "/ws") as ws:
        await ws.send_json({"type": "ping", "padding": "x" * 70_000})
        assert (await ws.receive_json())["code"] == "invalid_message"
        assert await ws.wait_closed() == 1009


async def test_subscribe_bounds_its_subjects_and_patterns(app_for):
    application = app_for()
    async with ASGIWebSocket(application, "/ws") as ws:
        subjects = [f"agent:{i}" for i in range(51)]
        await ws.send_json({"type": "subscribe", "subjects": subjects})
        assert (await ws.receive_json())["code"] == "invalid_input"
        await ws.send_json({"type": "subscribe", "patterns": [f"p{i}.*" for i in range(21)]})
        assert (await ws.receive_json())["code"] == "invalid_input"
        await ws.send_json({"type": "subscribe", "patterns": ["a" * 201]})
        assert (await ws.receive_json())["code"] == "invalid_input"
        await ws.send_json({"type": "subscribe", "subjects": ["x" * 201]})
        assert (await ws.receive_json())["code"] == "invalid_input"
        await ws.send_json({"type": "subscribe", "subjects": ["user:1", "user:1", "agent:2"]})
        subscribed = await ws.receive_json()
        assert subscribed["type"] == "subscribed"
        assert subscribed["subjects"] == ["user:1", "agent:2"]


async def _durable_events(application, *types: str) -> None:
    bus = await application.state.gathering.event_bus()
    db = await application.state.gathering.database()
    for event_type in types:
        async with db.transaction() as tx:
            await bus.publish(Event(event_type, {"t": event_type}), tx=tx)


async def _wait_cursor(application, at_least: int) -> None:
    """Until this instance's bus has delivered the durable events up to `at_least`."""
    bus = await application.state.gathering.event_bus()
    while (bus.cursor or 0) < at_least:
        await asyncio.sleep(0.01)


async def _events(ws: ASGIWebSocket, count: int) -> list[dict]:
    found = []
    while len(found) < count:
        message = await ws.receive_json(timeout=10)
        if message["type"] == "event":
            found.append(message["event"])
    return found


async def _reply(ws: ASGIWebSocket) -> dict:
    """The next message that is not an event or a heartbeat."""
    while True:
        message = await ws.receive_json(timeout=10)
        if message["type"] not in ("event", "heartbeat"):
            return message


async def test_one_replay_at_a_time(app_for):
    application = app_for()
    # Two matching events, then one that the subscription does not match: the replay has
    # not caught up (to the cursor of the moment it began) until a heartbeat or unsubscribe.
    await _durable_events(application, "job.one", "job.two", "other.three")
    await _wait_cursor(application, 3)
    async with ASGIWebSocket(application, "/ws") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["job.*"], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"
        assert [e["type"] for e in await _events(ws, 2)] == ["job.one", "job.two"]
        await ws.send_json({"type": "subscribe", "patterns": ["*"], "since": 0})
        refused = await ws.receive_json()
        assert (refused["type"], refused["code"]) == ("error", "replay_in_progress")
        bus = await application.state.gathering.event_bus()
        await bus.publish(Event("job.four"))  # the first subscription is still there
        assert (await _events(ws, 1))[0]["type"] == "job.four"
        await ws.send_json({"type": "subscribe", "patterns": ["*"], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"  # a live event ended it
        assert len(await _events(ws, 3)) == 3
        # The replay reached its last event (the cursor it began at): another may start.
        await ws.send_json({"type": "subscribe", "patterns": ["job.*"], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"
        await ws.send_json({"type": "subscribe", "patterns": ["job.*"]})
        assert (await _reply(ws))["code"] == "replay_in_progress"
        await ws.send_json({"type": "unsubscribe"})
        assert (await _reply(ws))["type"] == "unsubscribed"
        await ws.send_json({"type": "subscribe", "patterns": ["job.*"]})
        assert (await ws.receive_json())["type"] == "subscribed"


async def test_a_heartbeat_ends_a_replay_that_found_nothing_more(app_for):
    application = app_for(ws_heartbeat=0.2)
    await _durable_events(application, "job.one", "other.two")
    await _wait_cursor(application, 2)
    async with ASGIWebSocket(application, "/ws") as ws:
        await ws.send_json({"type": "subscribe", "patterns": ["job.*"], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"
        assert (await _events(ws, 1))[0]["type"] == "job.one"
        while (await ws.receive_json())["type"] != "heartbeat":
            pass
        await ws.send_json({"type": "subscribe", "patterns": ["*"], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"


async def test_a_socket_opened_while_draining_closes_1001(app_for):
    application = app_for()
    application.state.gathering.drain.begin()
    async with ASGIWebSocket(application, "/ws") as ws:
        assert ws.accepted
        assert await ws.wait_closed() == 1001
        await asyncio.wait_for(ws.task, 5)
    assert open_sockets(application) == (0, 0)


def test_the_ws_settings_refuse_nonsense():
    for bad in (
        {"ws_max_per_address": 0},
        {"ws_max_per_user": 0},
        {"ws_message_rate": 0},
        {"ws_message_burst": 0},
    ):
        with pytest.raises(ConfigurationError):
            load_settings(**bad)
    defaults = load_settings()
    assert (defaults.ws_max_per_address, defaults.ws_max_per_user) == (50, 20)
    assert (defaults.ws_message_rate, defaults.ws_message_burst) == (10.0, 30)


def test_the_message_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert [bucket.allow(0.5) for _ in range(2)] == [True, False]  # 0.5 s at 2/s: one more
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]  # never > burst


def test_a_lease_moves_between_keys_and_gives_back_once():
    slots = SocketSlots(limit=1)
    lease, other = SocketLease(slots), SocketLease(slots)
    assert lease.take("7") and lease.take("7")  # the same key again costs nothing
    assert not other.take("7")
    assert lease.take("8") and other.take("7")  # moving to 8 freed 7
    lease.release()
    lease.release()
    assert (slots.count("8"), slots.count("7"), len(slots)) == (0, 1, 1)


async def test_a_database_failure_while_authenticating_closes_1011_and_gives_back(
    private_postgres,
):
    application = create_app(
        settings=load_settings(
            database_url=private_postgres.url, auth="required", secret_key=KEY, db_connect_timeout=1
        )
    )
    try:
        await application.state.security.db()  # connected and migrated
        async with ASGIWebSocket(application, "/ws") as ws:
            assert open_sockets(application) == (1, 0)
            private_postgres.stop()
            await ws.send_json({"type": "auth", "ticket": "t" * 43})
            error = await ws.receive_json(timeout=30)
            assert error["type"] == "error" and error["code"].startswith("database")
            assert await ws.wait_closed(timeout=30) == 1011
            await asyncio.wait_for(ws.task, 5)
            assert open_sockets(application) == (0, 0)
    finally:
        private_postgres.start()
        await application.state.gathering.close()

"""Durable events on a real PostgreSQL: the outbox, NOTIFY/LISTEN, two instances, replay.

Each test gets a fresh migrated database (`db`); a second `Database` pool on the same database
stands for a second instance of the server. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from gathering.db import Database, discover_migrations
from gathering.errors import DatabaseUnavailableError, InvalidInputError
from gathering.events import (
    CHANNEL,
    OUTBOX_LOCK_KEY,
    Event,
    EventBus,
    compile_pattern,
    outbox,
)

WAIT = 20.0


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
async def db2(db: Database) -> AsyncIterator[Database]:
    """A second pool on the same database: the second "instance"."""
    other = Database(url=db.url, min_size=1, max_size=4)
    await other.connect()
    yield other
    await other.disconnect()


class Inbox:
    """Collects what one bus delivers; `sentinel` events mark the end of a scenario."""

    def __init__(self, bus: EventBus, pattern: str = "*") -> None:
        self.events: list[Event] = []
        self.subscription = bus.subscribe(pattern, self.events.append)

    def ids(self) -> Counter[object]:
        return Counter(e.id for e in self.events)

    def count(self, event_type: str) -> int:
        return sum(e.type == event_type for e in self.events)


async def add_agent(db: Database, name: str) -> None:
    await db.execute("INSERT INTO agent.agents (name, model) VALUES ($1, 'm')", name)


# --- the schema -----------------------------------------------------------------------------


def test_the_migration_uses_the_advisory_key_and_channel_of_the_code():
    sql = next(m.sql for m in discover_migrations() if m.name == "events")
    assert f"pg_advisory_xact_lock({OUTBOX_LOCK_KEY})" in sql
    assert f"pg_notify('{CHANNEL}'" in sql


async def test_patterns_mean_the_same_in_python_and_in_postgres(db):
    types = ["pipeline.started", "pipeline.node.failed", "circle.failed", "a_b", "aXb", "run"]
    for text in ["pipeline.*", "*.failed", "*", "a_b", "pipeline.*.failed", "run"]:
        pattern = compile_pattern(text)
        for event_type in types:
            in_sql = await db.fetch_val("SELECT $1::text ~ $2::text", event_type, pattern.regex)
            assert in_sql == pattern.matches(event_type), (text, event_type)


async def test_rows_get_cursors_in_commit_order_not_insert_order(db):
    async with db.transaction() as first:
        await outbox.write(first, [Event("t.first")])
        # A later transaction inserts and commits while the first is still open.
        async with Database(url=db.url, min_size=1, max_size=1) as other:
            await outbox.write(other, [Event("t.second")])
        assert await db.fetch_val("SELECT cursor FROM events.outbox") is None  # own row, no cursor
    rows = await db.fetch_all("SELECT type, cursor FROM events.outbox ORDER BY cursor")
    assert [r["type"] for r in rows] == ["t.second", "t.first"]


# --- two instances ----------------------------------------------------------------------------


async def test_two_instances_see_each_others_durable_events_once_each_in_subject_order(db, db2):
    per_subject = 15

    async def publish(bus: EventBus, database: Database, subject: str) -> None:
        for n in range(per_subject):
            async with database.transaction() as tx:
                await tx.execute(
                    "INSERT INTO agent.agents (name, model) VALUES ($1, 'm')", f"{subject}-{n}"
                )
                await bus.publish(Event("agent.created", {"n": n}, subject=subject), tx=tx)

    async with EventBus(db) as a, EventBus(db2) as b:
        inbox_a, inbox_b = Inbox(a), Inbox(b)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(
                *(publish(a, db, f"circle:a{i}") for i in range(3)),
                *(publish(b, db2, f"circle:b{i}") for i in range(3)),
            )
        await a.publish(Event("test.done"), durable=True)
        await until(lambda: inbox_a.count("test.done") == 1 and inbox_b.count("test.done") == 1)

        for inbox in (inbox_a, inbox_b):
            assert len(inbox.events) == 6 * per_subject + 1
            assert set(inbox.ids().values()) == {1}  # exactly once
            cursors = [e.cursor for e in inbox.events]
            assert cursors == sorted(cursors) and None not in cursors
            for i in range(3):
                for side in "ab":
                    ns = [e.data["n"] for e in inbox.events if e.subject == f"circle:{side}{i}"]
                    assert ns == list(range(per_subject))
        assert inbox_a.ids() == inbox_b.ids()
        assert await db.fetch_val("SELECT count(*) FROM agent.agents") == 6 * per_subject
        assert a.cursor == b.cursor == inbox_a.events[-1].cursor


async def test_out_of_order_commits_are_all_delivered_in_commit_order(db, db2):
    """Transactions that insert early and commit late must not be skipped by the cursor."""
    rng = random.Random(7)

    async def slow_commit(bus: EventBus, database: Database, n: int) -> None:
        async with database.transaction() as tx:
            await bus.publish(Event("test.slow", {"n": n}, subject=f"s{n}"), tx=tx)
            await asyncio.sleep(rng.random() * 0.05)

    async with EventBus(db) as a, EventBus(db2) as b:
        inbox_a, inbox_b = Inbox(a), Inbox(b)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(
                *(slow_commit(a if n % 2 else b, db if n % 2 else db2, n) for n in range(40))
            )
        await until(lambda: len(inbox_a.events) == 40 and len(inbox_b.events) == 40)
        await b.publish(Event("test.done"), durable=True)
        await until(lambda: inbox_a.count("test.done") == 1 and inbox_b.count("test.done") == 1)
    for inbox in (inbox_a, inbox_b):
        assert sorted(e.data.get("n", -1) for e in inbox.events) == [-1, *range(40)]
        cursors = [e.cursor for e in inbox.events]
        assert cursors == sorted(cursors) and len(set(cursors)) == 41


async def test_an_event_published_in_a_rolled_back_transaction_reaches_nobody(db, db2):
    async with EventBus(db) as a, EventBus(db2) as b:
        inbox_a, inbox_b = Inbox(a), Inbox(b)
        doomed = Event("agent.created", {"name": "ghost"}, subject="agent:ghost")
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await add_agent(db, "ghost")
                assert await a.publish(doomed, tx=tx)
                raise RuntimeError("changed my mind")
        # Published without `tx` inside the caller's transaction: it joins it, and rolls back.
        joined = Event("agent.created", {"name": "ghost2"})
        with pytest.raises(RuntimeError):
            async with db.transaction():
                await a.publish(joined, durable=True)
                raise RuntimeError("again")
        await a.publish(Event("test.done"), durable=True)
        await until(lambda: inbox_a.count("test.done") == 1 and inbox_b.count("test.done") == 1)
        for inbox in (inbox_a, inbox_b):
            assert [e.type for e in inbox.events] == ["test.done"]
        assert await db.fetch_val("SELECT count(*) FROM agent.agents") == 0
        assert await db.fetch_val("SELECT count(*) FROM events.outbox") == 1


async def test_a_durable_event_commits_with_the_state_change(db):
    async with EventBus(db) as bus:
        inbox = Inbox(bus)
        async with db.transaction() as tx:
            await add_agent(db, "ada")
            await bus.publish(
                Event("agent.created", {"name": "ada"}, correlation_id="req-1"), tx=tx
            )
            assert inbox.events == []  # nothing before commit
        await until(lambda: len(inbox.events) == 1)
        event = inbox.events[0]
        assert event.data == {"name": "ada"} and event.correlation_id == "req-1"
        assert event.cursor is not None
        assert await db.fetch_val("SELECT count(*) FROM agent.agents WHERE name = 'ada'") == 1


@pytest.mark.slow  # a real second process
async def test_a_second_os_process_publishes_durable_events(db, db2):
    script = (
        "import asyncio, sys\n"
        "from gathering.db import Database\n"
        "from gathering.events import Event, EventBus\n"
        "async def main(url, count):\n"
        "    async with Database(url=url, min_size=1, max_size=2) as db:\n"
        "        bus = EventBus(db)\n"
        "        for n in range(count):\n"
        "            async with db.transaction() as tx:\n"
        "                await bus.publish(\n"
        "                    Event('child.tick', {'n': n}, subject='child', source='child'), tx=tx\n"
        "                )\n"
        "asyncio.run(main(sys.argv[1], int(sys.argv[2])))\n"
    )
    async with EventBus(db) as a, EventBus(db2) as b:
        inbox_a, inbox_b = Inbox(a), Inbox(b)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            db.url,
            "25",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(60):
                _, stderr = await child.communicate()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, stderr.decode()
        await until(lambda: len(inbox_a.events) == 25 and len(inbox_b.events) == 25)
        await a.publish(Event("test.done"), durable=True)
        await until(lambda: inbox_a.count("test.done") == 1 and inbox_b.count("test.done") == 1)
    for inbox in (inbox_a, inbox_b):
        ticks = [e for e in inbox.events if e.type == "child.tick"]
        assert [e.data["n"] for e in ticks] == list(range(25))
        assert {e.source for e in ticks} == {"child"}


# --- the listener -----------------------------------------------------------------------------


async def test_the_listener_reconnects_and_catches_up_from_its_cursor(db, db2):
    async with EventBus(db) as a, EventBus(db2) as b:
        inbox_b = Inbox(b)
        assert b.listener is not None
        b.listener.reconnect_delay = 0.01
        await a.publish(Event("test.before"), durable=True)
        await until(lambda: len(inbox_b.events) == 1)
        pid = b.listener.backend_pid
        with capture_logs() as logs:
            await db.execute("SELECT pg_terminate_backend($1)", pid)
            await a.publish_many([Event("test.during", {"n": n}) for n in range(5)], durable=True)
            await until(lambda: len(inbox_b.events) == 6)
        assert b.listener.reconnects >= 1 and b.listener.backend_pid != pid
        assert any(e["event"] == "event listener failed; reconnecting" for e in logs)
        await a.publish(Event("test.after"), durable=True)
        await until(lambda: len(inbox_b.events) == 7)
    assert [e.type for e in inbox_b.events] == ["test.before", *["test.during"] * 5, "test.after"]
    assert [e.data.get("n") for e in inbox_b.events[1:6]] == list(range(5))


async def test_a_lost_notification_only_delays_delivery_until_the_next_poll(db, db2):
    async with EventBus(db) as a, EventBus(db2, poll_interval=0.05) as b:
        assert b.listener is not None
        await b.listener.stop()
        inbox_b = Inbox(b)
        await a.publish(Event("test.while_stopped"), durable=True)
        b.listener.channel = "nobody_notifies_this"  # as if every notification were lost
        await b.listener.start()  # goes on from its own cursor
        await a.publish(Event("test.quiet"), durable=True)
        await until(lambda: len(inbox_b.events) == 2)
        assert [e.type for e in inbox_b.events] == ["test.while_stopped", "test.quiet"]
        assert b.listener.notifications == 0


async def test_stale_or_odd_notifications_are_harmless(db):
    async with EventBus(db) as bus:
        inbox = Inbox(bus)
        assert bus.listener is not None
        await db.execute("SELECT pg_notify($1, '0')", CHANNEL)
        await db.execute("SELECT pg_notify($1, 'not a cursor')", CHANNEL)
        await until(lambda: bus.listener is not None and bus.listener.notifications >= 2)
        await bus.publish(Event("test.real"), durable=True)
        await until(lambda: len(inbox.events) == 1)
        assert bus.stats()["durable_delivered"] == 1


async def test_a_bus_started_at_a_cursor_delivers_what_came_after_it(db):
    async with EventBus(db) as writer:
        await writer.publish_many([Event("test.old", {"n": n}) for n in range(3)], durable=True)
    first = (await EventBus(db).replay(0))[0].cursor
    late = EventBus(db)
    inbox = Inbox(late)
    await late.start(since_cursor=first)
    try:
        await until(lambda: len(inbox.events) == 2)
        assert [e.data["n"] for e in inbox.events] == [1, 2]
    finally:
        await late.close()


async def test_the_listener_reports_a_database_it_cannot_use(fresh_database_url):
    async with Database(url=fresh_database_url) as unmigrated:
        bus = EventBus(unmigrated)
        with pytest.raises(DatabaseUnavailableError, match="listener could not start"):
            await bus.start()
        assert bus.listener is not None and not bus.listener.connected
        await bus.close()


async def test_a_refusing_subscriber_does_not_stop_durable_delivery(db):
    release = asyncio.Event()

    async def stuck(event: Event) -> None:
        await release.wait()

    async with EventBus(db) as bus:
        bus.subscribe("*", stuck, maxsize=1, policy="raise", max_wait=0)
        inbox = Inbox(bus)
        with capture_logs() as logs:
            await bus.publish_many([Event("test.n", {"n": n}) for n in range(4)], durable=True)
            await until(lambda: len(inbox.events) == 4)
        assert [e.data["n"] for e in inbox.events] == [0, 1, 2, 3]
        assert any(e["event"] == "a subscriber refused a durable event" for e in logs)
        release.set()


# --- publishing -------------------------------------------------------------------------------


async def test_republishing_a_durable_event_id_is_ignored(db):
    async with EventBus(db) as bus:
        inbox = Inbox(bus)
        event = Event("test.once")
        assert await bus.publish(event, durable=True) is True
        assert await bus.publish(event, durable=True) is False
        assert await bus.publish_many([event, Event("test.other")], durable=True) == 1
        assert await bus.publish_many([], durable=True) == 0
        await until(lambda: len(inbox.events) == 2)
        assert await db.fetch_val("SELECT count(*) FROM events.outbox") == 2
        assert bus.stats()["written"] == 2


async def test_durable_data_must_be_json(db):
    bus = EventBus(db)
    async with db.transaction() as tx:
        with pytest.raises(InvalidInputError, match="JSON"):
            await bus.publish(Event("test.bad", {"when": object()}), tx=tx)
        with pytest.raises(InvalidInputError, match="JSON"):
            await bus.publish(Event("test.bad", {"x": float("nan")}), tx=tx)
        await add_agent(db, "still-fine")  # the transaction was not aborted
    assert await db.fetch_val("SELECT count(*) FROM agent.agents") == 1


# --- replay and streams -----------------------------------------------------------------------


async def test_replay_resumes_from_a_cursor_with_filters_and_pages(db):
    bus = EventBus(db)
    events = [
        Event("run.started", subject="run:1"),
        Event("run.step", {"n": 1}, subject="run:1"),
        Event("circle.joined", subject="circle:1"),
        Event("run.step", {"n": 2}, subject="run:2"),
        Event("run.finished", subject="run:1"),
    ]
    await bus.publish_many(events, durable=True)
    everything = await bus.replay(0)
    assert [e.id for e in everything] == [e.id for e in events]
    cursors = [e.cursor for e in everything]
    assert cursors == sorted(cursors)
    assert [e.id for e in await bus.replay(cursors[1])] == [e.id for e in events[2:]]
    assert [e.type for e in await bus.replay(0, subjects="run:1")] == [
        "run.started",
        "run.step",
        "run.finished",
    ]
    assert [e.type for e in await bus.replay(0, pattern="run.step")] == ["run.step"] * 2
    only = await bus.replay(0, subjects=["run:1", "circle:1"], pattern=["*.joined", "*.finished"])
    assert [e.type for e in only] == ["circle.joined", "run.finished"]
    page1 = await bus.replay(0, limit=2)
    page2 = await bus.replay(page1[-1].cursor or 0, limit=2)
    assert [e.id for e in page1 + page2] == [e.id for e in events[:4]]
    with pytest.raises(InvalidInputError):
        await bus.replay(0, limit=0)


async def test_a_stream_replays_since_a_cursor_then_goes_live_without_gap_or_repeat(db, db2):
    async with EventBus(db) as a, EventBus(db2) as b:
        await a.publish_many([Event("run.step", {"n": n}) for n in range(5)], durable=True)
        first = (await a.replay(0, limit=1))[0].cursor
        stream = b.stream("run.*", since_cursor=first)
        # While the stream replays, live events arrive: durable ones and a non-durable one.
        await a.publish_many([Event("run.step", {"n": n}) for n in range(5, 10)], durable=True)
        await b.publish(Event("run.progress", {"local": True}))
        got: list[Event] = []
        async with asyncio.timeout(WAIT):
            while len(got) < 10:
                got.append(await stream.get())
        durable = [e for e in got if e.cursor is not None]
        assert [e.data["n"] for e in durable] == list(range(1, 10))
        assert [e.type for e in got if e.cursor is None] == ["run.progress"]
        assert stream.last_cursor == durable[-1].cursor
        stream.close()


async def test_a_slow_stream_gets_dropped_durable_events_back_from_the_outbox(db):
    async with EventBus(db) as bus:
        stream = bus.stream("*", maxsize=2)
        await bus.publish_many([Event("run.step", {"n": n}) for n in range(10)], durable=True)
        last = (await bus.replay(0))[-1].cursor
        await until(lambda: bus.cursor == last)  # all delivered: the stream dropped 8
        assert stream.dropped == 8
        async with asyncio.timeout(WAIT):
            got = await stream.get_batch(max_items=10, max_wait=1.0)
        assert [e.data["n"] for e in got] == list(range(10))
        assert stream.last_cursor == last
        stream.close()


# --- pruning ----------------------------------------------------------------------------------


async def test_prune_deletes_outbox_rows_older_than_the_given_age(db):
    bus = EventBus(db)
    await bus.publish_many([Event("test.n", {"n": n}) for n in range(5)], durable=True)
    await db.execute(
        "UPDATE events.outbox SET recorded_at = now() - interval '2 hours'"
        " WHERE (data->>'n')::int < 3"
    )
    assert await outbox.prune(db, timedelta(hours=1), batch_size=2) == 3
    assert await bus.prune(timedelta(hours=1)) == 0
    assert [e.data["n"] for e in await bus.replay(0)] == [3, 4]
    with pytest.raises(InvalidInputError):
        await bus.prune(timedelta(0))


async def test_a_bus_with_retention_prunes_periodically(db):
    async with EventBus(db) as writer:
        await writer.publish_many([Event("test.n", {"n": n}) for n in range(3)], durable=True)
    await db.execute("UPDATE events.outbox SET recorded_at = now() - interval '2 days'")
    async with EventBus(db, retention=timedelta(days=1), prune_interval=0.01):
        async with asyncio.timeout(WAIT):
            while await db.fetch_val("SELECT count(*) FROM events.outbox"):
                await asyncio.sleep(0.01)

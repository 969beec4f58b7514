"""The in-process event bus: patterns, parallel handlers, ordering, backpressure, dedup, batching.

No wall-time assertions: every wait is bounded by a timeout so that a bug fails the test
instead of hanging it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime
from types import MappingProxyType

import pytest
from structlog.testing import capture_logs

from gathering.errors import GatheringError, InvalidInputError, ShuttingDownError
from gathering.events import (
    Event,
    EventBackpressureError,
    EventBus,
    EventStreamClosedError,
    OverflowPolicy,
    RecentIds,
    compile_pattern,
)

WAIT = 10.0  # seconds: an upper bound for anything that should happen at once


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Yield to the loop until `predicate()` holds; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def settle() -> None:
    """Let every ready task run a few steps."""
    for _ in range(20):
        await asyncio.sleep(0)


async def drained(bus: EventBus) -> None:
    async with asyncio.timeout(WAIT):
        await bus.drain()


def ev(event_type: str = "test.happened", n: int = 0, **kwargs: object) -> Event:
    return Event(event_type, {"n": n}, **kwargs)  # type: ignore[arg-type]


# --- patterns and handlers --------------------------------------------------------------------


async def test_exact_types_and_wildcards_route_to_the_right_subscribers():
    got: dict[str, list[str]] = {p: [] for p in ("pipeline.started", "pipeline.*", "*.failed", "*")}
    async with EventBus() as bus:
        for pattern, seen in got.items():
            bus.subscribe(pattern, lambda e, seen=seen: seen.append(e.type))
        for event_type in ("pipeline.started", "pipeline.node.failed", "circle.failed", "run.x"):
            await bus.publish(ev(event_type))
        await drained(bus)
    assert got["pipeline.started"] == ["pipeline.started"]
    assert got["pipeline.*"] == ["pipeline.started", "pipeline.node.failed"]
    assert got["*.failed"] == ["pipeline.node.failed", "circle.failed"]
    assert got["*"] == ["pipeline.started", "pipeline.node.failed", "circle.failed", "run.x"]


def test_pattern_matching_is_by_whole_words():
    assert compile_pattern("pipeline.*").matches("pipeline.a.b")
    assert not compile_pattern("pipeline.*").matches("pipeline")
    assert not compile_pattern("pipeline.*").matches("pipelines.started")
    assert compile_pattern("a.*.z").matches("a.b.c.z")
    assert not compile_pattern("a.*.z").matches("a.z")
    assert not compile_pattern("a_b").matches("aXb")  # '_' is literal, not a LIKE wildcard
    for bad in ("", "pipe*", "a..b", "a.", "a b", "**", 7):
        with pytest.raises(InvalidInputError):
            compile_pattern(bad)  # type: ignore[arg-type]


async def test_sync_async_and_threaded_handlers_all_receive():
    sync_seen, async_seen, thread_seen = [], [], []
    loop_thread = threading.get_ident()

    async def on_async(event: Event) -> None:
        await asyncio.sleep(0)
        async_seen.append(event.data["n"])

    def on_thread(event: Event) -> None:
        assert threading.get_ident() != loop_thread
        thread_seen.append(event.data["n"])

    async with EventBus() as bus:
        bus.subscribe("test.*", lambda e: sync_seen.append(e.data["n"]))
        bus.subscribe("test.*", on_async)
        bus.subscribe("test.*", on_thread, threaded=True)
        for n in range(5):
            await bus.publish(ev(n=n))
        await drained(bus)
    assert sync_seen == async_seen == thread_seen == [0, 1, 2, 3, 4]


async def test_unsubscribe_removes_exactly_that_subscription():
    seen: list[int] = []
    async with EventBus() as bus:
        first = bus.subscribe("test.*", lambda e: seen.append(1))
        second = bus.subscribe("test.*", lambda e: seen.append(2))
        await bus.publish(ev())
        await drained(bus)
        assert sorted(seen) == [1, 2]
        first.unsubscribe()
        first.unsubscribe()  # idempotent
        seen.clear()
        await bus.publish(ev())
        await drained(bus)
        assert seen == [2]
        assert bus.subscriptions == (second,)
        async with asyncio.timeout(WAIT):
            await first.wait_closed()
    assert second.closed


async def test_subjects_filter_keeps_only_those_subjects():
    seen: list[str | None] = []
    async with EventBus() as bus:
        bus.subscribe("*", lambda e: seen.append(e.subject), subjects=["run:1", "run:3"])
        bus.subscribe("*", lambda e: None, subjects="run:2")
        for subject in ("run:1", "run:2", None, "run:3"):
            await bus.publish(ev(subject=subject))
        await drained(bus)
    assert seen == ["run:1", "run:3"]


# --- parallelism and ordering -----------------------------------------------------------------


async def test_different_subscribers_run_in_parallel():
    """Each handler waits until all of them are running at once: only parallel handlers pass."""
    count = 5
    barrier = asyncio.Barrier(count)
    passed: list[int] = []

    async def handler(event: Event) -> None:
        async with asyncio.timeout(WAIT):
            await barrier.wait()
        passed.append(event.data["n"])

    async with EventBus() as bus:
        subscriptions = [bus.subscribe("test.*", handler) for _ in range(count)]
        await bus.publish(ev(n=1))
        await drained(bus)
    assert passed == [1] * count
    assert all(s.errors == 0 for s in subscriptions)


async def test_a_slow_subscriber_does_not_hold_back_a_fast_one_while_it_has_room():
    release = asyncio.Event()
    fast_seen: list[int] = []

    async def slow(event: Event) -> None:
        await release.wait()

    async with EventBus() as bus:
        bus.subscribe("test.*", slow, maxsize=100)
        bus.subscribe("test.*", lambda e: fast_seen.append(e.data["n"]))
        for n in range(50):
            await bus.publish(ev(n=n))
        await until(lambda: len(fast_seen) == 50)
        release.set()
        await drained(bus)
    assert fast_seen == list(range(50))


async def test_one_subscriber_sees_events_in_publish_order():
    seen: list[int] = []

    async def handler(event: Event) -> None:
        if event.data["n"] % 7 == 0:
            await asyncio.sleep(0)
        seen.append(event.data["n"])

    async with EventBus() as bus:
        bus.subscribe("test.*", handler, maxsize=8)  # small: publishers wait often
        for n in range(500):
            await bus.publish(ev(n=n))
        await drained(bus)
    assert seen == list(range(500))


async def test_concurrent_publishers_keep_their_own_order_under_backpressure():
    seen: list[tuple[int, int]] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append((event.data["publisher"], event.data["n"]))

    async def publish(bus: EventBus, publisher: int) -> None:
        for n in range(200):
            await bus.publish(Event("test.many", {"publisher": publisher, "n": n}))

    async with EventBus() as bus:
        subscription = bus.subscribe("test.*", handler, maxsize=4, max_wait=0.01)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(publish(bus, p) for p in range(4)))
        await drained(bus)
    assert len(seen) == 800 and subscription.dropped == 0
    for publisher in range(4):
        assert [n for p, n in seen if p == publisher] == list(range(200))


# --- backpressure -----------------------------------------------------------------------------


async def test_block_policy_makes_publish_wait_until_the_subscriber_has_room():
    release = asyncio.Event()
    seen: list[int] = []

    async def handler(event: Event) -> None:
        await release.wait()
        seen.append(event.data["n"])

    async with EventBus() as bus:
        subscription = bus.subscribe("test.*", handler, maxsize=2, max_wait=0.01)
        await bus.publish(ev(n=0))
        await until(lambda: subscription.queue.qsize() == 0)  # the handler holds event 0
        await bus.publish(ev(n=1))
        await bus.publish(ev(n=2))  # the queue is now full
        with capture_logs() as logs:
            blocked = asyncio.create_task(bus.publish(ev(n=3)))
            await until(lambda: any("holding publishers back" in e["event"] for e in logs))
        await settle()
        assert not blocked.done()  # still waiting for room, past max_wait
        release.set()
        async with asyncio.timeout(WAIT):
            await blocked
        await drained(bus)
    assert seen == [0, 1, 2, 3]
    assert subscription.dropped == 0 and subscription.refused == 0


async def test_drop_oldest_policy_drops_and_counts_and_never_blocks():
    release = asyncio.Event()
    seen: list[int] = []

    async def handler(event: Event) -> None:
        await release.wait()
        seen.append(event.data["n"])

    async with EventBus() as bus:
        subscription = bus.subscribe("test.*", handler, maxsize=3, policy="drop_oldest", max_wait=0)
        async with asyncio.timeout(WAIT):
            for n in range(20):
                await bus.publish(ev(n=n))
        release.set()
        await drained(bus)
    assert subscription.dropped > 0
    assert len(seen) + subscription.dropped == 20
    assert seen == sorted(seen) and seen[-1] == 19  # the newest survive, in order
    assert bus.stats()["dropped"] == subscription.dropped


async def test_raise_policy_refuses_but_others_still_get_the_event():
    release = asyncio.Event()
    other: list[int] = []

    async def stuck(event: Event) -> None:
        await release.wait()

    async with EventBus() as bus:
        refusing = bus.subscribe(
            "test.*", stuck, maxsize=1, policy=OverflowPolicy.RAISE, max_wait=0
        )
        bus.subscribe("test.*", lambda e: other.append(e.data["n"]))
        await bus.publish(ev(n=0))
        await until(lambda: refusing.queue.qsize() == 0)
        await bus.publish(ev(n=1))
        with pytest.raises(EventBackpressureError) as info:
            await bus.publish(ev(n=2))
        assert info.value.details["subscription"] == refusing.name
        assert info.value.http_status == 503
        release.set()
        await drained(bus)
    assert other == [0, 1, 2]
    assert refusing.refused == 1 and refusing.delivered == 2


async def test_several_refusing_subscribers_are_named_in_one_error():
    release = asyncio.Event()

    async def stuck(event: Event) -> None:
        await release.wait()

    async with EventBus() as bus:
        subs = [bus.subscribe("test.*", stuck, maxsize=1, policy="raise", max_wait=0) for _ in "ab"]
        await bus.publish(ev(n=0))
        await until(lambda: all(s.queue.qsize() == 0 for s in subs))
        await bus.publish(ev(n=1))
        with pytest.raises(EventBackpressureError) as info:
            await bus.publish(ev(n=2))
        assert info.value.details["subscriptions"] == [s.name for s in subs]
        release.set()


async def test_a_handler_publishing_to_its_own_full_queue_does_not_deadlock():
    outcomes: list[str] = []

    async def echo(event: Event) -> None:
        if event.data["n"] == 0:
            for n in range(1, 4):
                try:
                    await bus.publish(ev(n=n))
                    outcomes.append("queued")
                except EventBackpressureError:
                    outcomes.append("refused")

    bus = EventBus()
    async with bus:
        subscription = bus.subscribe("test.*", echo, maxsize=1, max_wait=WAIT)
        await bus.publish(ev(n=0))
        await drained(bus)
    # BLOCK cannot wait for its own handler: the first echo fits, the next ones are refused.
    assert outcomes == ["queued", "refused", "refused"]
    assert subscription.refused == 2


async def test_unsubscribing_releases_a_blocked_publisher():
    async def stuck(event: Event) -> None:
        await asyncio.Event().wait()

    async with EventBus() as bus:
        subscription = bus.subscribe("test.*", stuck, maxsize=1, max_wait=0)
        await bus.publish(ev(n=0))
        await until(lambda: subscription.queue.qsize() == 0)
        await bus.publish(ev(n=1))
        blocked = asyncio.create_task(bus.publish(ev(n=2)))
        await settle()
        assert not blocked.done()
        subscription.unsubscribe()
        async with asyncio.timeout(WAIT):
            await blocked
        async with asyncio.timeout(WAIT):
            await subscription.wait_closed(grace=0.01)  # the stuck handler gets cancelled
    assert subscription.closed


# --- failures ---------------------------------------------------------------------------------


async def test_a_failing_handler_is_logged_and_isolated():
    good: list[int] = []
    survived: list[int] = []

    def flaky(event: Event) -> None:
        if event.data["n"] % 2:
            raise RuntimeError(f"boom {event.data['n']}")
        survived.append(event.data["n"])

    async with EventBus() as bus:
        failing = bus.subscribe("test.*", flaky, name="flaky")
        bus.subscribe("test.*", lambda e: good.append(e.data["n"]))
        with capture_logs() as logs:
            for n in range(6):
                await bus.publish(ev(n=n))
            await drained(bus)
    assert good == [0, 1, 2, 3, 4, 5]
    assert survived == [0, 2, 4]
    assert failing.errors == 3 and failing.delivered == 3
    failures = [e for e in logs if e["event"] == "event handler failed"]
    assert len(failures) == 3
    assert failures[0]["subscription"] == "flaky" and failures[0]["log_level"] == "error"
    assert bus.stats()["errors"] == 3


# --- dedup ------------------------------------------------------------------------------------


async def test_the_same_event_id_is_delivered_once_within_the_window():
    seen: list[int] = []
    async with EventBus(dedup_size=3) as bus:
        bus.subscribe("*", lambda e: seen.append(e.data["n"]))
        first = ev(n=1)
        assert await bus.publish(first) is True
        assert await bus.publish(first) is False
        assert await bus.publish_many([first, ev(n=2), ev(n=3), ev(n=4)]) == 3
        # `first` has now left the window of 3 ids
        assert await bus.publish(first) is True
        await drained(bus)
        assert bus.stats()["duplicates"] == 2
    assert seen == [1, 2, 3, 4, 1]


def test_the_dedup_window_also_forgets_ids_after_its_ttl():
    now = [0.0]
    recent = RecentIds(100, ttl=10.0, clock=lambda: now[0])
    old, new = ev(), ev()
    assert not recent.seen(old.id)
    now[0] = 5.0
    assert not recent.seen(new.id)
    assert recent.seen(old.id)
    now[0] = 12.0
    assert not recent.seen(ev().id)  # evicts `old` (seen at 0.0)
    assert not recent.seen(old.id)
    assert recent.seen(new.id)
    assert len(recent) == 3
    with pytest.raises(InvalidInputError):
        RecentIds(0, 1.0)


# --- batching ---------------------------------------------------------------------------------


async def test_batch_handlers_get_queued_events_together_in_order():
    batches: list[list[int]] = []

    async def handler(events: list[Event]) -> None:
        batches.append([e.data["n"] for e in events])

    async with EventBus() as bus:
        subscription = bus.subscribe_batch("token.*", handler, max_batch=10, max_delay=0)
        for n in range(25):  # queued without yielding: the handler has not run yet
            await bus.publish(ev("token.delta", n=n))
        await drained(bus)
    assert batches == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert subscription.batches == 3 and subscription.delivered == 25


async def test_a_batch_waits_up_to_max_delay_for_more_events():
    batches: list[list[int]] = []
    async with EventBus() as bus:
        bus.subscribe_batch(
            "token.*",
            lambda es: batches.append([e.data["n"] for e in es]),
            max_batch=3,
            max_delay=WAIT,
        )
        for n in range(3):  # the handler task waits for the batch to fill between these
            await bus.publish(ev("token.delta", n=n))
            await settle()
        await drained(bus)
    assert batches == [[0, 1, 2]]


async def test_a_failing_batch_handler_is_isolated():
    calls: list[int] = []

    def handler(events: list[Event]) -> None:
        calls.append(len(events))
        raise ValueError("bad batch")

    async with EventBus() as bus:
        subscription = bus.subscribe_batch("*", handler, max_batch=2, max_delay=0)
        with capture_logs() as logs:
            for n in range(3):
                await bus.publish(ev(n=n))
            await drained(bus)
    assert calls == [2, 1] and subscription.errors == 2
    assert [e["event"] for e in logs].count("event batch handler failed") == 2


async def test_closing_a_batch_subscription_mid_batch_stops_it():
    batches: list[int] = []
    async with EventBus() as bus:
        subscription = bus.subscribe_batch(
            "*", lambda es: batches.append(len(es)), max_batch=100, max_delay=WAIT
        )
        await bus.publish(ev())
        await settle()  # the worker waits for more
        subscription.unsubscribe()
        async with asyncio.timeout(WAIT):
            await subscription.wait_closed()
    assert batches == [1]


# --- streams (the per-client queue a WebSocket reads) -----------------------------------------


async def test_a_stream_yields_matching_events_and_ends_when_closed():
    async with EventBus() as bus:
        stream = bus.stream(["run.*", "circle.joined"], subjects=["run:1", "circle:1"])
        await bus.publish(ev("run.started", subject="run:1"))
        await bus.publish(ev("run.started", subject="run:2"))
        await bus.publish(ev("circle.joined", subject="circle:1"))
        await bus.publish(ev("circle.left", subject="circle:1"))
        async with asyncio.timeout(WAIT):
            assert (await stream.get()).type == "run.started"
            batch = await stream.get_batch(max_items=10, max_wait=0)
        assert [e.type for e in batch] == ["circle.joined"]
        stream.close()
        got = [e async for e in stream]
        assert got == []
        with pytest.raises(EventStreamClosedError):
            await stream.get()
        assert stream not in bus.subscriptions


async def test_a_slow_stream_drops_its_oldest_events_without_holding_publishers():
    async with EventBus() as bus:
        async with bus.stream("*", maxsize=5) as stream:
            async with asyncio.timeout(WAIT):
                for n in range(50):
                    await bus.publish(ev(n=n))
                got = await stream.get_batch(max_items=100, max_wait=0)
            assert [e.data["n"] for e in got] == list(range(45, 50))
            assert stream.dropped == 45 and stream.last_cursor is None
        assert stream.closed


async def test_get_batch_returns_what_arrived_before_the_stream_closed():
    async with EventBus() as bus:
        stream = bus.stream()
        await bus.publish(ev(n=1))

        async def close_soon() -> None:
            await settle()
            stream.close()

        closer = asyncio.create_task(close_soon())
        async with asyncio.timeout(WAIT):
            batch = await stream.get_batch(max_items=10, max_wait=WAIT)
        await closer
    assert [e.data["n"] for e in batch] == [1]


async def test_a_stream_cannot_replay_without_a_database():
    async with EventBus() as bus:
        with pytest.raises(InvalidInputError, match="database"):
            bus.stream(since_cursor=0)


# --- lifecycle, stats, bad input --------------------------------------------------------------


async def test_close_lets_handlers_finish_then_refuses_new_subscribers():
    seen: list[int] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event.data["n"])

    bus = EventBus()
    subscription = bus.subscribe("*", handler)
    for n in range(10):
        await bus.publish(ev(n=n))
    async with asyncio.timeout(WAIT):
        await bus.close()
        await bus.close()  # idempotent
    assert seen == list(range(10))
    assert subscription.closed and subscription._task is not None and subscription._task.done()
    with pytest.raises(ShuttingDownError, match="closed"):
        bus.subscribe("*", handler)
    stats = bus.stats()
    assert stats["delivered"] == 10 and stats["subscriptions"] == 0 and stats["published"] == 10


async def test_stats_count_per_subscription_and_in_total():
    async with EventBus() as bus:
        a = bus.subscribe("a.*", lambda e: None)
        bus.subscribe("*", lambda e: None)
        for event_type in ("a.x", "b.x", "a.y"):
            await bus.publish(ev(event_type))
        await drained(bus)
        assert a.stats() == {
            "queued": 0,
            "received": 2,
            "delivered": 2,
            "dropped": 0,
            "refused": 0,
            "errors": 0,
        }
        stats = bus.stats()
        assert stats["delivered"] == 5 and stats["published"] == 3 and stats["subscriptions"] == 2
        assert "listener_cursor" not in stats and bus.cursor is None
        assert "a.*" in repr(a)


async def test_bad_input_raises_typed_errors():
    async with EventBus() as bus:
        with pytest.raises(InvalidInputError):
            bus.subscribe("bad pattern", lambda e: None)
        with pytest.raises(InvalidInputError):
            bus.subscribe([], lambda e: None)
        with pytest.raises(InvalidInputError, match="policy"):
            bus.subscribe("*", lambda e: None, policy="sometimes")
        with pytest.raises(InvalidInputError):
            bus.subscribe("*", lambda e: None, maxsize=0)
        with pytest.raises(InvalidInputError):
            bus.subscribe("*", lambda e: None, max_wait=-1)
        with pytest.raises(InvalidInputError):
            bus.subscribe_batch("*", lambda es: None, max_batch=0)
        with pytest.raises(InvalidInputError):
            bus.subscribe_batch("*", lambda es: None, max_delay=-1)
        assert bus.subscriptions == ()
        with pytest.raises(GatheringError, match="need a database"):
            await bus.publish(ev(), durable=True)
        with pytest.raises(GatheringError, match="need a database"):
            await bus.replay(0)


def test_events_validate_their_fields():
    event = Event("run.started", MappingProxyType({"a": 1}), subject="run:1", source="api")
    assert event.to_dict()["data"] == {"a": 1}
    assert event.to_dict()["id"] == str(event.id)
    assert hash(event) == hash(event.id) and event == event
    assert event.with_cursor(7).cursor == 7 and event.cursor is None
    bad: list[Callable[[], object]] = [
        lambda: Event("bad type"),
        lambda: Event("x" * 201),
        lambda: Event("ok", data=[1]),  # type: ignore[arg-type]
        lambda: Event("ok", subject=""),
        lambda: Event("ok", id="not-a-uuid"),  # type: ignore[arg-type]
        lambda: Event("ok", occurred_at=datetime(2026, 1, 1)),  # naive
    ]
    for make in bad:
        with pytest.raises(InvalidInputError):
            make()

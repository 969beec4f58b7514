"""Typed events: in-process fan-out with backpressure, dedup and ordering; a Postgres outbox
with LISTEN/NOTIFY carries durable events to every instance, exactly once each.

    bus = EventBus(db)
    async with bus:
        sub = bus.subscribe("pipeline.*", handle)
        await bus.publish(Event("pipeline.started", {"run": 42}, subject="run:42"))
        async with db.transaction() as tx:
            ...  # the state change
            await bus.publish(Event("run.finished", subject="run:42"), tx=tx)  # durable
        sub.unsubscribe()

See docs/events.md.
"""

from gathering.errors import EventBackpressureError, EventStreamClosedError
from gathering.events.bus import EventBus, RecentIds
from gathering.events.listener import OutboxListener
from gathering.events.outbox import CHANNEL, OUTBOX_LOCK_KEY
from gathering.events.patterns import Pattern, compile_pattern
from gathering.events.subscriptions import (
    BatchHandler,
    BatchSubscription,
    EventHandler,
    EventStream,
    HandlerSubscription,
    Subscription,
)
from gathering.events.types import Event, OverflowPolicy

__all__ = [
    "CHANNEL",
    "OUTBOX_LOCK_KEY",
    "BatchHandler",
    "BatchSubscription",
    "Event",
    "EventBackpressureError",
    "EventBus",
    "EventHandler",
    "EventStream",
    "EventStreamClosedError",
    "HandlerSubscription",
    "OutboxListener",
    "OverflowPolicy",
    "Pattern",
    "RecentIds",
    "Subscription",
    "compile_pattern",
]

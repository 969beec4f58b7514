"""`EventBus`: in-process fan-out of events, and durable events across instances.

In process, `publish` routes an event to every matching subscription's bounded queue (see
`gathering.events.subscriptions`). A durable event is instead written to the outbox in the
caller's transaction; every instance's `OutboxListener`, this one's included, reads it after
commit and routes it to its local subscriptions. So a durable event reaches local subscribers
through the listener only, exactly once per instance and never before it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import structlog

from gathering.cancellation import cancel_and_wait
from gathering.db.database import Database, Queries
from gathering.errors import (
    ConfigurationError,
    EventBackpressureError,
    InvalidInputError,
    ShuttingDownError,
)
from gathering.events import outbox
from gathering.events.listener import OutboxListener
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

log = structlog.get_logger(__name__)

_ROUTE_CACHE_SIZE = 4096


class RecentIds:
    """The event ids seen recently: at most `size` of them, none older than `ttl` seconds."""

    def __init__(
        self, size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if size < 1 or ttl <= 0:
            raise InvalidInputError("the dedup window needs a size >= 1 and a ttl > 0")
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._ids: OrderedDict[UUID, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, event_id: UUID) -> bool:
        """True if `event_id` is in the window; otherwise remember it and return False."""
        ids = self._ids
        if event_id in ids:
            return True
        now = self._clock()
        ids[event_id] = now
        if len(ids) > self.size:
            ids.popitem(last=False)
        oldest = next(iter(ids.values()))
        if now - oldest > self.ttl:
            horizon = now - self.ttl
            while ids and next(iter(ids.values())) < horizon:
                ids.popitem(last=False)
        return False


class EventBus:
    """Typed publish/subscribe with backpressure, dedup, ordering, and a Postgres outbox.

    Without a database it is purely in-process. With one, `start()` (or `async with`) starts
    the outbox listener, which delivers durable events from every instance on that database.
    """

    def __init__(
        self,
        db: Database | None = None,
        *,
        dedup_size: int = 10_000,
        dedup_ttl: float = 600.0,
        poll_interval: float = 1.0,
        retention: timedelta | None = None,
        prune_interval: float = 600.0,
    ) -> None:
        self.db = db
        self.retention = retention
        self.prune_interval = prune_interval
        self.published = 0
        self.written = 0
        self.duplicates = 0
        self._recent = RecentIds(dedup_size, dedup_ttl)
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, list[Subscription]] = {}
        self._retired = dict.fromkeys(("delivered", "dropped", "refused", "errors"), 0)
        self._names = itertools.count(1)
        self._closed = False
        self._pruner: asyncio.Task[None] | None = None
        self.listener = (
            OutboxListener(db, self._deliver_durable, poll_interval=poll_interval)
            if db is not None
            else None
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, since_cursor: int | None = None) -> None:
        """Start the outbox listener (when there is a database).

        Durable events committed after `since_cursor` are delivered; by default those
        committed from now on.
        """
        if self.listener is not None:
            await self.listener.start(since_cursor)
        if self.db is not None and self.retention is not None and self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_periodically(self.retention))

    async def close(self, grace: float = 5.0) -> None:
        """Stop the listener, let handlers finish what is queued (up to `grace` s), stop them."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._pruner)
        if self.listener is not None:
            await self.listener.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.drain()
        subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.unsubscribe()
        await asyncio.gather(*(s.wait_closed(grace) for s in subscriptions))

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def cursor(self) -> int | None:
        """The cursor of the last durable event this instance delivered (None without db)."""
        return self.listener.cursor if self.listener is not None else None

    # --- subscribing ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ShuttingDownError("this event bus is closed; it takes no new subscribers")

    def _options(
        self,
        patterns: str | Sequence[str],
        subjects: str | Sequence[str] | None,
        maxsize: int,
        policy: OverflowPolicy | str,
        max_wait: float,
        name: str | None,
    ) -> dict[str, Any]:
        self._check_open()
        texts = [patterns] if isinstance(patterns, str) else list(patterns)
        if not texts:
            raise InvalidInputError("subscribe to at least one pattern")
        compiled: list[Pattern] = [compile_pattern(t) for t in texts]
        if isinstance(subjects, str):
            subjects = [subjects]
        try:
            policy = OverflowPolicy(policy)
        except ValueError:
            choices = ", ".join(p.value for p in OverflowPolicy)
            raise InvalidInputError(
                f"unknown overflow policy {policy!r}", hint=f"use one of: {choices}"
            ) from None
        return {
            "patterns": compiled,
            "subjects": None if subjects is None else frozenset(subjects),
            "maxsize": maxsize,
            "policy": policy,
            "max_wait": max_wait,
            "name": name or f"{','.join(texts)}#{next(self._names)}",
            "detach": self._detach,
        }

    def _attach(self, subscription: Subscription) -> None:
        self._subscriptions.append(subscription)
        self._routes.clear()

    def _detach(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
            for counter in self._retired:
                self._retired[counter] += getattr(subscription, counter)
        self._routes.clear()

    def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: EventHandler,
        *,
        subjects: str | Sequence[str] | None = None,
        maxsize: int = 1000,
        policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
        max_wait: float = 1.0,
        threaded: bool = False,
        name: str | None = None,
    ) -> HandlerSubscription:
        """Call `handler(event)` for every event whose type matches `pattern`.

        `pattern` is an event type or a wildcard pattern (`pipeline.*`, `*`), or a list of
        them; `subjects` keeps only events about those subjects. The handler (sync or async)
        runs in its own task, one event at a time, in publish order. When its queue of
        `maxsize` events is full, publishers wait up to `max_wait` seconds, then follow
        `policy`. Returns the subscription; `unsubscribe()` on it removes exactly this one.
        """
        subscription = HandlerSubscription(
            handler,
            threaded=threaded,
            **self._options(pattern, subjects, maxsize, policy, max_wait, name),
        )
        self._attach(subscription)
        return subscription

    def subscribe_batch(
        self,
        pattern: str | Sequence[str],
        handler: BatchHandler,
        *,
        max_batch: int = 100,
        max_delay: float = 0.05,
        subjects: str | Sequence[str] | None = None,
        maxsize: int = 10_000,
        policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
        max_wait: float = 1.0,
        name: str | None = None,
    ) -> BatchSubscription:
        """Like `subscribe`, but `handler` gets lists of up to `max_batch` events.

        For high-frequency events such as token streams: after the first event of a batch,
        the subscription waits up to `max_delay` seconds for more.
        """
        subscription = BatchSubscription(
            handler,
            max_batch=max_batch,
            max_delay=max_delay,
            **self._options(pattern, subjects, maxsize, policy, max_wait, name),
        )
        self._attach(subscription)
        return subscription

    def stream(
        self,
        patterns: str | Sequence[str] = "*",
        *,
        subjects: str | Sequence[str] | None = None,
        since_cursor: int | None = None,
        maxsize: int = 1000,
        policy: OverflowPolicy | str = OverflowPolicy.DROP_OLDEST,
        max_wait: float = 0.0,
        name: str | None = None,
    ) -> EventStream:
        """A bounded stream of the matching events, read with `async for` or `get_batch()`.

        Made for one client connection: with `since_cursor`, the durable events after it are
        replayed first, then live events follow without gap or repeat. By default a slow
        reader never holds publishers back: the oldest queued event is dropped instead, and
        dropped durable events are read back from the outbox.
        """
        subscription = EventStream(
            db=self.db,
            since_cursor=since_cursor,
            **self._options(patterns, subjects, maxsize, policy, max_wait, name),
        )
        self._attach(subscription)
        return subscription

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    # --- publishing -------------------------------------------------------------------------

    def _route(self, event_type: str) -> list[Subscription]:
        routes = self._routes.get(event_type)
        if routes is None:
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()
            routes = [s for s in self._subscriptions if s.matches(event_type)]
            self._routes[event_type] = routes
        return routes

    async def _dispatch(self, event: Event) -> bool:
        if self._recent.seen(event.id):
            self.duplicates += 1
            return False
        waiting: list[Subscription] | None = None
        for subscription in self._route(event.type):
            subjects = subscription.subjects
            if subjects is not None and event.subject not in subjects:
                continue
            if not subscription.offer(event):
                if waiting is None:
                    waiting = []
                waiting.append(subscription)
        if waiting is None:
            return True
        # Every subscriber with room has the event already; now wait on the full ones.
        refusals: list[EventBackpressureError] = []
        for subscription in waiting:
            try:
                await subscription.put(event)
            except EventBackpressureError as exc:
                refusals.append(exc)
        if refusals:
            if len(refusals) == 1:
                raise refusals[0]
            names = [e.details["subscription"] for e in refusals]
            raise EventBackpressureError(
                f"{len(refusals)} event subscribers refused a {event.type!r} event: "
                + ", ".join(names),
                details={"subscriptions": names, "event_type": event.type},
            )
        return True

    async def publish(
        self, event: Event, *, durable: bool = False, tx: Queries | None = None
    ) -> bool:
        """Publish `event`; return False when it was a duplicate and was ignored.

        In-process (the default), it is queued for every matching subscriber here, waiting
        when one is full (see `subscribe`); an id already seen in the dedup window is ignored.

        Durable (`durable=True`, or given `tx`), it is written to the outbox with `tx` (a
        transaction, or any connection of the same database, where it commits on its own),
        or inside the caller's open `db.transaction()` of this task, or else on its own; every
        instance's listener delivers it once it commits, this instance's included, with the
        cursor it got at commit. An id already in the outbox is ignored.
        """
        if durable or tx is not None:
            return bool(await self._write([event], tx))
        self.published += 1
        return await self._dispatch(event)

    async def publish_many(
        self, events: Sequence[Event], *, durable: bool = False, tx: Queries | None = None
    ) -> int:
        """Publish `events` in order (durable ones in one statement); return how many were
        not duplicates."""
        if durable or tx is not None:
            return len(await self._write(events, tx))
        accepted = 0
        for event in events:
            self.published += 1
            accepted += await self._dispatch(event)
        return accepted

    def count_written(self, count: int) -> None:
        """Count `count` events a caller wrote to the outbox in a statement of its own."""
        self.written += count

    async def _write(self, events: Sequence[Event], tx: Queries | None) -> list[Event]:
        queries: Queries = tx if tx is not None else self._require_db()
        stored = await outbox.write(queries, events)
        self.written += len(stored)
        return stored

    async def _deliver_durable(self, event: Event) -> None:
        """Called by the listener for every committed durable event, in cursor order."""
        try:
            await self._dispatch(event)
        except EventBackpressureError as exc:
            log.warning("a subscriber refused a durable event", error=exc.message)
        except Exception:
            # A bug must not stop the stream for every other subscriber.
            log.exception("delivering a durable event failed", event_id=str(event.id))

    # --- durable history --------------------------------------------------------------------

    def _require_db(self) -> Database:
        if self.db is None:
            raise ConfigurationError(
                "durable events need a database",
                hint="create the bus as EventBus(db) with a connected Database",
            )
        return self.db

    async def replay(
        self,
        since_cursor: int,
        *,
        subjects: str | Sequence[str] | None = None,
        pattern: str | Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """Up to `limit` durable events after `since_cursor`, oldest first, from the outbox.

        Call again with the last event's cursor to page on; fewer than `limit` means done.
        """
        if isinstance(subjects, str):
            subjects = [subjects]
        patterns = [pattern] if isinstance(pattern, str) else pattern
        return await outbox.read_since(
            self._require_db(), since_cursor, limit=limit, subjects=subjects, patterns=patterns
        )

    async def prune(self, older_than: timedelta) -> int:
        """Delete outbox rows recorded more than `older_than` ago; return how many."""
        deleted = await outbox.prune(self._require_db(), older_than)
        if deleted:
            log.info("pruned old durable events", deleted=deleted)
        return deleted

    async def _prune_periodically(self, retention: timedelta) -> None:
        while True:
            try:
                await self.prune(retention)
            except Exception as exc:
                log.warning("pruning durable events failed", error=str(exc))
            await asyncio.sleep(self.prune_interval)

    # --- observing --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until every handler subscription has handled what is queued for it.

        Streams are read by their owners and are not waited for. Bound the wait with
        `asyncio.timeout`.
        """
        handled = [s for s in self._subscriptions if not isinstance(s, EventStream)]
        await asyncio.gather(*(s.join() for s in handled))

    def stats(self) -> dict[str, int]:
        """Counters since the bus was created, e.g. for metrics.

        `published`: in-process publishes; `written`: durable events written to the outbox
        (including any whose transaction then rolled back); `delivered`, `dropped`, `refused`,
        `errors`: summed over subscriptions, closed ones included; `duplicates`: events
        ignored by the dedup window; `durable_delivered`: durable events this instance's
        listener delivered.
        """
        totals = dict(self._retired)
        for subscription in self._subscriptions:
            for counter in totals:
                totals[counter] += getattr(subscription, counter)
        totals.update(
            published=self.published,
            written=self.written,
            duplicates=self.duplicates,
            subscriptions=len(self._subscriptions),
            queued=sum(s.queue.qsize() for s in self._subscriptions),
        )
        if self.listener is not None:
            totals.update(
                durable_delivered=self.listener.delivered,
                listener_reads=self.listener.reads,
                listener_notifications=self.listener.notifications,
                listener_reconnects=self.listener.reconnects,
                listener_cursor=self.listener.cursor or 0,
            )
        return totals

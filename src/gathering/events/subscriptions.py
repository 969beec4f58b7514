"""Subscriptions: one bounded queue per subscriber, drained by its own task or by its reader.

Built on `asyncio.Queue`. No maintained library offers what the bus needs here (per-subscriber
bounded queues whose overflow policy is chosen per subscriber, with a bounded wait before the
policy applies, and counters): `broadcaster` and `aiopubsub` have no backpressure policies, and
`blinker`/`pyee` call handlers inline in the publisher. So this module adds only that logic.

Publishers never await `Queue.put`: they check for room and `put_nowait`, and wait on a future
that consumers resolve after each `get`. One lock per subscription makes waiting publishers
queue up in arrival order, so a subscriber sees the events of any one publisher in the order
they were published.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from gathering.cancellation import cancel_and_wait
from gathering.errors import EventBackpressureError, EventStreamClosedError, InvalidInputError
from gathering.events import outbox
from gathering.events.patterns import Pattern
from gathering.events.types import Event, OverflowPolicy

if TYPE_CHECKING:
    from gathering.db.database import Database

log = structlog.get_logger(__name__)

EventHandler = Callable[[Event], Awaitable[None] | None]
BatchHandler = Callable[[list[Event]], Awaitable[None] | None]


class Subscription:
    """One subscriber: what it wants, its bounded queue, its overflow policy and its counters.

    `unsubscribe()` (or `close()`) removes exactly this subscription: nothing more is queued
    for it, events still queued are discarded, and a handler already running finishes.
    """

    def __init__(
        self,
        *,
        patterns: Sequence[Pattern],
        subjects: frozenset[str] | None,
        maxsize: int,
        policy: OverflowPolicy,
        max_wait: float,
        name: str,
        detach: Callable[[Subscription], None],
    ) -> None:
        if maxsize < 1:
            raise InvalidInputError(f"maxsize must be at least 1, got {maxsize}")
        if max_wait < 0:
            raise InvalidInputError(f"max_wait must not be negative, got {max_wait}")
        self.patterns = tuple(patterns)
        self.subjects = subjects
        self.policy = OverflowPolicy(policy)
        self.max_wait = max_wait
        self.name = name
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.received = 0
        self.delivered = 0
        self.dropped = 0
        self.refused = 0
        self.errors = 0
        self.closed = False
        self._detach = detach
        self._put_lock = asyncio.Lock()
        self._waiting = 0
        self._room: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        patterns = ",".join(p.text for p in self.patterns)
        return f"<{type(self).__name__} {self.name} {patterns} queued={self.queue.qsize()}>"

    def matches(self, event_type: str) -> bool:
        return any(p.matches(event_type) for p in self.patterns)

    def stats(self) -> dict[str, int]:
        return {
            "queued": self.queue.qsize(),
            "received": self.received,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "refused": self.refused,
            "errors": self.errors,
        }

    # --- publishing side --------------------------------------------------------------------

    def offer(self, event: Event) -> bool:
        """Queue `event` at once if there is room and no publisher is waiting; else False."""
        if self.closed:
            return True
        if self._waiting or self.queue.full():
            return False
        self.queue.put_nowait(event)
        self.received += 1
        return True

    async def put(self, event: Event) -> None:
        """Queue `event`, waiting up to `max_wait` for room, then applying the policy."""
        self._waiting += 1
        try:
            async with self._put_lock:
                await self._put_in_turn(event)
        finally:
            self._waiting -= 1

    async def _put_in_turn(self, event: Event) -> None:
        if self.closed:
            return
        if self.queue.full():
            if self._task is not None and asyncio.current_task() is self._task:
                # This subscriber's own handler is publishing to it: waiting would never end.
                self._overflow(event, "its own handler published to it while its queue was full")
            elif not await self._wait_for_room(self.max_wait):
                if self.policy is OverflowPolicy.BLOCK:
                    log.warning(
                        "a slow event subscriber is holding publishers back",
                        subscription=self.name,
                        queued=self.queue.qsize(),
                        event_type=event.type,
                    )
                    await self._wait_for_room(None)
                else:
                    self._overflow(event, f"its queue stayed full for {self.max_wait}s")
            if self.closed:
                return
        self.queue.put_nowait(event)
        self.received += 1

    def _overflow(self, event: Event, why: str) -> None:
        if self.policy is OverflowPolicy.DROP_OLDEST:
            self._drop_oldest()
            return
        self.refused += 1
        raise EventBackpressureError(
            f"event subscriber {self.name!r} refused a {event.type!r} event: {why}",
            hint="make the subscriber faster, give it a larger queue or another overflow policy",
            details={"subscription": self.name, "event_type": event.type},
        )

    async def _wait_for_room(self, seconds: float | None) -> bool:
        """Wait until the queue has room or this subscription closes; False after `seconds`."""
        if seconds is not None and seconds <= 0:
            return not self.queue.full()
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while self.queue.full() and not self.closed:
            self._room = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._room
            except TimeoutError:
                return False
            finally:
                self._room = None
        return True

    def _room_made(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def _drop_oldest(self) -> None:
        try:
            dropped = self.queue.get_nowait()
        except asyncio.QueueEmpty:  # pragma: no cover - only called on a full queue
            return
        self.queue.task_done()
        if dropped is not None:
            self.dropped += 1
            self._on_dropped(dropped)

    def _on_dropped(self, event: Event) -> None:
        """Hook for subclasses: `event` was dropped to make room."""

    # --- closing ----------------------------------------------------------------------------

    def unsubscribe(self) -> None:
        """Stop this subscription (idempotent). Queued events are discarded."""
        if self.closed:
            return
        self.closed = True
        self._detach(self)
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()
        self.queue.put_nowait(None)  # wakes the worker or the reader, which then stops
        self._room_made()  # and a publisher waiting for room, which then gives up

    close = unsubscribe

    async def wait_closed(self, grace: float | None = None) -> None:
        """Wait until the handler task (if any) has stopped; cancel it after `grace` seconds."""
        task = self._task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        except TimeoutError:
            await cancel_and_wait(task)

    async def join(self) -> None:
        """Wait until every queued event has been handled (handler subscriptions)."""
        await self.queue.join()


class HandlerSubscription(Subscription):
    """A subscription whose events are passed, one at a time and in order, to a handler.

    The handler runs in this subscription's own task, so different subscribers run in
    parallel. A sync handler runs on the event loop (keep it quick) unless `threaded`, then in
    a worker thread. An exception from the handler is logged, counted in `errors`, and the
    next event is handled as usual.
    """

    def __init__(self, handler: EventHandler, *, threaded: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handler = handler
        self.threaded = threaded
        self._task = asyncio.create_task(self._run(), name=f"gathering-events:{self.name}")

    async def _run(self) -> None:
        queue = self.queue
        while True:
            event = await queue.get()
            if self._room is not None:
                self._room_made()
            if event is None:
                queue.task_done()
                return
            try:
                if self.threaded:
                    await asyncio.to_thread(self.handler, event)
                else:
                    result = self.handler(event)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except Exception:
                self.errors += 1
                log.exception(
                    "event handler failed",
                    subscription=self.name,
                    event_type=event.type,
                    event_id=str(event.id),
                )
            else:
                self.delivered += 1
            finally:
                queue.task_done()


class BatchSubscription(Subscription):
    """A subscription whose handler gets lists of events: for high-frequency events.

    A batch holds what is queued, up to `max_batch` events, waiting at most `max_delay`
    seconds after the first one for more. Batches keep publish order.
    """

    def __init__(
        self, handler: BatchHandler, *, max_batch: int, max_delay: float, **kwargs: Any
    ) -> None:
        if max_batch < 1:
            raise InvalidInputError(f"max_batch must be at least 1, got {max_batch}")
        if max_delay < 0:
            raise InvalidInputError(f"max_delay must not be negative, got {max_delay}")
        super().__init__(**kwargs)
        self.handler = handler
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.batches = 0
        self._task = asyncio.create_task(self._run(), name=f"gathering-events:{self.name}")

    async def _collect(self, batch: list[Event]) -> bool:
        """Add to `batch` what arrives in time; True once the closing marker was taken."""
        queue = self.queue
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        while len(batch) < self.max_batch:
            if queue.empty():
                if loop.time() >= deadline:
                    return False
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await queue.get()
                except TimeoutError:
                    return False
            else:
                item = queue.get_nowait()
            self._room_made()
            if item is None:
                queue.task_done()
                return True
            batch.append(item)
        return False

    async def _run(self) -> None:
        queue = self.queue
        while True:
            first = await queue.get()
            self._room_made()
            if first is None:
                queue.task_done()
                return
            batch = [first]
            closing = False
            try:
                closing = await self._collect(batch)
                result = self.handler(batch)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                self.errors += 1
                log.exception(
                    "event batch handler failed",
                    subscription=self.name,
                    events=len(batch),
                    first_event_type=batch[0].type,
                )
            else:
                self.delivered += len(batch)
                self.batches += 1
            finally:
                for _ in batch:
                    queue.task_done()
            if closing:
                return


class EventStream(Subscription):
    """A subscription read by its owner: `async for event in stream`, `get()`, `get_batch()`.

    Made for consumers such as a WebSocket connection. Given `since_cursor`, it first replays
    the durable events after that cursor from the outbox, then goes on with live events,
    without gaps or repeats between the two. With the drop-oldest policy a slow reader loses
    only non-durable events: a dropped durable event is read back from the outbox in order.
    `last_cursor` is the cursor of the last durable event returned, to resume from later.
    """

    def __init__(
        self,
        *,
        db: Database | None,
        since_cursor: int | None,
        fill_limit: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if since_cursor is not None and db is None:
            raise InvalidInputError("replaying since a cursor needs an EventBus with a database")
        self._db = db
        self._fill_limit = fill_limit
        self._backlog: deque[Event] = deque()
        # Highest cursor already returned or read into the backlog; live durable events at or
        # below it are repeats and are skipped.
        self._seen_cursor = since_cursor
        self._fill_needed = since_cursor is not None
        self.last_cursor = since_cursor

    def _on_dropped(self, event: Event) -> None:
        if event.cursor is not None and self._db is not None:
            if self._seen_cursor is None:
                self._seen_cursor = event.cursor - 1
            self._fill_needed = True

    async def _fill(self) -> None:
        assert self._db is not None and self._seen_cursor is not None
        events = await outbox.read_since(
            self._db,
            self._seen_cursor,
            limit=self._fill_limit,
            subjects=None if self.subjects is None else sorted(self.subjects),
            patterns=[p.text for p in self.patterns],
        )
        self._backlog.extend(events)
        if events:
            self._seen_cursor = events[-1].cursor
        if len(events) < self._fill_limit:
            self._fill_needed = False

    def _returned(self, event: Event) -> Event:
        if event.cursor is not None:
            self.last_cursor = event.cursor
            if self._seen_cursor is None or event.cursor > self._seen_cursor:
                self._seen_cursor = event.cursor
        self.delivered += 1
        return event

    async def _next(self) -> Event:
        while True:
            if self.closed:
                raise EventStreamClosedError(f"event stream {self.name!r} is closed")
            if self._backlog:
                return self._returned(self._backlog.popleft())
            if self._fill_needed:
                await self._fill()
                continue
            item = await self.queue.get()
            self.queue.task_done()
            self._room_made()
            if item is None:
                continue
            seen = self._seen_cursor
            if item.cursor is not None and seen is not None and item.cursor <= seen:
                continue
            return self._returned(item)

    async def get(self) -> Event:
        """The next event (bound the wait with `asyncio.timeout`).

        Raises `EventStreamClosedError` once the stream is closed.
        """
        return await self._next()

    async def get_batch(self, max_items: int = 100, max_wait: float = 0.05) -> list[Event]:
        """Wait for one event, then take what else arrives within `max_wait`, up to `max_items`.

        Raises `EventStreamClosedError` only when the stream closed before any event came.
        """
        batch = [await self._next()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while len(batch) < max_items:
            try:
                # Events already there are taken even after the deadline (no suspension).
                async with asyncio.timeout_at(deadline):
                    batch.append(await self._next())
            except (TimeoutError, EventStreamClosedError):
                break
        return batch

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._next()
        except EventStreamClosedError:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

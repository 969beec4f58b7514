"""Event bus: in-process fan-out against a bare `asyncio.Queue` fan-out, and durable events
between two instances through PostgreSQL.

1. In process: N events to 10 subscribers (async handlers), deliveries per second, as a
   ratio to the same fan-out written directly on `asyncio.Queue`s in the same run
   (target >= 0.5). Best of a few alternating rounds for each.
2. Across instances: two `EventBus`es, each with its own `Database` pool on one fresh
   database. Instance A publishes durable events from several concurrent tasks, in
   single-event transactions and in batched transactions (e.g. a token stream flushed every
   50 tokens); instance B's subscriber records when each arrives. Reports events per second
   (from the first publish to the last delivery on B), as a ratio to the same transactions
   writing the same rows to a plain table (the baseline, measured just before), and latency
   percentiles from the start of the publishing transaction on A to the handler on B
   (targets >= 5,000 events/s and p99 < 50 ms).

Bounded in count and in time (a hard timeout per part). Creates its own embedded database
in a temporary directory. Run: `.venv/bin/python benchmarks/events.py`.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

_DATA_DIR = Path(tempfile.mkdtemp(prefix="gathering-bench-events-"))
# Registered before the embedded server starts, so it runs after the server's own exit hook
# has stopped it (atexit runs last-in, first-out).
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)
os.environ["GATHERING_DATA_DIR"] = str(_DATA_DIR)
os.environ.setdefault("GATHERING_LOG_LEVEL", "WARNING")
os.environ.pop("DATABASE_URL", None)

import structlog  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from gathering.db import Database  # noqa: E402
from gathering.events import Event, EventBus  # noqa: E402

SUBSCRIBERS = 10
QUEUE_SIZE = 1000
IN_PROCESS_EVENTS = 50_000
ROUNDS = 3
CROSS_SINGLE_EVENTS = 3_000  # one event per transaction
CROSS_SINGLE_PUBLISHERS = 8
CROSS_BATCH_EVENTS = 30_000  # batched transactions
CROSS_BATCH_SIZE = 50
CROSS_BATCH_PUBLISHERS = 4
PART_TIMEOUT = 120.0


# --- in process -------------------------------------------------------------------------------


async def queue_fanout(events: list[Event]) -> float:
    """The baseline: bounded asyncio.Queues, one consumer task each, the same handler."""
    handled = [0]

    async def handler(event: Event) -> None:
        handled[0] += 1

    queues: list[asyncio.Queue[Event]] = [asyncio.Queue(QUEUE_SIZE) for _ in range(SUBSCRIBERS)]

    async def consume(queue: asyncio.Queue[Event]) -> None:
        for _ in range(len(events)):
            await handler(await queue.get())

    consumers = [asyncio.create_task(consume(q)) for q in queues]
    started = time.perf_counter()
    for event in events:
        for queue in queues:
            await queue.put(event)
    await asyncio.gather(*consumers)
    elapsed = time.perf_counter() - started
    assert handled[0] == len(events) * SUBSCRIBERS
    return elapsed


async def bus_fanout(events: list[Event]) -> float:
    handled = [0]

    async def handler(event: Event) -> None:
        handled[0] += 1

    bus = EventBus()
    for _ in range(SUBSCRIBERS):
        bus.subscribe("bench.*", handler, maxsize=QUEUE_SIZE)
    started = time.perf_counter()
    for event in events:
        await bus.publish(event)
    await bus.drain()
    elapsed = time.perf_counter() - started
    await bus.close()
    assert handled[0] == len(events) * SUBSCRIBERS, handled
    return elapsed


async def in_process() -> None:
    events = [Event("bench.tick", {"n": i}) for i in range(IN_PROCESS_EVENTS)]
    deliveries = IN_PROCESS_EVENTS * SUBSCRIBERS
    baseline, ours = [], []
    async with asyncio.timeout(PART_TIMEOUT):
        for _ in range(ROUNDS):
            baseline.append(await queue_fanout(events))
            ours.append(await bus_fanout(events))
    base_rate, bus_rate = deliveries / min(baseline), deliveries / min(ours)
    print(f"in-process fan-out, {IN_PROCESS_EVENTS:,} events x {SUBSCRIBERS} subscribers")
    print(f"  asyncio.Queue fan-out : {base_rate:12,.0f} deliveries/s")
    print(f"  EventBus              : {bus_rate:12,.0f} deliveries/s")
    verdict = "ok" if bus_rate / base_rate >= 0.5 else "BELOW TARGET"
    print(f"  ratio                 : {bus_rate / base_rate:12.2f}  (target >= 0.5: {verdict})")


# --- across instances -------------------------------------------------------------------------


@dataclass
class CrossResult:
    events: int
    elapsed: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.elapsed

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def plain_transactions(db: Database, *, total: int, publishers: int, batch: int) -> float:
    """The baseline: the same transactions writing the same rows to a plain table (no outbox,
    no trigger, no NOTIFY, no listener). Returns rows per second."""
    await db.execute("CREATE TABLE IF NOT EXISTS bench_plain (id uuid PRIMARY KEY, data jsonb)")

    async def publish(share: int) -> None:
        for start in range(0, share, batch):
            rows = [(uuid4(), {"n": start + i}) for i in range(min(batch, share - start))]
            async with db.transaction() as tx:
                await tx.execute("SELECT 1")
                await tx.execute(
                    "INSERT INTO bench_plain SELECT * FROM unnest($1::uuid[], $2::jsonb[])",
                    [r[0] for r in rows],
                    [Jsonb(r[1]) for r in rows],
                )

    started = time.perf_counter()
    await asyncio.gather(*(publish(total // publishers) for _ in range(publishers)))
    return total / (time.perf_counter() - started)


async def cross_instance(
    a: EventBus, b: EventBus, db_a: Database, *, total: int, publishers: int, batch: int
) -> CrossResult:
    sent: dict[UUID, float] = {}
    latencies: list[float] = []
    done = asyncio.get_running_loop().create_future()

    def arrived(event: Event) -> None:
        latencies.append((time.perf_counter() - sent[event.id]) * 1000)
        if len(latencies) == total and not done.done():
            done.set_result(time.perf_counter())

    subscription = b.subscribe("bench.cross", arrived, maxsize=10_000)

    async def publish(share: int) -> None:
        for start in range(0, share, batch):
            events = [
                Event("bench.cross", {"n": start + i}, subject=f"run:{start % 7}")
                for i in range(min(batch, share - start))
            ]
            now = time.perf_counter()
            for event in events:
                sent[event.id] = now
            async with db_a.transaction() as tx:
                await tx.execute("SELECT 1")  # stands for the state change the events describe
                await a.publish_many(events, tx=tx)

    started = time.perf_counter()
    await asyncio.gather(*(publish(total // publishers) for _ in range(publishers)))
    try:
        async with asyncio.timeout(PART_TIMEOUT / 2):
            finished = await done
    except TimeoutError:
        print(f"  TIMED OUT: {len(latencies)} of {total} arrived; A {a.stats()}; B {b.stats()}")
        raise
    subscription.unsubscribe()
    if os.environ.get("BENCH_VERBOSE"):
        print("  A", a.stats(), "\n  B", b.stats())
    return CrossResult(total, finished - started, latencies)


def report(title: str, result: CrossResult, baseline: float) -> None:
    p50, p99 = result.percentile(50), result.percentile(99)
    print(title)
    print(f"  plain-table baseline  : {baseline:12,.0f} rows/s in the same transactions")
    print(
        f"  durable events        : {result.rate:12,.0f} events/s  "
        f"(ratio {result.rate / baseline:.2f}; target >= 5,000/s: "
        f"{'ok' if result.rate >= 5000 else 'below'})"
    )
    print(
        f"  latency p50/p99/max   : {p50:.1f} / {p99:.1f} / {max(result.latencies_ms):.1f} ms"
        f"  (target p99 < 50 ms: {'ok' if p99 < 50 else 'above'})"
    )


async def across_instances() -> None:
    db_a = Database(test=True, min_size=2, max_size=CROSS_SINGLE_PUBLISHERS + 2)
    await db_a.connect()
    db_b = Database(url=db_a.url, min_size=1, max_size=4)
    await db_b.connect()
    scenarios = [
        ("one event per transaction", CROSS_SINGLE_EVENTS, CROSS_SINGLE_PUBLISHERS, 1),
        (
            f"{CROSS_BATCH_SIZE} events per transaction",
            CROSS_BATCH_EVENTS,
            CROSS_BATCH_PUBLISHERS,
            CROSS_BATCH_SIZE,
        ),
    ]
    try:
        async with EventBus(db_a) as a, EventBus(db_b) as b, asyncio.timeout(PART_TIMEOUT):
            for title, total, publishers, batch in scenarios:
                shape = {"total": total, "publishers": publishers, "batch": batch}
                baseline = await plain_transactions(db_a, **shape)
                result = await cross_instance(a, b, db_a, **shape)
                report(
                    f"across two instances through PostgreSQL, {title}, {publishers} "
                    f"publishers, {total:,} events",
                    result,
                    baseline,
                )
    finally:
        await db_b.disconnect()
        await db_a.disconnect()


async def main() -> None:
    await in_process()
    await across_instances()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(main())

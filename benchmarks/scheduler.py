"""Scheduler: how late a slot's run starts (p50, p99) on a loaded machine, and how many due
slots three claimers take per second against procrastinate's raw defer rate, in one run.

1. Latency: 600 `once` schedules due at instants spread over 15 s (a notification each), with
   the scheduler duty (a claim every 0.5 s) and 2 `JobWorker`s (concurrency 4) in this process,
   while a busy-looping process keeps one of the machine's cores loaded. The latency of a slot
   is its run's start minus its instant. Target: p99 < 1 s.
2. Claims: 5,000 `once` schedules all due, claimed by 3 `Scheduler`s at once (3 pools, as 3
   instances would), each slot inserting its run and its job and moving its schedule on;
   against 5,000 no-op jobs deferred by 3 concurrent deferrers with procrastinate's own
   `defer_async`, on the same server. Slots per second against jobs per second.

Bounded in count and time; creates its own embedded server in a temporary directory; touches
only loopback. Run: `.venv/bin/python benchmarks/scheduler.py` (`--help` for smaller counts).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

_DATA_DIR = Path(tempfile.mkdtemp(prefix="gathering-bench-scheduler-"))
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)  # after the server stops
os.environ["GATHERING_DATA_DIR"] = str(_DATA_DIR)
os.environ.setdefault("GATHERING_LOG_LEVEL", "WARNING")
os.environ.pop("DATABASE_URL", None)

import procrastinate  # noqa: E402
import structlog  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from gathering.agents.retrieval import local_owner_id  # noqa: E402
from gathering.db import Database  # noqa: E402
from gathering.events import EventBus  # noqa: E402
from gathering.jobs import JobQueue, JobServices, JobWorker  # noqa: E402
from gathering.scheduler import Scheduler, create_schedule  # noqa: E402
from gathering.scheduler.jobs import blueprint, scheduler_duty  # noqa: E402

LATENCY_SLOTS = 600
SPREAD = 15.0  # seconds the latency part's instants spread over
CLAIM_SLOTS = 5_000
CLAIMERS = 3
WORKERS = 2
CONCURRENCY = 4
NOTE = {"action": "send_notification", "config": {"title": "bench"}}
LIMIT = 120.0  # seconds any part may take


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# --- part 1: latency ----------------------------------------------------------------------------


async def latency(slots: int) -> None:
    db = Database(test=True)
    await db.connect()
    bus = EventBus(db)
    await bus.start()
    queue = await JobQueue(db, blueprints={"scheduler": blueprint}).open()
    services = JobServices(db, bus)
    workers = [
        JobWorker(queue, services, concurrency=CONCURRENCY, shutdown_timeout=1.0)
        for _ in range(WORKERS)
    ]
    duty = scheduler_duty(services)
    hog = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    try:
        owner = await local_owner_id(db)
        start = datetime.now(UTC) + timedelta(seconds=5)
        for i in range(slots):
            at = start + timedelta(seconds=random.uniform(0, SPREAD))
            await create_schedule(db, owner, f"l{i}", {"kind": "once", "at": at, **NOTE})
        for worker in workers:
            await worker.start()
        await duty.start()
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline:
            started = await db.fetch_val(
                "SELECT count(*) FROM scheduler.runs WHERE started_at IS NOT NULL"
            )
            if started >= slots:
                break
            await asyncio.sleep(0.5)
        rows = await db.fetch_all(
            "SELECT extract(epoch FROM started_at - slot_time) AS late FROM scheduler.runs"
            " WHERE started_at IS NOT NULL"
        )
    finally:
        hog.kill()
        await hog.wait()
        await duty.stop()
        for worker in workers:
            await worker.stop()
        await queue.close()
        await bus.close(grace=1)
        await db.disconnect()
    late = [float(row["late"]) for row in rows]
    print(f"dispatch latency: {slots} slots over {SPREAD:g} s, one core kept busy")
    if len(late) < slots:
        print(
            f"  only {len(late)} of {slots} runs started within {LIMIT:g} s  (p99 < 1 s: NOT MET)"
        )
        return
    p50, p99 = statistics.median(late), percentile(late, 0.99)
    print(f"  p50 {p50 * 1000:7.0f} ms   p99 {p99 * 1000:7.0f} ms   max {max(late) * 1000:7.0f} ms")
    print(f"  p99 < 1 s: {'met' if p99 < 1 else 'NOT MET'}")


# --- part 2: claims against defers -------------------------------------------------------------


async def claims(slots: int) -> None:
    db = Database(test=True)
    await db.connect()
    try:
        owner = await local_owner_id(db)
        template = await create_schedule(
            db, owner, "template", {"kind": "once", "at": datetime.now(UTC) + timedelta(1), **NOTE}
        )
        spec = Jsonb(template.spec.model_dump(mode="json", exclude_none=True))
        await db.execute(  # the same schedule, `slots` times, all due
            "INSERT INTO scheduler.schedules (owner_id, name, spec, next_run_at)"
            " SELECT $1, 'c' || i, $2, now() - interval '1 second'"
            " FROM generate_series(1, $3) AS i",
            owner,
            spec,
            slots,
        )
        claimers = [Database(db.url, min_size=1, max_size=2) for _ in range(CLAIMERS)]
        for claimer in claimers:
            await claimer.connect()
        try:
            began = time.perf_counter()
            taken = await asyncio.gather(*(Scheduler(c, None).claim_due() for c in claimers))
            ours = time.perf_counter() - began
        finally:
            for claimer in claimers:
                await claimer.disconnect()
        runs = await db.fetch_val("SELECT count(*) FROM scheduler.runs")
        baseline = await defers(db.url, slots)
    finally:
        await db.disconnect()
    print(f"claims: {slots:,} due slots, {CLAIMERS} claimers at once")
    print(f"  procrastinate defer_async: {slots / baseline:8,.0f} jobs/s ({CLAIMERS} deferrers)")
    print(f"  GatheRing claims         : {slots / ours:8,.0f} slots/s ({sum(taken):,} runs)")
    print(f"  ratio                    : {baseline / ours:8.2f}")
    if runs != slots:
        print(f"  VOID: {runs} runs for {slots} slots")


async def defers(url: str, jobs: int) -> float:
    """Seconds for `CLAIMERS` concurrent deferrers to defer `jobs` no-op jobs one by one."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench_noop", queue="bench")
    async def noop(n: int) -> None:
        """Nothing."""

    async with app.open_async():
        each = jobs // CLAIMERS

        async def deferrer(first: int) -> None:
            for n in range(first, first + each):
                await noop.defer_async(n=n)

        began = time.perf_counter()
        await asyncio.gather(*(deferrer(i * each) for i in range(CLAIMERS)))
        return time.perf_counter() - began


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-slots", type=int, default=LATENCY_SLOTS)
    parser.add_argument("--claim-slots", type=int, default=CLAIM_SLOTS)
    options = parser.parse_args()
    if not (1 <= options.latency_slots <= 10_000 and CLAIMERS <= options.claim_slots <= 100_000):
        parser.error("--latency-slots is 1 to 10,000; --claim-slots 3 to 100,000")
    return options


async def main(options: argparse.Namespace) -> None:
    began = time.perf_counter()
    await latency(options.latency_slots)
    await claims(options.claim_slots)
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # its app-in-__main__ warning
    asyncio.run(main(arguments()))

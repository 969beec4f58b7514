"""The scheduler across real processes: three `gathering worker`s (each runs jobs and, one at a
time, the scheduler duty) face 1,000 `once` schedules all due at the same instant and a
one-second interval schedule running for 30 s, every one starting a pipeline run whose tool
writes the test's own table (`job_test_marks`, from the worker process). The first worker,
which holds the duty, is killed (SIGKILL) mid-way. Every slot runs exactly once: no slot
missed, none doubled, each pipeline run marked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from job_processes import ScratchDatabase, Worker, scratch_database, wait_until

from gathering.agents.retrieval import local_owner_id
from gathering.db import Database
from gathering.pipelines import create_pipeline
from gathering.scheduler import create_schedule

pytestmark = pytest.mark.slow
ONCE = 1_000
SECONDS = 30
BUSY = {"GATHERING_PIPELINE_MAX_RUNNING_RUNS": "100000"}  # 1,000 runs start at once


@pytest.fixture
def database(test_server_url: str) -> Iterator[ScratchDatabase]:
    with scratch_database(test_server_url) as db:
        yield db


def make_schedules(db: ScratchDatabase, at: datetime) -> None:
    async def work() -> None:
        async with Database(db.url, min_size=0, max_size=4) as database:
            owner = await local_owner_id(database)
            document = {
                "name": "marked",
                "nodes": [
                    {"id": "start", "type": "trigger"},
                    {"id": "mark", "type": "tool", "config": {"tool": "mark_run"}},
                ],
                "edges": [{"from": "start", "to": "mark"}],
            }
            await create_pipeline(database, document, owner_id=owner)
            action = {"action": "execute_pipeline", "config": {"pipeline": "marked"}}
            spec = {"kind": "interval", "every_seconds": 1, "start_at": at.isoformat()}
            end = (at + timedelta(seconds=SECONDS)).isoformat()
            await create_schedule(database, owner, "tick", {**spec, "end_at": end, **action})
            once = {"kind": "once", "at": at.isoformat(), **action}
            for start in range(0, ONCE, 100):
                await asyncio.gather(
                    *(
                        create_schedule(database, owner, f"once-{i}", once)
                        for i in range(start, start + 100)
                    )
                )

    asyncio.run(work())


def test_every_slot_runs_once_across_three_workers_one_killed(database: ScratchDatabase) -> None:
    leader = Worker(database, **BUSY)  # first up: it takes the scheduler duty
    others = [Worker(database, **BUSY), Worker(database, **BUSY)]
    try:
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
        make_schedules(database, at)
        wait_until(lambda: time.time() > at.timestamp() + SECONDS / 3, 60, "a third of the way")
        leader.kill()
        ended = wait_until(
            lambda: (
                (
                    count := database.sql(
                        "SELECT count(*) FROM scheduler.runs WHERE status IN"
                        " ('succeeded', 'failed', 'cancelled', 'skipped')"
                    )[0][0]
                )
                >= ONCE + SECONDS + 1
                and count
            ),
            180,
            "every run ended",
        )
        assert ended == ONCE + SECONDS + 1
        statuses = dict(database.sql("SELECT status, count(*) FROM scheduler.runs GROUP BY 1"))
        assert statuses == {"succeeded": ONCE + SECONDS + 1}
        # One run per slot: the once schedules' instant, and each second of the interval.
        per_schedule = database.sql(
            "SELECT s.name, count(r.id), count(DISTINCT r.slot_time) FROM scheduler.schedules s"
            " LEFT JOIN scheduler.runs r ON r.schedule_id = s.id GROUP BY s.name"
        )
        assert len(per_schedule) == ONCE + 1
        for name, runs, slots in per_schedule:
            expected = SECONDS + 1 if name == "tick" else 1
            assert (runs, slots) == (expected, expected), name
        ticks = [
            row[0]
            for row in database.sql(
                "SELECT r.slot_time FROM scheduler.runs r JOIN scheduler.schedules s"
                " ON s.id = r.schedule_id WHERE s.name = 'tick' ORDER BY 1"
            )
        ]
        assert ticks[0] == at and ticks[-1] == at + timedelta(seconds=SECONDS)
        assert all(b - a == timedelta(seconds=1) for a, b in pairwise(ticks))
        # Each run started one pipeline run, and that run's tool wrote the test's table.
        linked = database.sql(
            "SELECT count(DISTINCT pipeline_run_id) FROM scheduler.runs"
            " WHERE pipeline_run_id IS NOT NULL"
        )[0][0]
        started = database.sql("SELECT count(*) FROM pipeline.runs WHERE trigger = 'schedule'")
        marked = database.sql("SELECT count(DISTINCT key) FROM job_test_marks WHERE what = 'ran'")
        assert linked == started[0][0] == marked[0][0] == ONCE + SECONDS + 1
        orphans = database.sql(
            "SELECT count(*) FROM job_test_marks m WHERE m.what = 'ran' AND NOT EXISTS"
            " (SELECT 1 FROM scheduler.runs r WHERE r.pipeline_run_id::text = m.key)"
        )
        assert orphans[0][0] == 0
    finally:
        for worker in others:
            worker.stop()

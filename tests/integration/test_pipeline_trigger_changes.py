"""The scheduler duty follows pipelines' triggers from what indexes give cheaply (the latest
pipeline save, the trigger schedules and those whose pipeline is gone), not from a count of
every pipeline: each change that matters is still seen, including those the latest save does
not show (a pipeline deleted that was not the last one saved, a trigger schedule deleted by
hand), and a round with nothing changed does nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipeline_runtime import linear

from gathering.agents.retrieval import local_owner_id
from gathering.db import Database
from gathering.pipelines import create_pipeline, delete_pipeline
from gathering.pipelines.store import update_pipeline
from gathering.scheduler.pipeline_triggers import PipelineTriggers
from gathering.scheduler.store import delete_schedule, schedule_named


def timed(name: str, cron: str = "*/5 * * * *") -> dict[str, Any]:
    definition = linear(name=name)
    definition["nodes"][0]["config"] = {"kind": "schedule", "cron": cron}
    return definition


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[Database]:
    async with Database(migrated_database_url) as database:
        yield database


async def trigger_names(db: Database) -> list[str]:
    rows = await db.fetch_all("SELECT name FROM scheduler.schedules ORDER BY name")
    return [row["name"] for row in rows]


async def test_an_older_pipeline_deleted_takes_its_trigger_with_it(db: Database) -> None:
    owner = await local_owner_id(db)
    older = await create_pipeline(db, timed("older"), owner_id=owner)
    newer = await create_pipeline(db, timed("newer"), owner_id=owner)
    manual = await create_pipeline(db, linear(name="manual"), owner_id=owner)
    triggers = PipelineTriggers(db)
    assert await triggers.sync() == 2
    assert await triggers.sync() == 0

    # Neither the latest save nor the number of trigger schedules changes.
    await delete_pipeline(db, older.id)
    assert await triggers.sync() == 1
    assert await trigger_names(db) == [f"pipeline:{newer.id}:start"]
    assert await triggers.sync() == 0

    await delete_pipeline(db, manual.id)  # no trigger: nothing to follow
    assert await triggers.sync() == 0


async def test_a_save_and_a_trigger_deleted_by_hand_are_followed(db: Database) -> None:
    owner = await local_owner_id(db)
    first = await create_pipeline(db, timed("first"), owner_id=owner)
    await create_pipeline(db, timed("second"), owner_id=owner)
    triggers = PipelineTriggers(db)
    assert await triggers.sync() == 2

    await update_pipeline(db, first.id, timed("first", cron="0 * * * *"))
    assert await triggers.sync() == 1
    name = f"pipeline:{first.id}:start"
    schedule = await schedule_named(db, owner, name)
    assert schedule is not None and schedule.spec.cron == "0 * * * *"
    assert await triggers.sync() == 0

    await delete_schedule(db, schedule.id)  # by hand: the pipeline still asks for it
    assert await triggers.sync() == 1
    assert name in await trigger_names(db)
    assert await triggers.sync() == 0


async def test_a_pipeline_committed_after_a_later_save_is_synced(
    db: Database, migrated_database_url: str
) -> None:
    """A save's updated_at is its transaction's start: a pipeline whose transaction began
    before another save and committed after the duty looked still gets its trigger."""
    owner = await local_owner_id(db)
    triggers = PipelineTriggers(db)
    await triggers.sync()
    async with Database(migrated_database_url, min_size=1, max_size=1) as slow:
        async with slow.transaction() as tx:
            await tx.fetch_val("SELECT 1")  # the transaction (and its now()) begins
            await create_pipeline(db, timed("quick"), owner_id=owner)  # commits first
            assert await triggers.sync() == 1
            assert await triggers.sync() == 0
            made = await create_pipeline(tx, timed("slow"), owner_id=owner)
    assert await triggers.sync() == 1
    names = [r["name"] for r in await db.fetch_all("SELECT name FROM scheduler.schedules")]
    assert f"pipeline:{made.id}:start" in names

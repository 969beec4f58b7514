"""Background tasks are stopped for sure, even when one swallows a cancellation (as Python
3.11's asyncio.wait_for, inside psycopg_pool, can)."""

from __future__ import annotations

import asyncio

from gathering.cancellation import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_still_stopped():
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # lost once, as a wait_for racing its result would

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 10)
    assert task.cancelled() and swallowed == 1


async def test_nothing_to_stop_and_a_failed_task_are_fine():
    await cancel_and_wait(None)

    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.done() and isinstance(task.exception(), RuntimeError)

"""Stopping background tasks for sure.

Python 3.11's `asyncio.wait_for` (which psycopg_pool uses to wait for a connection) can lose
a cancellation that arrives just as what it waits for is ready: the task then goes on, and
a shutdown that cancelled it once and waits for it hangs for good. `cancel_and_wait` cancels
again until the task has really ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_SECONDS = 1.0


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended, cancelling again each second it goes on."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    if not task.cancelled():
        task.exception()  # retrieved, so it is not reported as never retrieved

"""One turn at a time per agent: a FIFO lock per agent id in this process, then (for the
PostgreSQL store) an advisory lock that serialises turns across every process.

The local lock comes first so that messages to one agent queue here in arrival order, and only
the one at the head holds a database connection while it waits for other processes. Both waits
share one bound; past it the caller gets `AgentBusyError` (HTTP 409 with Retry-After).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gathering.errors import AgentBusyError

BUSY_RETRY_AFTER = 2.0  # seconds a refused caller is told to wait


@dataclass
class _Slot:
    lock: asyncio.Lock
    users: int = 0


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Slot]] = (
    weakref.WeakKeyDictionary()
)


def busy(agent_id: int | None, waited: float) -> AgentBusyError:
    """The error for a turn that waited `waited` seconds for agent `agent_id` in vain."""
    return AgentBusyError(
        f"agent {agent_id} is busy with another turn (waited {waited:g}s)",
        retry_after=BUSY_RETRY_AFTER,
        hint="retry after its current reply, or raise GATHERING_AGENT_BUSY_WAIT",
    )


@asynccontextmanager
async def local_turn_lock(scope: Hashable, agent_id: int, *, wait: float) -> AsyncIterator[float]:
    """Hold this process's lock for (`scope`, `agent_id`); yield the seconds of `wait` left.

    `scope` names the store (a database URL, or the identity of an in-memory store).
    """
    loop = asyncio.get_running_loop()
    slots = _slots.setdefault(loop, {})
    key = (scope, agent_id)
    slot = slots.get(key)
    if slot is None:
        slot = slots[key] = _Slot(asyncio.Lock())
    slot.users += 1
    started = loop.time()
    try:
        try:
            async with asyncio.timeout(wait):
                await slot.lock.acquire()
        except TimeoutError:
            raise busy(agent_id, wait) from None
        try:
            yield max(0.0, wait - (loop.time() - started))
        finally:
            slot.lock.release()
    finally:
        slot.users -= 1
        if slot.users == 0:
            del slots[key]

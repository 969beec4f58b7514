"""`LoopWatch`: how long the event loop went without running, while a block of code ran (a
test's proof that work stayed off the loop)."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

TICK = 0.02  # seconds between the watcher's wake-ups


class LoopWatch:
    """`async with LoopWatch() as watch: ...`; then `watch.longest` is the longest stall in
    seconds (how much later than due the watcher woke up)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self.longest = max(self.longest, now - last - TICK)
            last = now

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.sleep(TICK * 2)  # a stall at the very end is seen too
        assert self._task is not None
        self._task.cancel()

"""One switch between async and sync callers.

`maybe_sync(coro)` hands the coroutine back when an event loop is running in this thread
(the caller awaits it) and otherwise runs it to completion and returns its result. Sync runs
happen on one background event loop per process, so loop-bound resources (database pools,
HTTP clients) created by one sync call stay usable by the next.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _bridge_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="gathering-sync-bridge", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the background loop and wait for its result (from sync code only)."""
    return asyncio.run_coroutine_threadsafe(coro, _bridge_loop()).result()


def in_async_context() -> bool:
    """True when called from code running inside an event loop of this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def maybe_sync(coro: Coroutine[Any, Any, T]) -> Any:
    """The coroutine itself inside an event loop; its result outside one."""
    if in_async_context():
        return coro
    return run_sync(coro)

"""Graceful shutdown: on SIGTERM/SIGINT, drain first, then let uvicorn close.

While draining, the listening socket stays open: readiness answers 503 and new requests get
503, while requests already in flight run to completion (bounded by the shutdown timeout).
Only then does uvicorn stop listening, wait for the rest and run the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import FrameType

import structlog
import uvicorn

log = structlog.get_logger(__name__)


class DrainState:
    """Whether the app is draining, and how many requests are in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_begin: set[Callable[[], None]] = set()

    def begin(self) -> None:
        """Refuse new work from now on, and tell long-lived connections to wind down."""
        self.draining = True
        for callback in list(self._on_begin):
            callback()

    def on_begin(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when draining begins (e.g. to close a WebSocket with 1001).

        Returns a function that removes the callback again.
        """
        self._on_begin.add(callback)
        return lambda: self._on_begin.discard(callback)

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, limit: float) -> bool:
        """Wait until no request is in flight; False when `limit` seconds ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit)
        except TimeoutError:
            return False
        return True


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first exit signal drains the app before shutting down.

    `drain` may be None when uvicorn builds the app itself (`serve --reload` runs the server
    in a subprocess, from an import string): the loaded app's drain state is used then.
    """

    def __init__(self, config: uvicorn.Config, drain: DrainState | None, timeout: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.timeout = timeout
        self._drain_task: asyncio.Task[None] | None = None  # held so it is not collected

    def _app_drain(self) -> DrainState | None:
        """The drain state of the app uvicorn loaded, under its middleware wrappers."""
        app = getattr(self.config, "loaded_app", None)
        while app is not None:
            drain = getattr(getattr(getattr(app, "state", None), "gathering", None), "drain", None)
            if isinstance(drain, DrainState):
                return drain
            app = getattr(app, "app", None)
        return None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain is None:
            self.drain = self._app_drain()
        if not self.started or self.drain is None:
            super().handle_exit(sig, frame)
            return
        if self.drain.draining:  # a second signal: stop now, cutting requests off
            log.warning("second exit signal: stopping without waiting")
            super().handle_exit(sig, frame)
            self.force_exit = True
            return
        self.drain.begin()
        log.info("draining", in_flight=self.drain.in_flight, timeout=self.timeout)
        # We run inside a signal handler: schedule through the loop's self-pipe so it wakes now.
        asyncio.get_event_loop().call_soon_threadsafe(self._spawn_drain, sig)

    def _spawn_drain(self, sig: int) -> None:
        self._drain_task = asyncio.ensure_future(self._drain_then_exit(sig))

    async def _drain_then_exit(self, sig: int) -> None:
        assert self.drain is not None
        started = time.monotonic()
        finished = await self.drain.wait_idle(self.timeout)
        if not finished:
            log.warning("drain timed out", still_in_flight=self.drain.in_flight)
        left = max(1.0, self.timeout - (time.monotonic() - started))
        self.config.timeout_graceful_shutdown = int(left)
        super().handle_exit(sig, None)

"""`FunctionTool`: a `ToolSpec` paired with the Python callable that runs it."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gathering.llm import ToolSpec

TOOL_THREADS = 8  # plain-function tools running at once in a process


class ToolThreadsBusyError(RuntimeError):
    """Every tool thread is taken (by tools still running, or hung past their timeout)."""


class _ToolThreads:
    """Plain-function tools run on threads of their own, never on the default executor:
    a tool that hangs past its timeout keeps its thread (a thread cannot be stopped), and
    must not starve name lookups, password hashing or other work that uses the default one.
    When every thread is taken, a new call is refused at once instead of queueing forever.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="gathering-tool")

    async def run(self, function: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
        with self._lock:
            if self.busy >= self.size:
                raise ToolThreadsBusyError(
                    f"all {self.size} tool threads are busy (tools running or hung); "
                    "try again later"
                )
            self.busy += 1
        call = functools.partial(
            contextvars.copy_context().run, functools.partial(function, **arguments)
        )
        try:
            future = self._executor.submit(call)
        except BaseException:
            self._finished()
            raise
        future.add_done_callback(lambda _: self._finished())
        return await asyncio.wrap_future(future)

    def _finished(self) -> None:
        with self._lock:
            self.busy -= 1


_threads = _ToolThreads(TOOL_THREADS)


class ToolRetry(Exception):
    """Raised by a tool to ask the model to try again: the message is sent to the model as the
    tool's result, and the call does not count as a failure."""


@dataclass(frozen=True)
class FunctionTool:
    """A tool an agent can call: `handler(**arguments)`, sync or async, returns its output."""

    spec: ToolSpec
    handler: Callable[..., Any]

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self, arguments: Mapping[str, Any]) -> str:
        """Call the handler and render its result as text for the model."""
        if inspect.iscoroutinefunction(self.handler):
            result = await self.handler(**dict(arguments))
        else:  # a plain function may block: keep it off the event loop
            result = await _threads.run(self.handler, dict(arguments))
            if inspect.isawaitable(result):
                result = await result
        if isinstance(result, str):
            return result
        return json.dumps(result, default=str)

"""`FunctionTool`: a `ToolSpec` paired with the Python callable that runs it."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gathering.llm import ToolSpec


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
            result = await asyncio.to_thread(self.handler, **dict(arguments))
            if inspect.isawaitable(result):
                result = await result
        if isinstance(result, str):
            return result
        return json.dumps(result, default=str)

"""The tool registry: every tool an agent may be given, by name.

`registry` is the process's registry: the built-in tools, and the tools third-party packages
declare under the entry-point group `gathering.tools` (loaded by `load_plugins`). Agents get
the registry tools enabled for them (`gathering.tools.agent_tools`); nothing here executes
submitted code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog
from psycopg.types.json import Jsonb

from gathering.config import get_settings
from gathering.db.named_queries import queries_of
from gathering.errors import (
    ConflictError,
    GatheringError,
    InvalidInputError,
    NotFoundError,
    ToolFailedError,
    ToolTimeoutError,
)
from gathering.observability import record_tool_call
from gathering.tools.builtin_tools import builtin_tools
from gathering.tools.context import ToolContext
from gathering.tools.function import FunctionTool, ToolRetry
from gathering.usage.ledger import record_tool_call as charge_tool_call

_SQL = queries_of("gathering.tools")

log = structlog.get_logger(__name__)

PLUGIN_GROUP = "gathering.tools"


class ToolRegistry:
    """Tools by name, with lookups by category and plugin."""

    def __init__(self, tools: Iterable[FunctionTool] = ()) -> None:
        self._tools: dict[str, FunctionTool] = {}
        for item in tools:
            self.register(item)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def register(self, tool: FunctionTool) -> FunctionTool:
        """Add `tool`; `ConflictError` if its name is taken (unregister the other first)."""
        if not isinstance(tool, FunctionTool):
            raise InvalidInputError(
                f"not a tool: {type(tool).__name__}",
                hint="build one with gathering.tools.function_tool or @tool",
            )
        if tool.name in self._tools:
            raise ConflictError(
                f"a tool named {tool.name!r} is already registered",
                hint="unregister it first, or give the new tool another name",
            )
        self._tools[tool.name] = tool
        return tool

    def unregister(self, name: str) -> bool:
        """Remove the tool `name`; False if there was none."""
        return self._tools.pop(name, None) is not None

    def get(self, name: str) -> FunctionTool | None:
        """The tool `name`, or None."""
        return self._tools.get(name)

    def require(self, name: str) -> FunctionTool:
        """The tool `name`; `NotFoundError` naming the known tools otherwise."""
        found = self._tools.get(name)
        if found is None:
            raise NotFoundError(
                f"no tool named {name!r}",
                hint=f"known tools: {', '.join(sorted(self._tools)) or 'none'}",
            )
        return found

    def list(self, *, category: str | None = None, plugin: str | None = None) -> list[FunctionTool]:
        """The tools, sorted by name; only those of `category` or `plugin` when given."""
        return [
            item
            for name, item in sorted(self._tools.items())
            if (category is None or item.category == category)
            and (plugin is None or item.plugin == plugin)
        ]

    def categories(self) -> set[str]:
        """The categories in use."""
        return {item.category for item in self._tools.values()}

    def stats(self) -> dict[str, Any]:
        """Counts: tools, categories, plugins, and tools per category and per effect."""
        tools = self._tools.values()
        return {
            "tools": len(self._tools),
            "categories": len(self.categories()),
            "plugins": len({item.plugin for item in tools if item.plugin is not None}),
            "by_category": dict(Counter(item.category for item in tools)),
            "by_effect": dict(Counter(item.effect for item in tools)),
        }

    def clear(self) -> None:
        """Remove every tool."""
        self._tools.clear()

    async def execute(
        self,
        name: str,
        arguments: Mapping[str, Any],
        context: ToolContext | None = None,
        *,
        seconds: float | None = None,
    ) -> str:
        """Run the tool `name` once, bounded by `seconds` (default: the tool's, else
        `GATHERING_TOOL_TIMEOUT`). Errors are typed: `NotFoundError`, `ToolArgumentsError`,
        `ToolTimeoutError`, `ToolFailedError` (naming the tool; `ToolRetry` included)."""
        return await invoke(self.require(name), arguments, context, seconds=seconds)

    def execute_sync(
        self, name: str, arguments: Mapping[str, Any], context: ToolContext | None = None
    ) -> str:
        """Run a plain-function tool in this thread; an async tool is refused (use `execute`)."""
        return self.require(name).run_sync(arguments, context)


def tool_seconds(tool: FunctionTool, seconds: float | None = None) -> float:
    """How long a call of `tool` may run: `seconds`, else the tool's timeout, else the
    `GATHERING_TOOL_TIMEOUT` setting."""
    return seconds or tool.timeout or get_settings().tool_timeout


async def invoke(
    tool: FunctionTool,
    arguments: Mapping[str, Any],
    context: ToolContext | None = None,
    *,
    seconds: float | None = None,
) -> str:
    """Run `tool` once with its limits, its failures as typed errors (see `execute`); the
    call is counted in `gathering_tool_calls_total` by outcome, and written to the usage
    ledger when the context has a database."""
    started = time.monotonic()
    seconds = tool_seconds(tool, seconds)
    timer = asyncio.timeout(seconds)
    context = replace(context or ToolContext(), deadline=time.monotonic() + seconds)
    outcome = "failed"
    try:
        async with timer:
            output = await tool.run(arguments, context)
        outcome = "ok"
        await keep_project_activity(tool, arguments, context)
        return output
    except InvalidInputError:
        outcome = "retry"  # arguments or paths the tool refused
        raise
    except GatheringError:
        outcome = "refused"  # the tool's own typed answer: not found, not allowed, ...
        raise
    except ToolRetry as retry:
        outcome = "retry"
        raise ToolFailedError(f"tool {tool.name!r} asked for other arguments: {retry}") from None
    except TimeoutError as exc:
        if timer.expired():
            outcome = "timeout"
            raise ToolTimeoutError(
                f"tool {tool.name!r} did not finish within {seconds:g}s and was stopped",
                hint="give it less work, or raise its timeout (GATHERING_TOOL_TIMEOUT)",
            ) from None
        raise _failed(tool, exc) from exc
    except Exception as exc:
        raise _failed(tool, exc) from exc
    finally:
        record_tool_call(tool.name, outcome)
        spent = round((time.monotonic() - started) * 1000)
        await charge_tool_call(
            context.db,
            tool.name,
            outcome,
            spent,
            agent_id=context.agent_id,
            owner_id=context.owner_id,
        )


async def keep_project_activity(
    tool: FunctionTool, arguments: Mapping[str, Any], context: ToolContext
) -> None:
    """An agent's call that may have changed its workspace, kept in the activity of the
    project whose directory that is (if any). Never the call's failure: it ran."""
    if tool.effect == "read" or context.db is None or context.workspace is None:
        return
    if context.agent_id is None:
        return
    path = arguments.get("path")
    detail = Jsonb({"tool": tool.name, "call_id": context.call_id})
    try:
        await context.db.execute(
            _SQL["project_tool_activity"],
            str(context.workspace),
            context.agent_id,
            path if isinstance(path, str) and "\x00" not in path else None,
            detail,
        )
    except Exception:  # the call's answer matters more than its log line
        log.warning("project activity not kept", tool=tool.name, exc_info=True)


def _failed(tool: FunctionTool, exc: Exception) -> ToolFailedError:
    text = str(exc)
    shown = text if len(text) <= 200 else text[:200] + "…"
    return ToolFailedError(f"tool {tool.name!r} failed: {type(exc).__name__}: {shown}")


def plugin_tools(entry_point: EntryPoint) -> list[FunctionTool]:
    """The tools one `gathering.tools` entry point declares: a `FunctionTool`, a list of them,
    or a function of no arguments returning either; each is marked with the plugin's
    distribution name. An error raised by the plugin's own code propagates as it is."""
    loaded = entry_point.load()
    if callable(loaded) and not isinstance(loaded, FunctionTool):
        loaded = loaded()
    found = [loaded] if isinstance(loaded, FunctionTool) else loaded
    if (
        not isinstance(found, list | tuple)
        or not found
        or not all(isinstance(item, FunctionTool) for item in found)
    ):
        raise InvalidInputError(
            f"plugin entry point {entry_point.name!r} gave something that is not a tool",
            hint="an entry point of gathering.tools names a FunctionTool, a list of them, "
            "or a function of no arguments returning either",
        )
    owner = entry_point.dist.name if entry_point.dist is not None else entry_point.name
    return [replace(item, plugin=owner) for item in found]


def load_plugins(target: ToolRegistry) -> list[str]:
    """Register the tools of every installed `gathering.tools` plugin into `target`, each
    plugin whole or not at all; one that fails to load, or names a tool that exists, is logged
    and skipped (the server still starts). Returns the names added."""
    added: list[str] = []
    for entry_point in entry_points(group=PLUGIN_GROUP):
        try:
            tools = plugin_tools(entry_point)
            taken = [item.name for item in tools if item.name in target]
            names = [item.name for item in tools]
            if taken or len(set(names)) < len(names):
                raise ConflictError(f"tool names already taken: {', '.join(taken or names)}")
        except Exception:
            log.error("a tool plugin failed to load", entry_point=entry_point.name, exc_info=True)
            continue
        added.extend(target.register(item).name for item in tools)
    return added


def named_tool(name: str) -> FunctionTool:
    """The registry tool `name`, for code that names a tool (`Agent(tools=["read_file"])`).
    Plugins are loaded first when they were not, unless an event loop runs in this thread
    (loading blocks): then `await loaded_registry()` first."""
    found = registry.get(name)
    if found is not None or _plugins_loaded:
        return found or registry.require(name)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return default_registry().require(name)
    raise NotFoundError(
        f"no built-in tool named {name!r}, and plugin tools are not loaded yet",
        hint="in async code, `await gathering.tools.loaded_registry()` before naming a "
        "plugin's tool, or pass the tool object itself",
    )


registry = ToolRegistry(builtin_tools())
_plugins = threading.Lock()
_plugins_loaded = False


def default_registry() -> ToolRegistry:
    """The process's registry, with the installed plugins' tools (loaded once, on first use:
    it reads package metadata and imports, so async code awaits `loaded_registry` instead)."""
    global _plugins_loaded
    with _plugins:
        if not _plugins_loaded:
            load_plugins(registry)
            _plugins_loaded = True
    return registry


async def loaded_registry() -> ToolRegistry:
    """`default_registry()`, its first load in a worker thread (off the event loop)."""
    if _plugins_loaded:
        return registry
    return await asyncio.to_thread(default_registry)


def register_tool(tool: FunctionTool) -> FunctionTool:
    """Register `tool` in the process's registry."""
    return registry.register(tool)


def get_tool(name: str) -> FunctionTool | None:
    """The tool `name` of the process's registry, or None."""
    return registry.get(name)


async def execute_tool(
    name: str, arguments: Mapping[str, Any], context: ToolContext | None = None
) -> str:
    """Run the tool `name` of the process's registry (see `ToolRegistry.execute`)."""
    return await registry.execute(name, arguments, context)

"""Which registry tools each agent may use, stored in PostgreSQL (`tool.agent_tools`).

A registry tool is off for an agent until enabled; every instance reads the setting at the
start of each turn, so a change applies to the agent's next turn wherever it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from gathering.config import get_settings
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, GatheringError
from gathering.llm.types import new_call_id
from gathering.tools.context import ToolContext
from gathering.tools.function import FunctionTool
from gathering.tools.registry import ToolRegistry, invoke

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.tools")


async def enabled_tools(
    queries: Queries, agent_id: int, tools: ToolRegistry
) -> dict[str, FunctionTool]:
    """The tools of `tools` enabled for the agent; one enabled but no longer installed is
    left out (and logged), never an error in the agent's turn."""
    found: dict[str, FunctionTool] = {}
    for row in await queries.fetch_all(_SQL["enabled_tools"], agent_id):
        name = row["tool_name"]
        item = tools.get(name)
        if item is None:
            log.warning("an enabled tool is not installed", agent_id=agent_id, tool=name)
        else:
            found[name] = item
    return found


async def tool_settings(queries: Queries, agent_id: int) -> dict[str, dict[str, Any]]:
    """Each tool the agent has a setting for: `{"enabled": bool, "updated_at": datetime}`."""
    rows = await queries.fetch_all(_SQL["agent_tool_settings"], agent_id)
    return {r["tool_name"]: {"enabled": r["enabled"], "updated_at": r["updated_at"]} for r in rows}


async def set_tool_enabled(
    queries: Queries, agent_id: int, tool: FunctionTool, enabled: bool
) -> datetime:
    """Enable or disable `tool` for the agent (from its next turn); when it was changed."""
    row = await queries.fetch_one(_SQL["set_agent_tool"], agent_id, tool.name, enabled)
    assert row is not None
    updated: datetime = row["updated_at"]
    return updated


def agent_workspace(agent_id: int) -> Path:
    """The agent's workspace directory: `<data dir>/workspaces/<agent id>` (not created)."""
    return get_settings().data_dir / "workspaces" / str(agent_id)


@dataclass(frozen=True)
class Invocation:
    """One call made outside a turn: its id, and the tool's output or the error it ended with
    (what the model would have been told, as `error: ...`)."""

    tool: str
    call_id: str
    output: str | None = None
    error: GatheringError | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None


async def invoke_for_agent(
    queries: Queries,
    tools: ToolRegistry,
    agent_id: int,
    owner_id: int | None,
    name: str,
    arguments: Mapping[str, Any],
) -> Invocation:
    """Run the tool `name` once for the agent, as its own call would run (enabled for it, in
    its workspace, validated, bounded). An unknown tool is `NotFoundError`, one the agent does
    not have `ConflictError`; once the call is made, its failure (refused arguments, a
    timeout, an exception) is in the `Invocation`. The caller checks the agent is theirs."""
    tool = tools.require(name)
    if name not in await enabled_tools(queries, agent_id, tools):
        raise ConflictError(
            f"tool {name!r} is not enabled for agent {agent_id}",
            hint=f"enable it first: PUT /agents/{agent_id}/tools/{name} with "
            '{"enabled": true}, or `gathering tools enable ' + f"{name} --agent {agent_id}`",
        )
    call_id = new_call_id()
    context = ToolContext(agent_id, owner_id, agent_workspace(agent_id), call_id)
    try:
        return Invocation(name, call_id, output=await invoke(tool, arguments, context))
    except GatheringError as error:
        return Invocation(name, call_id, error=error)

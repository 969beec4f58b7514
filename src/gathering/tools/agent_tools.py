"""Which registry tools each agent may use, stored in PostgreSQL (`tool.agent_tools`).

A registry tool is off for an agent until enabled; every instance reads the setting at the
start of each turn, so a change applies to the agent's next turn wherever it runs.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from gathering.config import get_settings
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import (
    ApprovalRequiredError,
    ConflictError,
    GatheringError,
    InvalidInputError,
    ToolDeniedError,
)
from gathering.llm.types import new_call_id
from gathering.tools.approvals import RUNNING, Approval, request_approval, set_outcome
from gathering.tools.context import ToolContext
from gathering.tools.function import POLICIES, FunctionTool, Policy
from gathering.tools.registry import ToolRegistry, invoke

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.tools")


@dataclass(frozen=True)
class ToolBox:
    """The tools of one turn or call, by name, with the policy each runs under."""

    tools: Mapping[str, FunctionTool]
    policies: Mapping[str, Policy] = field(default_factory=dict)

    def policy(self, name: str) -> Policy:
        """The policy of `name` (`allow` for the agent's own Python tools)."""
        return self.policies.get(name, "allow")

    def merged(self, own: Mapping[str, FunctionTool]) -> ToolBox:
        """This box with the agent's own tools added; they win a name clash, and run."""
        policies = {name: p for name, p in self.policies.items() if name not in own}
        return ToolBox({**self.tools, **own}, policies)


async def enabled_tools(
    queries: Queries,
    agent_id: int,
    tools: ToolRegistry,
    *,
    more: Callable[[], Awaitable[Iterable[FunctionTool]]] | None = None,
) -> ToolBox:
    """The tools of `tools` enabled for the agent, each with its policy (the stored one, else
    the tool's default); one enabled but no longer installed is left out (and logged), never
    an error in the agent's turn. `more()` gives further tools (an MCP server's), asked for
    only when an enabled tool is not in `tools`."""
    found: dict[str, FunctionTool] = {}
    policies: dict[str, Policy] = {}
    rows = await queries.fetch_all(_SQL["enabled_tools"], agent_id)
    extra: dict[str, FunctionTool] = {}
    if more is not None and any(row["tool_name"] not in tools for row in rows):
        extra = {tool.name: tool for tool in await more()}
    for row in rows:
        name = row["tool_name"]
        item = tools.get(name) or extra.get(name)
        if item is None:
            log.warning("an enabled tool is not installed", agent_id=agent_id, tool=name)
            continue
        found[name] = item
        policies[name] = row["policy"] or item.default_policy
    return ToolBox(found, policies)


async def tool_settings(queries: Queries, agent_id: int) -> dict[str, dict[str, Any]]:
    """Each tool the agent has a setting for: `{"enabled", "policy" (None: the tool's
    default), "updated_at"}`."""
    rows = await queries.fetch_all(_SQL["agent_tool_settings"], agent_id)
    return {
        r["tool_name"]: {
            "enabled": r["enabled"],
            "policy": r["policy"],
            "updated_at": r["updated_at"],
        }
        for r in rows
    }


async def change_agent_tool(
    queries: Queries, agent_id: int, tool: FunctionTool, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change whether the agent has `tool` (`changes["enabled"]`) and its policy
    (`changes["policy"]`: allow, ask, deny, or None for the tool's default); a key left out
    keeps its value. Applies from the agent's next turn. Returns the new setting."""
    unknown = set(changes) - {"enabled", "policy"}
    if unknown or not changes:
        raise InvalidInputError(
            "give `enabled` and/or `policy`", details={"unknown": sorted(unknown)}
        )
    policy = changes.get("policy")
    if policy is not None and policy not in POLICIES:
        raise InvalidInputError(f"unknown policy {policy!r}", hint=f"one of {', '.join(POLICIES)}")
    row = await queries.fetch_one(
        _SQL["set_agent_tool"],
        agent_id,
        tool.name,
        changes.get("enabled"),
        policy,
        "enabled" in changes,
        "policy" in changes,
    )
    assert row is not None
    return {"enabled": row["enabled"], "policy": row["policy"], "updated_at": row["updated_at"]}


def agent_workspace(agent_id: int, created_at: datetime | None) -> Path:
    """The agent's workspace directory (not created): `<data dir>/workspaces/<id>-<creation
    time in µs>`. The creation time keeps apart two agents that got the same id from two
    databases (a reset, a restore, tests) on one data directory."""
    name = str(agent_id)
    if created_at is not None:
        name += f"-{round(created_at.timestamp() * 1_000_000)}"
    return get_settings().data_dir / "workspaces" / name


@dataclass(frozen=True)
class LinkedProject:
    """The project an agent is linked to: its directory is the agent's workspace, its context
    text part of the agent's prompt."""

    id: int
    directory: Path
    context: str


async def linked_project(queries: Queries, agent_id: int) -> LinkedProject | None:
    """The project agent `agent_id` is linked to, read now (a link made on any instance
    applies to the agent's next turn)."""
    row = await queries.fetch_one(_SQL["linked_project"], agent_id)
    if row is None:
        return None
    return LinkedProject(row["id"], Path(row["directory"]), row["context"])


async def workspace_of(queries: Queries, agent_id: int, created_at: datetime | None) -> Path:
    """Where agent `agent_id`'s tools work: its linked project's directory, else its own
    workspace."""
    project = await linked_project(queries, agent_id)
    return project.directory if project is not None else agent_workspace(agent_id, created_at)


async def remove_workspace(agent_id: int, created_at: datetime | None) -> None:
    """Delete a deleted agent's workspace and everything in it (off the event loop)."""
    await asyncio.to_thread(shutil.rmtree, agent_workspace(agent_id, created_at), True)


@dataclass(frozen=True)
class Invocation:
    """One call made outside a turn: its id, and the tool's output or the error it ended with
    (what the model would have been told, as `error: ...`). A call that waits for a person
    has its `approval` and the error `ApprovalRequiredError`."""

    tool: str
    call_id: str
    output: str | None = None
    error: GatheringError | None = None
    approval: Approval | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def outcome(self) -> dict[str, Any]:
        """The JSON form kept with an approved invocation once it ran."""
        if self.error is None:
            return {"is_error": False, "output": self.output}
        return {"is_error": True, "error": self.error.to_dict()}


def refuse_or_ask(tool: FunctionTool, policy: Policy) -> GatheringError | None:
    """`ToolDeniedError` for `deny`; None otherwise (`ask` is the caller's to arrange)."""
    if policy == "deny":
        return ToolDeniedError(
            f"tool {tool.name!r} is denied for this agent by its policy; it was not run",
            hint="an owner of the agent can change the policy (PUT /agents/{id}/tools/"
            f'{tool.name} with {{"policy": "allow"}} or "ask")',
        )
    return None


async def invoke_for_agent(
    queries: Queries,
    tools: ToolRegistry,
    agent_id: int,
    owner_id: int | None,
    name: str,
    arguments: Mapping[str, Any],
    *,
    created_at: datetime | None,
    requested_by: int | None = None,
) -> Invocation:
    """Run the tool `name` once for the agent, as its own call would run: enabled for it,
    under its policy (`deny` refuses, `ask` stores a pending approval and runs nothing yet),
    in its workspace, validated, bounded. An unknown tool is `NotFoundError`, one the agent
    does not have `ConflictError`; once the call is made, its failure (refused arguments, a
    timeout, an exception) is in the `Invocation`. The caller checks the agent is theirs."""
    tool = tools.require(name)
    box = await enabled_tools(queries, agent_id, tools)
    if name not in box.tools:
        raise ConflictError(
            f"tool {name!r} is not enabled for agent {agent_id}",
            hint=f"enable it first: PUT /agents/{agent_id}/tools/{name} with "
            '{"enabled": true}, or `gathering tools enable ' + f"{name} --agent {agent_id}`",
        )
    call_id = new_call_id()
    workspace = await workspace_of(queries, agent_id, created_at)
    context = ToolContext(agent_id, owner_id, workspace, call_id, db=queries)
    policy = box.policy(name)
    try:
        tool.arguments_for(arguments, context)  # a call a person is asked about is valid
        if (refused := refuse_or_ask(tool, policy)) is not None:
            raise refused
    except GatheringError as error:
        return Invocation(name, call_id, error=error)
    if policy == "ask":
        approval = await request_approval(
            queries,
            agent_id=agent_id,
            owner_id=owner_id,
            turn_id=None,
            call_id=call_id,
            tool=tool,
            arguments=arguments,
            reason=f"the policy of {name!r} for this agent is ask",
            requested_by=requested_by,
            seconds=get_settings().approval_timeout,
        )
        waiting = ApprovalRequiredError(
            f"tool {name!r} waits for a person's approval (approval {approval.id})",
            hint=f"approve it: POST /approvals/{approval.id}/approve, or "
            f"`gathering approvals approve {approval.id}`; its outcome is kept with it",
            details={"approval_id": approval.id},
        )
        return Invocation(name, call_id, error=waiting, approval=approval)
    return await _run(tool, arguments, context)


async def _run(
    tool: FunctionTool, arguments: Mapping[str, Any], context: ToolContext
) -> Invocation:
    assert context.call_id is not None
    try:
        output = await invoke(tool, arguments, context)
    except GatheringError as error:
        return Invocation(tool.name, context.call_id, error=error)
    return Invocation(tool.name, context.call_id, output=output)


async def run_approved_invocation(
    queries: Queries, tools: ToolRegistry, approval: Approval, workspace: Path
) -> Invocation:
    """Run (or, denied, expired, or no longer allowed for the agent, refuse) a direct
    invocation a person answered, in the agent's `workspace`, and keep its outcome with the
    approval: `RUNNING` first, so a crash leaves it `UNKNOWN`, never run again. The caller has
    picked the approval up (`mark_resumed`)."""
    context = ToolContext(
        approval.agent_id, approval.owner_id, workspace, approval.call_id, db=queries
    )
    box = await enabled_tools(queries, approval.agent_id, tools)
    tool = box.tools.get(approval.tool_name)
    if approval.state != "approved" or tool is None or box.policy(tool.name) == "deny":
        if approval.state != "approved":
            why = f"was {approval.state}"
        else:
            why = "is no longer allowed for this agent (disabled, denied or uninstalled)"
        error = ToolDeniedError(f"tool {approval.tool_name!r} was not run: the call {why}")
        call = Invocation(approval.tool_name, approval.call_id, error=error)
    else:
        await set_outcome(queries, approval.id, RUNNING)
        call = await _run(tool, approval.arguments, context)
    await set_outcome(queries, approval.id, call.outcome())
    return call

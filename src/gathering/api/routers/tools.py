"""`/tools`: the tools agents may be given; `/agents/{id}/tools`: which ones an agent has;
`POST /tools/{name}/invoke`: one call in an agent's workspace, as the agent's own call would run.

API keys need `tools:read` to list, `tools:run` to invoke, and `agents:write` to change an
agent's tools. There is no endpoint that runs submitted code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from gathering.api.deps import (
    MAX_ID,
    AgentId,
    AgentsReader,
    AgentsWriter,
    BusDep,
    DbDep,
    owned_agent,
)
from gathering.api.fields import Flag, Integer
from gathering.api.security import Principal, rate_limit, require_scope
from gathering.events import Event
from gathering.tools import FunctionTool, ToolRegistry, loaded_registry
from gathering.tools.agent_tools import invoke_for_agent, set_tool_enabled, tool_settings

router = APIRouter(tags=["tools"])
ToolsReader = Annotated[Principal, Depends(require_scope("tools:read"))]
ToolsRunner = Annotated[Principal, Depends(require_scope("tools:run"))]
ToolName = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="A tool")
]
Tools = Annotated[ToolRegistry, Depends(loaded_registry)]
EVENT_PREVIEW_CHARS = 2_000


class ToolOut(BaseModel):
    """A tool: what it does, its arguments (JSON Schema) and what a call may change."""

    name: str
    description: str
    parameters: dict[str, Any]
    effect: Literal["read", "write", "external"]
    category: str
    plugin: str | None = Field(description="The package that added it; null: built in")
    timeout: float | None = Field(description="Seconds a call may run; null: the default")


class AgentToolOut(ToolOut):
    enabled: bool
    updated_at: datetime | None = Field(description="When it was last enabled or disabled")


class AgentToolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: Flag


class InvokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: Integer = Field(ge=1, le=MAX_ID, description="The agent whose workspace is used")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments, checked against its schema"
    )


class ToolErrorOut(BaseModel):
    """Why the call failed: e.g. `invalid_tool_arguments` (with `details.errors`, one per
    refused field), `path_traversal`, `tool_timeout`, `tool_failed`."""

    code: str
    message: str
    hint: str | None = None
    details: dict[str, Any] | None = None


class InvokeOut(BaseModel):
    """The call's result: the tool's output, or the error it ended with, as an agent's call
    would have told the model."""

    tool: str
    agent_id: int
    call_id: str
    is_error: bool
    output: str | None = Field(description="What the tool returned, as the model reads it")
    error: ToolErrorOut | None = None


def _out(tool: FunctionTool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.spec.description,
        "parameters": dict(tool.spec.parameters),
        "effect": tool.effect,
        "category": tool.category,
        "plugin": tool.plugin,
        "timeout": tool.timeout,
    }


@router.get("/tools", summary="List tools", dependencies=[rate_limit("relaxed")])
async def list_tools(principal: ToolsReader, tools: Tools) -> list[ToolOut]:
    return [ToolOut.model_validate(_out(tool)) for tool in tools.list()]


@router.get("/agents/{agent_id}/tools", summary="An agent's tools")
async def agent_tools(
    agent_id: AgentId, request: Request, principal: AgentsReader, db: DbDep, tools: Tools
) -> list[AgentToolOut]:
    """Every tool, and whether the agent has it (a tool is off until enabled)."""
    await owned_agent(request, principal, db, agent_id)
    settings = await tool_settings(db, agent_id)
    return [
        AgentToolOut.model_validate(
            _out(tool) | (settings.get(tool.name) or {"enabled": False, "updated_at": None})
        )
        for tool in tools.list()
    ]


@router.put("/agents/{agent_id}/tools/{name}", summary="Enable or disable a tool for an agent")
async def set_agent_tool(
    agent_id: AgentId,
    name: ToolName,
    body: AgentToolIn,
    request: Request,
    principal: AgentsWriter,
    db: DbDep,
    bus: BusDep,
    tools: Tools,
) -> AgentToolOut:
    """Applies from the agent's next turn, on every instance."""
    tool = tools.require(name)
    await owned_agent(request, principal, db, agent_id)
    async with db.transaction() as tx:
        updated = await set_tool_enabled(tx, agent_id, tool, body.enabled)
        change = {"agent_id": agent_id, "tool": name, "enabled": body.enabled}
        event = Event(
            "agent.tools_changed",
            change | {"by": principal.user_id},
            subject=f"agent:{agent_id}",
            source="api",
        )
        await bus.publish(event, tx=tx)
    return AgentToolOut.model_validate(
        _out(tool) | {"enabled": body.enabled, "updated_at": updated}
    )


@router.post(
    "/tools/{name}/invoke",
    summary="Run a tool once",
    dependencies=[rate_limit("chat")],
    responses={409: {"description": "The tool is not enabled for the agent"}},
)
async def invoke_tool(
    name: ToolName,
    body: InvokeIn,
    request: Request,
    principal: ToolsRunner,
    db: DbDep,
    bus: BusDep,
    tools: Tools,
) -> InvokeOut:
    """One call in the agent's workspace, through the same checks as the agent's own calls:
    the tool must be enabled for the agent, and the arguments match its schema. Once made, the
    call answers 200 whatever the tool's verdict: `is_error` and `error` say how it ended."""
    tools.require(name)
    record = await owned_agent(request, principal, db, body.agent_id)
    call = await invoke_for_agent(db, tools, body.agent_id, record.owner_id, name, body.arguments)
    error = None
    if call.error is not None:
        error = ToolErrorOut(
            code=call.error.code,
            message=call.error.message,
            hint=call.error.hint,
            details=call.error.details or None,
        )
    content = call.output if call.output is not None else f"error: {call.error}"
    subjects = [f"agent:{body.agent_id}"]
    if record.owner_id is not None:
        subjects.append(f"user:{record.owner_id}")
    about = {
        "agent_id": body.agent_id,
        "tool": name,
        "call_id": call.call_id,
        "by": principal.user_id,
        "is_error": call.is_error,
        "content": content[:EVENT_PREVIEW_CHARS],
    }
    events = [Event("tool.invoked", about, subject=s, source="api") for s in subjects]
    await bus.publish_many(events, durable=True)
    return InvokeOut(
        tool=name,
        agent_id=body.agent_id,
        call_id=call.call_id,
        is_error=call.is_error,
        output=call.output,
        error=error,
    )

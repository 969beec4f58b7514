"""`/tools`: the tools agents may be given; `/agents/{id}/tools`: which ones an agent has;
`POST /tools/{name}/invoke`: one call in an agent's workspace, as the agent's own call would run.

API keys need `tools:read` to list, `tools:run` to invoke, and `agents:write` to change an
agent's tools. There is no endpoint that runs submitted code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.agents.turn_events import EVENT_PREVIEW_CHARS, agent_subjects
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
from gathering.tools import FunctionTool
from gathering.tools.agent_tools import change_agent_tool, invoke_for_agent, tool_settings
from gathering.tools.mcp import registry_for

router = APIRouter(tags=["tools"])
ToolsReader = Annotated[Principal, Depends(require_scope("tools:read"))]
ToolsRunner = Annotated[Principal, Depends(require_scope("tools:run"))]
ToolName = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="A tool")
]
PolicyName = Literal["allow", "ask", "deny"]


class ToolOut(BaseModel):
    """A tool: what it does, its arguments (JSON Schema) and what a call may change."""

    name: str
    description: str
    parameters: dict[str, Any]
    effect: Literal["read", "write", "external"]
    category: str
    plugin: str | None = Field(description="The package that added it; null: built in")
    timeout: float | None = Field(description="Seconds a call may run; null: the default")
    default_policy: PolicyName = Field(description="The policy of an agent that sets none")


class AgentToolOut(ToolOut):
    enabled: bool
    policy: PolicyName = Field(description="The policy the agent's calls run under")
    policy_set: PolicyName | None = Field(description="The agent's own; null: the default")
    updated_at: datetime | None = Field(description="When the setting last changed")


class AgentToolIn(BaseModel):
    """What to change; a field left out keeps its value. `policy: null` goes back to the
    tool's default."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    enabled: Flag = None  # type: ignore[assignment]  # left out: unchanged; never null
    policy: PolicyName | None = None

    @model_validator(mode="after")
    def _something(self) -> AgentToolIn:
        if not self.model_fields_set:
            raise ValueError("give enabled and/or policy")
        return self


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
    approval_id: int | None = Field(
        default=None, description="The approval the call waits for (answered 202)"
    )


def tool_fields(tool: FunctionTool) -> dict[str, Any]:
    """What `ToolOut` shows of `tool`."""
    return {
        "name": tool.name,
        "description": tool.spec.description,
        "parameters": dict(tool.spec.parameters),
        "effect": tool.effect,
        "category": tool.category,
        "plugin": tool.plugin,
        "timeout": tool.timeout,
        "default_policy": tool.default_policy,
    }


def _agent_tool(tool: FunctionTool, setting: dict[str, Any] | None) -> AgentToolOut:
    setting = setting or {"enabled": False, "policy": None, "updated_at": None}
    return AgentToolOut.model_validate(
        tool_fields(tool)
        | {
            "enabled": setting["enabled"],
            "policy": setting["policy"] or tool.default_policy,
            "policy_set": setting["policy"],
            "updated_at": setting["updated_at"],
        }
    )


@router.get("/tools", summary="List tools", dependencies=[rate_limit("relaxed")])
async def list_tools(principal: ToolsReader, db: DbDep) -> list[ToolOut]:
    """The registry's tools, and those of the MCP servers the caller's agents all see."""
    tools = await registry_for(db, principal.user_id)
    return [ToolOut.model_validate(tool_fields(tool)) for tool in tools.list()]


@router.get("/agents/{agent_id:id}/tools", summary="An agent's tools")
async def agent_tools(
    agent_id: AgentId, request: Request, principal: AgentsReader, db: DbDep
) -> list[AgentToolOut]:
    """Every tool (with those of the MCP servers the agent sees), and whether the agent has
    it (a tool is off until enabled)."""
    record = await owned_agent(request, principal, db, agent_id)
    tools = await registry_for(db, record.owner_id, agent_id)
    settings = await tool_settings(db, agent_id)
    return [_agent_tool(tool, settings.get(tool.name)) for tool in tools.list()]


@router.put(
    "/agents/{agent_id:id}/tools/{name}", summary="Enable, disable or set the policy of a tool"
)
async def set_agent_tool(
    agent_id: AgentId,
    name: ToolName,
    body: AgentToolIn,
    request: Request,
    principal: AgentsWriter,
    db: DbDep,
    bus: BusDep,
) -> AgentToolOut:
    """Applies from the agent's next turn, on every instance."""
    record = await owned_agent(request, principal, db, agent_id)
    tool = (await registry_for(db, record.owner_id, agent_id)).require(name)
    changes = body.model_dump(include=body.model_fields_set)
    async with db.transaction() as tx:
        setting = await change_agent_tool(tx, agent_id, tool, changes)
        about = {"agent_id": agent_id, "tool": name, "by": principal.user_id} | {
            "enabled": setting["enabled"],
            "policy": setting["policy"],
        }
        event = Event("agent.tools_changed", about, subject=f"agent:{agent_id}", source="api")
        await bus.publish(event, tx=tx)
    return _agent_tool(tool, setting)


@router.post(
    "/tools/{name}/invoke",
    summary="Run a tool once",
    dependencies=[rate_limit("chat")],
    responses={
        202: {
            "model": InvokeOut,
            "description": "The call waits for a person's approval (`approval_id`); its "
            "outcome is kept with the approval once it ran",
        },
        409: {"description": "The tool is not enabled for the agent"},
    },
)
async def invoke_tool(
    name: ToolName,
    body: InvokeIn,
    request: Request,
    response: Response,
    principal: ToolsRunner,
    db: DbDep,
    bus: BusDep,
) -> InvokeOut:
    """One call in the agent's workspace, through the same checks as the agent's own calls:
    the tool must be enabled for the agent, its policy applies (`deny` refuses it, `ask` makes
    it wait for a person: 202) and the arguments must match its schema. Once made, the call
    answers 200 whatever the tool's verdict: `is_error` and `error` say how it ended."""
    record = await owned_agent(request, principal, db, body.agent_id)
    tools = await registry_for(db, record.owner_id, body.agent_id)
    call = await invoke_for_agent(
        db,
        tools,
        body.agent_id,
        record.owner_id,
        name,
        body.arguments,
        created_at=record.created_at,
        requested_by=principal.user_id,
    )
    subjects = agent_subjects(body.agent_id, record.owner_id)
    if call.approval is not None:
        response.status_code = status.HTTP_202_ACCEPTED
        kind, about = "approval.requested", call.approval.event_body()
    else:
        content = call.output if call.output is not None else f"error: {call.error}"
        kind, about = (
            "tool.invoked",
            {
                "agent_id": body.agent_id,
                "tool": name,
                "call_id": call.call_id,
                "by": principal.user_id,
                "is_error": call.is_error,
                "content": content[:EVENT_PREVIEW_CHARS],
            },
        )
    await bus.publish_many(
        [Event(kind, about, subject=s, source="api") for s in subjects], durable=True
    )
    return InvokeOut(
        tool=name,
        agent_id=body.agent_id,
        call_id=call.call_id,
        is_error=call.is_error,
        output=call.output,
        error=ToolErrorOut.model_validate(call.error.to_dict()) if call.error else None,
        approval_id=call.approval.id if call.approval is not None else None,
    )

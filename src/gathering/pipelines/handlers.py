"""What each node type does when its turn comes: the work of one attempt, given the run's
input and the outputs of the nodes before it. The executor (`executor`) stores the result.

Every attempt has a key, `<run>/<node>/<attempt>`: the agent turn's idempotency key and the
tool call's id, so a repeated attempt after a crash finds the stored turn instead of a new one.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from gathering.agents import Agent, PostgresAgentStore
from gathering.config import get_settings
from gathering.errors import InvalidInputError, NodeFailedError, NotFoundError
from gathering.events import Event
from gathering.pipelines.conditions import evaluate
from gathering.pipelines.definition import Node
from gathering.pipelines.node_config import (
    MAX_RENDERED_CHARS,
    ActionConfig,
    AgentConfig,
    ConditionConfig,
    ToolConfig,
    render_bounded,
)
from gathering.tools.context import ToolContext
from gathering.tools.egress import fetch, policy_from_settings
from gathering.tools.function import FunctionTool
from gathering.tools.mcp import registry_for
from gathering.tools.registry import invoke, loaded_registry
from gathering.tools.validation import schema_validator
from gathering.usage import attributed

if TYPE_CHECKING:
    from gathering.db import Database
    from gathering.events import EventBus

Effect = Literal["read", "write", "external"]


@dataclass(frozen=True)
class NodeCall:
    """One attempt of one node."""

    db: Database
    bus: EventBus | None
    run_id: int
    pipeline_id: int
    owner_id: int
    node: Node
    attempt: int
    input: dict[str, Any]
    outputs: dict[str, Any]
    upstream: list[str]

    @property
    def key(self) -> str:
        return f"{self.run_id}/{self.node.id}/{self.attempt}"

    async def render(self, value: Any) -> Any:
        """`value` with every string in it rendered as a template over input and outputs, in
        a thread (a slow template never stops the event loop); `NodeFailedError`
        (`template_error`) when one cannot be rendered or renders too much."""
        if _renders_as_itself(value):
            return _copy(value)  # never the definition's own objects: a tool may change them
        return await asyncio.to_thread(self._render, value)

    def _render(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return render_bounded(value, input=self.input, outputs=self.outputs)
            except Exception as exc:  # undefined names, sandbox refusals: the node's mistake
                raise NodeFailedError(
                    f"node {self.node.id}: a template could not be rendered: {exc}",
                    code="template_error",
                ) from None
        if isinstance(value, dict):
            return {key: self._render(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._render(item) for item in value]
        return value


def _renders_as_itself(value: Any) -> bool:
    """Whether `value` holds no string that rendering would change or refuse: none with
    template syntax (`{`), a carriage return (newlines are normalised), a final newline
    (dropped), or more than a rendering may produce."""
    if isinstance(value, str):
        return (
            "{" not in value
            and "\r" not in value
            and not value.endswith("\n")
            and len(value) <= MAX_RENDERED_CHARS
        )
    if isinstance(value, dict):
        return all(_renders_as_itself(item) for item in value.values())
    if isinstance(value, list):
        return all(_renders_as_itself(item) for item in value)
    return True


def _copy(value: Any) -> Any:
    """`value` with its dicts and lists copied (texts and numbers are immutable)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def run_workspace(pipeline_id: int, run_id: int) -> Path:
    """Where a run's tool nodes keep their files: `<data dir>/pipelines/<id>/runs/<run>`."""
    return get_settings().data_dir / "pipelines" / str(pipeline_id) / "runs" / str(run_id)


async def _find_tool(db: Database, owner_id: int, name: str) -> FunctionTool | None:
    """The tool `name`: the process's registry first, the owner's MCP servers only for a name
    it does not have (which costs a query, and maybe a connection)."""
    found = (await loaded_registry()).get(name)
    if found is None:
        found = (await registry_for(db, owner_id, None)).get(name)
    return found


async def effect_of(db: Database, owner_id: int, node: Node) -> Effect:
    """What repeating an attempt of `node` may do: a tool's declared effect; an outgoing HTTP
    action is `external`; an agent turn is `write` (its idempotency key finds a finished turn,
    and its own tool calls are recovered by the turn); the rest only read."""
    if node.type == "tool":
        found = await _find_tool(db, owner_id, ToolConfig.model_validate(node.config).tool)
        return found.effect if found is not None else "external"
    if node.type == "action":
        return "write" if node.config.get("kind") == "emit_event" else "external"
    if node.type == "agent":
        return "write"
    return "read"


async def target_for(call: NodeCall) -> str | None:
    """The circuit breaker `call`'s node answers to, `<owner>/<kind>:<name>` (its agent, its
    tool, or the host its rendered URL names; per owner, so one owner's failures never stop
    another's nodes); None for the rest."""
    node = call.node
    if node.type == "action" and node.config.get("url"):
        url = await call.render(str(node.config["url"]))
        return f"{call.owner_id}/host:{urlsplit(url).hostname or '?'}"
    return fixed_target(node, call.owner_id)


def fixed_target(node: Node, owner_id: int) -> str | None:
    """The breaker target of an agent or a tool node, known before any rendering."""
    if node.type == "agent":
        return f"{owner_id}/agent:{node.config.get('agent')}"
    if node.type == "tool":
        return f"{owner_id}/tool:{node.config.get('tool')}"
    return None


async def execute(call: NodeCall) -> Any:
    """The output of one attempt of `call.node` (JSON-ready); a `GatheringError` on failure.
    Its model and tool calls are charged to the run, its pipeline and the pipeline's owner."""
    with attributed(
        user_id=call.owner_id, pipeline_id=call.pipeline_id, pipeline_run_id=call.run_id
    ):
        return await _execute(call)


async def _execute(call: NodeCall) -> Any:
    node_type = call.node.type
    if node_type == "trigger":
        return call.input
    if node_type == "condition":
        expression = ConditionConfig.model_validate(call.node.config).expression
        try:
            return bool(evaluate(expression, call.input, call.outputs))
        except InvalidInputError as exc:
            raise NodeFailedError(exc.message, code="condition_error", hint=exc.hint) from None
    if node_type == "parallel":
        return {name: call.outputs.get(name) for name in call.upstream if name in call.outputs}
    if node_type == "agent":
        return await _agent_turn(call)
    if node_type == "tool":
        return await _tool_call(call)
    if node_type == "action":
        return await _action(call)
    raise NodeFailedError(
        f"node {call.node.id}: {node_type} nodes cannot run yet", code="not_implemented"
    )


async def _agent_turn(call: NodeCall) -> Any:
    config = AgentConfig.model_validate(call.node.config)
    store = PostgresAgentStore(call.db)
    record = await store.load_agent(config.agent, owner_id=call.owner_id)
    agent = Agent.from_record(record, store=store)
    agent.event_bus = call.bus
    prompt = await call.render(config.prompt)
    result = await agent.run(prompt, idempotency_key=f"pipeline:{call.key}", new_session=True)
    if config.output == "text":
        return result.text
    try:
        value = json.loads(json_part(result.text))
    except ValueError:
        raise NodeFailedError(
            f"node {call.node.id}: the agent's reply is not JSON: {result.text[:200]!r}",
            code="invalid_output",
            hint="ask for JSON only in the prompt, or use output: text",
        ) from None
    if config.output_schema is not None:
        errors = sorted(
            schema_validator(f"node {call.node.id}", config.output_schema).iter_errors(value),
            key=str,
        )
        if errors:
            raise NodeFailedError(
                f"node {call.node.id}: the agent's JSON does not match output_schema: "
                f"{errors[0].message}",
                code="invalid_output",
            )
    return value


def json_part(text: str) -> str:
    """The JSON in a reply that may wrap it in a Markdown code fence."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped.strip()


async def _tool_call(call: NodeCall) -> Any:
    config = ToolConfig.model_validate(call.node.config)
    tool = await _find_tool(call.db, call.owner_id, config.tool)
    if tool is None:
        raise NotFoundError(
            f"node {call.node.id}: no tool {config.tool!r}",
            hint="`gathering tools list` shows the tools; MCP tools are named <server>__<tool>",
        )
    arguments = await call.render(config.arguments)
    workspace = run_workspace(call.pipeline_id, call.run_id)
    context = ToolContext(None, call.owner_id, workspace, call.key, db=call.db)
    return await invoke(tool, arguments, context)


async def _action(call: NodeCall) -> Any:
    config = ActionConfig.model_validate(call.node.config)
    body = await call.render(config.body)
    if config.kind == "emit_event":
        assert config.event is not None
        if call.bus is None:
            raise NodeFailedError("no event bus in this process", code="no_event_bus")
        event = Event(
            config.event,
            {"run_id": call.run_id, "node": call.node.id, "body": body},
            subject=f"pipeline:{call.pipeline_id}",
            source="pipeline",
        )
        await call.bus.publish(event, durable=True)
        return {"event": config.event}
    assert config.url is not None
    url = await call.render(config.url)
    content = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"} if content is not None else None
    result = await fetch(config.method, url, policy_from_settings(), body=content, headers=headers)
    if result.status >= 400:
        raise NodeFailedError(
            f"node {call.node.id}: {config.method} {url} answered {result.status}",
            code=f"http_{result.status}",
        )
    return {"status": result.status, "body": result.text()[:100_000]}

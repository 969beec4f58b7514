"""The tool calls of one model reply, in order: each runs, is refused, or waits for a
person's approval under the agent's policy for its tool; each result is stored before the
next call starts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from gathering.agents.conversation_store import Conversation
from gathering.agents.turn_events import EVENT_PREVIEW_CHARS, TurnEvents
from gathering.config import get_settings
from gathering.errors import FeatureUnavailableError, GatheringError, InvalidInputError
from gathering.llm import ToolCall, ToolResult
from gathering.observability import record_tool_call
from gathering.tools.agent_tools import ToolBox, refuse_or_ask
from gathering.tools.approvals import Approval, request_approval
from gathering.tools.context import ToolContext
from gathering.tools.function import FunctionTool, ToolRetry
from gathering.tools.registry import keep_project_activity, tool_seconds
from gathering.usage.ledger import record_tool_call as charge_tool_call

if TYPE_CHECKING:
    from gathering.agents.agent import Agent

log = structlog.get_logger(__name__)

NOT_RUN_RESULT = "error: not run: the turn's deadline had passed"


@dataclass(frozen=True)
class ToolStarted:
    """Stream event: the model asked for a tool and it is running."""

    call: ToolCall


@dataclass(frozen=True)
class ToolFinished:
    """Stream event: a tool returned (or failed; `result.is_error`)."""

    result: ToolResult


@dataclass(frozen=True)
class Suspended:
    """The batch stopped at a call that waits for a person: the turn waits with it."""

    approval: Approval
    queued: tuple[str, ...]  # the calls after it, not started


@dataclass(frozen=True)
class BatchDone:
    """Every call of the reply has its result, in the reply's order."""

    results: list[ToolResult]


@dataclass(frozen=True)
class StoredCalls:
    """What a resumed turn had stored about its last reply's calls (empty for a new reply)."""

    status: Mapping[str, str] = field(default_factory=dict)
    results: Mapping[str, str] = field(default_factory=dict)
    decisions: Mapping[str, Approval] = field(default_factory=dict)


def not_run_result(call: ToolCall, approval: Approval | None) -> ToolResult:
    """What the model is told about a call a person did not approve."""
    if approval is None:
        why = "its approval is gone"
    elif approval.state == "expired":
        why = "nobody approved it in time"
    else:
        why = "a person denied it" + (f": {approval.comment}" if approval.comment else "")
    return ToolResult(call.id, f"error: not run: {why}", True, call.name)


async def run_batch(
    agent: Agent,
    conversation: Conversation,
    turn_id: str,
    box: ToolBox,
    calls: Sequence[ToolCall],
    events: TurnEvents,
    until: float,
    stored: StoredCalls | None = None,
) -> AsyncIterator[ToolStarted | ToolFinished | Suspended | BatchDone]:
    """Run the calls of one reply in order, each under its policy; yield their events, then
    `BatchDone`, or `Suspended` at the first call that must wait for a person. A resumed
    batch (`stored`) keeps the results it had and runs an answered call as decided."""
    stored = stored or StoredCalls()
    loop = asyncio.get_running_loop()
    results: list[ToolResult] = []
    for index, call in enumerate(calls):
        status = stored.status.get(call.id)
        if status in ("finished", "failed"):
            results.append(
                ToolResult(call.id, stored.results.get(call.id, ""), status == "failed", call.name)
            )
            continue
        context = agent.tool_context(call.id)
        decision = stored.decisions.get(call.id) if status == "waiting" else None
        if status != "waiting":
            yield ToolStarted(call)
            await events.emit("tool.started", {"call": call.to_dict()})
        if loop.time() >= until:  # never start a side effect past the turn's deadline
            result = ToolResult(call.id, NOT_RUN_RESULT, True, call.name)
        elif status == "waiting":
            result = await _answered(box, conversation, turn_id, call, decision, until, context)
        elif (tool := box.tools.get(call.name)) is not None and call.invalid_arguments is None:
            policy = box.policy(call.name)
            refusal = refusal_of(tool, call, context, policy)
            if refusal is not None:
                result = refusal
            elif policy == "ask":
                approval = await _ask(agent, conversation, turn_id, call, tool)
                await events.emit("approval.requested", approval.event_body())
                yield Suspended(approval, tuple(c.id for c in calls[index + 1 :]))
                return
            else:
                result = await run_tool(box.tools, call, until - loop.time(), context)
        else:  # an unknown tool, or arguments that are not an object: the model is told
            result = await run_tool(box.tools, call, until - loop.time(), context)
        await conversation.tool_finished(turn_id, result)
        results.append(result)
        yield ToolFinished(result)
        await events.emit(
            "tool.finished",
            {
                "call_id": call.id,
                "name": call.name,
                "is_error": result.is_error,
                "content": result.content[:EVENT_PREVIEW_CHARS],
            },
        )
    yield BatchDone(results)


async def _answered(
    box: ToolBox,
    conversation: Conversation,
    turn_id: str,
    call: ToolCall,
    decision: Approval | None,
    until: float,
    context: ToolContext,
) -> ToolResult:
    """The result of a call a person answered: not run when denied, expired, or no longer
    allowed (the tool disabled or denied since); else run, marked started first so that a
    crash leaves it `interrupted` (its outcome unknown), never to be run again."""
    if decision is None or decision.state != "approved":
        record_tool_call(call.name, "denied")
        return not_run_result(call, decision)
    if call.name not in box.tools or box.policy(call.name) == "deny":
        record_tool_call(call.name, "denied")
        why = "the tool was disabled or denied for this agent after it was approved"
        return ToolResult(call.id, f"error: not run: {why}", True, call.name)
    await conversation.call_running(turn_id, call.id)
    loop = asyncio.get_running_loop()
    return await run_tool(box.tools, call, until - loop.time(), context)


def refusal_of(
    tool: FunctionTool, call: ToolCall, context: ToolContext, policy: str
) -> ToolResult | None:
    """The error result of a call refused before it runs: denied by policy, or (before a
    person is asked about it) arguments the tool's schema refuses."""
    refused: GatheringError | None = None
    if policy == "deny":
        refused = refuse_or_ask(tool, "deny")
        record_tool_call(call.name, "denied")
    elif policy == "ask":
        try:
            tool.arguments_for(call.arguments, context)
        except InvalidInputError as exc:
            refused = exc
            record_tool_call(call.name, "retry")
    if refused is None:
        return None
    return ToolResult(call.id, f"error: {refused}", True, call.name)


async def _ask(
    agent: Agent, conversation: Conversation, turn_id: str, call: ToolCall, tool: FunctionTool
) -> Approval:
    queries = conversation.queries
    if queries is None or agent.id is None:
        raise FeatureUnavailableError(
            f"tool {call.name!r} needs a person's approval, which needs PostgreSQL",
            hint="use the PostgreSQL agent store, or give the tool the policy allow",
        )
    return await request_approval(
        queries,
        agent_id=agent.id,
        owner_id=agent.owner_id,
        turn_id=turn_id,
        call_id=call.id,
        tool=tool,
        arguments=call.arguments,
        reason=f"the policy of {call.name!r} for agent {agent.name!r} is ask",
        requested_by=None,
        seconds=get_settings().approval_timeout,
    )


async def run_tool(
    tools: Mapping[str, FunctionTool], call: ToolCall, left: float, context: ToolContext
) -> ToolResult:
    """Run one tool call within its timeout and the `left` seconds of the turn. What the model
    can act on comes back as its message (a `ToolRetry`, arguments the schema refuses, a
    refused path); a timeout or any other exception is a failure (logged with its traceback);
    cancellation propagates. A call of a known tool is written to the usage ledger."""
    started = time.monotonic()
    result = await _run_tool(tools, call, left, context)
    if call.name in tools:
        spent = round((time.monotonic() - started) * 1000)
        outcome = "error" if result.is_error else "ok"
        await charge_tool_call(
            context.db,
            call.name,
            outcome,
            spent,
            agent_id=context.agent_id,
            owner_id=context.owner_id,
        )
    return result


async def _run_tool(
    tools: Mapping[str, FunctionTool], call: ToolCall, left: float, context: ToolContext
) -> ToolResult:
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        record_tool_call("(unknown)", "unknown_tool")  # a model's names are not metric labels
        return ToolResult(
            call.id, f"error: no tool named {call.name!r} (tools: {known})", True, call.name
        )
    if call.invalid_arguments is not None:
        record_tool_call(call.name, "retry")
        return ToolResult(
            call.id,
            f"error: the arguments are not a JSON object: {call.invalid_arguments[:200]}",
            True,
            call.name,
        )
    seconds = min(tool_seconds(tool), left)
    timer = asyncio.timeout(max(seconds, 0.0))
    context = replace(context, deadline=time.monotonic() + seconds)
    try:
        async with timer:
            output = await tool.run(call.arguments, context)
    except ToolRetry as retry:
        record_tool_call(call.name, "retry")
        return ToolResult(call.id, f"error: {retry}", True, call.name)
    except InvalidInputError as refused:  # bad arguments, a path outside the workspace, ...
        record_tool_call(call.name, "retry")
        return ToolResult(call.id, f"error: {refused}", True, call.name)
    except GatheringError as refused:  # the tool's own typed answer: not found, not allowed, ...
        record_tool_call(call.name, "refused")
        log.info("tool refused", tool=call.name, code=refused.code)
        return ToolResult(call.id, f"error: {refused}", True, call.name)
    except TimeoutError as exc:
        if not timer.expired():  # the tool's own timeout (a socket, ...): a plain failure
            return _tool_failed(call, exc)
        record_tool_call(call.name, "timeout")
        log.warning("tool timed out", tool=call.name, seconds=seconds)
        return ToolResult(
            call.id,
            f"error: the tool did not finish within {seconds:g}s and was stopped",
            True,
            call.name,
        )
    except Exception as exc:
        return _tool_failed(call, exc)
    record_tool_call(call.name, "ok")
    await keep_project_activity(tool, call.arguments, context)
    return ToolResult(call.id, output, name=call.name)


def _tool_failed(call: ToolCall, exc: Exception) -> ToolResult:
    record_tool_call(call.name, "failed")
    log.error("tool failed", tool=call.name, exc_info=exc)
    return ToolResult(call.id, f"error: {type(exc).__name__}: {exc}", True, call.name)

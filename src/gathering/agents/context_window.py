"""What a model call sees of a conversation: the newest messages that fit the model's context
after the system prompt, the tool descriptions and the reply's `max_tokens`, repaired so that
every tool call has its answer.

A tool call left without a result (the turn was killed, cancelled or redeployed while the tool
ran) gets an error result saying its outcome is unknown: the APIs refuse a call without an
answer, and the model must know a side effect may or may not have happened.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gathering.agents.conversation_store import HistoryEntry
from gathering.errors import ContextTooLongError
from gathering.llm import LLMProvider, Message, ToolResult, ToolSpec, estimate_tokens
from gathering.llm.base import DEFAULT_MAX_TOKENS

INTERRUPTED_RESULT = (
    "error: interrupted: the outcome is unknown (the turn stopped before this tool returned; "
    "its side effect may or may not have happened)"
)
SAFETY_MARGIN = 0.05  # of the context, for the provider's own framing of messages and tools


def message_text(message: Message) -> str:
    """The text a message costs in the context: content, tool calls and tool results."""
    parts = [message.content]
    parts.extend(json.dumps(call.to_dict(), ensure_ascii=False) for call in message.tool_calls)
    parts.extend(result.content for result in message.tool_results)
    return "\n".join(parts)


def _tool_text(tool: ToolSpec) -> str:
    schema = json.dumps(dict(tool.parameters), ensure_ascii=False)
    return f"{tool.name}\n{tool.description}\n{schema}"


def repair_tool_calls(messages: Sequence[Message]) -> list[Message]:
    """`messages` where every tool call is answered right after its assistant message (an
    interrupted one by an error result) and no result answers a call outside the window."""
    repaired: list[Message] = []
    pending: list[str] = []
    for message in messages:
        if message.role == "tool":
            answered = [r for r in message.tool_results if r.call_id in pending]
            pending = [c for c in pending if c not in {r.call_id for r in answered}]
            if answered:
                repaired.append(Message.tool_outputs(answered))
            continue
        if pending:
            repaired.append(_interrupted(pending))
            pending = []
        repaired.append(message)
        pending = [call.id for call in message.tool_calls]
    if pending:
        repaired.append(_interrupted(pending))
    return _merge_tool_messages(repaired)


def _interrupted(call_ids: Sequence[str]) -> Message:
    results = [ToolResult(call_id, INTERRUPTED_RESULT, is_error=True) for call_id in call_ids]
    return Message.tool_outputs(results)


def _merge_tool_messages(messages: list[Message]) -> list[Message]:
    merged: list[Message] = []
    for message in messages:
        if message.role == "tool" and merged and merged[-1].role == "tool":
            merged[-1] = Message.tool_outputs([*merged[-1].tool_results, *message.tool_results])
        else:
            merged.append(message)
    return merged


def reply_budget(provider: LLMProvider, options: dict[str, Any]) -> int:
    """The tokens the reply may use: the call's `max_tokens`, else the provider's default."""
    if "max_tokens" in options:
        return int(options["max_tokens"])
    defaults = getattr(provider, "defaults", None)
    return int(getattr(defaults, "max_tokens", getattr(provider, "max_tokens", DEFAULT_MAX_TOKENS)))


def _starts_clean(entries: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    # A window starts on a user message: Anthropic refuses any other first message, and a
    # tool result or answer without what came before it means little.
    kept = list(entries)
    while kept and kept[0].message.role != "user":
        kept.pop(0)
    return kept


async def build_messages(
    provider: LLMProvider,
    system: str,
    entries: Sequence[HistoryEntry],
    tools: Sequence[ToolSpec],
    options: dict[str, Any],
    *,
    shrink: float = 1.0,
) -> list[Message]:
    """The messages of the next call: the system prompt and the newest entries that fit.

    `shrink` (0 < shrink <= 1) keeps only that share of the earlier messages that fit, after
    the provider said the last attempt was too long. The current exchange (from the last user
    message on) is always kept; when even that does not fit, `ContextTooLongError` says so.
    """
    window = int(getattr(provider, "context_window", 0) or 0)
    entries = _starts_clean(entries)
    messages = [entry.message for entry in entries]
    current = max((i for i, m in enumerate(messages) if m.role == "user"), default=0)
    start = 0
    if window > 0:
        start = await _first_that_fits(provider, system, messages, current, tools, options, window)
    start = current - int((current - start) * shrink)
    kept = _starts_clean(entries[start:])
    return [Message.system(system), *repair_tool_calls([e.message for e in kept])]


async def _first_that_fits(
    provider: LLMProvider,
    system: str,
    messages: list[Message],
    current: int,
    tools: Sequence[ToolSpec],
    options: dict[str, Any],
    window: int,
) -> int:
    """The index of the oldest message that fits with everything after it."""
    fixed_texts = [system, *(_tool_text(tool) for tool in tools)]
    texts = [message_text(m) for m in messages]
    budget = int(window * (1 - SAFETY_MARGIN)) - reply_budget(provider, options)
    # Upper bound without a tokenizer: a byte-level token never covers less than one byte.
    all_texts = [*fixed_texts, *texts]
    if sum(len(t.encode()) for t in all_texts) + 8 * len(all_texts) <= budget:
        return 0
    counter = getattr(provider, "count_tokens", None)  # a user's own provider may lack it
    counts = await counter(all_texts) if counter else [estimate_tokens(t) for t in all_texts]
    room = budget - sum(counts[: len(fixed_texts)])
    message_counts = counts[len(fixed_texts) :]
    # The current exchange (from the last user message on) must fit; older ones fill the rest.
    room -= sum(message_counts[current:])
    if room < 0:
        raise ContextTooLongError(
            f"the message does not fit the model's {window}-token context"
            " with the system prompt, the tools and the reply's max_tokens",
            hint="send a shorter message, lower max_tokens, or use a model with a larger context",
        )
    start = current
    while start > 0 and message_counts[start - 1] <= room:
        start -= 1
        room -= message_counts[start]
    return start

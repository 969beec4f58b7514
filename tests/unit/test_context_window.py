"""What a model call sees: tool calls repaired, the window cut to the context, the current
exchange always kept."""

from __future__ import annotations

import pytest

from gathering.agents.context_window import (
    INTERRUPTED_RESULT,
    build_messages,
    repair_tool_calls,
)
from gathering.agents.conversation_store import HistoryEntry
from gathering.agents.model_adapter import ClientProvider, is_provider
from gathering.errors import ContextTooLongError
from gathering.llm import Message, ScriptedProvider, ToolCall, ToolResult, ToolSpec


def _call(call_id: str) -> ToolCall:
    return ToolCall(call_id, "add", {"a": 1})


def test_an_unanswered_call_gets_an_interrupted_error_result():
    messages = [
        Message.user("add"),
        Message.assistant("", [_call("c1"), _call("c2")]),
        Message.tool_outputs([ToolResult("c1", "2")]),
        Message.user("still there?"),
    ]
    repaired = repair_tool_calls(messages)
    assert [m.role for m in repaired] == ["user", "assistant", "tool", "user"]
    results = repaired[2].tool_results
    assert [r.call_id for r in results] == ["c1", "c2"]
    assert results[1].is_error and results[1].content == INTERRUPTED_RESULT
    assert "interrupted: the outcome is unknown" in INTERRUPTED_RESULT


def test_a_call_left_open_at_the_end_and_orphan_results_are_repaired():
    messages = [
        Message.tool_outputs([ToolResult("gone", "x")]),  # its call is outside the window
        Message.user("go"),
        Message.assistant("", [_call("c3")]),
    ]
    repaired = repair_tool_calls(messages)
    assert [m.role for m in repaired] == ["user", "assistant", "tool"]
    assert repaired[-1].tool_results[0].call_id == "c3"


def _entries(count: int, size: int) -> list[HistoryEntry]:
    entries = []
    for i in range(count):
        entries.append(HistoryEntry(Message.user(f"q{i} " + "x" * size)))
        entries.append(HistoryEntry(Message.assistant(f"a{i} " + "y" * size)))
    return entries


async def test_the_window_fits_the_context_and_keeps_the_newest_messages():
    provider = ScriptedProvider(["ok"], context_window=1_000)
    entries = [*_entries(20, 400), HistoryEntry(Message.user("latest"))]
    messages = await build_messages(provider, "system", entries, [], {"max_tokens": 200})
    counts = await provider.count_tokens([m.content for m in messages])
    assert sum(counts) <= 1_000 - 200
    assert messages[0].role == "system" and messages[1].role == "user"
    assert messages[-1].content == "latest"
    assert len(messages) < len(entries)


async def test_shrinking_sends_fewer_messages():
    provider = ScriptedProvider(["ok"], context_window=4_000)
    entries = [*_entries(20, 200), HistoryEntry(Message.user("latest"))]
    full = await build_messages(provider, "s", entries, [], {"max_tokens": 100})
    half = await build_messages(provider, "s", entries, [], {"max_tokens": 100}, shrink=0.5)
    assert len(half) < len(full)
    assert half[-1].content == "latest"


async def test_a_message_larger_than_the_context_is_a_clear_error():
    provider = ScriptedProvider(["ok"], context_window=600)
    entries = [HistoryEntry(Message.user("z" * 10_000))]
    tools = [ToolSpec("add", "Add numbers")]
    with pytest.raises(ContextTooLongError, match="does not fit"):
        await build_messages(provider, "s", entries, tools, {"max_tokens": 100})


async def test_a_small_window_still_fits_without_counting():
    provider = ScriptedProvider(["ok"])  # 128k tokens: the byte bound says it fits
    entries = _entries(3, 10)
    messages = await build_messages(provider, "s", entries, [], {})
    assert len(messages) == 1 + len(entries)


def test_only_real_providers_pass_unwrapped():
    from unittest.mock import Mock

    assert is_provider(ScriptedProvider(["x"]))
    assert not is_provider(Mock())
    wrapped = ClientProvider(Mock(), name="openai", model="gpt-4o")
    assert wrapped.context_window > 0 and wrapped.name == "openai"

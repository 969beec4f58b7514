"""How the stub reads a provider request, and the real APIs' checks it repeats.

The stub is strict like the real APIs: tool calls and tool results that do not pair up get the
provider's own 400 message (`anthropic_problem`, `openai_problem`). `message_chars` is the
stub's measure of a prompt ("tokens" are characters), and `scripted_calls` reads the
``CALL <tool> <json arguments>`` lines with which a user message asks for tool calls.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]
"""A decoded JSON request body."""

_CALL_LINE = re.compile(r"^CALL\s+(\S+)\s*(.*)$")

# --- reading a request -----------------------------------------------------------------


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text of its text blocks / parts."""
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in _blocks(content) if b.get("type") == "text")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message that has any (tool-result turns have none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _text(message.get("content"))
            if text:
                return text
    return ""


def reply_text(body: Body) -> str:
    """What the stub answers in words: an echo of the last user text."""
    return f"Echo: {last_user_text(body.get('messages', []))}"


def message_chars(body: Body) -> int:
    """Characters of every message text, tool input and tool result (and Anthropic's system)."""
    total = len(_text(body.get("system")))
    for message in body.get("messages", []):
        content = message.get("content")
        total += len(_text(content))
        for block in _blocks(content):
            if block.get("type") == "tool_use":
                total += len(json.dumps(block.get("input", {})))
            elif block.get("type") == "tool_result":
                total += len(_text(block.get("content")))
        for call in message.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments", "")
            total += len(arguments if isinstance(arguments, str) else json.dumps(arguments))
    return total


def _offered_tools(body: Body) -> set[Any]:
    names: set[Any] = set()
    for tool in body.get("tools") or ():
        function = tool.get("function")
        names.add(function.get("name") if isinstance(function, dict) else tool.get("name"))
    return names


def scripted_calls(body: Body) -> list[tuple[str, str]] | None:
    """The ``(tool name, raw JSON arguments)`` the last message asks for with CALL lines, or
    None when it asks for none, names a tool not offered, or is not a user message."""
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "user":
        return None
    last = messages[-1]
    if any(block.get("type") == "tool_result" for block in _blocks(last.get("content"))):
        return None
    text = _text(last.get("content")).strip()
    if not text.startswith("CALL "):
        return None
    calls = []
    for line in text.splitlines():
        match = _CALL_LINE.match(line.strip())
        if match:
            calls.append((match.group(1), match.group(2).strip() or "{}"))
    offered = _offered_tools(body)
    if not calls or any(name not in offered for name, _ in calls):
        return None
    return calls


def object_arguments(calls: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]] | None:
    """The calls with their arguments parsed, or None if any is not a JSON object."""
    parsed = []
    for name, raw in calls:
        try:
            arguments = json.loads(raw)
        except json.JSONDecodeError:
            return None
        if not isinstance(arguments, dict):
            return None
        parsed.append((name, arguments))
    return parsed


# --- the real APIs' validation ------------------------------------------------------------


def anthropic_problem(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> str | None:
    """Anthropic's 400 message for tool_use / tool_result blocks that do not pair up, or that
    come in a request defining no tools."""
    if not tools and any(
        b.get("type") in ("tool_use", "tool_result")
        for message in messages
        for b in _blocks(message.get("content"))
    ):
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    for index, message in enumerate(messages):
        blocks = _blocks(message.get("content"))
        if message.get("role") == "assistant":
            used = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
            following = messages[index + 1] if index + 1 < len(messages) else {}
            answered = {
                b.get("tool_use_id")
                for b in _blocks(following.get("content"))
                if following.get("role") == "user" and b.get("type") == "tool_result"
            }
            missing = [str(call_id) for call_id in used if call_id not in answered]
            if missing:
                return (
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                    "a corresponding `tool_result` block in the next message."
                )
        elif message.get("role") == "user":
            previous = messages[index - 1] if index > 0 else {}
            used_before = {
                b.get("id")
                for b in _blocks(previous.get("content"))
                if previous.get("role") == "assistant" and b.get("type") == "tool_use"
            }
            for position, block in enumerate(blocks):
                if (
                    block.get("type") == "tool_result"
                    and block.get("tool_use_id") not in used_before
                ):
                    return (
                        f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous message."
                    )
    return None


def openai_problem(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """OpenAI's 400 ``(message, param)`` for tool_calls and tool messages that do not pair up."""
    open_calls: set[str] | None = None  # ids of the assistant message the tool run answers
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if open_calls is None:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                return (
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    f"messages.[{index}].tool_call_id",
                )
            continue
        open_calls = None
        if role == "assistant" and message.get("tool_calls"):
            ids = [call.get("id") for call in message["tool_calls"]]
            answered = set()
            for following in messages[index + 1 :]:
                if following.get("role") != "tool":
                    break
                answered.add(following.get("tool_call_id"))
            missing = [call_id for call_id in ids if call_id not in answered]
            if missing:
                return (
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(missing)}",
                    f"messages.[{index}].role",
                )
            open_calls = set(ids)
    return None


@dataclass(frozen=True, slots=True)
class StubRequest:
    """One request the stub received, as sent: method, path, headers (lower-case names), body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body decoded as JSON (None for an empty body)."""
        return json.loads(self.body) if self.body else None

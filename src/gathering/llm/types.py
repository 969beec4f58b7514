"""Provider-neutral types: messages, tool specs and calls, completions, usage, stream events.

Every provider translates these to and from its own wire format, so the rest of GatheRing
never sees an SDK type.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from gathering.errors import InvalidInputError

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset(get_args(Role))

StopReason = Literal["end", "tool_calls", "max_tokens", "stop_sequence", "content_filter", "other"]

# Anthropic and OpenAI both restrict tool names to this pattern.
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def new_call_id() -> str:
    """A fresh tool-call id, for providers (Ollama, local) whose wire format has none."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and a JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def __post_init__(self) -> None:
        if not _TOOL_NAME.match(self.name):
            raise InvalidInputError(
                f"invalid tool name {self.name!r}",
                hint="use 1-64 letters, digits, '_' or '-'",
            )
        if not isinstance(self.parameters, Mapping) or self.parameters.get("type") != "object":
            raise InvalidInputError(
                f"tool {self.name!r}: parameters must be a JSON Schema with type 'object'",
            )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool to be run. `id` links it to its `ToolResult`.

    `invalid_arguments` holds the raw text when the model produced arguments that are not a
    JSON object; `arguments` is then empty and the caller should answer with an error result.
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    invalid_arguments: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        body: dict[str, Any] = {"id": self.id, "name": self.name, "arguments": dict(self.arguments)}
        if self.invalid_arguments is not None:
            body["invalid_arguments"] = self.invalid_arguments
        return body


def parse_tool_arguments(call_id: str, name: str, raw: str | None) -> ToolCall:
    """Build a `ToolCall` from arguments sent as a JSON string (OpenAI, streamed deltas)."""
    if raw is None or not raw.strip():
        return ToolCall(id=call_id, name=name)
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return ToolCall(id=call_id, name=name, invalid_arguments=raw)
    if not isinstance(parsed, dict):
        return ToolCall(id=call_id, name=name, invalid_arguments=raw)
    return ToolCall(id=call_id, name=name, arguments=parsed)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The output of a tool, sent back to the model under the id of the call it answers."""

    call_id: str
    content: str
    is_error: bool = False
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        body: dict[str, Any] = {"call_id": self.call_id, "content": self.content}
        if self.is_error:
            body["is_error"] = True
        if self.name is not None:
            body["name"] = self.name
        return body


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation.

    `tool_calls` only appear on assistant messages, `tool_results` only (and always) on tool
    messages; one tool message may answer several calls.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidInputError(
                f"invalid message role {self.role!r}", hint=f"use one of {sorted(ROLES)}"
            )
        if not isinstance(self.content, str):
            raise InvalidInputError("message content must be a string")
        if self.tool_calls and self.role != "assistant":
            raise InvalidInputError(f"a {self.role} message cannot carry tool calls")
        if self.role == "tool" and not self.tool_results:
            raise InvalidInputError("a tool message needs at least one tool result")
        if self.tool_results and self.role != "tool":
            raise InvalidInputError(f"a {self.role} message cannot carry tool results")

    @classmethod
    def system(cls, content: str) -> Message:
        """A system prompt."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        """A user turn."""
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: Sequence[ToolCall] = ()) -> Message:
        """An assistant turn, possibly asking for tools."""
        return cls("assistant", content, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, call_id: str, content: str, *, is_error: bool = False) -> Message:
        """The answer to one tool call."""
        return cls("tool", tool_results=(ToolResult(call_id, content, is_error),))

    @classmethod
    def tool_outputs(cls, results: Sequence[ToolResult]) -> Message:
        """The answers to several tool calls of one assistant turn."""
        return cls("tool", tool_results=tuple(results))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, read back by `Message.from_dict`."""
        body: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            body["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_results:
            body["tool_results"] = [result.to_dict() for result in self.tool_results]
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Read a message written by `to_dict`; malformed input raises `InvalidInputError`."""
        try:
            calls = tuple(
                ToolCall(
                    id=str(call["id"]),
                    name=str(call["name"]),
                    arguments=dict(call.get("arguments") or {}),
                    invalid_arguments=call.get("invalid_arguments"),
                )
                for call in data.get("tool_calls") or ()
            )
            results = tuple(
                ToolResult(
                    call_id=str(result["call_id"]),
                    content=str(result["content"]),
                    is_error=bool(result.get("is_error", False)),
                    name=result.get("name"),
                )
                for result in data.get("tool_results") or ()
            )
            return cls(
                role=data["role"],
                content=data.get("content") or "",
                tool_calls=calls,
                tool_results=results,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed message: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens consumed by one call (or, summed, by many)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """What one `generate` call produced.

    `latency` is the wall time of the call in seconds, retries included; `cost_usd` is the
    estimate from `gathering.llm.pricing` (None when the model is not in the price table).
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    stop_reason: StopReason = "end"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    latency: float = 0.0
    cost_usd: float | None = None

    @property
    def message(self) -> Message:
        """This reply as an assistant message, ready to append to the conversation."""
        return Message("assistant", self.text, tool_calls=self.tool_calls)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text."""

    text: str
    kind: ClassVar[str] = "text_delta"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call: the first delta of a call carries its id and name, later ones
    carry more of the JSON arguments. `index` numbers the calls of one reply from 0."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""
    kind: ClassVar[str] = "tool_call_delta"


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """Token usage, once the provider reports it."""

    usage: Usage
    kind: ClassVar[str] = "usage"


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The last event of every stream: the whole completion, as `generate` would return it."""

    completion: Completion
    kind: ClassVar[str] = "done"


StreamEvent = TextDelta | ToolCallDelta | UsageEvent | StreamDone

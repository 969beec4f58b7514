"""The stub's answers at the real wire shapes: Anthropic Messages, OpenAI Chat Completions and
Ollama chat, each as one JSON body or as its stream (SSE, NDJSON), and each API's real error
bodies for a request it would refuse.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from gathering.testing.wire_requests import (
    Body,
    anthropic_problem,
    message_chars,
    object_arguments,
    openai_problem,
)

WireFormat = Literal["anthropic", "openai", "ollama"]


@dataclass(frozen=True, slots=True)
class StubResponse:
    """A response sent as given. `chunks`, when set, go out one network write each (chunked
    transfer) before `body`; `delay` seconds pass before anything is sent."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class WireAnswer:
    """What to answer, whatever the format: words, or tool calls as ``(name, raw JSON
    arguments)``. Formats whose arguments must be an object answer `text` when they are not."""

    text: str
    calls: tuple[tuple[str, str], ...] = ()


def wire_format(path: str) -> WireFormat | None:
    """The API a request path belongs to, or None for a path the stub does not serve."""
    if path.endswith("/v1/messages"):
        return "anthropic"
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/api/chat"):
        return "ollama"
    return None


def json_response(status: int, payload: Any) -> StubResponse:
    """`payload` as a JSON body."""
    return StubResponse(status, json.dumps(payload).encode())


def _stream(content_type: str, parts: list[str]) -> StubResponse:
    return StubResponse(200, "".join(parts).encode(), content_type)


def new_id(prefix: str) -> str:
    """An id shaped like the providers' own (`msg_…`, `call_…`, `toolu_…`)."""
    return prefix + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def _halves(text: str) -> list[str]:
    middle = len(text) // 2
    return [part for part in (text[:middle], text[middle:]) if part]


def _words(text: str) -> list[str]:
    words = [word + " " for word in text.split(" ")]
    words[-1] = words[-1].rstrip()
    return words


# --- refusals -----------------------------------------------------------------------------


def _anthropic_error(message: str) -> StubResponse:
    return json_response(
        400,
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message},
            "request_id": new_id("req_"),
        },
    )


def _openai_error(message: str, param: str | None, code: str | None) -> StubResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json_response(400, {"error": error})


def refusal(api: WireFormat, body: Body, context_limit_chars: int | None) -> StubResponse | None:
    """The error the real API gives this request (tool traffic that does not pair up, a prompt
    over the context limit), or None when it would answer."""
    chars = message_chars(body)
    too_long = context_limit_chars is not None and chars > context_limit_chars
    messages = body.get("messages") or []
    if api == "anthropic":
        problem = anthropic_problem(messages, body.get("tools"))
        if problem:
            return _anthropic_error(problem)
        if too_long:
            return _anthropic_error(
                f"prompt is too long: {chars} tokens > {context_limit_chars} maximum"
            )
    elif api == "openai":
        pairing = openai_problem(messages)
        if pairing:
            return _openai_error(*pairing, None)
        if too_long:
            return _openai_error(
                f"This model's maximum context length is {context_limit_chars} tokens. However, "
                f"your messages resulted in {chars} tokens. Please reduce the length of the "
                "messages.",
                "messages",
                "context_length_exceeded",
            )
    elif too_long:
        return json_response(400, {"error": "the input length exceeds the context length"})
    return None


# --- answers ------------------------------------------------------------------------------


def answer(api: WireFormat, body: Body, reply: WireAnswer) -> StubResponse:
    """`reply` in the format of `api`, streamed when the request asks for a stream."""
    if api == "anthropic":
        return _anthropic(body, reply)
    if api == "openai":
        return _openai(body, reply)
    return _ollama(body, reply)


def _anthropic(body: Body, reply: WireAnswer) -> StubResponse:
    model = body.get("model", "claude")
    words = _words(reply.text)
    calls = object_arguments(list(reply.calls)) if reply.calls else None
    blocks: list[dict[str, Any]]
    if calls:
        blocks = [
            {"type": "tool_use", "id": new_id("toolu_"), "name": name, "input": args}
            for name, args in calls
        ]
        stop_reason, output_tokens = "tool_use", 10 * len(blocks)
    else:
        blocks = [{"type": "text", "text": reply.text}]
        stop_reason, output_tokens = "end_turn", len(words)
    message = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "stop_sequence": None,
    }
    if not body.get("stream"):
        usage = {"input_tokens": 12, "output_tokens": output_tokens}
        return json_response(
            200, {**message, "content": blocks, "stop_reason": stop_reason, "usage": usage}
        )
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(blocks):
        if calls:
            opening, deltas = (
                {**block, "input": {}},
                [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in _halves(json.dumps(block["input"]))
                ],
            )
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": word} for word in words]
        events.append({"type": "content_block_start", "index": index, "content_block": opening})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]
    return _stream(
        "text/event-stream", [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]
    )


def _openai(body: Body, reply: WireAnswer) -> StubResponse:
    model = body.get("model", "gpt")
    words = _words(reply.text)
    calls: list[dict[str, Any]] = [
        {"id": new_id("call_"), "type": "function", "function": {"name": name, "arguments": raw}}
        for name, raw in reply.calls
    ]
    output_tokens = 10 * len(calls) if calls else len(words)
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": output_tokens,
        "total_tokens": 12 + output_tokens,
    }
    finish = "tool_calls" if calls else "stop"
    base = {"id": new_id("chatcmpl-"), "created": int(time.time()), "model": model}
    if not body.get("stream"):
        message: dict[str, Any] = (
            {"role": "assistant", "content": None, "tool_calls": calls}
            if calls
            else {"role": "assistant", "content": reply.text}
        )
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        return json_response(
            200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        )
    chunk = {**base, "object": "chat.completion.chunk"}

    def delta(content: dict[str, Any]) -> dict[str, Any]:
        return {**chunk, "choices": [{"index": 0, "delta": content, "finish_reason": None}]}

    chunks: list[dict[str, Any]] = []
    if calls:
        for index, call in enumerate(calls):
            name = call["function"]["name"]
            opening = {**call, "index": index, "function": {"name": name, "arguments": ""}}
            first = {"tool_calls": [opening]}
            chunks.append(
                delta({"role": "assistant", "content": None, **first} if index == 0 else first)
            )
            chunks += [
                delta({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                for part in _halves(call["function"]["arguments"])
            ]
    else:
        chunks = [delta({"role": "assistant", "content": word}) for word in words]
    chunks.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**chunk, "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return _stream("text/event-stream", lines)


def _ollama(body: Body, reply: WireAnswer) -> StubResponse:
    model = body.get("model", "llama3.2")
    stamp = "2026-01-01T00:00:00.000000Z"
    words = _words(reply.text)
    calls = object_arguments(list(reply.calls)) if reply.calls else None
    final = {
        "model": model,
        "created_at": stamp,
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000,
        "load_duration": 10,
        "prompt_eval_count": 12,
        "prompt_eval_duration": 100,
        "eval_count": len(words),
        "eval_duration": 500,
    }
    if calls:
        tool_calls = [{"function": {"name": name, "arguments": args}} for name, args in calls]
        messages = [{"role": "assistant", "content": "", "tool_calls": tool_calls}]
    else:
        messages = [{"role": "assistant", "content": word} for word in words]
    if body.get("stream") is False:
        whole = messages[0] if calls else {"role": "assistant", "content": reply.text}
        return json_response(200, {**final, "message": whole})
    lines = [
        json.dumps({"model": model, "created_at": stamp, "message": m, "done": False}) + "\n"
        for m in messages
    ]
    lines.append(json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n")
    return _stream("application/x-ndjson", lines)

"""A local HTTP server that answers like Anthropic, OpenAI and Ollama, with their real payload
shapes (JSON, SSE and NDJSON streams), so tests run agents on those providers with no network
and no key.

- It echoes the last user text: ``Echo: <text>``.
- It is strict like the real APIs: a tool call left unanswered, or a tool result answering no
  call, gets the provider's real HTTP 400 body.
- With `context_limit_chars` set, a request whose messages hold more characters than that gets
  the provider's real context-length error (the stub's "tokens" are characters).
- A last user message ``CALL <tool> <json arguments>`` (one such line per call) is answered
  with those tool calls, fresh ids each time, when the request offers every named tool. Once
  the tool results come back, the answer is the echo again. OpenAI gets the arguments text
  as written (so invalid JSON can be scripted); Anthropic and Ollama need a JSON object and
  fall back to the echo otherwise.

Every request is logged in `requests` as ``(path, body)``; `reset()` clears the log and the
context limit.

`hold(text)` keeps the answer to a last user message ``text`` until the returned `Hold` is
released (its `arrived` is set when such a request came in), so a test can keep a turn running.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CALL_LINE = re.compile(r"^CALL\s+(\S+)\s*(.*)$")

Body = dict[str, Any]


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


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message that has any (tool-result turns have none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _text(message.get("content"))
            if text:
                return text
    return ""


def reply_text(body: Body) -> str:
    """What the stub answers in words: an echo of the last user text."""
    return f"Echo: {_last_user_text(body.get('messages', []))}"


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


def _offered_tools(body: Body) -> set[str]:
    names = set()
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


def _object_arguments(calls: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]] | None:
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


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def _halves(text: str) -> list[str]:
    middle = len(text) // 2
    return [part for part in (text[:middle], text[middle:]) if part]


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
            missing = [call_id for call_id in used if call_id not in answered]
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


# --- answering ----------------------------------------------------------------------------


class Hold:
    """A held answer: `arrived` is set when the request came; `release()` lets it answer."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        stub = self.server.stub
        stub.requests.append((self.path, body))
        hold = stub.holds.get(_last_user_text(body.get("messages") or []))
        if hold is not None:
            hold.arrived.set()
            hold.released.wait(60)
        text = reply_text(body)
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        limit = stub.context_limit_chars
        chars = message_chars(body)
        too_long = chars if limit is not None and chars > limit else 0  # 0: it fits
        if self.path.endswith("/v1/messages"):
            self._anthropic(body, text, words, too_long, limit)
        elif self.path.endswith("/chat/completions"):
            self._openai(body, text, words, too_long, limit)
        elif self.path.endswith("/api/chat"):
            self._ollama(body, text, words, too_long)
        else:
            self._send_json(404, {"error": f"no route {self.path}"})

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, content_type: str, chunks: list[str]) -> None:
        data = "".join(chunks).encode()
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # Anthropic Messages API

    def _anthropic_error(self, message: str) -> None:
        self._send_json(
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": message},
                "request_id": _new_id("req_"),
            },
        )

    def _anthropic(
        self, body: Body, text: str, words: list[str], too_long: int, limit: int | None
    ) -> None:
        problem = anthropic_problem(body.get("messages") or [], body.get("tools"))
        if problem:
            self._anthropic_error(problem)
            return
        if too_long:
            self._anthropic_error(f"prompt is too long: {too_long} tokens > {limit} maximum")
            return
        model = body.get("model", "claude")
        requested = scripted_calls(body)
        calls = _object_arguments(requested) if requested else None
        blocks: list[dict[str, Any]]
        if calls:
            blocks = [
                {"type": "tool_use", "id": _new_id("toolu_"), "name": name, "input": args}
                for name, args in calls
            ]
            stop_reason, output_tokens = "tool_use", 10 * len(blocks)
        else:
            blocks = [{"type": "text", "text": text}]
            stop_reason, output_tokens = "end_turn", len(words)
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    "id": _new_id("msg_"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": output_tokens},
                },
            )
            return
        events: list[tuple[str, dict[str, Any]]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": _new_id("msg_"),
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 12, "output_tokens": 1},
                    },
                },
            )
        ]
        if calls:
            for index, block in enumerate(blocks):
                events.append(
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {**block, "input": {}},
                        },
                    )
                )
                events += [
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": part},
                        },
                    )
                    for part in _halves(json.dumps(block["input"]))
                ]
                events.append(
                    ("content_block_stop", {"type": "content_block_stop", "index": index})
                )
        else:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            events += [
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": w},
                    },
                )
                for w in words
            ]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events += [
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._send_stream(
            "text/event-stream",
            [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events],
        )

    # OpenAI Chat Completions

    def _openai_error(self, message: str, param: str | None, code: str | None) -> None:
        self._send_json(
            400,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": param,
                    "code": code,
                }
            },
        )

    def _openai(
        self, body: Body, text: str, words: list[str], too_long: int, limit: int | None
    ) -> None:
        problem = openai_problem(body.get("messages") or [])
        if problem:
            self._openai_error(*problem, None)
            return
        if too_long:
            self._openai_error(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"messages resulted in {too_long} tokens. Please reduce the length of the "
                "messages.",
                "messages",
                "context_length_exceeded",
            )
            return
        model = body.get("model", "gpt")
        calls = [
            {
                "id": _new_id("call_"),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for name, arguments in scripted_calls(body) or ()
        ]
        output_tokens = 10 * len(calls) if calls else len(words)
        usage = {
            "prompt_tokens": 12,
            "completion_tokens": output_tokens,
            "total_tokens": 12 + output_tokens,
        }
        finish = "tool_calls" if calls else "stop"
        base = {"id": _new_id("chatcmpl-"), "created": int(time.time()), "model": model}
        if not body.get("stream"):
            message: dict[str, Any] = (
                {"role": "assistant", "content": None, "tool_calls": calls}
                if calls
                else {"role": "assistant", "content": text}
            )
            self._send_json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                    ],
                    "usage": usage,
                },
            )
            return
        chunk = {**base, "object": "chat.completion.chunk"}

        def delta(content: dict[str, Any]) -> dict[str, Any]:
            return {**chunk, "choices": [{"index": 0, "delta": content, "finish_reason": None}]}

        if calls:
            chunks = []
            for index, call in enumerate(calls):
                opening = {
                    **call,
                    "index": index,
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                first = {"tool_calls": [opening]}
                chunks.append(
                    delta({"role": "assistant", "content": None, **first} if index == 0 else first)
                )
                chunks += [
                    delta({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                    for part in _halves(call["function"]["arguments"])
                ]
        else:
            chunks = [delta({"role": "assistant", "content": w}) for w in words]
        chunks.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**chunk, "choices": [], "usage": usage})
        lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        self._send_stream("text/event-stream", lines)

    # Ollama native chat API

    def _ollama(self, body: Body, text: str, words: list[str], too_long: int) -> None:
        if too_long:
            self._send_json(400, {"error": "the input length exceeds the context length"})
            return
        model = body.get("model", "llama3.2")
        stamp = "2026-01-01T00:00:00.000000Z"
        requested = scripted_calls(body)
        calls = _object_arguments(requested) if requested else None
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
            message = {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": name, "arguments": args}} for name, args in calls
                ],
            }
            if body.get("stream") is False:
                self._send_json(200, {**final, "message": message})
                return
            lines = [
                json.dumps({"model": model, "created_at": stamp, "message": message, "done": False})
                + "\n"
            ]
        else:
            if body.get("stream") is False:
                self._send_json(200, {**final, "message": {"role": "assistant", "content": text}})
                return
            lines = [
                json.dumps(
                    {
                        "model": model,
                        "created_at": stamp,
                        "message": {"role": "assistant", "content": w},
                        "done": False,
                    }
                )
                + "\n"
                for w in words
            ]
        lines.append(json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n")
        self._send_stream("application/x-ndjson", lines)


class _StubHTTPServer(ThreadingHTTPServer):
    stub: LLMStubServer


class LLMStubServer:
    """Run the stub on 127.0.0.1 in a background thread: `with LLMStubServer() as stub: ...`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.context_limit_chars: int | None = None
        self.holds: dict[str, Hold] = {}
        self._server = _StubHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget the logged requests, lift the context limit and release every hold."""
        self.requests.clear()
        self.context_limit_chars = None
        for hold in self.holds.values():
            hold.release()
        self.holds.clear()

    def hold(self, text: str) -> Hold:
        """Keep the answer to a last user message `text` until the hold is released."""
        self.holds[text] = hold = Hold()
        return hold

    def start(self) -> LLMStubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LLMStubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """Environment variables that point every provider at this stub."""
        return {
            "ANTHROPIC_API_KEY": "sk-ant-stub",
            "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_API_KEY": "sk-stub",
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OLLAMA_HOST": self.url,
        }

"""A local HTTP server that answers like Anthropic, OpenAI and Ollama, with their real payload
shapes (JSON, SSE and NDJSON streams). It echoes the last user message, so tests can run
agents on those providers with no network and no key.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def reply_text(body: dict[str, Any]) -> str:
    """What the stub answers: an echo of the last user message."""
    return f"Echo: {_last_user_text(body.get('messages', []))}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, body))  # type: ignore[attr-defined]
        text = reply_text(body)
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        if self.path.endswith("/v1/messages"):
            self._anthropic(body, text, words)
        elif self.path.endswith("/chat/completions"):
            self._openai(body, text, words)
        elif self.path.endswith("/api/chat"):
            self._ollama(body, text, words)
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

    def _anthropic(self, body: dict[str, Any], text: str, words: list[str]) -> None:
        model = body.get("model", "claude")
        usage = {"input_tokens": 12, "output_tokens": len(words)}
        if not body.get("stream"):
            self._send_json(200, {
                "id": "msg_stub", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": usage,
            })
            return
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_stub", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}})]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": w}})
                   for w in words]
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"output_tokens": len(words)}}),
                   ("message_stop", {"type": "message_stop"})]
        self._send_stream("text/event-stream",
                          [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events])

    def _openai(self, body: dict[str, Any], text: str, words: list[str]) -> None:
        model = body.get("model", "gpt")
        usage = {"prompt_tokens": 12, "completion_tokens": len(words),
                 "total_tokens": 12 + len(words)}
        base = {"id": "chatcmpl-stub", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            self._send_json(200, {**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop", "logprobs": None}], "usage": usage})
            return
        chunk = {**base, "object": "chat.completion.chunk"}
        chunks = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": w},
                                         "finish_reason": None}]} for w in words]
        chunks.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**chunk, "choices": [], "usage": usage})
        lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        self._send_stream("text/event-stream", lines)

    def _ollama(self, body: dict[str, Any], text: str, words: list[str]) -> None:
        model = body.get("model", "llama3.2")
        stamp = "2026-01-01T00:00:00.000000Z"
        final = {"model": model, "created_at": stamp, "done": True, "done_reason": "stop",
                 "total_duration": 1000, "load_duration": 10, "prompt_eval_count": 12,
                 "prompt_eval_duration": 100, "eval_count": len(words), "eval_duration": 500}
        if body.get("stream") is False:
            self._send_json(200, {**final, "message": {"role": "assistant", "content": text}})
            return
        lines = [json.dumps({"model": model, "created_at": stamp,
                             "message": {"role": "assistant", "content": w}, "done": False})
                 + "\n" for w in words]
        lines.append(json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n")
        self._send_stream("application/x-ndjson", lines)


class LLMStubServer:
    """Run the stub on 127.0.0.1 in a background thread: `with LLMStubServer() as stub: ...`."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.requests = []  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        return self._server.requests  # type: ignore[attr-defined,no-any-return]

    def start(self) -> LLMStubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def environment(self) -> dict[str, str]:
        """Environment variables that point every provider at this stub."""
        return {
            "ANTHROPIC_API_KEY": "sk-ant-stub", "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_API_KEY": "sk-stub", "OPENAI_BASE_URL": f"{self.url}/v1",
            "OLLAMA_HOST": self.url,
        }

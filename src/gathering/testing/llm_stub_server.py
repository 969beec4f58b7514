"""`LLMStubServer`: a local HTTP server that answers like Anthropic, OpenAI and Ollama.

The real SDKs talk to it over TCP and parse real bytes. Each request gets, in this order:

1. the next queued response, if any: a raw one (`add_json`, `add_sse`, `add_ndjson`, sent as
   given) or a reply (`add_reply`, rendered at the wire shape of the API that was called);
2. otherwise, for a last user message ``CALL <tool> <json arguments>`` (one line per call)
   naming tools the request offers, those tool calls;
3. otherwise an echo of the last user text: ``Echo: <text>``.

Before 2 and 3 (and before a queued reply), it refuses what the real API refuses, with the
real HTTP 400 body: tool calls and tool results that do not pair up, and (with
`context_limit_chars` set) a prompt longer than that many characters.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gathering.llm.types import ToolCall
from gathering.testing.wire_replies import (
    StubResponse,
    WireAnswer,
    answer,
    json_response,
    refusal,
    wire_format,
)
from gathering.testing.wire_requests import StubRequest, last_user_text, reply_text, scripted_calls

StubReply = str | ToolCall | Sequence[ToolCall]
"""What `add_reply` takes: text, or one or more tool calls (see `gathering.llm.tool_call`)."""


class Hold:
    """A held answer: `arrived` is set when the request came; `release()` lets it answer."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        """Let the held request be answered."""
        self.released.set()


def _as_answer(reply: StubReply) -> WireAnswer:
    if isinstance(reply, str):
        return WireAnswer(reply)
    calls = [reply] if isinstance(reply, ToolCall) else list(reply)
    if not calls or not all(isinstance(call, ToolCall) for call in calls):
        raise TypeError(f"not a stub reply (text or tool calls): {reply!r}")
    return WireAnswer("", tuple((call.name, json.dumps(dict(call.arguments))) for call in calls))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = StubRequest(self.command, self.path, headers, raw)
        try:
            response = self.server.stub.respond(request)
            if response.delay:
                time.sleep(response.delay)  # this thread serves only this request
            self._send(response)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout under test)

    def _send(self, response: StubResponse) -> None:
        self.send_response(response.status)
        self.send_header("content-type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.chunks is None:
            self.send_header("content-length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in [*response.chunks, response.body]:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    stub: LLMStubServer


class LLMStubServer:
    """The stub on 127.0.0.1 (a free port), served from background threads.

    >>> with LLMStubServer() as stub:
    ...     provider = OpenAIProvider("gpt-4o", api_key="k", base_url=f"{stub.url}/v1")

    Every request is logged in `requests` (`last` is the latest). `environment()` gives the
    variables that point every provider at the stub.
    """

    def __init__(self) -> None:
        self.requests: list[StubRequest] = []
        self.context_limit_chars: int | None = None
        """Refuse prompts of more characters than this, as the API refuses too many tokens."""
        self.holds: dict[str, Hold] = {}
        self._queue: deque[StubResponse | WireAnswer] = deque()
        self._lock = threading.Lock()
        self._server = _StubHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def last(self) -> StubRequest:
        """The latest request; raises `LookupError` before the first."""
        if not self.requests:
            raise LookupError("the stub has received no request")
        return self.requests[-1]

    def environment(self) -> dict[str, str]:
        """Environment variables that point every provider (key and address) at this stub."""
        return {
            "ANTHROPIC_API_KEY": "sk-ant-stub",
            "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_API_KEY": "sk-stub",
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OLLAMA_HOST": self.url,
        }

    # --- what to answer --------------------------------------------------------------------

    def add_reply(self, *replies: StubReply) -> None:
        """Queue replies (text, or tool calls), each sent in the format of the API it answers."""
        answers = [_as_answer(reply) for reply in replies]
        with self._lock:
            self._queue.extend(answers)

    def add_json(
        self,
        body: Any,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Queue a JSON response (`body` as bytes is sent as it is)."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._enqueue(StubResponse(status, payload, headers=headers or {}, delay=delay))

    def add_sse(self, text: str) -> None:
        """Queue a server-sent-events body, sent one event per network write."""
        events = [(event + "\n\n").encode() for event in text.strip().split("\n\n")]
        self._enqueue(StubResponse(content_type="text/event-stream", chunks=events))

    def add_ndjson(self, text: str) -> None:
        """Queue a newline-delimited JSON body, sent one line per network write."""
        lines = [(line + "\n").encode() for line in text.strip().splitlines()]
        self._enqueue(StubResponse(content_type="application/x-ndjson", chunks=lines))

    def hold(self, text: str) -> Hold:
        """Keep the answer to a last user message `text` until the hold is released."""
        self.holds[text] = hold = Hold()
        return hold

    def reset(self) -> None:
        """Forget the logged requests and queued responses, lift the context limit and
        release every hold."""
        with self._lock:
            self._queue.clear()
        self.requests.clear()
        self.context_limit_chars = None
        for hold in self.holds.values():
            hold.release()
        self.holds.clear()

    def _enqueue(self, response: StubResponse) -> None:
        with self._lock:
            self._queue.append(response)

    def respond(self, request: StubRequest) -> StubResponse:
        """The response to `request` (called by the server for each request it receives)."""
        self.requests.append(request)
        with self._lock:
            head = self._queue[0] if self._queue else None
            if isinstance(head, StubResponse):
                self._queue.popleft()
                return head
        api = wire_format(request.path)
        if api is None:
            return json_response(404, {"error": f"no route {request.path}"})
        try:
            body = request.json
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return json_response(400, {"error": "the body is not a JSON object"})
        hold = self.holds.get(last_user_text(body.get("messages") or []))
        if hold is not None:
            hold.arrived.set()
            hold.released.wait(60)
        refused = refusal(api, body, self.context_limit_chars)
        if refused is not None:
            return refused
        with self._lock:
            queued = self._queue.popleft() if self._queue else None
        if isinstance(queued, WireAnswer):
            return answer(api, body, queued)
        if queued is not None:  # a raw response queued while this request was held
            return queued
        calls = scripted_calls(body)
        return answer(api, body, WireAnswer(reply_text(body), tuple(calls or ())))

    # --- running ---------------------------------------------------------------------------

    def start(self) -> LLMStubServer:
        """Serve in a background thread; returns the server."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LLMStubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

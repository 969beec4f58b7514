"""A pass-through HTTP proxy in front of the LLM stub that a test can close: while closed, each
request waits at the gate (counted in `held`) until the test opens it again, so a model call
can be made to last exactly as long as a test needs, with no sleep and no clock.

    gate = Gate(stub.url).start()          # point ANTHROPIC_BASE_URL / OPENAI_BASE_URL here
    gate.close()
    ...                                    # a model call arrives and waits
    assert gate.wait_held(1)
    gate.open()                            # forwarded to the stub; or open(forward=False): 503
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GateServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        gate = self.server.gate
        try:
            if not gate.pass_through():
                self._send(503, "application/json", json.dumps({"error": "gate dropped"}).encode())
                return
            request = urllib.request.Request(
                gate.target + self.path,
                data=body,
                method="POST",
                headers={"content-type": self.headers.get("content-type", "application/json")},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    status, data = response.status, response.read()
                    content_type = response.headers.get("content-type", "application/json")
            except urllib.error.HTTPError as error:
                status, data = error.code, error.read()
                content_type = error.headers.get("content-type", "application/json")
            self._send(status, content_type, data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller is gone (killed while it waited)

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _GateServer(ThreadingHTTPServer):
    daemon_threads = True
    gate: Gate


class Gate:
    """A proxy to `target` on 127.0.0.1 that holds requests while closed."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.held = 0
        self._closed = False
        self._forward = True
        self._generation = 0
        self._condition = threading.Condition()
        self._server = _GateServer(("127.0.0.1", 0), _Handler)
        self._server.gate = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def environment(self) -> dict[str, str]:
        """Provider variables that send Anthropic and OpenAI calls through this gate."""
        return {
            "ANTHROPIC_API_KEY": "sk-ant-stub",
            "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_API_KEY": "sk-stub",
            "OPENAI_BASE_URL": f"{self.url}/v1",
        }

    def start(self) -> Gate:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.open(forward=False)
        self._server.shutdown()
        self._server.server_close()

    def close(self) -> None:
        """Hold every request that arrives from now on."""
        with self._condition:
            self._closed = True

    def open(self, *, forward: bool = True) -> None:
        """Let held and later requests through (`forward=False`: answer held ones 503)."""
        with self._condition:
            self._closed = False
            self._forward = forward
            self._generation += 1
            self._condition.notify_all()

    def wait_held(self, count: int = 1, timeout: float = 30) -> bool:
        """Whether `count` requests are waiting at the gate within `timeout` seconds."""
        with self._condition:
            return self._condition.wait_for(lambda: self.held >= count, timeout)

    def pass_through(self) -> bool:
        """Called by the handler: wait while closed; whether to forward the request."""
        with self._condition:
            if not self._closed:
                return True
            generation = self._generation
            self.held += 1
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._generation != generation)
            self.held -= 1
            return self._forward

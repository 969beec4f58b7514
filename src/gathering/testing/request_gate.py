"""`RequestGate`: a pass-through HTTP proxy (in front of an `LLMStubServer`, say) that a test
can close. While closed, each request waits at the gate (counted in `held`) until the test
opens it again, so a model call lasts exactly as long as a test needs, with no sleep and no
clock; the gate can also be opened to refuse what waits (HTTP 503), as a dead upstream would.

    gate = RequestGate(stub.url).start()   # point ANTHROPIC_BASE_URL / OPENAI_BASE_URL here
    gate.close()
    ...                                    # a model call arrives and waits
    assert gate.wait_held(1)
    gate.open()                            # forwarded to the stub; or open(forward=False): 503
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


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
            upstream = http.client.HTTPConnection(gate.host, gate.port, timeout=60)
            try:
                content_type = self.headers.get("content-type", "application/json")
                upstream.request("POST", self.path, body, {"content-type": content_type})
                response = upstream.getresponse()
                data = response.read()
                self._send(response.status, response.getheader("content-type", content_type), data)
            finally:
                upstream.close()
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
    gate: RequestGate


class RequestGate:
    """A proxy to `target` on 127.0.0.1 (a free port) that holds requests while closed."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        address = urlsplit(self.target)
        if address.scheme != "http" or not address.hostname or address.path:
            raise ValueError(f"the gate forwards to an http://host:port address, not {target!r}")
        self.host, self.port = address.hostname, address.port or 80
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
        """The gate's base URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def environment(self) -> dict[str, str]:
        """Provider variables that send Anthropic and OpenAI calls through this gate."""
        return {
            "ANTHROPIC_API_KEY": "sk-ant-stub",
            "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_API_KEY": "sk-stub",
            "OPENAI_BASE_URL": f"{self.url}/v1",
        }

    def start(self) -> RequestGate:
        """Serve in a background thread; returns the gate."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Answer what waits with 503, stop serving and close the socket."""
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
        """Wait while the gate is closed; whether to forward the request (the handler calls
        this for each request)."""
        with self._condition:
            if not self._closed:
                return True
            generation = self._generation
            self.held += 1
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._generation != generation)
            self.held -= 1
            return self._forward

"""A real HTTP server on 127.0.0.1 that replays recorded provider payloads.

The SDKs under test send real requests over TCP and parse real bytes (JSON bodies, SSE,
NDJSON); each test queues the responses it wants and inspects the requests it caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gathering.config import get_settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "llm"


class Recorded:
    """Recorded provider payloads from tests/fixtures/llm."""

    def text(self, name: str) -> str:
        return (FIXTURES / name).read_text()

    def json(self, name: str) -> Any:
        return json.loads(self.text(name))


@dataclass
class StubResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class StubServer:
    def __init__(self) -> None:
        self.base_url = ""
        self.responses: deque[StubResponse] = deque()
        self.requests: list[RecordedRequest] = []

    def reset(self) -> None:
        self.responses.clear()
        self.requests.clear()

    def add_json(
        self,
        body: Any,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.responses.append(
            StubResponse(status=status, body=payload, headers=headers or {}, delay=delay)
        )

    def add_sse(self, text: str) -> None:
        """An SSE body, sent one event per network write."""
        events = [event + "\n\n" for event in text.strip().split("\n\n")]
        self.responses.append(
            StubResponse(content_type="text/event-stream", chunks=[e.encode() for e in events])
        )

    def add_ndjson(self, text: str) -> None:
        """An NDJSON body, sent one line per network write."""
        lines = [line + "\n" for line in text.strip().splitlines()]
        self.responses.append(
            StubResponse(content_type="application/x-ndjson", chunks=[ln.encode() for ln in lines])
        )

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(RecordedRequest(scope["method"], scope["path"], headers, body))
        if self.responses:
            response = self.responses.popleft()
        else:
            response = StubResponse(status=599, body=b'{"error": "no stub response queued"}')
        with contextlib.suppress(Exception):
            if response.delay:
                await asyncio.sleep(response.delay)
            raw_headers = [(b"content-type", response.content_type.encode())]
            raw_headers += [(k.encode(), v.encode()) for k, v in response.headers.items()]
            await send(
                {"type": "http.response.start", "status": response.status, "headers": raw_headers}
            )
            for chunk in response.chunks or []:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": response.body})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Leave pytest's signal handlers alone.
        yield


@pytest.fixture(scope="session")
async def stub_server_session() -> AsyncIterator[StubServer]:
    stub = StubServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        stub.app,
        interface="asgi3",
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    stub.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield stub
    server.should_exit = True
    await task


@pytest.fixture
def stub(stub_server_session: StubServer) -> StubServer:
    stub_server_session.reset()
    return stub_server_session


@pytest.fixture(scope="session")
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No API key anywhere in the environment, and settings re-read without them."""
    for name in (
        "ANTHROPIC_API_KEY",
        "GATHERING_ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GATHERING_OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "GATHERING_OPENAI_BASE_URL",
        "GATHERING_DEFAULT_PROVIDER",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def strict_stub(llm_stub):  # type: ignore[no-untyped-def]
    """The session's strict provider stub (tests/_support/llm_stub.py), reset around the test."""
    llm_stub.reset()
    yield llm_stub
    llm_stub.reset()

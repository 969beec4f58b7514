"""Request body limits, as attacks on the real app: oversized, chunked, lying and malformed
bodies get 413 / 400 before anything reads or parses them, and the app never sees more than
the limit (see src/gathering/api/body_limit.py)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from gathering.api.app import create_app
from gathering.api.body_limit import BodyLimitMiddleware
from gathering.config import load_settings

KEY = "k" * 64
MIB = 1024 * 1024
CHUNK = 64 * 1024
AGENT = {"name": "Ada", "provider": "openai", "model": "gpt-4o"}


class RecordingBody:
    """A streamed request body of `total` bytes that records how much the server pulled."""

    def __init__(self, total: int, chunk: int = CHUNK, fill: bytes = b" ") -> None:
        self.total = total
        self.chunk = chunk
        self.fill = fill
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            size = min(self.chunk, self.total - self.pulled)
            self.pulled += size
            yield self.fill * size


def with_sink(application: FastAPI) -> list[int]:
    """Add `POST /sink`, which streams the body; returns the running byte counts it saw."""
    seen: list[int] = []

    @application.post("/sink")
    async def sink(request: Request) -> dict[str, int]:
        async for chunk in request.stream():
            seen.append((seen[-1] if seen else 0) + len(chunk))
        return {"bytes": seen[-1] if seen else 0}

    return seen


def client_for(application: FastAPI, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://test", **kwargs
    )


def assert_too_large(response: httpx.Response, limit: int, setting: str) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "urn:gathering:error:request_too_large"
    assert body["code"] == "request_too_large" and body["status"] == 413
    assert body["max_bytes"] == limit
    assert f"({limit} bytes)" in body["detail"] and setting in body["hint"]
    # The 413 went through the usual middleware: request id and security headers.
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.fixture
def single(app_for):
    return app_for()


@pytest.fixture
def multi(app_for):
    return app_for(auth="required", secret_key=KEY)


ESCAPED_CHAR_BYTES = 12  # "\\udb0e\\udefb": one character as a JSON-escaped surrogate pair


def _string_limits(node, schemas, seen=()):
    """The maxLength of every string a request body schema can hold."""
    if isinstance(node, dict):
        name = node.get("$ref", "").rsplit("/", 1)[-1]
        if name and name not in seen:
            yield from _string_limits(schemas[name], schemas, (*seen, name))
        if node.get("type") == "string" and "maxLength" in node:
            yield node["maxLength"]
        for key, value in node.items():
            if key != "$ref":
                yield from _string_limits(value, schemas, seen)
    elif isinstance(node, list):
        for value in node:
            yield from _string_limits(value, schemas, seen)


def test_every_string_the_schema_allows_fits_in_its_paths_body_limit():
    """Else a client sending the longest allowed text gets 413, and one sending text a little
    too long gets 413 instead of the 422 that names the field."""
    settings = load_settings()
    limits = BodyLimitMiddleware(
        None, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes
    )
    spec = create_app(testing=True).openapi()
    checked = 0
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            body = operation.get("requestBody")
            for longest in _string_limits(body, spec["components"]["schemas"]) if body else ():
                assert (longest + 1) * ESCAPED_CHAR_BYTES + 1024 < limits.limit_for(path), path
                checked += 1
    assert checked > 20


def test_the_defaults_are_one_and_twenty_five_mib(monkeypatch):
    monkeypatch.delenv("GATHERING_MAX_BODY_BYTES", raising=False)
    monkeypatch.delenv("GATHERING_MAX_UPLOAD_BYTES", raising=False)
    settings = load_settings()
    assert (settings.max_body_bytes, settings.max_upload_bytes) == (MIB, 25 * MIB)
    monkeypatch.setenv("GATHERING_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("GATHERING_MAX_UPLOAD_BYTES", "4096")
    settings = load_settings()
    assert (settings.max_body_bytes, settings.max_upload_bytes) == (2048, 4096)


async def test_an_anonymous_oversized_body_gets_413_before_authentication(multi):
    async with client_for(multi) as client:
        small = await client.post("/agents", json=AGENT)
        assert small.status_code == 401  # the route does need credentials

        payload = json.dumps({**AGENT, "system_prompt": "x" * (2 * MIB)}).encode()
        response = await client.post(
            "/agents", content=payload, headers={"content-type": "application/json"}
        )
        assert_too_large(response, MIB, "GATHERING_MAX_BODY_BYTES")

        # Nothing of the body was read, let alone parsed: the server never pulled a byte.
        body = RecordingBody(2 * MIB)
        response = await client.post(
            "/agents",
            content=body,
            headers={"content-type": "application/json", "content-length": str(2 * MIB)},
        )
        assert_too_large(response, MIB, "GATHERING_MAX_BODY_BYTES")
        assert body.pulled == 0


async def test_a_browser_on_an_allowed_origin_can_read_the_413(migrated_database_url):
    origin = "https://app.example.com"
    settings = load_settings(database_url=migrated_database_url, cors_origins=origin)
    application = create_app(settings=settings)
    try:
        async with client_for(application) as client:
            response = await client.post(
                "/agents", content=b" " * (2 * MIB), headers={"origin": origin}
            )
    finally:
        await application.state.gathering.close()
    assert_too_large(response, MIB, "GATHERING_MAX_BODY_BYTES")
    assert response.headers["access-control-allow-origin"] == origin


async def test_a_chunked_body_over_the_limit_is_cut_off_as_it_arrives(single):
    seen = with_sink(single)
    async with client_for(single) as client:
        body = RecordingBody(4 * MIB)
        response = await client.post("/sink", content=body)
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
    assert_too_large(response, MIB, "GATHERING_MAX_BODY_BYTES")
    assert seen and seen[-1] <= MIB  # the app never got more than the limit
    assert body.pulled <= MIB + CHUNK  # and reading stopped at the chunk that passed it


async def test_a_chunked_json_body_over_the_limit_never_reaches_the_route(single):
    payload = json.dumps({**AGENT, "system_prompt": "x" * (2 * MIB)}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), CHUNK):
            yield payload[start : start + CHUNK]

    async with client_for(single) as client:
        response = await client.post(
            "/agents", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_too_large(response, MIB, "GATHERING_MAX_BODY_BYTES")
        assert (await client.get("/agents")).json() == []


async def test_a_body_at_the_limit_is_processed_normally(single):
    seen = with_sink(single)
    payload = json.dumps(AGENT).encode()
    padded = payload + b" " * (MIB - 1 - len(payload))  # valid JSON, one byte under the limit
    async with client_for(single) as client:
        created = await client.post(
            "/agents", content=padded, headers={"content-type": "application/json"}
        )
        assert created.status_code == 201, created.text
        assert created.json()["name"] == "Ada"

        exactly = await client.post("/sink", content=RecordingBody(MIB))
        assert exactly.status_code == 200, exactly.text
        assert exactly.json() == {"bytes": MIB}
        assert seen[-1] == MIB


async def test_a_lying_content_length_is_no_way_around_the_count(single):
    seen = with_sink(single)
    async with client_for(single) as client:
        in_one_piece = await client.post(
            "/agents",
            content=b" " * (2 * MIB),
            headers={"content-type": "application/json", "content-length": "2"},
        )
        assert_too_large(in_one_piece, MIB, "GATHERING_MAX_BODY_BYTES")

        body = RecordingBody(4 * MIB)
        streamed = await client.post("/sink", content=body, headers={"content-length": "10"})
        assert streamed.request.headers["content-length"] == "10"
    assert_too_large(streamed, MIB, "GATHERING_MAX_BODY_BYTES")
    assert seen and seen[-1] <= MIB
    assert body.pulled <= MIB + CHUNK


@pytest.mark.parametrize(
    "values",
    [["abc"], ["-1"], ["+5"], ["1e3"], [""], ["5", "6"], ["5, 6"], ["5,"], ["0x10"]],
)
async def test_a_malformed_content_length_is_400(single, values):
    seen = with_sink(single)
    headers = [("content-length", value) for value in values]
    async with client_for(single) as client:
        response = await client.post("/sink", content=RecordingBody(5), headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "invalid_input"
    assert "Content-Length" in body["detail"] and body["hint"]
    assert response.headers["x-request-id"] and response.headers["connection"] == "close"
    assert seen == []


async def test_repeating_the_same_content_length_is_allowed(single):
    with_sink(single)
    headers = [("content-length", "5"), ("content-length", "5, 5")]
    async with client_for(single) as client:
        response = await client.post("/sink", content=b"hello", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": 5}


async def test_the_knowledge_upload_route_takes_more_than_the_body_limit(migrated_database_url):
    settings = load_settings(database_url=migrated_database_url, max_upload_bytes=2 * MIB)
    application = create_app(settings=settings)
    words = "the quick brown fox jumps over the lazy dog. "
    try:
        async with client_for(application) as client:
            content = words * (int(1.5 * MIB) // len(words))
            document = {"title": "Big", "content": content}
            added = await client.post("/memories/knowledge", json=document)
            assert added.status_code == 201, added.text[:500]
            assert len(json.dumps(document)) > MIB

            elsewhere = await client.post("/agents", json={**AGENT, "system_prompt": content})
            assert_too_large(elsewhere, MIB, "GATHERING_MAX_BODY_BYTES")

            too_big = await client.post(
                "/memories/knowledge", json={"title": "Bigger", "content": content * 2}
            )
            assert_too_large(too_big, 2 * MIB, "GATHERING_MAX_UPLOAD_BYTES")
    finally:
        await application.state.gathering.close()


async def test_websocket_and_lifespan_scopes_pass_through_untouched():
    calls: list[str] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        calls.append(scope["type"])

    async def receive() -> dict[str, object]:
        raise AssertionError("the middleware must not read a non-HTTP scope")

    async def send(message) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("the middleware must not answer a non-HTTP scope")

    middleware = BodyLimitMiddleware(app, max_body_bytes=1024, max_upload_bytes=1024)
    headers = [(b"content-length", b"999999")]
    await middleware({"type": "websocket", "path": "/ws", "headers": headers}, receive, send)
    await middleware({"type": "lifespan"}, receive, send)
    assert calls == ["websocket", "lifespan"]


# --- over a real server -------------------------------------------------------------------------


@pytest.fixture
async def served(single):
    """`single` (with `/sink`) served by uvicorn on a free loopback port."""
    seen = with_sink(single)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(single, lifespan="off", log_config=None, log_level="warning")
    )
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        assert not task.done(), "uvicorn stopped during start-up"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    await task
    listener.close()


async def test_a_real_server_cuts_off_chunked_and_refuses_declared_oversized_bodies(served):
    base, seen = served
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        chunked = RecordingBody(8 * MIB)
        response = await client.post("/sink", content=chunked)
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_too_large(response, MIB, "GATHERING_MAX_BODY_BYTES")
        assert seen and seen[-1] <= MIB  # the app never got more than the limit
        seen.clear()

        # The client sends its whole body before it reads: the server discards the rest of
        # it (unbuffered), so the client sees the 413 rather than a reset connection.
        declared = await client.post("/sink", content=b" " * (8 * MIB))
        assert_too_large(declared, MIB, "GATHERING_MAX_BODY_BYTES")
        assert seen == []

        # ... and the connection is still good for the next request.
        fine = await client.post("/sink", content=b"hello")
        assert fine.status_code == 200 and fine.json() == {"bytes": 5}

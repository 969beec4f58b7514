"""`gathering mcp serve`: real server processes, driven by the MCP SDK's own client.

Over stdio (the SDK starts the command) and over streamable HTTP (on a free port), in
single-user and in multi-user mode. Agents run the ollama provider against the local stub
server, so a chat turn goes through the real provider code at the wire; everything else is
our real database.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpcore2  # noqa: F401 - imported by the SDK's first HTTP client, which reads files
import httpx
import httpx2
import jsonschema  # noqa: F401 - imported by the SDK's client at its first tool result, too
import pytest
from live_server import environment, free_port
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from gathering.agents import (
    Agent,
    KnowledgeBase,
    LongTermMemory,
    PostgresAgentStore,
)
from gathering.auth.api_keys import ApiKeyStore
from gathering.auth.revocation import RevocationCache, RevocationStore
from gathering.auth.sessions import SessionStore
from gathering.auth.tokens import TokenService, new_token_id
from gathering.auth.users import UserStore
from gathering.db import Database
from gathering.testing import LLMStubServer

SECRET_KEY = "mcp-test-" + "k" * 64
SERVE = [sys.executable, "-m", "gathering", "mcp", "serve"]
TOOLS = {"list_agents", "chat_with_agent", "search_knowledge", "recall_memories"}


def _env(database_url: str, stub: LLMStubServer, **extra: str | None) -> dict[str, str]:
    """The environment of a server process: this test's database, providers at the stub."""
    return environment(
        GATHERING_DATABASE_URL=database_url,
        DATABASE_URL=database_url,
        GATHERING_LOG_LEVEL="WARNING",
        **stub.environment(),
        **extra,
    )


def _text(result: CallToolResult) -> str:
    return "".join(part.text for part in result.content if isinstance(part, TextContent))


def _mcp_errors(error: BaseException) -> list[MCPError]:
    """The `MCPError`s in `error`, however deep in exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [found for inner in error.exceptions for found in _mcp_errors(inner)]
    return [error] if isinstance(error, MCPError) else []


def _results(result: CallToolResult) -> list[dict[str, Any]]:
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    items: list[dict[str, Any]] = result.structured_content["result"]
    return items


async def _seed(db: Database, owner_id: int | None, name: str) -> int:
    """An agent named `name` of `owner_id` (None: the local owner), with a memory and a
    document of its owner; returns the agent's id."""
    agent = Agent(name, "ollama", "llama3.2", store=PostgresAgentStore(db), owner_id=owner_id)
    await agent.save()
    assert agent.id is not None and agent.owner_id is not None
    memory = LongTermMemory(db, agent_id=agent.id, owner_id=agent.owner_id)
    await memory.remember(f"{name} prefers green tea in the morning", kind="preference")
    knowledge = KnowledgeBase(db, owner_id=agent.owner_id)
    await knowledge.add_document(
        f"{name} runbook", f"To restart the {name} cluster, drain the nodes first.", category="ops"
    )
    return agent.id


# --- processes ---------------------------------------------------------------------------------


@dataclass
class HttpServer:
    process: subprocess.Popen[str]
    port: int
    output: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def printed(self) -> str:
        self.output.seek(0)
        return str(self.output.read())


def _wait_listening(server: HttpServer, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the MCP server exited during start-up:\n{server.printed()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", server.port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"the MCP server did not listen on {server.port}:\n{server.printed()}")


def _stop(server: HttpServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
    server.output.close()


def _start(env: dict[str, str], args: tuple[str, ...]) -> HttpServer:
    port = free_port()
    output = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [*SERVE, "--transport", "http", "--port", str(port), *args],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = HttpServer(process, port, output)
    try:
        _wait_listening(server)
    except BaseException:
        _stop(server)
        raise
    return server


@asynccontextmanager
async def http_server(env: dict[str, str], *args: str) -> AsyncIterator[HttpServer]:
    """`gathering mcp serve --transport http` on a free port, until the block ends."""
    server = await asyncio.to_thread(_start, env, args)
    try:
        yield server
    finally:
        await asyncio.to_thread(_stop, server)


def _stdio(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=SERVE[0], args=SERVE[1:], env=env)


def _bearer(url: str, credential: str) -> Any:
    """A streamable HTTP transport sending `Authorization: Bearer <credential>`."""
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {credential}"})
    return streamable_http_client(url, http_client=client)


@pytest.fixture(scope="module")
def stub() -> Iterator[LLMStubServer]:
    with LLMStubServer() as server:
        yield server


# --- single-user mode --------------------------------------------------------------------------


async def test_stdio_server_offers_each_tool_and_stores_the_chat(
    migrated_database_url: str, stub: LLMStubServer
) -> None:
    async with Database(url=migrated_database_url) as db:
        sophie = await _seed(db, None, "Sophie")

        async with Client(_stdio(_env(migrated_database_url, stub))) as client:
            listed = await client.list_tools()
            assert {tool.name for tool in listed.tools} == TOOLS

            agents = _results(await client.call_tool("list_agents", {}))
            assert [(a["id"], a["name"], a["provider"]) for a in agents] == [
                (sophie, "Sophie", "ollama")
            ]

            reply = await client.call_tool(
                "chat_with_agent", {"agent": "Sophie", "message": "hello over stdio"}
            )
            assert not reply.is_error, _text(reply)
            assert _text(reply) == "Echo: hello over stdio"
            # By id too; the conversation goes on.
            again = await client.call_tool(
                "chat_with_agent", {"agent": str(sophie), "message": "and again"}
            )
            assert _text(again) == "Echo: and again"

            passages = _results(
                await client.call_tool("search_knowledge", {"query": "restart the cluster"})
            )
            assert passages and passages[0]["document_title"] == "Sophie runbook"

            memories = _results(
                await client.call_tool("recall_memories", {"agent": "Sophie", "query": "green tea"})
            )
            assert [m["content"] for m in memories] == ["Sophie prefers green tea in the morning"]

            missing = await client.call_tool(
                "chat_with_agent", {"agent": "Nobody", "message": "hi"}
            )
            assert missing.is_error
            assert "agent 'Nobody' not found" in _text(missing)
            assert "list_agents" in _text(missing)  # what to do

        # The turns were stored, as an API chat stores them.
        store = PostgresAgentStore(db)
        session = await store.latest_session(sophie)
        assert session is not None
        history = [(e.role, e.message.content) for e in await store.history(session)]
        assert history == [
            ("user", "hello over stdio"),
            ("assistant", "Echo: hello over stdio"),
            ("user", "and again"),
            ("assistant", "Echo: and again"),
        ]


async def test_http_server_serves_the_tools_on_loopback_behind_the_api_defences(
    migrated_database_url: str, stub: LLMStubServer
) -> None:
    async with Database(url=migrated_database_url) as db:
        await _seed(db, None, "Ada")
    env = _env(migrated_database_url, stub)
    async with http_server(env) as server:
        assert f"MCP server on {server.url}" in await asyncio.to_thread(server.printed)
        async with Client(server.url) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            reply = await client.call_tool(
                "chat_with_agent", {"agent": "ada", "message": "hello over http"}
            )
            assert _text(reply) == "Echo: hello over http", _text(reply)
            memories = _results(
                await client.call_tool("recall_memories", {"agent": "Ada", "query": "tea"})
            )
            assert len(memories) == 1
        # A client on the initialize handshake (as the desktop clients are) works as well.
        async with Client(server.url, mode="legacy") as client:
            agents = _results(await client.call_tool("list_agents", {}))
            assert [a["name"] for a in agents] == ["Ada"]

        async with httpx.AsyncClient(timeout=10) as http:
            initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
            # DNS rebinding: a foreign Host is refused, as the API refuses it.
            foreign = await http.post(server.url, json=initialize, headers={"Host": "evil.test"})
            assert foreign.status_code == 400
            assert foreign.json()["code"] == "host_not_allowed"
            # A cross-site browser request is refused.
            cross = await http.post(
                server.url, json=initialize, headers={"Origin": "https://evil.test"}
            )
            assert cross.status_code == 403
            # The body cap (GATHERING_MAX_BODY_BYTES, 1 MiB by default).
            big = await http.post(
                server.url,
                content=json.dumps({"pad": "x" * (1024 * 1024 + 1)}),
                headers={"Content-Type": "application/json"},
            )
            assert big.status_code == 413
            assert big.json()["code"] == "request_too_large"
    assert server.process.returncode == 0  # SIGTERM: a clean stop


async def test_http_server_refuses_a_non_loopback_bind_in_single_user_mode(
    migrated_database_url: str, stub: LLMStubServer
) -> None:
    env = _env(migrated_database_url, stub)
    command = [*SERVE, "--transport", "http"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "single-user mode has no login" in done.stderr
    assert "hint:" in done.stderr


# --- multi-user mode ---------------------------------------------------------------------------


@dataclass
class Accounts:
    ada_id: int
    bob_id: int
    ada_agent: int
    bob_agent: int
    ada_key: str
    ada_key_id: int
    bob_key: str
    bob_key_id: int


async def _accounts(db: Database) -> Accounts:
    users = UserStore(db)
    ada = await users.create("ada@example.com", "correct horse battery")
    bob = await users.create("bob@example.com", "correct horse battery")
    ada_agent = await _seed(db, ada.id, "Helper")
    bob_agent = await _seed(db, bob.id, "Secret")
    keys = ApiKeyStore(db)
    ada_key = await keys.create(ada.id, "mcp", ["*"])
    bob_key = await keys.create(bob.id, "mcp", ["*"])
    return Accounts(
        ada.id,
        bob.id,
        ada_agent,
        bob_agent,
        ada_key.secret,
        ada_key.key.id,
        bob_key.secret,
        bob_key.key.id,
    )


def _tokens() -> TokenService:
    return TokenService(SECRET_KEY.encode(), algorithm="HS256", access_ttl=900, refresh_ttl=86_400)


async def _refused(url: str, credential: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url, json=initialize, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["code"] == "unauthenticated"
    return response


async def test_http_server_in_multi_user_mode_needs_a_valid_credential_per_request(
    migrated_database_url: str, stub: LLMStubServer
) -> None:
    async with Database(url=migrated_database_url) as db:
        accounts = await _accounts(db)
        revocations = RevocationStore(db, RevocationCache(100))
        sessions = SessionStore(db, _tokens(), revocations)
        env = _env(migrated_database_url, stub, GATHERING_AUTH="required", SECRET_KEY=SECRET_KEY)
        async with http_server(env) as server:
            # No credential, a forged token, an expired one: refused before the SDK sees them.
            missing = await _refused(server.url, None)
            assert "Authorization: Bearer" in missing.json()["hint"]
            forged = TokenService(
                b"not-the-key" * 4, algorithm="HS256", access_ttl=900, refresh_ttl=900
            ).issue(accounts.ada_id, "access", new_token_id())
            await _refused(server.url, forged.token)
            expired = _tokens().issue(
                accounts.ada_id, "access", new_token_id(), now=int(time.time()) - 3600
            )
            await _refused(server.url, expired.token)
            await _refused(server.url, "gth_0123456789ab_not-a-key")
            # The SDK's client sees the 401 as an error response (inside its task groups).
            with pytest.raises((MCPError, ExceptionGroup)) as refused:
                async with Client(server.url) as client:
                    await client.list_tools()
            assert _mcp_errors(refused.value)

            # An access token works until its session ends.
            pair = await sessions.start(accounts.ada_id)
            async with Client(_bearer(server.url, pair.access.token)) as client:
                agents = _results(await client.call_tool("list_agents", {}))
                assert [a["name"] for a in agents] == ["Helper"]
                await sessions.end(pair.access.claims, "logout")
                with pytest.raises(MCPError):  # the next request of the same session
                    await client.call_tool("list_agents", {})
            await _refused(server.url, pair.access.token)

            # An API key: Ada's own agents only; Bob's is "not found", by id or by name.
            async with Client(_bearer(server.url, accounts.ada_key)) as client:
                reply = await client.call_tool(
                    "chat_with_agent", {"agent": "Helper", "message": "hi from ada"}
                )
                assert _text(reply) == "Echo: hi from ada", _text(reply)
                for tool, arguments in [
                    ("chat_with_agent", {"agent": str(accounts.bob_agent), "message": "hi"}),
                    ("chat_with_agent", {"agent": "Secret", "message": "hi"}),
                    ("recall_memories", {"agent": str(accounts.bob_agent), "query": "tea"}),
                    ("search_knowledge", {"query": "cluster", "agent": "Secret"}),
                ]:
                    result = await client.call_tool(tool, arguments)
                    assert result.is_error, (tool, _text(result))
                    assert "not found" in _text(result)
                passages = _results(
                    await client.call_tool("search_knowledge", {"query": "cluster"})
                )
                assert {p["document_title"] for p in passages} == {"Helper runbook"}
                memories = _results(
                    await client.call_tool("recall_memories", {"agent": "Helper", "query": "tea"})
                )
                assert [m["content"] for m in memories] == [
                    "Helper prefers green tea in the morning"
                ]

            # A key acts with its scopes only, as on the API.
            reader = await ApiKeyStore(db).create(accounts.ada_id, "reader", ["agents:read"])
            async with Client(_bearer(server.url, reader.secret)) as client:
                assert len(_results(await client.call_tool("list_agents", {}))) == 1
                chat = await client.call_tool(
                    "chat_with_agent", {"agent": "Helper", "message": "x"}
                )
                assert chat.is_error
                assert "lacks the scope 'agents:write'" in _text(chat)

            # A revoked key stops at once.
            await ApiKeyStore(db).revoke(accounts.ada_key_id)
            await _refused(server.url, accounts.ada_key)

        # Bob's agent never heard from Ada.
        store = PostgresAgentStore(db)
        session = await store.latest_session(accounts.bob_agent)
        assert session is None or await store.history(session) == []


async def test_stdio_server_in_multi_user_mode_acts_for_the_user_of_its_api_key(
    migrated_database_url: str, stub: LLMStubServer
) -> None:
    async with Database(url=migrated_database_url) as db:
        accounts = await _accounts(db)
    env = _env(
        migrated_database_url,
        stub,
        GATHERING_AUTH="required",
        SECRET_KEY=SECRET_KEY,
        GATHERING_API_KEY=None,
    )
    command = [*SERVE, "--transport", "stdio"]

    # Without a key, or with one that is not valid, it refuses to start, and says why.
    for key, expected in [(None, "GATHERING_API_KEY is not set"), ("gth_x_y", "is not valid")]:
        done = await asyncio.to_thread(
            subprocess.run,
            command,
            env={**env, "GATHERING_API_KEY": key} if key else env,
            input="",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert expected in done.stderr
        assert "hint:" in done.stderr

    async with Client(_stdio({**env, "GATHERING_API_KEY": accounts.bob_key})) as client:
        agents = _results(await client.call_tool("list_agents", {}))
        assert [a["name"] for a in agents] == ["Secret"]
        stolen = await client.call_tool(
            "chat_with_agent", {"agent": str(accounts.ada_agent), "message": "hi"}
        )
        assert stolen.is_error
        assert f"agent '{accounts.ada_agent}' not found" in _text(stolen)
        reply = await client.call_tool("chat_with_agent", {"agent": "Secret", "message": "yo"})
        assert _text(reply) == "Echo: yo"

        # The key is checked at each call: revoked, it stops working at once.
        async with Database(url=migrated_database_url) as db:
            await ApiKeyStore(db).revoke(accounts.bob_key_id)
        revoked = await client.call_tool("list_agents", {})
        assert revoked.is_error
        assert "GATHERING_API_KEY no longer works" in _text(revoked)

"""What the HTTP tests of tasks and goals share: the test tools (ECHO and a tool that holds
until the test releases it), the app in single-user mode with its lifespan (`api`) or in
multi-user mode without it (`multi`), logins, API keys, agents, and polling a status.

A test module imports the fixtures it uses, with those they depend on, by their function
names (`api_fixture` is the fixture `api`), so that a test's parameter shadows no import."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pipeline_runtime import LAB, TOOLS

from gathering.api.app import create_app
from gathering.auth.users import Role, UserStore
from gathering.config import load_settings
from gathering.llm import ToolCall
from gathering.testing import LLMStubServer
from gathering.tools import function_tool
from gathering.tools import registry as registry_module

PASSWORD = "correct horse battery staple"


async def hold_over_http(key: str) -> str:
    """Wait until the test releases `key` (a write: reported interrupted when cut short)."""
    LAB.calls[key] += 1
    LAB.started_event(key).set()
    await LAB.gates.setdefault(key, asyncio.Event()).wait()
    return f"{key} released"


HOLD = function_tool(hold_over_http, effect="write", timeout=600)
ECHO = TOOLS[0]
TEST_TOOLS = [ECHO, HOLD]


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall("", name, arguments)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def open_every_gate() -> None:
    for gate in list(LAB.gates.values()):
        gate.set()


@pytest.fixture(name="tools")
async def tools_fixture() -> AsyncIterator[None]:
    """The test tools in the process's registry, their counters and gates cleared; taken out
    again after the test."""
    for tool in TEST_TOOLS:
        registry_module.registry.register(tool)
    for state in (LAB.calls, LAB.failures_left, LAB.gates, LAB.started):
        state.clear()
    yield
    for tool in TEST_TOOLS:
        registry_module.registry.unregister(tool.name)


@pytest.fixture(name="stub")
async def stub_fixture(llm_stub_env: LLMStubServer) -> AsyncIterator[LLMStubServer]:
    llm_stub_env.reset()
    yield llm_stub_env
    llm_stub_env.reset()


@pytest.fixture(name="api")
async def api_fixture(
    app_for: Callable[..., FastAPI], stub: LLMStubServer, tools: None
) -> AsyncIterator[httpx.AsyncClient]:
    """Single-user mode, the lifespan running (its worker and its scheduler duty); every gate
    opened after the test, before the app stops."""
    app = app_for()
    async with app.router.lifespan_context(app), client_for(app) as client:
        try:
            yield client
        finally:
            open_every_gate()


def multi_user_app(database_url: str) -> FastAPI:
    return create_app(
        settings=load_settings(database_url=database_url, auth="required", secret_key="k" * 64)
    )


@pytest.fixture(name="multi")
async def multi_fixture(
    migrated_database_url: str, stub: LLMStubServer
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Multi-user mode without its lifespan: no worker, no sweep, so tasks and goals stay
    where they are put."""
    app = multi_user_app(migrated_database_url)
    async with client_for(app) as client:
        yield app, client
    await app.state.gathering.close()


async def login(app: Any, client: httpx.AsyncClient, role: Role = "member") -> dict[str, str]:
    """The headers of a new user with `role`, logged in."""
    email = f"t-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def api_key(
    client: httpx.AsyncClient, headers: dict[str, str], *scopes: str
) -> dict[str, str]:
    """The headers of a new API key with `scopes`, made by the user of `headers`."""
    made = await client.post(
        "/auth/api-keys",
        json={"name": f"k{secrets.token_hex(2)}", "scopes": list(scopes)},
        headers=headers,
    )
    assert made.status_code == 201, made.text
    return {"X-API-Key": made.json()["key"]}


async def keyed_member(
    app: Any, client: httpx.AsyncClient, area: str, *other: str
) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """A member with an agent "Keyed": their login's headers, then those of three API keys of
    theirs: `<area>:read`, `<area>:write` and one with the `other` scopes."""
    member = await login(app, client)
    await make_agent(client, "Keyed", headers=member)
    reader = await api_key(client, member, f"{area}:read")
    writer = await api_key(client, member, f"{area}:write")
    return member, reader, writer, await api_key(client, member, *other)


async def only_the_reader_reads(
    client: httpx.AsyncClient,
    paths: tuple[str, ...],
    reader: dict[str, str],
    *others: dict[str, str],
) -> None:
    """Each GET of `paths` is answered to `reader`, refused (403) to each of `others`."""
    for path in paths:
        assert (await client.get(path, headers=reader)).status_code == 200, path
        for headers in others:
            assert (await client.get(path, headers=headers)).status_code == 403, path


async def make_agent(
    client: httpx.AsyncClient,
    name: str = "Tasker",
    headers: dict[str, str] | None = None,
    tools: tuple[str, ...] = (),
    provider: tuple[str, str] = ("ollama", "llama3.2"),
) -> int:
    """A new agent's id, `tools` enabled for it."""
    made = await client.post(
        "/agents",
        json={"name": name, "provider": provider[0], "model": provider[1]},
        headers=headers,
    )
    assert made.status_code == 201, made.text
    agent_id: int = made.json()["id"]
    for tool in tools:
        enabled = await client.put(
            f"/agents/{agent_id}/tools/{tool}", json={"enabled": True}, headers=headers
        )
        assert enabled.status_code == 200, enabled.text
    return agent_id


async def status_becomes(
    client: httpx.AsyncClient,
    path: str,
    statuses: tuple[str, ...],
    limit: float = 30,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The body at `path` once its status is one of `statuses` (polled for `limit` s)."""
    deadline = time.monotonic() + limit
    while True:
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} is {body['status']}, not {statuses}: {body}")
        await asyncio.sleep(0.05)

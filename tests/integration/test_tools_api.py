"""Tools over HTTP: the list, an agent's tools (off until enabled, on every instance from its
next turn), one-off invocations in the agent's workspace, and an agent using them in a chat."""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx
import pytest
from workspaces import workspace_of

from gathering.api.app import create_app
from gathering.auth.users import UserStore
from gathering.config import load_settings

PASSWORD = "correct horse battery staple"
BUILT_IN = {"apply_patch", "calculator", "list_files", "read_file", "search_files", "write_file"}


async def on_disk(api, agent_id: int, path: str) -> str:
    """A file of the agent's workspace, read off the event loop."""
    return await asyncio.to_thread((await workspace_of(api, agent_id) / path).read_text)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def api(app_for, llm_stub_env):
    async with client_for(app_for()) as client:
        yield client


async def _agent(api, name: str = "Builder") -> int:
    response = await api.post("/agents", json={"name": name, "provider": "openai"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _enable(api, agent_id: int, *names: str) -> None:
    for name in names:
        response = await api.put(f"/agents/{agent_id}/tools/{name}", json={"enabled": True})
        assert response.status_code == 200, response.text


async def test_the_list_shows_each_tool_with_its_schema_and_effect(api):
    listed = {tool["name"]: tool for tool in (await api.get("/tools")).json()}
    assert BUILT_IN <= listed.keys()
    write = listed["write_file"]
    assert write["effect"] == "write" and write["category"] == "files" and write["plugin"] is None
    assert write["parameters"]["required"] == ["path", "content"]
    assert "ctx" not in write["parameters"]["properties"]
    assert listed["read_file"]["effect"] == "read"


async def test_tools_are_off_until_enabled_and_the_change_is_kept(api):
    agent_id = await _agent(api)
    before = {t["name"]: t["enabled"] for t in (await api.get(f"/agents/{agent_id}/tools")).json()}
    assert before.keys() >= BUILT_IN and not any(before.values())
    await _enable(api, agent_id, "calculator")
    off = await api.put(f"/agents/{agent_id}/tools/read_file", json={"enabled": False})
    assert off.json()["enabled"] is False and off.json()["updated_at"]
    after = {t["name"]: t["enabled"] for t in (await api.get(f"/agents/{agent_id}/tools")).json()}
    assert [name for name, on in after.items() if on] == ["calculator"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/agents/{id}/tools/no_such_tool", {"enabled": True}, 404),
        ("/agents/999999/tools/calculator", {"enabled": True}, 404),
        ("/agents/{id}/tools/calculator", {"enabled": "yes"}, 422),
        ("/agents/{id}/tools/calculator", {}, 422),
        ("/agents/{id}/tools/calculator", {"enabled": True, "extra": 1}, 422),
        ("/agents/{id}/tools/bad.name", {"enabled": True}, 422),
    ],
)
async def test_bad_tool_settings_are_refused(api, path, body, status):
    agent_id = await _agent(api)
    response = await api.put(path.format(id=agent_id), json=body)
    assert response.status_code == status, response.text


async def test_invoke_runs_one_call_in_the_agents_workspace(api):
    agent_id = await _agent(api)
    await _enable(api, agent_id, "write_file", "read_file")
    written = await api.post(
        "/tools/write_file/invoke",
        json={"agent_id": agent_id, "arguments": {"path": "notes/a.txt", "content": "hello"}},
    )
    assert written.status_code == 200, written.text
    assert json.loads(written.json()["output"]) == {"path": "notes/a.txt", "bytes": 5}
    assert written.json()["call_id"]
    assert await on_disk(api, agent_id, "notes/a.txt") == "hello"
    read = await api.post(
        "/tools/read_file/invoke", json={"agent_id": agent_id, "arguments": {"path": "notes/a.txt"}}
    )
    assert read.json()["output"] == "hello"


async def test_invoke_refuses_what_the_agent_could_not_do(api):
    agent_id = await _agent(api)
    call = {"agent_id": agent_id, "arguments": {"expression": "1 + 1"}}
    not_enabled = await api.post("/tools/calculator/invoke", json=call)
    assert not_enabled.status_code == 409
    assert f"PUT /agents/{agent_id}/tools/calculator" in not_enabled.json()["hint"]
    await _enable(api, agent_id, "calculator", "read_file")
    assert (await api.post("/tools/calculator/invoke", json=call)).json()["output"] == "2"
    unknown = await api.post("/tools/nope/invoke", json=call)
    assert unknown.status_code == 404
    # Once made, the call answers 200 with the tool's verdict, as the model would read it.
    bad = await api.post(
        "/tools/calculator/invoke", json={"agent_id": agent_id, "arguments": {"expr": "1"}}
    )
    assert bad.status_code == 200 and bad.json()["is_error"] is True
    assert bad.json()["output"] is None
    error = bad.json()["error"]
    assert error["code"] == "invalid_tool_arguments"
    assert {e["path"] for e in error["details"]["errors"]} == {"(arguments)"}
    escape = await api.post(
        "/tools/read_file/invoke",
        json={"agent_id": agent_id, "arguments": {"path": "../../../etc/passwd"}},
    )
    assert escape.json()["is_error"] and escape.json()["error"]["code"] == "path_traversal"
    zero = await api.post(
        "/tools/calculator/invoke", json={"agent_id": agent_id, "arguments": {"expression": "1/0"}}
    )
    assert zero.json()["error"]["message"] == "division by zero"
    other = await api.post(
        "/tools/calculator/invoke", json={"agent_id": 999_999, "arguments": {"expression": "1"}}
    )
    assert other.status_code == 404


async def test_an_agent_uses_its_enabled_tools_in_a_chat(api, llm_stub_env):
    agent_id = await _agent(api)
    await _enable(api, agent_id, "write_file")
    arguments = json.dumps({"path": "plan.md", "content": "# Plan"})
    reply = await api.post(
        f"/agents/{agent_id}/chat", json={"message": f"CALL write_file {arguments}"}
    )
    assert reply.status_code == 200, reply.text
    assert await on_disk(api, agent_id, "plan.md") == "# Plan"
    # Disabled again, the tool is no longer offered to the model (the stub calls only tools
    # the request offers, else echoes), and nothing more is written.
    await api.put(f"/agents/{agent_id}/tools/write_file", json={"enabled": False})
    arguments = json.dumps({"path": "plan.md", "content": "# Changed"})
    again = await api.post(
        f"/agents/{agent_id}/chat", json={"message": f"CALL write_file {arguments}"}
    )
    assert again.status_code == 200 and again.json()["tool_calls"] == []
    assert await on_disk(api, agent_id, "plan.md") == "# Plan"


async def test_a_setting_made_on_one_instance_applies_on_another(app_for, llm_stub_env):
    first, second = app_for(), app_for()
    async with client_for(first) as one, client_for(second) as two:
        agent_id = await _agent(one)
        assert (await two.get(f"/agents/{agent_id}/chat")).status_code == 405  # warm both
        arguments = json.dumps({"path": "x.txt", "content": "from two"})
        await two.post(f"/agents/{agent_id}/chat", json={"message": "hello"})
        await _enable(one, agent_id, "write_file")
        reply = await two.post(
            f"/agents/{agent_id}/chat", json={"message": f"CALL write_file {arguments}"}
        )
        assert reply.status_code == 200
        assert await on_disk(one, agent_id, "x.txt") == "from two"


# --- multi-user mode --------------------------------------------------------------------------


@pytest.fixture
async def multi(migrated_database_url, llm_stub_env):
    app = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key="k" * 64
        )
    )
    async with client_for(app) as client:
        yield app, client
    await app.state.gathering.close()


async def _login(app, client, role: str = "member") -> dict[str, str]:
    email = f"t-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_another_users_agent_is_not_found_and_viewers_cannot_change_or_run(multi):
    app, client = multi
    alice, bob = await _login(app, client), await _login(app, client)
    viewer = await _login(app, client, role="viewer")
    made = await client.post("/agents", json={"name": "A", "provider": "openai"}, headers=alice)
    agent_id = made.json()["id"]
    enable = {"enabled": True}
    assert (
        await client.put(f"/agents/{agent_id}/tools/calculator", json=enable, headers=bob)
    ).status_code == 404
    assert (await client.get(f"/agents/{agent_id}/tools", headers=bob)).status_code == 404
    assert (
        await client.put(f"/agents/{agent_id}/tools/calculator", json=enable, headers=alice)
    ).status_code == 200
    call = {"agent_id": agent_id, "arguments": {"expression": "6 * 7"}}
    assert (
        await client.post("/tools/calculator/invoke", json=call, headers=bob)
    ).status_code == 404
    assert (
        await client.post("/tools/calculator/invoke", json=call, headers=viewer)
    ).status_code == 403
    assert (await client.post("/tools/calculator/invoke", json=call)).status_code == 401
    mine = await client.post("/tools/calculator/invoke", json=call, headers=alice)
    assert mine.json()["output"] == "42"
    assert (await client.get("/tools", headers=viewer)).status_code == 200


async def test_a_nul_in_a_tools_output_is_answered_and_published(api):
    """jsonb refuses NUL: the event keeps U+FFFD in its place, the answer the text itself."""
    agent_id = await _agent(api)
    await _enable(api, agent_id, "write_file", "read_file")
    content = "x" * 9_000 + "\na\u0000b\n"  # past the binary sniff of the first 8 KiB
    arguments = {"path": "nul.txt", "content": content}
    await api.post("/tools/write_file/invoke", json={"agent_id": agent_id, "arguments": arguments})
    read = await api.post(
        "/tools/read_file/invoke",
        json={"agent_id": agent_id, "arguments": {"path": "nul.txt", "offset": 1}},
    )
    assert read.status_code == 200, read.text
    assert read.json()["output"].startswith("a\u0000b")


async def test_a_deleted_agents_files_go_with_it_and_a_namesake_starts_empty(api):
    agent_id = await _agent(api)
    await _enable(api, agent_id, "write_file")
    arguments = {"path": "private/notes.md", "content": "secret"}
    await api.post("/tools/write_file/invoke", json={"agent_id": agent_id, "arguments": arguments})
    workspace = await workspace_of(api, agent_id)
    assert await asyncio.to_thread((workspace / "private" / "notes.md").exists)
    assert (await api.delete(f"/agents/{agent_id}")).status_code == 204
    assert not await asyncio.to_thread(workspace.exists)
    again = await _agent(api)  # a new agent never sees another's folder, whatever its id
    assert await workspace_of(api, again) != workspace

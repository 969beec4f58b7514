"""The MCP client against real MCP server processes (tests/_support/mcp_test_server.py, built
with the SDK's server): servers from the config file and from the API, their tools in the
registry as `<server>__<tool>`, and a server killed mid-session that comes back without the
agent's turn being lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import free_port, serve_on_port
from mcp_types import Tool

from gathering.errors import ConfigurationError, InvalidInputError
from gathering.llm.types import ToolCall
from gathering.tools.mcp import close_mcp_hub
from gathering.tools.mcp.connection import McpConnection
from gathering.tools.mcp.hub import IDLE_SECONDS, McpHub, registry_tool
from gathering.tools.mcp.servers import McpServer, read_config_file

SERVER = Path(__file__).parent.parent / "_support" / "mcp_test_server.py"
STDIO = {"command": sys.executable, "args": [str(SERVER), "stdio"]}


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def mcp_config(tmp_path, settings_env):
    """`mcp_config(servers)` writes GATHERING_MCP_CONFIG for this test."""

    async def write(servers: dict[str, object]) -> Path:
        path = tmp_path / "mcp.json"
        await asyncio.to_thread(path.write_text, json.dumps({"servers": servers}))
        settings_env(mcp_config=path)
        return path

    return write


@pytest.fixture
async def api(app_for, llm_stub_env):
    async with client_for(app_for()) as client:
        yield client
    await close_mcp_hub()  # the lifespan's part (ASGITransport runs no lifespan)


async def _agent(api, name: str = "Mcp") -> int:
    response = await api.post("/agents", json={"name": name, "provider": "openai"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _allow(api, agent_id: int, *names: str) -> None:
    for name in names:
        body = {"enabled": True, "policy": "allow"}
        response = await api.put(f"/agents/{agent_id}/tools/{name}", json=body)
        assert response.status_code == 200, response.text


async def _invoke(api, agent_id: int, name: str, arguments: dict[str, object]) -> dict:
    response = await api.post(
        f"/tools/{name}/invoke", json={"agent_id": agent_id, "arguments": arguments}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _tool_results(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


async def test_a_config_file_server_s_tools_join_the_registry_namespaced(api, mcp_config):
    await mcp_config({"tst": STDIO | {"effect": "write"}})
    listed = {t["name"]: t for t in (await api.get("/tools")).json()}
    assert {"tst__echo", "tst__pid", "tst__slow", "tst__boom"} <= listed.keys()
    echo = listed["tst__echo"]
    assert echo["effect"] == "write" and echo["category"] == "mcp" and echo["plugin"] == "mcp:tst"
    assert echo["parameters"]["required"] == ["text"] and echo["default_policy"] == "allow"
    servers = (await api.get("/mcp/servers")).json()
    assert [(s["name"], s["source"], s["health"]["state"]) for s in servers] == [
        ("tst", "config", "ready")
    ]
    agent_id = await _agent(api)
    await _allow(api, agent_id, "tst__echo", "tst__boom")
    echoed = await _invoke(api, agent_id, "tst__echo", {"text": "hi"})
    assert echoed["output"] == "echo: hi", echoed["error"]
    refused = await _invoke(api, agent_id, "tst__echo", {"text": 3})
    assert refused["error"]["code"] == "invalid_tool_arguments"
    failed = await _invoke(api, agent_id, "tst__boom", {})
    assert failed["is_error"] and "answered with an error" in failed["error"]["message"]


async def test_an_external_server_s_tools_wait_for_approval_by_default(api, mcp_config):
    await mcp_config({"tst": STDIO})
    agent_id = await _agent(api)
    response = await api.put(f"/agents/{agent_id}/tools/tst__echo", json={"enabled": True})
    assert response.json()["policy"] == "ask"
    asked = await api.post(
        "/tools/tst__echo/invoke", json={"agent_id": agent_id, "arguments": {"text": "x"}}
    )
    assert asked.status_code == 202 and asked.json()["approval_id"]


async def test_a_killed_server_comes_back_within_the_agent_s_turn(api, mcp_config, llm_stub_env):
    """The server dies during a call: the model is told that call's outcome is unknown (its
    effect is external, so it is not repeated), and its next call reaches the restarted
    server, in the same turn."""
    await mcp_config({"tst": STDIO})
    agent_id = await _agent(api)
    await _allow(api, agent_id, "tst__pid", "tst__slow", "tst__echo")
    first_pid = int((await _invoke(api, agent_id, "tst__pid", {}))["output"])
    llm_stub_env.add_reply(
        ToolCall("c1", "tst__slow", {"seconds": 30}),
        ToolCall("c2", "tst__echo", {"text": "after"}),
        "all done",
    )
    chat = asyncio.create_task(api.post(f"/agents/{agent_id}/chat", json={"message": "go"}))
    deadline = time.monotonic() + 30
    while not llm_stub_env.requests and time.monotonic() < deadline:  # the model was asked
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # the call of slow is under way
    os.kill(first_pid, signal.SIGKILL)
    response = await chat
    assert response.status_code == 200, response.text
    assert response.json()["reply"] == "all done"
    lost, echoed = _tool_results(llm_stub_env.requests[-1].json)
    assert "was lost during the call" in lost and "not repeated" in lost
    assert echoed == "echo: after"
    second_pid = int((await _invoke(api, agent_id, "tst__pid", {}))["output"])
    assert second_pid != first_pid
    health = (await api.get("/mcp/servers/tst")).json()["health"]
    assert health["state"] == "ready" and health["reconnects"] >= 1


async def test_a_read_server_s_interrupted_call_is_repeated_once_it_is_back():
    server = McpServer(
        name="ro",
        transport="stdio",
        command=sys.executable,
        args=(str(SERVER), "stdio"),
        effect="read",
    )
    connection = McpConnection(server)
    try:
        await connection.first_attempt(20)
        result = await connection.call("pid", {}, deadline=time.monotonic() + 20)
        pid = int(result.content[0].text)
        call = asyncio.create_task(
            connection.call("slow", {"seconds": 2}, deadline=time.monotonic() + 60)
        )
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        assert (await call).content[0].text == "slept"
        assert connection.reconnects >= 1 and connection.state == "ready"
    finally:
        await connection.close()
    assert connection.state == "closed"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _serve_http(port: int) -> subprocess.Popen[bytes]:
    return serve_on_port([sys.executable, str(SERVER), "http", str(port)], port)


async def test_an_http_server_added_by_api_reconnects_after_a_restart(api, settings_env):
    port = free_port()
    settings_env(egress_allowed_networks="127.0.0.0/8", egress_allowed_ports=str(port))
    process = await asyncio.to_thread(_serve_http, port)
    try:
        agent_id = await _agent(api)
        url = f"http://127.0.0.1:{port}/mcp"
        added = await api.post("/mcp/servers", json={"name": "web", "url": url, "effect": "read"})
        assert added.status_code == 201, added.text
        assert added.json()["source"] == "database" and added.json()["transport"] == "http"
        detail = (await api.get("/mcp/servers/web")).json()
        assert detail["health"]["state"] == "ready"
        assert {"web__echo", "web__pid"} <= {t["name"] for t in detail["tool_list"]}
        await _allow(api, agent_id, "web__pid")
        first = (await _invoke(api, agent_id, "web__pid", {}))["output"]
        process.kill()
        await asyncio.to_thread(process.wait)
        process = await asyncio.to_thread(_serve_http, port)
        second = (await _invoke(api, agent_id, "web__pid", {}))["output"]
        assert second == str(process.pid) != first
    finally:
        process.kill()
        await asyncio.to_thread(process.wait)


async def test_the_api_refuses_stdio_servers_clashes_and_blocked_urls(api, mcp_config):
    await mcp_config({"tst": STDIO})
    stdio = {"name": "evil", "url": "http://x.example/mcp", "command": "sh"}
    assert (await api.post("/mcp/servers", json=stdio)).status_code == 422
    clash = await api.post("/mcp/servers", json={"name": "tst", "url": "https://x.example/mcp"})
    assert clash.status_code == 409
    bad = {"name": "creds", "url": "https://user:pw@x.example/mcp"}
    assert (await api.post("/mcp/servers", json=bad)).status_code == 422
    local = await api.post("/mcp/servers", json={"name": "local", "url": "http://127.0.0.1/mcp"})
    assert local.status_code == 201
    again = await api.post("/mcp/servers", json={"name": "local", "url": "http://x.example/m"})
    assert again.status_code == 409
    health = (await api.get("/mcp/servers/local")).json()["health"]
    assert health["state"] in ("down", "connecting") and "loopback" in health["last_error"]
    assert (await api.delete("/mcp/servers/local")).status_code == 204
    assert (await api.delete("/mcp/servers/local")).status_code == 404
    assert (await api.get("/mcp/servers/local")).status_code == 404


async def test_a_server_for_one_agent_is_seen_by_that_agent_only(api):
    one, two = await _agent(api, "One"), await _agent(api, "Two")
    body = {"name": "mine", "url": "https://mcp.example/mcp", "only_for_agent": one}
    assert (await api.post("/mcp/servers", json=body)).status_code == 201
    missing = {"name": "nobody", "url": "https://mcp.example/mcp", "only_for_agent": 999999}
    assert (await api.post("/mcp/servers", json=missing)).status_code == 404
    listed = (await api.get("/mcp/servers")).json()
    assert [(s["name"], s["only_for_agent"]) for s in listed] == [("mine", one)]
    # Unreachable here: neither agent has its tools, and the turn does not fail for it.
    assert not [t for t in (await api.get(f"/agents/{two}/tools")).json() if "__" in t["name"]]


def test_config_files_are_checked(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"a": STDIO, "b": {"url": "https://h/mcp"}}}))
    a, b = read_config_file(path)
    assert (a.transport, b.transport, a.effect) == ("stdio", "http", "external")
    for bad in (
        "not json",
        json.dumps({"servers": []}),
        json.dumps({"servers": {"Bad Name": STDIO}}),
        json.dumps({"servers": {"a": STDIO | {"shell": True}}}),
        json.dumps({"servers": {"a": STDIO | {"effect": "nuclear"}}}),
        json.dumps({"servers": {"a": {"url": "ftp://h/x"}}}),
        json.dumps({"servers": {"a": STDIO | {"env": {"K": 1}}}}),
    ):
        path.write_text(bad)
        with pytest.raises(ConfigurationError):
            read_config_file(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        read_config_file(tmp_path / "missing.json")


def test_a_tool_whose_name_or_schema_cannot_be_a_registry_tool_is_refused():
    server = McpServer(name="s", transport="http", url="https://h/mcp")
    connection = McpConnection(server)
    good = registry_tool(connection, Tool(name="ok", input_schema={"type": "object"}))
    assert good.name == "s__ok" and good.effect == "external"
    for tool in (
        Tool(name="bad", input_schema={"type": "object", "properties": {"x": {"type": "nope"}}}),
        Tool(name="has.dot", input_schema={"type": "object"}),
        Tool(name="x" * 70, input_schema={"type": "object"}),
    ):
        with pytest.raises(InvalidInputError):
            registry_tool(connection, tool)


async def test_stdio_servers_of_a_cli_command_stop_with_it(migrated_database_url):
    """`gathering mcp add` stores a stdio server; `gathering mcp list` connects to it and its
    process is gone when the command ends."""
    env = os.environ | {"DATABASE_URL": migrated_database_url, "GATHERING_AUTH": "single-user"}
    command = [sys.executable, "-m", "gathering", "mcp"]
    marker = f"cli-{os.getpid()}-{time.monotonic_ns()}"  # names this test's server process
    server = ["--arg", str(SERVER), "--arg", "stdio", "--arg", marker]
    added = await asyncio.to_thread(
        subprocess.run,
        [*command, "add", "cli", "--command", sys.executable, *server, "--effect", "read"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    listed = await asyncio.to_thread(
        subprocess.run, [*command, "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert "cli" in listed.stdout and "ready" in listed.stdout
    leftover = await asyncio.to_thread(
        subprocess.run, ["pgrep", "-f", marker], capture_output=True, text=True
    )
    assert leftover.stdout.strip() == ""
    removed = await asyncio.to_thread(
        subprocess.run,
        [*command, "remove", "cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert removed.returncode == 0, removed.stderr


async def test_an_owner_has_at_most_twenty_servers(api):
    for number in range(20):
        body = {"name": f"s{number}", "url": "https://mcp.example/mcp"}
        assert (await api.post("/mcp/servers", json=body)).status_code == 201
    over = await api.post("/mcp/servers", json={"name": "s20", "url": "https://mcp.example/m"})
    assert over.status_code == 409
    assert "the most one owner may have" in over.json()["detail"]


async def test_an_idle_connection_is_closed_when_another_is_made():
    hub = McpHub()
    old = hub.connection(McpServer(name="old", transport="http", url="https://a.example/mcp"))
    old.last_used -= IDLE_SECONDS + 1
    new = hub.connection(McpServer(name="new", transport="http", url="https://b.example/mcp"))
    await hub.close()
    assert old.state == new.state == "closed"
    assert hub.states() == {}

"""The MCP client attacked (a hostile review's findings, each fixed): a hostile server's
output schema, DNS rebinding past the egress check, a giant result, a broken config file, a
close racing a crash, the config file's secrets, and concurrent adds past the cap."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import free_port, serve_on_port
from loop_watch import LoopWatch

from gathering.api.lifecycle import McpComponent
from gathering.auth.users import UserStore
from gathering.errors import ConfigurationError, GatheringError
from gathering.tools.context import ToolContext
from gathering.tools.egress import EgressPolicy
from gathering.tools.mcp import close_mcp_hub
from gathering.tools.mcp.connection import McpConnection
from gathering.tools.mcp.hub import registry_tool
from gathering.tools.mcp.servers import McpServer

SUPPORT = Path(__file__).parent.parent / "_support"
HOSTILE = SUPPORT / "mcp_hostile_stdio_server.py"
HOSTILE_HTTP = SUPPORT / "mcp_hostile_http_server.py"
DIES = SUPPORT / "mcp_dies_after_effect_server.py"
PASSWORD = "correct horse battery staple 42"


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@pytest.fixture
async def api(app_for, llm_stub_env):
    async with client_for(app_for()) as client:
        yield client
    await close_mcp_hub()


async def test_a_hostile_output_schema_does_not_stall_the_event_loop():
    """A backtracking `pattern` in a tool's output schema: the SDK would check the result
    with Python's `re` on the event loop (2**26 steps here); we never let it."""
    server = McpServer(
        name="evil",
        transport="stdio",
        command=sys.executable,
        args=(str(HOSTILE), "redos", "26"),
        effect="read",
    )
    connection = McpConnection(server)
    try:
        await connection.first_attempt(15)
        assert connection.state == "ready", connection.last_error
        async with LoopWatch() as watch:
            result = await connection.call("evil", {}, deadline=time.monotonic() + 5)
    finally:
        await connection.close()
    assert not result.is_error and "aaaa!" in result.content[0].text
    assert watch.longest < 0.3, f"the event loop was blocked {watch.longest:.2f}s"


async def test_a_name_that_rebinds_to_loopback_is_never_connected(monkeypatch):
    """The name resolves to a public address for the check, then to 127.0.0.1: each request
    is resolved, checked and connected by address, so loopback is never reached."""
    reached: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(await reader.read(200))
        writer.write(b"HTTP/1.1 500 x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    real = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name == "rebind.example":
            asked.append(name)
            return real("192.0.2.1" if len(asked) == 1 else "127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    server = McpServer(
        name="rebind", transport="http", url=f"http://rebind.example:{port}/mcp", id=1
    )
    policy = EgressPolicy(allowed_ports=None, allowed_networks=("192.0.2.0/24",))
    connection = McpConnection(server, egress=policy)
    try:
        await connection.first_attempt(15)
    finally:
        await connection.close()
        listener.close()
    assert len(asked) >= 2, asked  # resolved again for the request itself
    assert not reached, f"the MCP client reached 127.0.0.1: {reached[0][:80]!r}"
    assert connection.last_error and "loopback" in connection.last_error


async def test_a_giant_result_is_refused_before_it_is_all_in_memory():
    port = free_port()
    answer_chars = 60_000_000
    command = [sys.executable, str(HOSTILE_HTTP), str(port), "big", str(answer_chars)]
    process = await asyncio.to_thread(serve_on_port, command, port)
    url = f"http://127.0.0.1:{port}/mcp"
    connection = McpConnection(McpServer(name="h", transport="http", url=url, effect="read"))
    try:
        await connection.first_attempt(15)
        assert connection.state == "ready", connection.last_error
        tool = registry_tool(connection, connection.tools[0])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        with pytest.raises(GatheringError):
            await tool.run({}, ToolContext(deadline=time.monotonic() + 30))
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    finally:
        await connection.close()
        process.kill()
        await asyncio.to_thread(process.wait)
    assert grown_mib < 150, (
        f"a {answer_chars // 10**6} MB answer grew the process {grown_mib:.0f} MiB"
    )


async def test_a_broken_config_file_stops_the_start_with_why(settings_env, tmp_path):
    path = tmp_path / "mcp.json"
    await asyncio.to_thread(path.write_text, '{"servers": {"Bad_Name": {"command": "x"}}}')
    settings_env(mcp_config=path)
    with pytest.raises(ConfigurationError, match="invalid MCP server name"):
        await McpComponent().start()


async def test_close_right_after_a_server_died_mid_call_returns_and_stops_it(tmp_path):
    """The server dies mid-call and `close()` comes while the SDK tears the connection down:
    it returns, the connection stays closed, and no server process is left."""
    log, marker = tmp_path / "log", tmp_path / "marker"
    server = McpServer(
        name="d",
        transport="stdio",
        command=sys.executable,
        args=(str(DIES), str(log), str(marker)),
        effect="write",
    )
    connection = McpConnection(server)
    await connection.first_attempt(15)
    assert connection.state == "ready", connection.last_error
    calls = [connection.call("act", {}, deadline=time.monotonic() + 15) for _ in range(3)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, GatheringError) and "not repeated" in str(o) for o in outcomes)
    assert len((await asyncio.to_thread(log.read_text)).split()) == 1  # ran once, never again
    async with asyncio.timeout(15):
        await connection.close()
    await asyncio.sleep(1.5)  # past the first reconnection's backoff
    assert connection.state == "closed"
    left = await asyncio.to_thread(
        subprocess.run, ["pgrep", "-f", str(marker)], capture_output=True, text=True
    )
    assert left.stdout.strip() == "", "server processes left running"


async def test_a_member_does_not_see_the_config_servers_secrets(app_for, settings_env, tmp_path):
    path = tmp_path / "mcp.json"
    secret_arg = "postgresql://admin:S3cret-pw@db/prod"
    config = {
        "servers": {
            "db": {"command": sys.executable, "args": ["-c", "pass", secret_arg]},
            "hosted": {"url": "https://mcp.example.com/mcp?api_key=sk-live-S3cret"},
        }
    }
    await asyncio.to_thread(path.write_text, json.dumps(config))
    settings_env(mcp_config=path)
    app = app_for(auth="required", secret_key="k" * 64)
    users = UserStore(await app.state.gathering.database())
    member, admin = f"m-{secrets.token_hex(4)}@example.com", f"a-{secrets.token_hex(4)}@ex.com"
    await users.create(member, PASSWORD, role="member")
    await users.create(admin, PASSWORD, role="admin")
    seen = {}
    try:
        async with client_for(app) as client:
            for email in (member, admin):
                login = await client.post(
                    "/auth/login", json={"email": email, "password": PASSWORD}
                )
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                listed = await client.get("/mcp/servers", headers=headers)
                assert listed.status_code == 200, listed.text
                seen[email] = listed.text
    finally:
        await close_mcp_hub()
    assert "S3cret" not in seen[member]
    assert secret_arg in seen[admin]


async def test_concurrent_adds_never_pass_the_cap(api):
    for number in range(15):
        body = {"name": f"s{number}", "url": "https://mcp.example/mcp"}
        assert (await api.post("/mcp/servers", json=body)).status_code == 201
    answers = await asyncio.gather(
        *(
            api.post("/mcp/servers", json={"name": f"p{n}", "url": "https://mcp.example/mcp"})
            for n in range(15)
        )
    )
    assert sorted(a.status_code for a in answers) == [201] * 5 + [409] * 10
    assert len((await api.get("/mcp/servers")).json()) == 20


async def test_the_config_file_s_command_gets_no_secret_of_ours(tmp_path, settings_env):
    """A stdio server starts with a minimal environment: GatheRing's secrets stay with it."""
    settings_env(SECRET_KEY="s" * 64)
    os.environ["GATHERING_DATABASE_URL"]  # set for the whole suite: must not reach the child
    probe = tmp_path / "env.json"
    script = f"import json, os; open({str(probe)!r}, 'w').write(json.dumps(dict(os.environ)))"
    server = McpServer(name="env", transport="stdio", command=sys.executable, args=("-c", script))
    connection = McpConnection(server)
    try:
        await connection.first_attempt(10)
    finally:
        await connection.close()
    seen = json.loads(await asyncio.to_thread(probe.read_text))
    assert not {"SECRET_KEY", "GATHERING_DATABASE_URL", "DATABASE_URL"} & seen.keys()

"""`gathering tools list|enable|disable|invoke`: the same checks as the API, from a shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gathering.agents import PostgresAgentStore
from gathering.cli import app
from gathering.config import get_settings
from gathering.db import Database
from gathering.tools.agent_tools import agent_workspace

runner = CliRunner()


@pytest.fixture
def database(monkeypatch, migrated_database_url, llm_stub_env):
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def workspaces_of(url: str, name: str) -> list[Path]:
    """The workspace folder of each agent called `name`."""

    async def fetch() -> list[Path]:
        async with Database(url=url, min_size=0, max_size=1) as db:
            records = await PostgresAgentStore(db).list_agents()
        return [agent_workspace(r.id, r.created_at) for r in records if r.name == name]

    return asyncio.run(fetch())


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_list_enable_invoke_and_disable(database):
    created = run("agents", "create", "Scribe", "--provider", "openai")
    assert created.exit_code == 0, created.output
    listed = run("tools", "list")
    assert listed.exit_code == 0 and "write_file" in listed.output and "calculator" in listed.output

    refused = run("tools", "invoke", "write_file", "--agent", "Scribe", "--args", "{}")
    assert refused.exit_code != 0 and "is not enabled for agent" in refused.output

    assert run("tools", "enable", "write_file", "--agent", "Scribe").exit_code == 0
    shown = run("tools", "list", "--agent", "Scribe")
    assert "enabled" in shown.output
    [row] = [line for line in shown.output.splitlines() if "write_file" in line]
    assert "yes" in row

    arguments = json.dumps({"path": "hello.txt", "content": "hi"})
    done = run("tools", "invoke", "write_file", "--agent", "Scribe", "--args", arguments)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"path": "hello.txt", "bytes": 2}
    [workspace] = workspaces_of(database, "Scribe")
    assert (workspace / "hello.txt").read_text() == "hi"

    bad = run("tools", "invoke", "write_file", "--agent", "Scribe", "--args", '{"path": 1}')
    assert bad.exit_code != 0 and "invalid arguments for tool 'write_file'" in bad.output
    not_json = run("tools", "invoke", "write_file", "--agent", "Scribe", "--args", "{oops")
    assert not_json.exit_code != 0 and "--args is not JSON" in not_json.output

    assert run("tools", "disable", "write_file", "--agent", "Scribe").exit_code == 0
    again = run("tools", "invoke", "write_file", "--agent", "Scribe", "--args", arguments)
    assert again.exit_code != 0 and "is not enabled" in again.output

    assert run("agents", "delete", "Scribe", "--yes").exit_code == 0
    assert not workspace.exists()  # the agent's files went with it


def test_an_unknown_tool_or_agent_is_a_clear_error(database):
    assert run("agents", "create", "Scribe", "--provider", "openai").exit_code == 0
    unknown = run("tools", "enable", "teleport", "--agent", "Scribe")
    assert unknown.exit_code != 0 and "no tool named 'teleport'" in unknown.output
    nobody = run("tools", "enable", "calculator", "--agent", "Nobody")
    assert nobody.exit_code != 0 and "Nobody" in nobody.output


def test_policies_and_approvals_from_the_command_line(database):
    """`tools policy`, then an invocation that waits, answered with `approvals approve`; the
    server's duty (run here once) runs it and keeps its outcome."""
    from gathering.agents.approval_resumer import ApprovalResumer
    from gathering.tools.approvals import get_approval

    assert run("agents", "create", "Clerk", "--provider", "openai").exit_code == 0
    assert run("tools", "enable", "calculator", "--agent", "Clerk").exit_code == 0
    policy = run("tools", "policy", "calculator", "ask", "--agent", "Clerk")
    assert policy.exit_code == 0 and "policy: ask" in policy.output
    waiting = run(
        "tools", "invoke", "calculator", "--agent", "Clerk", "--args", '{"expression": "6*7"}'
    )
    assert waiting.exit_code != 0 and "waits for a person's approval" in waiting.output
    listed = run("approvals", "list")
    assert "calculator" in listed.output and "pending" in listed.output
    approval_id = int(waiting.output.split("(approval ")[1].split(")")[0])
    assert run("approvals", "deny", str(approval_id + 1000)).exit_code != 0  # no such approval
    answered = run("approvals", "approve", str(approval_id), "--comment", "fine")
    assert answered.exit_code == 0 and "approved" in answered.output
    again = run("approvals", "deny", str(approval_id))
    assert again.exit_code != 0 and "approved already" in again.output

    async def resume() -> dict:
        async with Database(url=database, min_size=1, max_size=2) as db:
            resumer = ApprovalResumer(db, None)
            await resumer.run_once()
            await resumer.drain()
            return dict((await get_approval(db, approval_id)).outcome or {})

    assert asyncio.run(resume()) == {"is_error": False, "output": "42"}
    assert run("tools", "policy", "calculator", "default", "--agent", "Clerk").exit_code == 0

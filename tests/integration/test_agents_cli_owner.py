"""The CLI in multi-user mode: agent names are per owner, so naming or creating an agent needs
`--owner` (or an agent id); it never acts on another owner's namesake (issue 11)."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from gathering.agents import AgentRecord, PostgresAgentStore
from gathering.auth.users import UserStore
from gathering.cli import app
from gathering.config import get_settings
from gathering.db import Database

runner = CliRunner()
PASSWORD = "correct horse battery staple"


@pytest.fixture
def multi_user(monkeypatch, fresh_database_url, llm_stub_env):
    monkeypatch.setenv("GATHERING_DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("GATHERING_AUTH", "required")
    monkeypatch.setenv("SECRET_KEY", "s" * 64)
    get_settings.cache_clear()

    async def setup() -> dict[str, int]:
        async with Database(url=fresh_database_url, min_size=0, max_size=1) as db:
            await db.run_migrations()
            users = UserStore(db)
            ada = await users.create("ada@example.com", PASSWORD)
            bob = await users.create("bob@example.com", PASSWORD)
            return {"ada": ada.id, "bob": bob.id}

    yield fresh_database_url, asyncio.run(setup())
    get_settings.cache_clear()


def agents_of(url: str) -> list[AgentRecord]:
    async def fetch() -> list[AgentRecord]:
        async with Database(url=url, min_size=0, max_size=1) as db:
            return await PostgresAgentStore(db).list_agents()

    return asyncio.run(fetch())


def test_naming_or_creating_an_agent_needs_its_owner(multi_user):
    url, ids = multi_user
    refused = runner.invoke(app, ["agents", "create", "Helper", "--provider", "openai"])
    assert refused.exit_code == 1 and "--owner EMAIL" in refused.output
    for owner in ("ada@example.com", "bob@example.com"):
        made = runner.invoke(
            app, ["agents", "create", "Helper", "--provider", "openai", "--owner", owner]
        )
        assert made.exit_code == 0, made.output
    by_owner = {record.owner_id: record for record in agents_of(url)}
    assert set(by_owner) == {ids["ada"], ids["bob"]}
    listed = runner.invoke(app, ["agents", "list", "--owner", "bob@example.com"])
    assert listed.exit_code == 0 and "bob@example.com" in listed.output
    assert "ada@example.com" not in listed.output

    # By name without an owner: refused, whichever owner's it would have picked.
    for command in (["chat", "Helper"], ["agents", "delete", "Helper", "--yes"]):
        result = runner.invoke(app, command, input="")
        assert result.exit_code == 1 and "whose agent 'Helper'" in result.output, command
    assert len(agents_of(url)) == 2

    deleted = runner.invoke(
        app, ["agents", "delete", "Helper", "--yes", "--owner", "bob@example.com"]
    )
    assert deleted.exit_code == 0, deleted.output
    assert [record.owner_id for record in agents_of(url)] == [ids["ada"]]
    ada_agent = by_owner[ids["ada"]].id
    talk = runner.invoke(app, ["chat", str(ada_agent)], input="hello\n/exit\n")  # an id is exact
    assert talk.exit_code == 0 and "Echo: hello" in talk.output
    unknown = runner.invoke(app, ["chat", "Helper", "--owner", "nobody@example.com"])
    assert unknown.exit_code == 1

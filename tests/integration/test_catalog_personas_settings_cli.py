"""`gathering personas list|show|create|delete`, `gathering agents create --persona` and
`gathering settings list|get|set|unset` against a migrated database: the library listed and
shown, a persona copied from a built-in and an agent made from it, the built-ins refused;
settings stored (audited, a secret masked and read from standard input), in force for the
next agent, and bad values refused with a clear message, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from gathering.cli import app
from gathering.config import get_settings
from gathering.db import Database
from gathering.testing import LLMStubServer

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
SECRET = "cli-" + "t0ken" * 8


@pytest.fixture
def database(
    monkeypatch: pytest.MonkeyPatch, migrated_database_url: str, llm_stub_env: LLMStubServer
) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def run(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, list(args), env=WIDE, input=stdin)


def invoke(*args: str, stdin: str | None = None) -> str:
    result = run(*args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def refused(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def rows(url: str, query: str) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        async with Database(url) as db:
            return await db.fetch_all(query)

    return asyncio.run(read())


def test_the_personas_library_from_the_command_line(database: str) -> None:
    listed = invoke("personas", "list")
    assert "5 persona(s)" in listed
    for name in ("architect", "developer", "reviewer", "researcher", "writer"):
        assert name in listed
    shown = invoke("personas", "show", "reviewer")
    assert "(built in)" in shown and "role: code reviewer" in shown and "blocking" in shown

    made = invoke(
        "personas", "create", "sec-reviewer", "--from", "reviewer", "--role", "security reviewer"
    )
    assert "created persona sec-reviewer" in made
    shown = invoke("personas", "show", "sec-reviewer")
    assert "role: security reviewer" in shown and "blocking" in shown  # the prompt was copied
    assert "6 persona(s)" in invoke("personas", "list")
    assert "exists already" in refused("personas", "create", "sec-reviewer")
    assert "not a persona name" in refused("personas", "create", "Sec Reviewer")
    assert "no persona named 'nobody'" in refused("personas", "create", "x", "--from", "nobody")

    agent = invoke(
        "agents",
        "create",
        "Rita",
        "--persona",
        "sec-reviewer",
        "--provider",
        "ollama",
        "--model",
        "llama3.2",
    )
    assert "created agent Rita" in agent
    stored = rows(database, "SELECT persona FROM agent.agents WHERE name = 'Rita'")
    persona = stored[0]["persona"]
    assert isinstance(persona, dict) and persona["role"] == "security reviewer"
    assert "no persona named" in refused("agents", "create", "Bob", "--persona", "nobody")

    assert "built in" in refused("personas", "delete", "writer", "--yes")
    assert "deleted persona sec-reviewer" in invoke("personas", "delete", "sec-reviewer", "--yes")
    assert "5 persona(s)" in invoke("personas", "list")


def test_settings_from_the_command_line(database: str) -> None:
    listed = invoke("settings", "list")
    assert "default_provider" in listed and "metrics_token" in listed and "default" in listed

    assert 'default_provider = "ollama" (stored)' in invoke(
        "settings", "set", "default_provider", "ollama"
    )
    assert 'ollama_model = "tiny:1b" (stored)' in invoke(
        "settings", "set", "ollama_model", "tiny:1b"
    )
    assert "pipeline_max_running_runs = 7 (stored)" in invoke(
        "settings", "set", "pipeline_max_running_runs", "7"
    )
    assert "ollama/tiny:1b" in invoke("agents", "create", "Defaulted")

    assert "must be a valid integer" in refused("settings", "set", "pipeline_max_running_runs", "x")
    assert "unknown provider 'gpt'" in refused("settings", "set", "default_provider", "gpt")
    assert "no setting named 'secret_key'" in refused("settings", "set", "secret_key", "x")

    secret = invoke("settings", "set", "metrics_token", "-", stdin=SECRET + "\n")
    assert 'metrics_token = "********" (stored)' in secret and SECRET not in secret
    assert SECRET not in invoke("settings", "get", "metrics_token")
    assert SECRET not in invoke("settings", "list")

    assert "default_provider = (unset) (default)" in invoke("settings", "unset", "default_provider")
    audit = rows(
        database,
        "SELECT event, target_id, subject, details::text AS details FROM auth.audit_log "
        "WHERE event LIKE 'setting.%' ORDER BY id",
    )
    assert [(a["event"], a["target_id"], a["subject"]) for a in audit] == [
        ("setting.changed", "default_provider", "cli"),
        ("setting.changed", "ollama_model", "cli"),
        ("setting.changed", "pipeline_max_running_runs", "cli"),
        ("setting.changed", "metrics_token", "cli"),
        ("setting.reset", "default_provider", "cli"),
    ]
    assert all(SECRET not in str(a["details"]) for a in audit)

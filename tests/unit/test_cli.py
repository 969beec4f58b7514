"""The CLI in-process: commands, clear errors, exit codes."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from gathering import __version__
from gathering.api.serve import app
from gathering.cli import check_port_free
from gathering.config import get_settings
from gathering.errors import StartupError

runner = CliRunner()


@pytest.fixture
def use_database(monkeypatch, fresh_database_url):
    monkeypatch.setenv("GATHERING_DATABASE_URL", fresh_database_url)
    get_settings.cache_clear()
    yield fresh_database_url
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _reset_settings():
    yield
    get_settings.cache_clear()


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_db_status_then_migrate_then_status(use_database):
    before = runner.invoke(app, ["db", "status"])
    assert before.exit_code == 0, before.output
    assert "pending" in before.output
    migrate = runner.invoke(app, ["db", "migrate"])
    assert migrate.exit_code == 0, migrate.output
    assert "0001_initial.sql" in migrate.output
    again = runner.invoke(app, ["db", "migrate"])
    assert "0 applied now" in again.output
    after = runner.invoke(app, ["db", "status"])
    assert "schema is current" in after.output and "pgvector: installed" in after.output


def test_invalid_settings_exit_1_with_one_line_each(monkeypatch):
    monkeypatch.setenv("GATHERING_PORT", "eighty")
    get_settings.cache_clear()
    result = runner.invoke(app, ["db", "migrate"])
    assert result.exit_code == 1
    assert "GATHERING_PORT" in result.output
    assert "Traceback" not in result.output


def test_unreachable_database_exit_1(monkeypatch):
    monkeypatch.setenv("GATHERING_DATABASE_URL", "postgresql://x@127.0.0.1:1/x")
    monkeypatch.setenv("GATHERING_DB_CONNECT_TIMEOUT", "2")
    get_settings.cache_clear()
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 1
    assert "could not connect" in result.output


def test_serve_refuses_a_busy_port(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 1
    assert "already in use" in result.output


def test_port_check_rejects_an_unusable_host():
    with pytest.raises(StartupError, match="cannot listen"):
        check_port_free("203.0.113.7", 8000)


def test_no_arguments_prints_help():
    result = runner.invoke(app, [])
    assert "serve" in result.output and "db" in result.output


def test_agents_create_list_chat_delete(use_database, llm_stub_env):
    created = runner.invoke(
        app, ["agents", "create", "Echoer", "--provider", "openai", "--role", "parrot"]
    )
    assert created.exit_code == 0, created.output
    assert "created agent Echoer" in created.output
    listed = runner.invoke(app, ["agents", "list"])
    assert "Echoer" in listed.output and "parrot" in listed.output
    talk = runner.invoke(app, ["chat", "echoer"], input="hello\n\n/exit\n")
    assert talk.exit_code == 0, talk.output
    assert "Echo: hello" in talk.output
    again = runner.invoke(app, ["chat", "Echoer", "--new-session"], input="")
    assert again.exit_code == 0
    refused = runner.invoke(app, ["agents", "delete", "Echoer"], input="n\n")
    assert refused.exit_code == 1
    deleted = runner.invoke(app, ["agents", "delete", "Echoer", "--yes"])
    assert deleted.exit_code == 0 and "deleted agent Echoer" in deleted.output
    missing = runner.invoke(app, ["chat", "Echoer"])
    assert missing.exit_code == 1 and "no agent 'Echoer'" in missing.output


def test_agents_create_with_unknown_provider_is_a_clear_error(use_database):
    result = runner.invoke(app, ["agents", "create", "X", "--provider", "skynet"])
    assert result.exit_code == 1
    assert "known providers" in result.output

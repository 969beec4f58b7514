"""`gathering users ...` and the security parts of `gathering serve`."""

from __future__ import annotations

import asyncio
import re

import pytest
from typer.testing import CliRunner

from gathering.api.serve import app
from gathering.auth.passwords import verify_password
from gathering.auth.users import UserStore
from gathering.config import get_settings
from gathering.db import Database

runner = CliRunner()
PASSWORD = "correct horse battery staple"


@pytest.fixture
def database(monkeypatch, fresh_database_url):
    monkeypatch.setenv("GATHERING_DATABASE_URL", fresh_database_url)
    get_settings.cache_clear()
    yield fresh_database_url
    get_settings.cache_clear()


def run(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input)
    return result


def user_row(url: str, email: str):
    async def fetch():
        async with Database(url=url, min_size=0, max_size=1) as db:
            return await UserStore(db).find_by_email(email)

    return asyncio.run(fetch())


def audit_events(url: str) -> list[str]:
    async def fetch():
        async with Database(url=url, min_size=0, max_size=1) as db:
            rows = await db.fetch_all("SELECT event FROM auth.audit_log ORDER BY id")
            return [r["event"] for r in rows]

    return asyncio.run(fetch())


def test_create_list_disable_enable_reset(database):
    created = run(
        "users", "create", "Ada@Example.com", "--admin", input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert created.exit_code == 0, created.output
    assert "created administrator ada@example.com" in created.output
    listed = run("users", "list")
    assert "ada@example.com" in listed.output and "admin" in listed.output
    assert "local-owner" not in listed.output

    assert run("users", "disable", "ada@example.com").exit_code == 0
    assert user_row(database, "ada@example.com").is_active is False
    assert "disabled" in run("users", "list").output
    assert run("users", "enable", "ada@example.com").exit_code == 0
    assert user_row(database, "ada@example.com").is_active is True

    reset = run("users", "reset-password", "ada@example.com", "--generate-password")
    assert reset.exit_code == 0, reset.output
    new_password = re.search(r"password: (\S+)", reset.output).group(1)
    stored = user_row(database, "ada@example.com").password_hash
    assert asyncio.run(verify_password(stored, new_password))
    assert not asyncio.run(verify_password(stored, PASSWORD))
    assert audit_events(database) == [
        "user.created",
        "user.disabled",
        "user.enabled",
        "user.password_reset",
    ]


def test_create_with_a_generated_password_prints_it_once(database):
    result = run("users", "create", "gen@example.com", "--generate-password")
    assert result.exit_code == 0
    password = re.search(r"password: (\S+)", result.output).group(1)
    assert asyncio.run(
        verify_password(user_row(database, "gen@example.com").password_hash, password)
    )


def test_bad_input_is_one_clear_message(database):
    assert run("users", "create", "dup@example.com", "--password", PASSWORD).exit_code == 0
    duplicate = run("users", "create", "dup@example.com", "--password", PASSWORD)
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    weak = run("users", "create", "weak@example.com", "--password", "short")
    assert weak.exit_code == 1 and "at least 12 characters" in weak.output
    not_email = run("users", "create", "not-an-email", "--password", PASSWORD)
    assert not_email.exit_code == 1 and "not an email address" in not_email.output
    missing = run("users", "disable", "ghost@example.com")
    assert missing.exit_code == 1 and "no user" in missing.output
    assert "Traceback" not in duplicate.output + weak.output + missing.output


def test_serve_refuses_a_non_loopback_address_in_single_user_mode(database):
    result = run("serve", "--host", "0.0.0.0", "--port", "8765")
    assert result.exit_code == 1
    assert "only listens on this machine" in result.output
    assert "GATHERING_AUTH=required" in result.output


@pytest.fixture
def no_server(monkeypatch):
    """`serve` up to the point where it would start listening."""
    from gathering.api import draining

    monkeypatch.setattr(draining.DrainingServer, "run", lambda self, *a, **k: None)
    monkeypatch.setattr("gathering.api.serve.signal.signal", lambda *a: None)
    monkeypatch.setattr("gathering.cli.check_port_free", lambda host, port: None)


def test_first_serve_in_multi_user_mode_creates_an_admin_and_prints_the_password(
    database, monkeypatch, no_server
):
    monkeypatch.setenv("GATHERING_AUTH", "required")
    monkeypatch.setenv("SECRET_KEY", "s" * 64)
    get_settings.cache_clear()
    first = run("serve", "--host", "0.0.0.0", "--port", "8765")
    assert first.exit_code == 0, first.output
    password = re.search(r"with password (\S+)", first.output).group(1)
    assert "admin@localhost" in first.output
    assert asyncio.run(
        verify_password(user_row(database, "admin@localhost").password_hash, password)
    )
    again = run("serve", "--port", "8765")
    assert again.exit_code == 0 and "created administrator" not in again.output


def test_first_serve_uses_the_configured_admin(database, monkeypatch, no_server):
    monkeypatch.setenv("GATHERING_ADMIN_EMAIL", "Boss@Example.com")
    monkeypatch.setenv("GATHERING_ADMIN_PASSWORD", PASSWORD)
    get_settings.cache_clear()
    result = run("serve", "--port", "8765")
    assert result.exit_code == 0, result.output
    assert "created administrator boss@example.com" in result.output
    assert PASSWORD not in result.output
    user = user_row(database, "boss@example.com")
    assert user.is_admin and asyncio.run(verify_password(user.password_hash, PASSWORD))


def test_single_user_serve_creates_no_account(database, no_server):
    result = run("serve", "--port", "8765")
    assert result.exit_code == 0, result.output
    assert "created administrator" not in result.output

    async def accounts():
        async with Database(url=database, min_size=0, max_size=1) as db:
            return await UserStore(db).list_users()

    assert asyncio.run(accounts()) == []

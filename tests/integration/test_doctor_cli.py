"""`gathering doctor` through the real CLI, on the embedded database of the test session."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from gathering.cli import app
from gathering.config import get_settings

runner = CliRunner()
SECRET = "sk-ant-doctor-cli-9f8e7d6c5b4a"

pytestmark = pytest.mark.slow  # starts (joins) the embedded server and loads the local model


@pytest.fixture
def embedded(monkeypatch):
    """No DATABASE_URL: the doctor starts (here: joins) the embedded server of GATHERING_DATA_DIR,
    the session's temporary data directory; a provider key is set in the environment."""
    monkeypatch.delenv("GATHERING_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def line_of(output: str, name: str) -> str:
    """The report line of check `name` (status first)."""
    match = re.search(rf"^(ok|info|warn|missing) +{re.escape(name)}  .*$", output, re.MULTILINE)
    assert match, f"no line for {name!r} in:\n{output}"
    return match[0]


def test_doctor_on_the_embedded_database(embedded):
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert line_of(result.stdout, "python").startswith("ok ")
    database = line_of(result.stdout, "database")
    assert database.startswith("ok ") and "embedded PostgreSQL" in database
    assert line_of(result.stdout, "pgvector").startswith("ok ")
    assert "ANTHROPIC_API_KEY is set" in line_of(result.stdout, "anthropic key")
    assert SECRET not in result.output
    assert "stop `make run`" not in result.stdout
    assert "Traceback" not in result.output


def test_doctor_json(embedded):
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["blocked"] is False
    assert checks["python"]["status"] == "ok"
    assert checks["database"]["status"] == "ok"
    assert checks["anthropic key"] == {
        "name": "anthropic key",
        "status": "ok",
        "detail": "ANTHROPIC_API_KEY is set",
        "fix": None,
        "blocking": False,
    }
    assert {"bubblewrap", "node", "chromium", "local model"} <= set(checks)
    assert SECRET not in result.output


def test_an_unreachable_database_exits_1_without_its_password(monkeypatch):
    monkeypatch.setenv("GATHERING_DATABASE_URL", "postgresql://ada:pg-cli-pass@127.0.0.1:1/app")
    monkeypatch.setenv("GATHERING_DB_CONNECT_TIMEOUT", "2")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["doctor"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert line_of(result.stdout, "database").startswith("missing ")
    assert "stop `make run`: database" in result.stdout
    assert "pg-cli-pass" not in result.output
    assert "Traceback" not in result.output

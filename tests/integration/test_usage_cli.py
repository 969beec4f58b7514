"""`gathering usage` (a table or CSV, grouped and per period, with filters) and
`gathering budgets list|set|remove` (each change audited), on a real database."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from gathering.cli import app
from gathering.config import get_settings

runner = CliRunner()


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, migrated_database_url: str) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def write_ledger(url: str) -> None:
    """Three model calls of two agents and one tool call, as the turn loop writes them."""
    with psycopg.connect(url, autocommit=True) as conn:
        for agent, model, tokens, cost in (
            (1, "gpt-4o", 100, 0.5),
            (1, "gpt-4o", 50, 0.25),
            (2, "claude-haiku-4-5", 10, 0.125),
        ):
            conn.execute(
                "INSERT INTO usage.ledger (kind, user_id, agent_id, provider, model,"
                " input_tokens, output_tokens, cost_usd) VALUES ('model', 7, %s, 'x', %s, %s,"
                " 0, %s)",
                (agent, model, tokens, cost),
            )
        conn.execute(
            "INSERT INTO usage.ledger (kind, user_id, agent_id, model, latency_ms)"
            " VALUES ('tool', 8, 2, 'read_file', 3)"
        )


def test_usage_is_shown_as_a_table_or_csv(database: str) -> None:
    write_ledger(database)
    table = invoke("usage", "--by", "agent")
    assert "usage per day (UTC) by agent" in table and "0.750000" in table
    exported = invoke("usage", "--by", "model", "--csv", "--since", "7d")
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert rows["gpt-4o"]["calls"] == "2" and float(rows["gpt-4o"]["cost_usd"]) == 0.75
    assert rows["claude-haiku-4-5"]["input_tokens"] == "10" and "read_file" in rows
    only = invoke("usage", "--by", "kind", "--csv", "--user", "8")
    assert [row["key"] for row in csv.DictReader(io.StringIO(only))] == ["tool"]
    future = invoke("usage", "--csv", "--since", "2999-01-01")
    assert future.strip() == "period_start,key,calls,input_tokens,output_tokens,cost_usd"
    bad = runner.invoke(app, ["usage", "--since", "last tuesday"])
    assert bad.exit_code == 1 and "is not a date" in bad.output


def test_budgets_are_set_listed_and_removed(database: str) -> None:
    assert "budget 1: agent 3, per day" in invoke(
        "budgets", "set", "agent", "3", "--period", "day", "--usd", "2.5"
    )
    invoke("budgets", "set", "agent", "3", "--period", "day", "--usd", "4", "--tokens", "900")
    listed = invoke("budgets", "list")
    assert "1 budget(s)" in listed and "/ 4" in listed and "/ 900" in listed
    no_limit = runner.invoke(app, ["budgets", "set", "user", "1"])
    assert no_limit.exit_code == 1 and "needs a limit" in no_limit.output
    assert "budget 1 removed" in invoke("budgets", "remove", "1")
    missing = runner.invoke(app, ["budgets", "remove", "1"])
    assert missing.exit_code == 1 and "no budget 1" in missing.output
    assert "0 budget(s)" in invoke("budgets", "list")
    with psycopg.connect(database) as conn:
        events = [
            row[0]
            for row in conn.execute(
                "SELECT event FROM auth.audit_log WHERE event LIKE 'budget.%' ORDER BY id"
            )
        ]
    assert events == ["budget.set", "budget.set", "budget.removed"]

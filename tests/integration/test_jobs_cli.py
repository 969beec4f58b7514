"""`gathering jobs list|cancel|retry` on a real database, and their errors."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from gathering.cli import app
from gathering.config import get_settings

runner = CliRunner()


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, migrated_database_url: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def queued(url: str, task: str, status: str = "todo") -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
            " VALUES ('default', %s, %s, %s) RETURNING id",
            (task, Jsonb({"n": 1}), status),
        ).fetchone()
    assert row is not None
    return int(row[0])


def status_of(url: str, job_id: int) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_list_cancel_and_retry_from_the_shell(database: str) -> None:
    waiting = queued(database, "plugin:work")
    broken = queued(database, "plugin:broken", "failed")

    listed = runner.invoke(app, ["jobs", "list"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert "plugin:work" in listed.output and "plugin:broken" in listed.output
    assert "1 failed, 1 todo" in listed.output
    only_failed = runner.invoke(app, ["jobs", "list", "--status", "failed"])
    assert "plugin:broken" in only_failed.output and "plugin:work" not in only_failed.output

    cancelled = runner.invoke(app, ["jobs", "cancel", str(waiting)])
    assert cancelled.exit_code == 0, cancelled.output
    assert status_of(database, waiting) == "cancelled"

    retried = runner.invoke(app, ["jobs", "retry", str(broken)])
    assert retried.exit_code == 0, retried.output
    assert status_of(database, broken) == "todo"


def test_mistakes_get_a_clear_message(database: str) -> None:
    done = queued(database, "plugin:work", "succeeded")
    for args, message in (
        (["jobs", "retry", str(done)], "is succeeded: only a failed job can be retried"),
        (["jobs", "cancel", str(done)], "is succeeded: there is nothing to cancel"),
        (["jobs", "cancel", "424242"], "no job 424242"),
        (["jobs", "list", "--status", "exploded"], "unknown job status 'exploded'"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, result.output

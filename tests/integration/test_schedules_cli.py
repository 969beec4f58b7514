"""`gathering schedules apply|list|show|pause|resume|trigger|runs|delete`, and `pipelines show`
of a run whose nodes are still pending or queued (statuses without a colour)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_runtime import linear
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


def test_a_schedule_from_a_file_to_its_runs(database: str, tmp_path: Path) -> None:
    path = tmp_path / "standup.yaml"
    path.write_text(
        "name: standup\nkind: cron\ncron: '0 9 * * 1-5'\ntimezone: Europe/Paris\n"
        "action: send_notification\nconfig:\n  title: Stand-up in 5 minutes\n"
    )
    assert "created schedule standup (id 1, active)" in invoke("schedules", "apply", str(path))
    listed = invoke("schedules", "list")
    assert "1 schedule(s)" in listed and "standup" in listed and "active" in listed
    shown = invoke("schedules", "show", "standup", "--count", "2")
    assert (
        '"timezone": "Europe/Paris"' in shown
        and shown.count("T07:00:00+00:00") + shown.count("T08:00:00+00:00") == 2
    )

    path.write_text(path.read_text().replace("0 9", "30 8"))
    assert "changed schedule standup" in invoke("schedules", "apply", str(path))
    assert "standup: paused" in invoke("schedules", "pause", "standup")
    assert "standup: resumed" in invoke("schedules", "resume", "standup")
    assert "run 1 of standup: queued" in invoke("schedules", "trigger", "standup")
    runs = invoke("schedules", "runs", "standup")
    assert "manual" in runs and "queued" in runs  # no worker here: it waits for one
    assert "standup: deleted" in invoke("schedules", "delete", "standup")
    assert "0 schedule(s)" in invoke("schedules", "list")


def test_an_event_schedule_is_shown_with_the_event_it_fires_on(
    database: str, tmp_path: Path
) -> None:
    path = tmp_path / "on-runs.yaml"
    path.write_text(
        "name: on-runs\nkind: event\nevent_type: pipeline_run.finished\n"
        "action: send_notification\nconfig:\n  title: A run ended\n"
    )
    invoke("schedules", "apply", str(path))
    assert "next: on each pipeline_run.finished event" in invoke("schedules", "show", "on-runs")


def test_mistakes_are_named(database: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "bad", "kind": "interval", "action": "call_api"}))
    result = runner.invoke(app, ["schedules", "apply", str(path)])
    assert result.exit_code == 1
    assert "a interval schedule needs `every_seconds`" in result.output
    missing = runner.invoke(app, ["schedules", "pause", "nothing"])
    assert missing.exit_code == 1 and "no schedule named 'nothing'" in missing.output


def test_pipelines_show_a_run_with_nodes_not_started(database: str, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(linear({"id": "later", "type": "delay", "config": {"seconds": 60}})))
    invoke("pipelines", "apply", str(path))
    started = invoke("pipelines", "run", "p")  # no worker: its nodes wait
    found = re.search(r"run (\d+)", started)
    assert found is not None, started
    run_id = found.group(1)
    shown = invoke("pipelines", "show", run_id)
    assert "queued" in shown and "pending" in shown

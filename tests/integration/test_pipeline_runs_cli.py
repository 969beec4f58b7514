"""`gathering pipelines run|runs|show|cancel|retry`: with no worker alive, `run --follow` runs
the nodes itself and shows them live; failures exit 1 with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_runtime import LAB, TOOLS, linear, tool_node
from typer.testing import CliRunner

from gathering.cli import app
from gathering.config import get_settings
from gathering.tools import registry as registry_module

runner = CliRunner()


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, migrated_database_url: str) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    LAB.calls.clear()
    LAB.failures_left.clear()
    for tool in TOOLS:
        registry_module.registry.register(tool)
    yield migrated_database_url
    for tool in TOOLS:
        registry_module.registry.unregister(tool.name)
    get_settings.cache_clear()


def apply(tmp_path: Path, document: dict[str, object]) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(document))
    result = runner.invoke(app, ["pipelines", "apply", str(path)])
    assert result.exit_code == 0, result.output


def test_run_follow_retry_show_and_cancel(database: str, tmp_path: Path) -> None:
    LAB.failures_left["cli"] = 1
    apply(
        tmp_path,
        linear(
            tool_node("a", "echo", text="{{ input.x }}"),
            tool_node("b", "flaky", key="cli"),
            name="cli",
        ),
    )

    failed = runner.invoke(
        app, ["pipelines", "run", "cli", "--input", '{"x": "hello"}', "--follow"]
    )
    assert failed.exit_code == 1, failed.output
    assert "this command runs the jobs itself" in failed.output
    assert "run 1 failed: cli failed on purpose" in failed.output
    assert "hello" in failed.output  # a's output in the live table

    retried = runner.invoke(app, ["pipelines", "retry", "1", "--follow"])
    assert retried.exit_code == 0, retried.output
    assert LAB.calls["hello"] == 1  # a was reused, not run again

    listed = runner.invoke(app, ["pipelines", "runs", "cli"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "retry" in listed.output

    shown = runner.invoke(app, ["pipelines", "show", "2"])
    assert shown.exit_code == 0 and "cli ok" in shown.output

    refused = runner.invoke(app, ["pipelines", "cancel", "2"])
    assert refused.exit_code == 1 and "is succeeded: there is nothing to cancel" in refused.output


def test_run_without_a_worker_says_the_run_waits(database: str, tmp_path: Path) -> None:
    apply(tmp_path, linear(name="waits"))
    started = runner.invoke(app, ["pipelines", "run", "waits"])
    assert started.exit_code == 0, started.output
    assert "no worker is running" in started.output and "run 1 started" in started.output
    bad = runner.invoke(app, ["pipelines", "run", "waits", "--input", "[1]"])
    assert bad.exit_code == 1 and "--input must be a JSON object" in bad.output
    cancelled = runner.invoke(app, ["pipelines", "cancel", "1"])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output

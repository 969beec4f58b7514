"""`gathering projects create|list|show|link|delete` against a migrated database: a project
made (empty, or an existing directory registered), listed and shown with its stack and
context, an agent and a circle linked and unlinked, a project deleted; refusals (an unknown
project or agent, bad input) exit 1 with a clear message and no traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from gathering.cli import app
from gathering.config import get_settings

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, migrated_database_url: str) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), env=WIDE)


def invoke(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def test_a_project_is_made_shown_linked_and_deleted(database: str) -> None:
    made = invoke("projects", "create", "shop", "--description", "The shop")
    directory = Path(re.search(r"in (/\S+):", made.replace("\n", "")).group(1))  # type: ignore[union-attr]
    assert directory.is_dir()
    (directory / "main.go").write_text("package main\n")
    (directory / "go.mod").write_text("module shop\n")
    invoke("agents", "create", "Gopher", "--provider", "ollama", "--model", "llama3.2")
    invoke("circles", "create", "gophers")

    listed = invoke("projects", "list")
    assert "shop" in listed and "created" in listed

    linked = invoke("projects", "link", "shop", "--agent", "Gopher")
    assert "now works in project shop" in linked
    invoke("projects", "link", "shop", "--circle", "gophers")
    shown = invoke("projects", "show", "shop")
    assert "agents: Gopher" in shown and "circles: gophers" in shown
    assert "You work in project 'shop'" in shown

    assert "unlinked" in invoke("projects", "link", "shop", "--agent", "Gopher", "--unlink")
    assert "agents: -" in invoke("projects", "show", "shop")

    invoke("projects", "delete", "shop", "--yes")
    assert not directory.exists()
    assert "no project named 'shop'" in refused("projects", "show", "shop")


def test_an_existing_directory_is_registered_and_kept(
    database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "package.json").write_text('{"scripts": {"test": "vitest"}}')
    (tmp_path / "repo" / "yarn.lock").write_text("")
    (tmp_path / "repo" / "index.ts").write_text("export {}\n")
    refused("projects", "create", "web", "--directory", str(tmp_path / "repo"))
    monkeypatch.setenv("GATHERING_PROJECT_REGISTER_ROOTS", str(tmp_path))
    get_settings.cache_clear()
    invoke("projects", "create", "web", "--directory", str(tmp_path / "repo"))
    shown = invoke("projects", "show", "web")
    assert "typescript" in shown and "yarn" in shown and "yarn test" in shown
    invoke("projects", "delete", "web", "--yes")
    assert (tmp_path / "repo" / "index.ts").exists()


def test_refusals_are_clear(database: str) -> None:
    assert "Traceback" not in refused("projects", "create", "Bad Name")
    invoke("projects", "create", "one")
    assert "no agent 'Nobody'" in refused("projects", "link", "one", "--agent", "Nobody")
    assert "no project 99999" in refused("projects", "show", "99999")
    result = run("projects", "link", "one")
    assert result.exit_code == 2 and "--agent or --circle" in result.output

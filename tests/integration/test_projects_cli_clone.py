"""`gathering projects create NAME --clone URL` against a migrated database: a local repository
on the clone allow-list (GATHERING_PROJECT_CLONE_ALLOWED) is cloned into a new folder under the
projects root and shown as the project's source; a URL off the list, or any URL when the list
is empty, is refused with exit 1, a clear message and no traceback, and, like a clone that
fails, leaves neither a project nor a folder behind."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_env import person_git_env
from typer.testing import CliRunner, Result

from gathering.cli import app
from gathering.config import get_settings

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def plain_git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=person_git_env(cwd),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def make_repository(path: Path) -> Path:
    """A repository at `path` with one commit on main (README.md), as in test_project_clone."""
    path.mkdir(parents=True)
    assert plain_git(path, "init", "-q", "-b", "main").returncode == 0
    (path / "README.md").write_text("hello\n")
    for args in (("add", "README.md"), ("commit", "-q", "-m", "first")):
        done = plain_git(path, *args)
        assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def projects_root(tmp_path: Path) -> Path:
    return tmp_path / "projects"


@pytest.fixture
def database(
    monkeypatch: pytest.MonkeyPatch, migrated_database_url: str, projects_root: Path
) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("GATHERING_PROJECTS_ROOT", str(projects_root))
    monkeypatch.delenv("GATHERING_PROJECT_CLONE_ALLOWED", raising=False)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """The folder on the allow-list: sources/app is a repository."""
    folder = tmp_path / "sources"
    make_repository(folder / "app")
    return folder


def allow_clones_from(monkeypatch: pytest.MonkeyPatch, *entries: str) -> None:
    monkeypatch.setenv("GATHERING_PROJECT_CLONE_ALLOWED", ",".join(entries))
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
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # rich wraps long messages


def folders(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def test_a_repository_on_the_allow_list_is_cloned_into_a_project(
    database: str, monkeypatch: pytest.MonkeyPatch, sources: Path, projects_root: Path
) -> None:
    allow_clones_from(monkeypatch, str(sources))
    url = str(sources / "app")
    made = invoke("projects", "create", "cloned", "--clone", url)
    found = re.search(r"project cloned \((\d+)\) in (/\S+):", made.replace("\n", ""))
    assert found, made
    directory = Path(found.group(2))
    assert directory.parent == projects_root.resolve()
    assert folders(projects_root) == [directory.name]
    assert (directory / "README.md").read_text() == "hello\n"
    log = plain_git(directory, "log", "--format=%s")
    assert log.returncode == 0 and log.stdout.split() == ["first"], log.stderr
    remote = plain_git(directory, "remote", "get-url", "origin")
    assert remote.stdout.strip() == url

    shown = invoke("projects", "show", "cloned")
    assert "cloned" in shown.splitlines()[0]
    assert f"cloned from: {url}" in shown
    listed = invoke("projects", "list")
    assert "cloned" in listed and "1 project(s)" in listed

    file_url = f"file://{sources / 'app'}"
    again = invoke("projects", "create", "by-file-url", "--clone", file_url)
    assert "by-file-url" in again
    assert f"cloned from: {file_url}" in invoke("projects", "show", "by-file-url")
    assert len(folders(projects_root)) == 2


def test_a_url_off_the_allow_list_is_refused_and_leaves_nothing(
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    sources: Path,
    tmp_path: Path,
    projects_root: Path,
) -> None:
    elsewhere = make_repository(tmp_path / "elsewhere")
    (sources / "empty").mkdir()  # on the list, but no repository: the clone itself fails

    # No allow-list at all: cloning is off.
    closed = refused("projects", "create", "nope", "--clone", str(sources / "app"))
    assert "cloning is not enabled" in closed
    assert "GATHERING_PROJECT_CLONE_ALLOWED" in closed

    allow_clones_from(
        monkeypatch, str(sources / "app"), str(sources / "empty"), "https://example.com/ok"
    )
    for url, said in (
        (str(elsewhere), f"cloning from '{elsewhere}' is not allowed"),
        (f"file://{elsewhere}", f"cloning from 'file://{elsewhere}' is not allowed"),
        (
            "https://example.com/other/repo.git",
            "cloning from 'https://example.com/other/repo.git' is not allowed",
        ),
    ):
        message = refused("projects", "create", "nope", "--clone", url)
        assert f"error: {said}" in message, (url, message)
        assert "hint: an operator can allow it: GATHERING_PROJECT_CLONE_ALLOWED" in message
    dots = refused("projects", "create", "nope", "--clone", f"{sources}/app/../../elsewhere")
    assert "is not an https URL or the absolute path of a local repository" in dots
    other_kind = refused("projects", "create", "nope", "--clone", "ssh://example.com/x.git")
    assert "is not an https URL or the absolute path of a local repository" in other_kind
    failed = refused("projects", "create", "nope", "--clone", str(sources / "empty"))
    assert f"error: cloning '{sources / 'empty'}' failed" in failed, failed

    assert folders(projects_root) == []
    assert "0 project(s)" in invoke("projects", "list")
    assert "no project named 'nope'" in refused("projects", "show", "nope")

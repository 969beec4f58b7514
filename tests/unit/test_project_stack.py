"""Stack detection and the context text, on directories made here: languages by extension
(dependency and build folders skipped, symlinks not followed), package managers and the test
command from the files that name them, and a context text that keeps to its budget."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gathering.projects import ProjectSettings
from gathering.projects.stack import build_context, detect_stack
from gathering.projects.store import ProjectRecord


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "managers", "test_command"),
    [
        ({"pyproject.toml": "[tool.pytest.ini_options]\n", "uv.lock": ""}, ["pip", "uv"], "pytest"),
        ({"requirements.txt": "", "tests/test_a.py": ""}, ["pip"], "pytest"),
        ({"package.json": '{"scripts": {"test": "jest"}}'}, ["npm"], "npm test"),
        (
            {"package.json": '{"scripts": {"test": "x"}}', "pnpm-lock.yaml": ""},
            ["pnpm"],
            "pnpm test",
        ),
        ({"package.json": "not json"}, ["npm"], None),
        ({"Cargo.toml": ""}, ["cargo"], "cargo test"),
        ({"go.mod": ""}, ["go"], "go test ./..."),
        ({"pom.xml": ""}, ["maven"], "mvn test"),
        ({"pyproject.toml": "not = [toml"}, ["pip"], None),
        ({}, [], None),
    ],
)
def test_managers_and_test_command(
    tmp_path: Path, files: dict[str, str], managers: list[str], test_command: str | None
) -> None:
    stack = detect_stack(_tree(tmp_path, files))
    assert stack["package_managers"] == managers
    assert stack["test_command"] == test_command


def test_languages_skip_dependencies_and_symlinks(tmp_path: Path) -> None:
    outside = _tree(tmp_path / "outside", {"a.rs": "", "b.rs": "", "c.rs": ""})
    root = _tree(
        tmp_path / "p",
        {"a.py": "", "b.py": "", "c.ts": "", "node_modules/x.js": "", ".git/objects/y.go": ""},
    )
    (root / "linked").symlink_to(outside)
    (root / "file-link.py").symlink_to(root / "a.py")
    stack = detect_stack(root)
    assert stack["languages"] == [
        {"name": "python", "files": 2},
        {"name": "typescript", "files": 1},
    ]
    assert stack["files"] == 3 and not stack["truncated"]


def _record(root: Path, **settings: object) -> ProjectRecord:
    now = datetime.now(UTC)
    return ProjectRecord(
        1,
        1,
        "demo",
        "A demo",
        root,
        "created",
        None,
        ProjectSettings.model_validate(settings),
        {},
        "",
        now,
        now,
    )


def test_the_context_text_keeps_to_its_budget(tmp_path: Path) -> None:
    files = {f"pkg/module_{n:03}.py": "" for n in range(400)}
    root = _tree(tmp_path, {**files, "README.md": "# Demo\n" + "words " * 1000})
    project = _record(root, context_budget=2_000, conventions="Type everything.")
    context = build_context(project, detect_stack(root))
    assert len(context) <= 2_000
    assert "Type everything." in context and "README (start):" in context
    assert "pkg/module_000.py" in context and "more files" in context

    small = build_context(_record(root, context_budget=500, notes="n" * 600), {})
    assert len(small) == 500 and small.endswith("…")

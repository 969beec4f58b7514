"""What a project is made of, read from its files: languages (by file extension), package
managers and the test command (by the files that name them), and the context text linked
agents get in their prompt (a README summary, the conventions, the file tree, to a budget).

Everything here blocks (it reads the disk) and is bounded: at most `MAX_FILES` entries are
looked at, symlinks are never followed, and dependency and build folders are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from gathering.projects.store import ProjectRecord

MAX_FILES = 20_000
MAX_README_CHARS = 1_500
MAX_MANIFEST_BYTES = 256 * 1024
SKIPPED = frozenset(
    {
        ".git",
        "node_modules",
        ".venv",
        "venv",
        "__pycache__",
        "dist",
        "build",
        "target",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".next",
        "vendor",
    }
)
LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".rs": "rust",
    ".go": "go",
    ".java": "java",
    ".kt": "kotlin",
    ".rb": "ruby",
    ".php": "php",
    ".c": "c",
    ".h": "c",
    ".cpp": "c++",
    ".cc": "c++",
    ".hpp": "c++",
    ".cs": "c#",
    ".swift": "swift",
    ".scala": "scala",
    ".sh": "shell",
    ".sql": "sql",
    ".html": "html",
    ".css": "css",
    ".ex": "elixir",
    ".exs": "elixir",
    ".lua": "lua",
    ".r": "r",
}
# file in the project's top folder -> the package manager it stands for
MANAGERS = {
    "uv.lock": "uv",
    "poetry.lock": "poetry",
    "Pipfile": "pipenv",
    "requirements.txt": "pip",
    "setup.py": "pip",
    "pyproject.toml": "pip",
    "package-lock.json": "npm",
    "yarn.lock": "yarn",
    "pnpm-lock.yaml": "pnpm",
    "bun.lockb": "bun",
    "Cargo.toml": "cargo",
    "go.mod": "go",
    "pom.xml": "maven",
    "build.gradle": "gradle",
    "build.gradle.kts": "gradle",
    "Gemfile": "bundler",
    "composer.json": "composer",
    "mix.exs": "mix",
}


MAX_DEPTH = 64  # folders below the root walked at most


def _walk(root: Path) -> list[str]:
    """Paths of the regular files below `root`, relative and sorted, bounded. Folders are
    opened from their parent's descriptor without following a symlink (`os.fwalk`), so one
    swapped in while the walk runs is never entered; symlinks are never listed."""
    found: list[str] = []
    try:
        walk = os.fwalk(root, follow_symlinks=False)
        for folder, folders, files, folder_fd in walk:
            relative = os.path.relpath(folder, root)
            prefix = "" if relative == "." else relative + "/"
            depth = 0 if relative == "." else relative.count("/") + 1
            folders[:] = [] if depth >= MAX_DEPTH else [f for f in folders if f not in SKIPPED]
            for name in files:
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
                        found.append(prefix + name)
            if len(found) >= MAX_FILES:
                break
    except OSError:
        pass
    return sorted(found[:MAX_FILES])


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read_small(root: Path, name: str) -> str | None:
    """The text of `name` in `root`'s top folder: a regular file (never through a symlink,
    never a pipe) of at most MAX_MANIFEST_BYTES; None otherwise."""
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
            return None
        return handle.read(MAX_MANIFEST_BYTES).decode("utf-8", errors="replace")


def _python_test(root: Path, top: set[str]) -> str | None:
    text = _read_small(root, "pyproject.toml") if "pyproject.toml" in top else None
    if text is not None:
        try:
            tools = tomllib.loads(text).get("tool", {})
        except tomllib.TOMLDecodeError:
            tools = {}
        if "pytest" in tools:
            return "pytest"
    if {"pytest.ini", "conftest.py", "tox.ini"} & top:
        return "pytest"
    return None


def _node_test(root: Path, managers: list[str]) -> str | None:
    text = _read_small(root, "package.json")
    try:
        scripts = json.loads(text).get("scripts", {}) if text else {}
    except (json.JSONDecodeError, AttributeError):
        scripts = {}
    if not isinstance(scripts, dict) or "test" not in scripts:
        return None
    manager = next((m for m in ("pnpm", "yarn", "bun") if m in managers), "npm")
    return f"{manager} test"


def _test_command(root: Path, top: set[str], files: list[str], managers: list[str]) -> str | None:
    found = _python_test(root, top)
    if found is None and "package.json" in top:
        found = _node_test(root, managers)
    if found is None:
        by_manager = {
            "cargo": "cargo test",
            "go": "go test ./...",
            "maven": "mvn test",
            "gradle": "gradle test",
            "bundler": "bundle exec rake test",
            "mix": "mix test",
        }
        found = next((by_manager[m] for m in managers if m in by_manager), None)
    if found is None and any(Path(f).name.startswith("test_") and f.endswith(".py") for f in files):
        found = "pytest"
    return found


def detect_stack(root: Path) -> dict[str, Any]:
    """Languages (most files first, with counts), package managers and the test command of the
    project in `root`; blocking."""
    files = _walk(root)
    counts = Counter(
        LANGUAGES[suffix] for f in files if (suffix := Path(f).suffix.lower()) in LANGUAGES
    )
    top = {f for f in files if "/" not in f}
    managers = sorted({MANAGERS[name] for name in top if name in MANAGERS})
    if "package.json" in top and not {"yarn", "pnpm", "bun"} & set(managers):
        managers = sorted({*managers, "npm"})
    return {
        "languages": [{"name": name, "files": n} for name, n in counts.most_common()],
        "package_managers": managers,
        "test_command": _test_command(root, top, files, managers),
        "files": len(files),
        "truncated": len(files) >= MAX_FILES,
    }


def _readme_summary(root: Path) -> str:
    for name in ("README.md", "README.rst", "README.txt", "README"):
        text = _read_small(root, name)
        if text:
            summary = text.strip()
            return summary if len(summary) <= MAX_README_CHARS else summary[:MAX_README_CHARS] + "…"
    return ""


def _tree(files: list[str], budget: int) -> str:
    """The paths of `files`, one per line, in at most `budget` characters."""
    lines: list[str] = []
    used = 0
    for n, path in enumerate(files):
        more = f"… and {len(files) - n} more files"
        if used + len(path) + 1 + len(more) > budget and n < len(files) - 1:
            lines.append(more)
            break
        if used + len(path) > budget:
            break
        lines.append(path)
        used += len(path) + 1
    return "\n".join(lines)


def build_context(project: ProjectRecord, stack: dict[str, Any]) -> str:
    """The context text of `project`: what linked agents are told about it, within its
    `context_budget` characters; blocking."""
    settings = project.settings
    parts = [f"You work in project {project.name!r}; its directory is your workspace."]
    if project.description:
        parts.append(project.description)
    languages = ", ".join(entry["name"] for entry in stack.get("languages", [])[:5])
    if languages:
        parts.append(f"Languages: {languages}.")
    if stack.get("package_managers"):
        parts.append(f"Package managers: {', '.join(stack['package_managers'])}.")
    commands = settings.commands.model_dump(exclude_none=True)
    if stack.get("test_command") and "test" not in commands:
        commands["test"] = stack["test_command"]
    if commands:
        parts.append("Commands: " + "; ".join(f"{k}: {v}" for k, v in commands.items()) + ".")
    if settings.conventions:
        parts.append(f"Conventions:\n{settings.conventions}")
    if settings.notes:
        parts.append(f"Notes:\n{settings.notes}")
    readme = _readme_summary(project.directory)
    if readme:
        parts.append(f"README (start):\n{readme}")
    text = "\n\n".join(parts)
    budget = settings.context_budget
    if len(text) >= budget:
        return text[: budget - 1] + "…"
    room = budget - len(text) - len("\n\nFiles:\n")
    tree = _tree(_walk(project.directory), room) if room > 40 else ""
    return f"{text}\n\nFiles:\n{tree}" if tree else text

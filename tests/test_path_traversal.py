"""Path traversal defense: `resolve_in_workspace` keeps every user path inside its root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gathering.errors import InvalidInputError, NotFoundError, PathTraversalError
from gathering.tools import resolve_in_workspace
from gathering.tools.builtins import files as file_tools

TRAVERSAL_CORPUS = [
    "..",
    "../",
    "../secret",
    "../../etc/passwd",
    "../../../../../../../../etc/passwd",
    "a/../../b",
    "a/b/../../../c",
    "./../x",
    "a/./../../x",
    "/etc/passwd",
    "//etc/passwd",
    "/",
    "~/.ssh/id_rsa",
    "C:/Windows/win.ini",
    "c:\\windows",
    "..\\..\\",
    "..\\..\\windows\\win.ini",
    "a\\..\\..\\b",
    "%2e%2e%2f",
    "%2e%2e/secret",
    "..%2fsecret",
    "%2e%2e%5c",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "%252e%252e%252f",
    "%25252e%25252e%25252f",
    "..%252f..%252fetc",
    "%2fetc%2fpasswd",
    "%5c..%5c..",
    "a%00.txt",
    "a\x00.txt",
    "\x00",
    "safe.txt\x00../../etc/passwd",
    "line\nbreak",
    "\uff0e\uff0e/secret",  # full-width full stops
    "..\uff0fsecret",  # full-width solidus
    "\u2025/secret",  # two-dot leader
    "%ef%bc%8e%ef%bc%8e/secret",  # full-width dots, percent-encoded
    "%c0%ae%c0%ae/",  # overlong UTF-8 for "."
    "\uff3c..",  # full-width reverse solidus
    "x" * 5000,
    "a/" + "b" * 300,
]

ALLOWED = {
    "notes.txt": "notes.txt",
    "a/b/c.txt": "a/b/c.txt",
    "a..b.txt": "a..b.txt",
    "..hidden": "..hidden",
    "dir../file": "dir../file",
    ".config/settings.json": ".config/settings.json",
    "./a/./b": "a/b",
    "a//b": "a/b",
    "100%.txt": "100%.txt",
    "rapport é.txt": "rapport é.txt",
    "": "",
    ".": "",
}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c.txt").write_text("inside")
    (tmp_path / "secret").write_text("outside")
    return root


@pytest.mark.parametrize("user_path", TRAVERSAL_CORPUS, ids=repr)
def test_traversal_corpus_is_refused(workspace, user_path):
    with pytest.raises(PathTraversalError) as info:
        resolve_in_workspace(workspace, user_path)
    assert info.value.http_status == 422
    assert info.value.code == "path_traversal"


@pytest.mark.parametrize(("user_path", "expected"), ALLOWED.items(), ids=repr)
def test_ordinary_paths_resolve_inside(workspace, user_path, expected):
    resolved = resolve_in_workspace(workspace, user_path)
    assert resolved == workspace.resolve().joinpath(*[p for p in expected.split("/") if p])
    assert resolved.is_relative_to(workspace.resolve())


def test_symlink_to_a_file_outside_is_refused(workspace, tmp_path):
    (workspace / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(PathTraversalError, match="outside the workspace"):
        resolve_in_workspace(workspace, "link")


def test_symlinked_directory_outside_is_refused_for_paths_beneath_it(workspace, tmp_path):
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (workspace / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathTraversalError):
        resolve_in_workspace(workspace, "escape/new-file.txt")


def test_symlink_chain_leading_out_is_refused(workspace, tmp_path):
    (workspace / "hop2").symlink_to(tmp_path / "secret")
    (workspace / "hop1").symlink_to(workspace / "hop2")
    with pytest.raises(PathTraversalError):
        resolve_in_workspace(workspace, "hop1")


def test_relative_symlink_climbing_out_is_refused(workspace):
    (workspace / "a" / "up").symlink_to(Path("..") / ".." / "secret")
    with pytest.raises(PathTraversalError):
        resolve_in_workspace(workspace, "a/up")


def test_symlink_that_stays_inside_is_allowed(workspace):
    (workspace / "shortcut").symlink_to(workspace / "a" / "b", target_is_directory=True)
    resolved = resolve_in_workspace(workspace, "shortcut/c.txt")
    assert resolved == (workspace / "a" / "b" / "c.txt").resolve()
    assert resolved.read_text() == "inside"


def test_a_root_reached_through_a_symlink_works(tmp_path, workspace):
    alias = tmp_path / "alias"
    alias.symlink_to(workspace, target_is_directory=True)
    assert resolve_in_workspace(alias, "a/b/c.txt") == (workspace / "a/b/c.txt").resolve()


def test_dangling_paths_inside_are_allowed_for_creating_files(workspace):
    resolved = resolve_in_workspace(workspace, "new/dir/file.txt")
    assert resolved == workspace.resolve() / "new" / "dir" / "file.txt"


def test_root_may_be_given_as_text(workspace):
    assert resolve_in_workspace(str(workspace), "a") == workspace.resolve() / "a"


def test_non_text_paths_are_refused(workspace):
    with pytest.raises(InvalidInputError):
        resolve_in_workspace(workspace, b"../x")  # type: ignore[arg-type]


def test_the_error_names_the_path_and_the_reason(workspace):
    with pytest.raises(PathTraversalError) as info:
        resolve_in_workspace(workspace, "../../etc/passwd")
    assert "../../etc/passwd" in info.value.message
    assert "`..`" in info.value.message
    assert info.value.hint


def test_the_corpus_never_reaches_outside_files(workspace, tmp_path):
    """Whatever slips a check must still not open a file outside (belt and braces)."""
    for user_path in TRAVERSAL_CORPUS:
        try:
            resolved = resolve_in_workspace(workspace, user_path)
        except PathTraversalError:
            continue
        assert os.path.commonpath([resolved, workspace.resolve()]) == str(workspace.resolve())


# --- the built-in file tools -----------------------------------------------------------------

FILE_TOOLS = {
    "read_file": lambda root, path: file_tools.read_file(root, path),
    "write_file": lambda root, path: file_tools.write_file(root, path, "pwned"),
    "list_files": lambda root, path: file_tools.list_files(root, path, recursive=True),
    "search_files": lambda root, path: file_tools.search_files(root, "outside", path=path),
    "apply_patch-add": lambda root, path: file_tools.apply_patch(
        root, f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+pwned\n"
    ),
    "apply_patch-modify": lambda root, path: file_tools.apply_patch(
        root, f"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-outside\n+pwned\n"
    ),
    "apply_patch-remove": lambda root, path: file_tools.apply_patch(
        root, f"--- a/{path}\n+++ /dev/null\n@@ -1 +0,0 @@\n-outside\n"
    ),
}


def _tree(folder: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry under `folder`, with its mode, modification time and (for files) bytes."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            found[str(path)] = (info.st_mode, info.st_mtime_ns, data)
    return found


@pytest.mark.parametrize("user_path", TRAVERSAL_CORPUS, ids=repr)
@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_file_tools_refuse_the_corpus_and_touch_nothing(workspace, tmp_path, tool, user_path):
    before = _tree(tmp_path)
    # A line break cannot be spelled in a diff header: the diff then names "line" (inside, and
    # missing) or is malformed; either way it is refused.
    unspellable = tool.startswith("apply_patch") and "\n" in user_path
    expected = (InvalidInputError, NotFoundError) if unspellable else PathTraversalError
    with pytest.raises(expected):
        FILE_TOOLS[tool](workspace, user_path)
    assert _tree(tmp_path) == before

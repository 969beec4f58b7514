"""The file tools reach entries from the root's descriptor: a folder swapped for a symlink
after the path check is never followed (reads, writes, walks, patches), and paths are at
most MAX_PATH_DEPTH names deep.

The swap is made deterministic by hooking the system call that uses the path (`os.open`,
`os.scandir`) and swapping just before it runs: the moment a real race would hit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gathering.errors import InvalidInputError, NotFoundError, PathTraversalError
from gathering.tools.builtins import files
from gathering.tools.builtins.beneath import MAX_PATH_DEPTH
from gathering.tools.builtins.files import (
    apply_patch,
    list_files,
    read_file,
    search_files,
    write_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "sub" / "secret.txt").write_text("inside\n")
    return workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("TOKEN=outside\n")
    return folder


def _swap(root: Path, outside: Path) -> None:
    """ws/sub moved aside (to ws/sub-old) and replaced by a symlink to the outside folder."""
    (root / "sub").rename(root / "sub-old")
    (root / "sub").symlink_to(outside, target_is_directory=True)


def _swap_on_open(monkeypatch, root: Path, outside: Path, name_part: str) -> list[bool]:
    """Swap ws/sub once, right before the first os.open of a name holding `name_part`."""
    real_open = os.open
    swapped: list[bool] = []

    def hooked(path, flags, mode=0o777, *, dir_fd=None):
        if not swapped and name_part in os.fspath(path):
            swapped.append(True)
            _swap(root, outside)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", hooked)
    return swapped


class _Listed:
    """What os.scandir gives, from a list read before the swap."""

    def __init__(self, entries):
        self.entries = entries

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __iter__(self):
        return iter(self.entries)

    def close(self):
        return None


def _swap_after_first_listing(monkeypatch, root: Path, outside: Path) -> list[bool]:
    """Swap ws/sub right after the workspace root is listed (sub seen as a folder)."""
    real_scandir = os.scandir
    swapped: list[bool] = []

    def hooked(path="."):
        with real_scandir(path) as found:
            entries = list(found)
            for entry in entries:
                entry.is_dir(follow_symlinks=False)  # classified before the swap
                entry.is_symlink()
        if not swapped and any(entry.name == "sub" for entry in entries):
            swapped.append(True)
            _swap(root, outside)
        return _Listed(entries)

    monkeypatch.setattr(os, "scandir", hooked)
    return swapped


def _outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "TOKEN=outside\n"


# --- a folder swapped for a symlink between the check and the use ------------------------------


def test_a_write_never_lands_outside_when_its_folder_is_swapped(root, outside, monkeypatch):
    swapped = _swap_on_open(monkeypatch, root, outside, ".gathering-")  # the temporary file
    try:
        write_file(root, "sub/owned.txt", "written")
    except (InvalidInputError, NotFoundError):
        pass  # refusing is fine; writing outside is not
    assert swapped
    _outside_untouched(outside)


def test_a_write_refuses_a_folder_that_became_a_symlink(root, outside, monkeypatch):
    swapped = _swap_on_open(monkeypatch, root, outside, "sub")  # the folder itself
    with pytest.raises(PathTraversalError, match="symlink"):
        write_file(root, "sub/owned.txt", "written")
    assert swapped
    _outside_untouched(outside)
    assert not (root / "sub-old" / "owned.txt").exists()


def test_a_write_into_a_folder_removed_meanwhile_is_refused_cleanly(root, monkeypatch):
    real_open = os.open

    def hooked(path, flags, mode=0o777, *, dir_fd=None):
        if ".gathering-" in os.fspath(path):
            (root / "sub" / "secret.txt").unlink()
            (root / "sub").rmdir()
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", hooked)
    with pytest.raises(NotFoundError, match="removed"):
        write_file(root, "sub/new.txt", "x")


def test_a_read_never_returns_an_outside_file_when_its_folder_is_swapped(
    root, outside, monkeypatch
):
    swapped = _swap_on_open(monkeypatch, root, outside, "secret.txt")
    try:
        text = read_file(root, "sub/secret.txt")
    except (InvalidInputError, NotFoundError):
        text = ""
    assert swapped
    assert "outside" not in text


def test_a_search_does_not_walk_into_a_folder_swapped_for_a_symlink(root, outside, monkeypatch):
    swapped = _swap_after_first_listing(monkeypatch, root, outside)
    found = search_files(root, "TOKEN")
    assert swapped
    assert found == []


def test_a_listing_does_not_walk_into_a_folder_swapped_for_a_symlink(root, outside, monkeypatch):
    swapped = _swap_after_first_listing(monkeypatch, root, outside)
    paths = [entry.get("path") for entry in list_files(root, recursive=True)]
    assert swapped
    assert "sub/secret.txt" not in paths  # it would be the outside file now


def test_a_patch_never_lands_outside_when_its_folder_is_swapped(root, outside, monkeypatch):
    swapped = _swap_on_open(monkeypatch, root, outside, ".gathering-")
    patch = "--- /dev/null\n+++ b/sub/owned.txt\n@@ -0,0 +1 @@\n+pwned\n"
    try:
        apply_patch(root, patch)
    except (InvalidInputError, NotFoundError):
        pass
    assert swapped
    _outside_untouched(outside)


def test_a_patch_never_changes_an_outside_file_when_its_folder_is_swapped(
    root, outside, monkeypatch
):
    (outside / "secret.txt").write_text("inside\n")  # the same text: the hunk would apply
    swapped = _swap_on_open(monkeypatch, root, outside, "secret.txt")
    patch = "--- a/sub/secret.txt\n+++ b/sub/secret.txt\n@@ -1 +1 @@\n-inside\n+pwned\n"
    try:
        apply_patch(root, patch)
    except (InvalidInputError, NotFoundError):
        pass
    assert swapped
    assert (outside / "secret.txt").read_text() == "inside\n"


def test_symlinks_that_stay_inside_still_work(root):
    (root / "link").symlink_to(root / "sub", target_is_directory=True)
    assert read_file(root, "link/secret.txt") == "inside\n"
    write_file(root, "link/new.txt", "x")
    assert (root / "sub" / "new.txt").read_text() == "x"
    assert [e["path"] for e in list_files(root, "link")] == ["sub/new.txt", "sub/secret.txt"]


# --- path depth --------------------------------------------------------------------------------


def test_a_2000_segment_path_is_refused_with_a_clear_error(root):
    deep = "a/" * 2000 + "x.txt"
    for call in (
        lambda: write_file(root, deep, "x"),
        lambda: read_file(root, deep),
        lambda: list_files(root, deep),
        lambda: search_files(root, "x", path=deep),
        lambda: apply_patch(root, f"--- /dev/null\n+++ b/{deep}\n@@ -0,0 +1 @@\n+x\n"),
    ):
        with pytest.raises(InvalidInputError, match=f"deep; the limit is {MAX_PATH_DEPTH}"):
            call()
    assert not (root / "a").exists()


def test_paths_up_to_the_depth_limit_are_written(root):
    deepest = "/".join(["d"] * (MAX_PATH_DEPTH - 1)) + "/f.txt"
    assert write_file(root, deepest, "x")["path"] == deepest
    assert read_file(root, deepest) == "x"
    with pytest.raises(InvalidInputError, match="deep"):
        write_file(root, "d/" + deepest, "x")


def test_walks_stop_at_the_depth_limit(root):
    folder = root
    for _ in range(MAX_PATH_DEPTH + 5):
        folder = folder / "d"
        folder.mkdir()
    (folder / "deep.txt").write_text("needle\n")
    listed = list_files(root, recursive=True)
    assert max(e["path"].count("/") + 1 for e in listed if "path" in e) == MAX_PATH_DEPTH
    assert listed[-1]["truncated"] is True and "deep" in listed[-1]["note"]
    found = search_files(root, "needle")
    assert found[-1]["truncated"] is True and len(found) == 1


def test_a_symlink_loop_is_refused(root):
    (root / "l1").symlink_to(root / "l2")
    (root / "l2").symlink_to(root / "l1")
    with pytest.raises(InvalidInputError, match="loop"):
        read_file(root, "l1/x")


def test_a_part_of_the_path_that_is_a_file_is_named(root):
    with pytest.raises(InvalidInputError, match=r"\('sub/secret.txt'\) is a file"):
        read_file(root, "sub/secret.txt/x")


def test_file_tools_still_accept_their_old_positional_arguments(root):
    assert files.read_file(root, "sub/secret.txt", 0, 1) == "inside\n"
    assert files.write_file(root, "sub/a.txt", "a", False)["bytes"] == 1
    assert files.list_files(root, "sub", "*.txt", False, 10)[0]["path"] == "sub/a.txt"
    assert files.search_files(root, "inside", "sub", "*.txt", False, 5)[0]["line"] == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_no_descriptor_is_left_open_by_successes_or_refusals(root, outside):
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "deep" / "er").mkdir(parents=True)
    calls = [
        lambda: read_file(root, "sub/secret.txt"),
        lambda: read_file(root, "sub/missing.txt"),
        lambda: read_file(root, "sub/secret.txt/x"),
        lambda: read_file(root, "escape/secret.txt"),
        lambda: write_file(root, "new/dir/a.txt", "a"),
        lambda: write_file(root, "sub", "a"),
        lambda: write_file(root, "x/y", "a", create_dirs=False),
        lambda: list_files(root, recursive=True, limit=2),
        lambda: list_files(root, "sub/secret.txt"),
        lambda: list_files(root, "nope"),
        lambda: search_files(root, "inside"),
        lambda: search_files(root, "inside", path="sub/secret.txt"),
        lambda: apply_patch(
            root, "--- a/sub/secret.txt\n+++ b/sub/secret.txt\n@@ -1 +1 @@\n-x\n+y\n"
        ),
        lambda: apply_patch(root, "--- /dev/null\n+++ b/deep/er/n.txt\n@@ -0,0 +1 @@\n+n\n"),
        lambda: apply_patch(root, "--- /dev/null\n+++ b/p/q/n.txt\n@@ -0,0 +1 @@\n+n\n"),
    ]

    def run_all() -> None:
        for call in calls:
            try:
                call()
            except (InvalidInputError, NotFoundError):
                pass

    run_all()  # the first round may create files; later rounds are refused more often
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        run_all()
    assert len(os.listdir("/proc/self/fd")) == before

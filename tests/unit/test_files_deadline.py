"""Every file tool takes `deadline` (a time.monotonic() value): once it has passed, the call
stops with ToolTimeoutError, and write_file / apply_patch never put files in place after it,
so a caller told "stopped" never sees the write happen later.

No test sleeps: a deadline already passed, or a clock that jumps at a chosen step."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gathering.errors import InvalidInputError, ToolTimeoutError
from gathering.tools.builtins import beneath, files
from gathering.tools.builtins import patch as patch_module
from gathering.tools.builtins.files import (
    apply_patch,
    list_files,
    read_file,
    search_files,
    write_file,
)

PASSED = -1.0  # a deadline long gone (time.monotonic() is far above it)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "app.py").write_text("one\ntwo\nthree\n")
    return workspace


def tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def _clock(monkeypatch, now: list[float]) -> None:
    """`beneath` (where every deadline is checked) reads time from `now[0]`."""
    monkeypatch.setattr(beneath, "time", SimpleNamespace(monotonic=lambda: now[0]))


# --- write_file ---------------------------------------------------------------------------------


def test_a_write_whose_deadline_passed_changes_nothing(root):
    before = tree(root)
    with pytest.raises(ToolTimeoutError, match="nothing was changed"):
        write_file(root, "new/deep/file.txt", "x", deadline=PASSED)
    with pytest.raises(ToolTimeoutError):
        write_file(root, "src/app.py", "replaced", deadline=PASSED)
    assert tree(root) == before  # no file, no temporary file, no folder made on the way


def test_a_write_checks_the_deadline_after_staging_right_before_the_rename(root, monkeypatch):
    now = [0.0]
    _clock(monkeypatch, now)
    staged = []
    real_stage = files.stage

    def stage_then_time_runs_out(folder, data, mode, what):
        name = real_stage(folder, data, mode, what)
        staged.append(name)
        now[0] = 100.0  # the call's time runs out while the file is on disk, not yet renamed
        return name

    monkeypatch.setattr(files, "stage", stage_then_time_runs_out)
    before = tree(root)
    with pytest.raises(ToolTimeoutError, match="before the files were written"):
        write_file(root, "src/app.py", "replaced", deadline=50.0)
    assert staged and tree(root) == before  # the temporary file is gone, app.py unchanged


def test_a_write_within_its_deadline_is_written(root):
    write_file(root, "a.txt", "x", deadline=time.monotonic() + 60)
    assert (root / "a.txt").read_text() == "x"


# --- apply_patch --------------------------------------------------------------------------------

CHANGE = "--- a/src/app.py\n+++ b/src/app.py\n@@ -2 +2 @@\n-two\n+TWO\n"
ADD_IN_NEW_FOLDER = "--- /dev/null\n+++ b/new/dir/file.txt\n@@ -0,0 +1 @@\n+new\n"
ADD_BESIDE = "--- /dev/null\n+++ b/src/other.py\n@@ -0,0 +1 @@\n+other\n"


def test_a_patch_whose_deadline_passed_changes_nothing(root):
    before = tree(root)
    with pytest.raises(ToolTimeoutError, match="nothing was changed"):
        apply_patch(root, CHANGE, deadline=PASSED)
    assert tree(root) == before


def test_a_patch_checks_the_deadline_right_before_it_commits(root, monkeypatch):
    """Everything is staged (temporary files beside the files, a new folder made), then the
    time runs out: all of it is removed and nothing is put in place."""
    real_check = patch_module.check_deadline
    commit_checked = []

    def time_runs_out_at_the_commit(deadline, message=beneath.NOT_WRITTEN):
        if message == beneath.NOT_WRITTEN:
            commit_checked.append(sorted(p.name for p in root.rglob(".gathering-*")))
            deadline = PASSED
        real_check(deadline, message)

    monkeypatch.setattr(patch_module, "check_deadline", time_runs_out_at_the_commit)
    before = tree(root)
    with pytest.raises(ToolTimeoutError, match="before the files were written"):
        apply_patch(root, CHANGE + ADD_IN_NEW_FOLDER + ADD_BESIDE, deadline=time.monotonic() + 60)
    assert len(commit_checked) == 1 and len(commit_checked[0]) == 3  # all three were staged
    assert tree(root) == before  # no temporary file, no "new" folder, app.py unchanged


def test_a_patch_checks_the_deadline_between_hunks(root, monkeypatch):
    (root / "n.txt").write_text("".join(f"{n}\n" for n in range(100)))
    hunks = "".join(f"@@ -{n * 10 + 1} +{n * 10 + 1} @@\n-{n * 10}\n+x\n" for n in range(8))
    now = [0.0]
    _clock(monkeypatch, now)
    real_sides = patch_module._hunk_sides
    seen = []

    def hunk_sides(hunk):
        seen.append(hunk)
        if len(seen) == 3:
            now[0] = 100.0  # the time runs out while the third hunk is placed
        return real_sides(hunk)

    monkeypatch.setattr(patch_module, "_hunk_sides", hunk_sides)
    before = tree(root)
    with pytest.raises(ToolTimeoutError, match="while the patch was applied"):
        apply_patch(root, "--- a/n.txt\n+++ b/n.txt\n" + hunks, deadline=50.0)
    assert len(seen) == 3  # stopped before the fourth hunk
    assert tree(root) == before


def test_a_patch_within_its_deadline_is_applied(root):
    apply_patch(root, CHANGE, deadline=time.monotonic() + 60)
    assert (root / "src" / "app.py").read_text() == "one\nTWO\nthree\n"


# --- list_files, search_files, read_file --------------------------------------------------------


def test_a_listing_checks_the_deadline_between_entries(root, monkeypatch):
    for n in range(10):
        (root / f"f{n}.txt").write_text("")
    now = [0.0]
    _clock(monkeypatch, now)
    steps = []
    real_check = beneath.check_deadline

    def counting_check(deadline, message=beneath.NOT_WRITTEN):
        steps.append(message)
        if len(steps) == 4:
            now[0] = 100.0
        real_check(deadline, message)

    monkeypatch.setattr(files, "check_deadline", counting_check)
    with pytest.raises(ToolTimeoutError, match="while listing"):
        list_files(root, recursive=True, deadline=50.0)
    assert len(steps) == 4  # stopped at the fourth of the 12 entries, not after the walk
    with pytest.raises(ToolTimeoutError):
        list_files(root, deadline=PASSED)


def test_a_search_stops_at_the_deadline_before_its_own_limit(root, monkeypatch):
    """SEARCH_SECONDS would end the backtracking match later; the call's deadline ends it
    first, as a timeout (not as the search's own "took too long")."""
    monkeypatch.setattr(files, "SEARCH_SECONDS", 5.0)
    (root / "bait.txt").write_text("a" * 5_000 + "!\n")
    with pytest.raises(ToolTimeoutError, match="during the search"):
        search_files(root, "(a+)+$", deadline=time.monotonic() + 0.3)
    with pytest.raises(ToolTimeoutError):
        search_files(root, "one", deadline=PASSED)


def test_the_search_limit_still_applies_when_the_deadline_is_later(root, monkeypatch):
    monkeypatch.setattr(files, "SEARCH_SECONDS", 0.2)
    (root / "bait.txt").write_text("a" * 5_000 + "!\n")
    with pytest.raises(InvalidInputError, match=r"longer than 0\.2s"):
        search_files(root, "(a+)+$", deadline=time.monotonic() + 60)


def test_a_walk_of_a_search_checks_the_deadline_between_entries(root, monkeypatch):
    for n in range(10):
        (root / f"f{n}.txt").write_text("")
    now = [0.0]
    _clock(monkeypatch, now)
    seen = []
    real_entries = files._entries

    def entries(folder):
        found = real_entries(folder)
        seen.append(len(found))
        now[0] = 100.0  # the time runs out once the root is listed
        return found

    monkeypatch.setattr(files, "_entries", entries)
    with pytest.raises(ToolTimeoutError):
        search_files(root, "x", deadline=50.0)
    assert seen == [11]  # the walk did not go on into src/


def test_a_read_whose_deadline_passed_is_stopped(root):
    with pytest.raises(ToolTimeoutError, match="while reading"):
        read_file(root, "src/app.py", deadline=PASSED)
    with pytest.raises(ToolTimeoutError):
        read_file(root, "src/app.py", offset=1, limit=1, deadline=PASSED)
    assert read_file(root, "src/app.py", deadline=time.monotonic() + 60) == "one\ntwo\nthree\n"


def test_a_long_line_window_checks_the_deadline_while_it_reads(root, monkeypatch):
    (root / "many.txt").write_text("x\n" * 20_000)
    now = [0.0]
    _clock(monkeypatch, now)
    real_check = beneath.check_deadline
    checks = []

    def counting_check(deadline, message=beneath.NOT_WRITTEN):
        checks.append(message)
        if len(checks) == 3:
            now[0] = 100.0
        real_check(deadline, message)

    monkeypatch.setattr(files, "check_deadline", counting_check)
    with pytest.raises(ToolTimeoutError, match="while reading"):
        read_file(root, "many.txt", offset=19_000, limit=5, deadline=50.0)
    assert len(checks) == 3  # at the start, at line 0, at line 4096: long before line 19,000

"""The built-in file tools: each works inside its workspace and refuses to reach outside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gathering.errors import InvalidInputError, NotFoundError, PathTraversalError
from gathering.tools.builtins import beneath, files
from gathering.tools.builtins.files import (
    MAX_MATCH_TEXT_CHARS,
    MAX_READ_BYTES,
    MAX_SCAN_LINE_CHARS,
    PATCH_FUZZ_LINES,
    apply_patch,
    list_files,
    read_file,
    search_files,
    write_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "app.py").write_text("import os\n\ndef main():\n    return 1\n")
    (workspace / "README.md").write_text("# Title\nsome text\n")
    return workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace, with a file the tools must never read or change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("TOP SECRET\n")
    return folder


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


# --- read_file ---------------------------------------------------------------------------------


def test_read_a_whole_file(root):
    assert read_file(root, "src/app.py") == "import os\n\ndef main():\n    return 1\n"


def test_read_a_line_window(root):
    assert read_file(root, "src/app.py", offset=2, limit=1) == "def main():\n"
    assert read_file(root, "src/app.py", offset=1, limit=100) == "\ndef main():\n    return 1\n"
    assert read_file(root, "src/app.py", offset=3) == "    return 1\n"


def test_read_an_offset_past_the_end_is_refused(root):
    with pytest.raises(InvalidInputError, match="past the end"):
        read_file(root, "src/app.py", offset=10)
    with pytest.raises(InvalidInputError, match="past the end"):
        read_file(root, "src/app.py", offset=10, limit=5)


def test_read_an_empty_file(root):
    (root / "empty").write_text("")
    assert read_file(root, "empty") == ""


def test_read_bad_bytes_are_replaced(root):
    (root / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    assert read_file(root, "latin1.txt") == "caf\ufffd\n"


@pytest.mark.parametrize(("offset", "limit"), [(-1, None), (0, 0), (0, -5), ("1", None)])
def test_read_bad_windows_are_refused(root, offset, limit):
    with pytest.raises(InvalidInputError):
        read_file(root, "src/app.py", offset=offset, limit=limit)


def test_read_a_missing_file(root):
    with pytest.raises(NotFoundError) as info:
        read_file(root, "nope.txt")
    assert info.value.hint


def test_read_a_directory_is_refused(root):
    with pytest.raises(InvalidInputError, match="folder"):
        read_file(root, "src")


def test_read_a_binary_file_is_refused(root):
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(InvalidInputError, match="binary"):
        read_file(root, "image.png")
    with pytest.raises(InvalidInputError, match="binary"):
        read_file(root, "image.png", offset=0, limit=1)


def test_read_a_large_file_needs_a_window(root):
    line = "x" * 99 + "\n"
    (root / "big.txt").write_text(line * (MAX_READ_BYTES // 100 + 10))
    with pytest.raises(InvalidInputError, match="too large") as info:
        read_file(root, "big.txt")
    assert "offset" in info.value.hint
    assert read_file(root, "big.txt", offset=5, limit=2) == line * 2


def test_read_a_window_stops_at_the_byte_cap(root):
    line = "y" * 1023 + "\n"
    (root / "big.txt").write_text(line * 2048)  # 2 MiB
    text = read_file(root, "big.txt", offset=0, limit=5000)
    assert len(text.encode()) <= MAX_READ_BYTES + 200
    assert "continue with offset=1024" in text


def test_read_follows_a_symlink_that_stays_inside(root):
    (root / "link.py").symlink_to(root / "src" / "app.py")
    assert read_file(root, "link.py").startswith("import os")


def test_read_a_symlink_leading_outside_is_refused(root, outside):
    (root / "leak").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathTraversalError):
        read_file(root, "leak")
    with pytest.raises(PathTraversalError):
        read_file(root, "leakdir/secret.txt")


@pytest.mark.parametrize("path", ["../outside/secret.txt", "/etc/passwd", "src/../../x"])
def test_read_paths_leaving_the_workspace_are_refused(root, outside, path):
    with pytest.raises(PathTraversalError):
        read_file(root, path)


def test_read_a_fifo_is_refused_without_blocking(root):
    os.mkfifo(root / "pipe")
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_file(root, "pipe")


def test_read_does_not_follow_a_symlink_swapped_in_after_the_check(root, outside):
    """The last component is opened with O_NOFOLLOW: a symlink put there after the path check
    (simulated by opening the link directly) is refused, not followed."""
    (root / "swapped").symlink_to(outside / "secret.txt")
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(PathTraversalError, match="symlink"):
            beneath.open_regular(folder, "swapped", "swapped")
    finally:
        os.close(folder)


# --- write_file --------------------------------------------------------------------------------


def test_write_a_new_file_in_new_folders(root):
    assert write_file(root, "docs/guide/intro.md", "héllo\n") == {
        "path": "docs/guide/intro.md",
        "bytes": 7,
    }
    assert (root / "docs" / "guide" / "intro.md").read_text() == "héllo\n"


def test_write_replaces_a_file_and_keeps_its_mode(root):
    target = root / "src" / "app.py"
    target.chmod(0o750)
    write_file(root, "./src//app.py", "print(1)\n")
    assert target.read_text() == "print(1)\n"
    assert target.stat().st_mode & 0o777 == 0o750


def test_write_leaves_no_temporary_files(root):
    write_file(root, "a.txt", "one")
    write_file(root, "a.txt", "two")
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "a.txt", "src"]


def test_write_without_create_dirs_needs_the_folder(root):
    with pytest.raises(NotFoundError, match="does not exist") as info:
        write_file(root, "new/file.txt", "x", create_dirs=False)
    assert "create_dirs" in info.value.hint
    assert not (root / "new").exists()
    assert write_file(root, "src/file.txt", "x", create_dirs=False)["bytes"] == 1


def test_write_over_11_mb_is_refused(root):
    with pytest.raises(InvalidInputError, match="too large"):
        write_file(root, "big.txt", "x" * (11 * 1024 * 1024))
    with pytest.raises(InvalidInputError, match="too large"):  # 4 bytes a character
        write_file(root, "big.txt", "\U0001f600" * (3 * 1024 * 1024))
    assert not (root / "big.txt").exists()


def test_write_onto_a_directory_is_refused(root):
    with pytest.raises(InvalidInputError, match="folder"):
        write_file(root, "src", "x")
    with pytest.raises(InvalidInputError, match="folder"):
        write_file(root, ".", "x")


def test_write_under_a_file_is_refused(root):
    with pytest.raises(InvalidInputError, match="is a file"):
        write_file(root, "README.md/x.txt", "x")


def test_write_onto_a_symlink_is_refused(root):
    (root / "link.py").symlink_to(root / "src" / "app.py")
    before = (root / "src" / "app.py").read_text()
    with pytest.raises(InvalidInputError, match="symlink"):
        write_file(root, "link.py", "changed")
    assert (root / "src" / "app.py").read_text() == before
    assert (root / "link.py").is_symlink()


def test_write_onto_a_symlink_leading_outside_is_refused(root, outside):
    (root / "leak").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    (root / "dangling").symlink_to(outside / "new.txt")
    before = snapshot(outside)
    for path in ["leak", "leakdir/secret.txt", "leakdir/new.txt", "dangling"]:
        with pytest.raises(PathTraversalError):
            write_file(root, path, "pwned")
    assert snapshot(outside) == before


@pytest.mark.parametrize("path", ["../outside/x.txt", "/tmp/x.txt", "a/../../x", "%2e%2e/x"])
def test_write_paths_leaving_the_workspace_are_refused(root, outside, path):
    before = snapshot(outside)
    with pytest.raises(PathTraversalError):
        write_file(root, path, "pwned")
    assert snapshot(outside) == before


def test_write_non_text_is_refused(root):
    with pytest.raises(InvalidInputError, match="text"):
        write_file(root, "a.txt", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Unicode"):
        write_file(root, "a.txt", "\ud800")


# --- list_files --------------------------------------------------------------------------------


def test_list_a_folder(root):
    assert list_files(root) == [
        {"path": "README.md", "type": "file", "size": 18},
        {"path": "src", "type": "dir", "size": None},
    ]
    assert list_files(root, "src") == [{"path": "src/app.py", "type": "file", "size": 36}]


def test_list_recursively_sorted_with_a_pattern(root):
    (root / "src" / "sub").mkdir()
    (root / "src" / "sub" / "b.py").write_text("")
    (root / "src" / "a.txt").write_text("")
    paths = [e["path"] for e in list_files(root, recursive=True)]
    assert paths == ["README.md", "src", "src/a.txt", "src/app.py", "src/sub", "src/sub/b.py"]
    assert [e["path"] for e in list_files(root, ".", "*.py", recursive=True)] == [
        "src/app.py",
        "src/sub/b.py",
    ]
    assert [e["path"] for e in list_files(root, ".", "src/*.py", recursive=True)] == [
        "src/app.py",
        "src/sub/b.py",  # a glob with "/" matches the path, and "*" matches "/" too
    ]


def test_list_is_capped_with_a_final_note(root):
    for n in range(20):
        (root / f"f{n:02}.txt").write_text("")
    listed = list_files(root, limit=5)
    assert len(listed) == 6
    assert [e["path"] for e in listed[:5]] == [
        "README.md",
        "f00.txt",
        "f01.txt",
        "f02.txt",
        "f03.txt",
    ]
    assert listed[-1]["truncated"] is True and "5" in listed[-1]["note"]
    assert list_files(root, limit=22)[-1].get("truncated") is None


def test_list_a_file_gives_its_entry(root):
    assert list_files(root, "README.md") == [{"path": "README.md", "type": "file", "size": 18}]


def test_list_does_not_descend_through_symlinks(root, outside):
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    listed = list_files(root, recursive=True)
    paths = [e["path"] for e in listed]
    assert {"path": "escape", "type": "symlink", "size": None} in listed
    assert {"path": "loop", "type": "symlink", "size": None} in listed
    assert not any(p.startswith(("escape/", "loop/")) for p in paths)
    with pytest.raises(PathTraversalError):
        list_files(root, "escape")


def test_list_does_not_walk_into_git(root):
    (root / ".git" / "objects").mkdir(parents=True)
    paths = [e["path"] for e in list_files(root, recursive=True)]
    assert ".git" in paths and ".git/objects" not in paths


@pytest.mark.parametrize("limit", [0, -1, 10**9, True])
def test_list_bad_limits_are_refused(root, limit):
    with pytest.raises(InvalidInputError):
        list_files(root, limit=limit)


def test_list_missing_and_outside_paths(root):
    with pytest.raises(NotFoundError):
        list_files(root, "nope")
    with pytest.raises(PathTraversalError):
        list_files(root, "..")
    with pytest.raises(PathTraversalError):
        list_files(root, "/etc")


# --- search_files ------------------------------------------------------------------------------


def test_search_finds_lines(root):
    assert search_files(root, r"def \w+") == [
        {"path": "src/app.py", "line": 3, "text": "def main():"}
    ]
    assert search_files(root, "TITLE", ignore_case=True) == [
        {"path": "README.md", "line": 1, "text": "# Title"}
    ]
    assert search_files(root, "title") == []


def test_search_in_a_path_and_with_a_glob(root):
    assert [m["path"] for m in search_files(root, "t", path="src")] == ["src/app.py"] * 2
    assert [m["path"] for m in search_files(root, "t", glob="*.md")] == ["README.md"] * 2
    assert search_files(root, "os", path="src/app.py") == [
        {"path": "src/app.py", "line": 1, "text": "import os"}
    ]


def test_search_a_bad_regex_names_the_pattern(root):
    with pytest.raises(InvalidInputError, match=r"'\(unclosed'") as info:
        search_files(root, "(unclosed")
    assert "backslash" in info.value.hint
    with pytest.raises(InvalidInputError):
        search_files(root, "")


def test_search_results_are_capped(root):
    (root / "many.txt").write_text("hit\n" * 50)
    found = search_files(root, "hit", max_results=10)
    assert len(found) == 11
    assert found[-1]["truncated"] is True
    assert all(m["line"] == n for n, m in enumerate(found[:10], start=1))
    with pytest.raises(InvalidInputError):
        search_files(root, "hit", max_results=0)


def test_a_backtracking_pattern_is_stopped_and_frees_its_thread(root, monkeypatch):
    """(a+)+$ on a line of a's takes exponential time in `re`; the search stops at its limit
    instead of keeping a tool thread busy after the call was answered."""
    monkeypatch.setattr(files, "SEARCH_SECONDS", 0.2)
    (root / "bait.txt").write_text("a" * 5_000 + "!\n")
    with pytest.raises(InvalidInputError, match=r"longer than 0\.2s") as info:
        search_files(root, "(a+)+$")
    assert "(a+)+" in info.value.hint


def test_search_cuts_long_lines(root):
    (root / "long.txt").write_text("a" * 20_000 + "NEEDLE\n" + "b" * 400 + "\n")
    assert search_files(root, "NEEDLE") == []  # beyond MAX_SCAN_LINE_CHARS: not scanned
    found = search_files(root, "b+")
    assert found == [{"path": "long.txt", "line": 2, "text": "b" * MAX_MATCH_TEXT_CHARS}]
    assert MAX_SCAN_LINE_CHARS < 20_000


def test_search_skips_binary_large_symlinked_and_git_files(root, outside):
    (root / "blob.bin").write_bytes(b"needle\x00\x01")
    (root / "huge.txt").write_text("needle\n" + "x" * files.MAX_SEARCH_FILE_BYTES)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("needle\n")
    (outside / "secret.txt").write_text("needle\n")
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    (root / "inner.txt").symlink_to(root / "README.md")
    (root / "ok.txt").write_text("needle\n")
    assert search_files(root, "needle") == [{"path": "ok.txt", "line": 1, "text": "needle"}]
    with pytest.raises(PathTraversalError):
        search_files(root, "needle", path="leakdir")


def test_search_paths_leaving_the_workspace_are_refused(root):
    for path in ["..", "../outside", "/etc"]:
        with pytest.raises(PathTraversalError):
            search_files(root, "root", path=path)


# --- apply_patch -------------------------------------------------------------------------------

MODIFY = """\
--- a/src/app.py
+++ b/src/app.py
@@ -1,4 +1,5 @@
 import os
+import sys

 def main():
-    return 1
+    return 2
"""


def test_patch_modifies_a_file(root):
    assert apply_patch(root, MODIFY) == {
        "files": [{"path": "src/app.py", "action": "modified", "hunks": 1}]
    }
    assert (
        root / "src" / "app.py"
    ).read_text() == "import os\nimport sys\n\ndef main():\n    return 2\n"


def test_patch_adds_and_removes_files(root):
    patch = """\
--- /dev/null
+++ b/docs/new.md
@@ -0,0 +1,2 @@
+# New
+text
--- a/README.md
+++ /dev/null
@@ -1,2 +0,0 @@
-# Title
-some text
"""
    assert apply_patch(root, patch)["files"] == [
        {"path": "docs/new.md", "action": "added", "hunks": 1},
        {"path": "README.md", "action": "removed", "hunks": 1},
    ]
    assert (root / "docs" / "new.md").read_text() == "# New\ntext\n"
    assert not (root / "README.md").exists()


def test_patch_without_prefixes_and_git_headers(root):
    patch = """\
diff --git a/README.md b/README.md
index 1234567..89abcde 100644
--- a/README.md
+++ b/README.md
@@ -1,2 +1,2 @@
-# Title
+# Better title
 some text
"""
    apply_patch(root, patch)
    plain = "--- README.md\n+++ README.md\n@@ -2 +2 @@\n-some text\n+other text\n"
    apply_patch(root, plain)
    assert (root / "README.md").read_text() == "# Better title\nother text\n"


def test_patch_several_hunks_and_an_offset(root):
    (root / "n.txt").write_text("".join(f"{n}\n" for n in range(1, 41)))
    # the hunks say lines 5 and 30, but the file has 3 more lines at the top than they think
    (root / "n.txt").write_text("a\nb\nc\n" + (root / "n.txt").read_text())
    patch = """\
--- a/n.txt
+++ b/n.txt
@@ -4,3 +4,3 @@
 4
-5
+five
 6
@@ -29,3 +29,4 @@
 29
 30
+30.5
 31
"""
    apply_patch(root, patch)
    lines = (root / "n.txt").read_text().splitlines()
    assert lines[3:10] == ["1", "2", "3", "4", "five", "6", "7"]
    assert lines[31:35] == ["29", "30", "30.5", "31"]


def test_patch_beyond_the_fuzz_is_refused(root):
    (root / "n.txt").write_text("x\n" * (PATCH_FUZZ_LINES + 5) + "target\n")
    patch = "--- a/n.txt\n+++ b/n.txt\n@@ -1 +1 @@\n-target\n+changed\n"
    with pytest.raises(InvalidInputError, match="hunk 1"):
        apply_patch(root, patch)


def test_patch_no_newline_at_end_of_file(root):
    (root / "n.txt").write_text("one\ntwo")
    patch = """\
--- a/n.txt
+++ b/n.txt
@@ -1,2 +1,2 @@
 one
-two
\\ No newline at end of file
+three
"""
    apply_patch(root, patch)
    assert (root / "n.txt").read_text() == "one\nthree\n"


def test_a_partially_failing_patch_changes_nothing(root):
    before = snapshot(root)
    patch = """\
--- a/README.md
+++ b/README.md
@@ -1,2 +1,2 @@
-# Title
+# Changed
 some text
--- /dev/null
+++ b/added.txt
@@ -0,0 +1 @@
+new
--- a/src/app.py
+++ b/src/app.py
@@ -1,4 +1,4 @@
 import os

 def main():
-    return 1
+    return 2
@@ -10,2 +10,2 @@
 not
-there
+here
"""
    with pytest.raises(InvalidInputError) as info:
        apply_patch(root, patch)
    assert "hunk 2" in info.value.message and "src/app.py" in info.value.message
    assert "read_file" in info.value.hint
    assert snapshot(root) == before


def test_patch_with_wrong_context_says_what_differs(root):
    patch = "--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n-# Other\n+# New\n some text\n"
    with pytest.raises(InvalidInputError, match="line 1 is '# Title") as info:
        apply_patch(root, patch)
    assert "'# Other" in info.value.message


def test_patch_adding_an_existing_file_is_refused(root):
    with pytest.raises(InvalidInputError, match="already exists"):
        apply_patch(root, "--- /dev/null\n+++ b/README.md\n@@ -0,0 +1 @@\n+x\n")


def test_patch_on_a_missing_file_is_refused(root):
    with pytest.raises(NotFoundError):
        apply_patch(root, "--- a/nope\n+++ b/nope\n@@ -1 +1 @@\n-a\n+b\n")


def test_patch_removal_must_cover_the_whole_file(root):
    with pytest.raises(InvalidInputError, match="leaves 1 lines"):
        apply_patch(root, "--- a/README.md\n+++ /dev/null\n@@ -1 +0,0 @@\n-# Title\n")
    assert (root / "README.md").exists()


@pytest.mark.parametrize(
    "patch",
    [
        "",
        "not a diff at all",
        "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-only one line\n",
        "--- a/README.md\n+++ b/OTHER.md\n@@ -1 +1 @@\n-# Title\n+x\n",
        "diff --git a/img.png b/img.png\nBinary files a/img.png and b/img.png differ\n",
    ],
    ids=["empty", "prose", "short hunk", "rename", "binary"],
)
def test_malformed_and_unsupported_patches_are_refused(root, patch):
    before = snapshot(root)
    with pytest.raises(InvalidInputError) as info:
        apply_patch(root, patch)
    assert info.value.hint
    assert snapshot(root) == before


def test_an_oversized_patch_is_refused(root):
    with pytest.raises(InvalidInputError, match="too large"):
        apply_patch(root, "--- /dev/null\n+++ b/x\n" + "+x\n" * (files.MAX_PATCH_BYTES // 3 + 1))


@pytest.mark.parametrize(
    "patch",
    [
        "--- /dev/null\n+++ b/../x\n@@ -0,0 +1 @@\n+pwned\n",
        "--- /dev/null\n+++ ../x\n@@ -0,0 +1 @@\n+pwned\n",
        "--- a/../outside/secret.txt\n+++ b/../outside/secret.txt\n@@ -1 +1 @@\n-TOP SECRET\n+pwned\n",
        "--- a/../outside/secret.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-TOP SECRET\n",
        "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-root:x:0:0::/root:/bin/sh\n+pwned\n",
        "--- /dev/null\n+++ /tmp/pwned\n@@ -0,0 +1 @@\n+pwned\n",
        "--- /dev/null\n+++ b/src/../../x\n@@ -0,0 +1 @@\n+pwned\n",
        "--- /dev/null\n+++ b/%2e%2e/x\n@@ -0,0 +1 @@\n+pwned\n",
    ],
    ids=[
        "add ../x",
        "add ../x bare",
        "modify outside",
        "remove outside",
        "/etc/passwd",
        "/tmp",
        "src/../..",
        "encoded",
    ],
)
def test_patches_leaving_the_workspace_are_refused(root, outside, patch):
    before_inside, before_outside = snapshot(root), snapshot(outside)
    with pytest.raises(PathTraversalError):
        apply_patch(root, patch)
    assert snapshot(root) == before_inside
    assert snapshot(outside) == before_outside
    assert not (root.parent / "x").exists()


def test_a_traversal_later_in_a_patch_changes_nothing(root, outside):
    before = snapshot(root)
    patch = MODIFY + "--- /dev/null\n+++ b/../x\n@@ -0,0 +1 @@\n+pwned\n"
    with pytest.raises(PathTraversalError):
        apply_patch(root, patch)
    assert snapshot(root) == before


def test_patch_through_symlinks_is_refused(root, outside):
    (root / "leak").symlink_to(outside / "secret.txt")
    (root / "leakdir").symlink_to(outside, target_is_directory=True)
    (root / "inner").symlink_to(root / "README.md")
    before = snapshot(outside)
    with pytest.raises(PathTraversalError):
        apply_patch(root, "--- a/leak\n+++ b/leak\n@@ -1 +1 @@\n-TOP SECRET\n+pwned\n")
    with pytest.raises(PathTraversalError):
        apply_patch(root, "--- /dev/null\n+++ b/leakdir/new\n@@ -0,0 +1 @@\n+pwned\n")
    with pytest.raises(InvalidInputError, match="symlink"):
        apply_patch(root, "--- a/inner\n+++ b/inner\n@@ -1 +1 @@\n-# Title\n+pwned\n")
    with pytest.raises(InvalidInputError, match="symlink"):
        apply_patch(root, "--- a/inner\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-# Title\n-some text\n")
    assert snapshot(outside) == before
    assert (root / "README.md").read_text() == "# Title\nsome text\n"
    assert (root / "inner").is_symlink()


def test_patch_the_same_file_twice_applies_in_order(root):
    patch = """\
--- a/README.md
+++ b/README.md
@@ -1 +1 @@
-# Title
+# Two
--- a/README.md
+++ b/README.md
@@ -1 +1 @@
-# Two
+# Three
"""
    assert [f["hunks"] for f in apply_patch(root, patch)["files"]] == [1, 1]
    assert (root / "README.md").read_text() == "# Three\nsome text\n"


def test_patch_adding_an_empty_file_git_style(root):
    patch = "diff --git a/empty.txt b/empty.txt\nnew file mode 100644\nindex 0000000..e69de29\n"
    assert apply_patch(root, patch)["files"] == [
        {"path": "empty.txt", "action": "added", "hunks": 0}
    ]
    assert (root / "empty.txt").read_text() == ""


def test_patch_making_a_path_both_file_and_folder_is_refused(root):
    patch = """\
--- /dev/null
+++ b/thing
@@ -0,0 +1 @@
+a file
--- /dev/null
+++ b/thing/inside
@@ -0,0 +1 @@
+under it
"""
    before = snapshot(root)
    with pytest.raises(InvalidInputError, match="file and a folder"):
        apply_patch(root, patch)
    assert snapshot(root) == before

"""apply_patch: bounded memory and work, git's quoted names, and the streamed application
agreeing with the plain list-of-lines algorithm it replaces."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import pytest

from gathering.errors import InvalidInputError, PathTraversalError
from gathering.tools.builtins import patch as patch_module
from gathering.tools.builtins.files import (
    MAX_PATCH_HUNKS,
    MAX_PATCH_LINES,
    PATCH_FUZZ_LINES,
    apply_patch,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


def tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


# --- memory and work ----------------------------------------------------------------------------


def test_a_one_line_patch_of_a_big_file_uses_memory_near_the_file_size(root):
    """Half a million short lines: a list of line strings costs ~60 bytes a line per copy
    (the review measured ~400 MiB for 10 MB); streamed, the peak stays near the 1 MB file."""
    (root / "big.txt").write_bytes(b"a\n" * 500_000)
    tracemalloc.start()
    try:
        apply_patch(root, "--- a/big.txt\n+++ b/big.txt\n@@ -3 +3 @@\n-a\n+b\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 1 MB file"
    data = (root / "big.txt").read_bytes()
    assert data[:8] == b"a\na\nb\na\n" and len(data) == 1_000_000


def test_the_hunks_of_one_patch_are_capped(root):
    (root / "n.txt").write_text("x\n" * (MAX_PATCH_HUNKS + 1))
    hunks = "".join(f"@@ -{k + 1},0 +{k + 2},1 @@\n+y\n" for k in range(MAX_PATCH_HUNKS + 1))
    with pytest.raises(InvalidInputError, match=f"the limit is {MAX_PATCH_HUNKS:,}"):
        apply_patch(root, "--- a/n.txt\n+++ b/n.txt\n" + hunks)
    assert (root / "n.txt").read_text() == "x\n" * (MAX_PATCH_HUNKS + 1)


def test_many_hunks_up_to_the_cap_apply(root):
    count = MAX_PATCH_HUNKS
    (root / "n.txt").write_text("".join(f"{n}\n" for n in range(count * 5)))
    hunks = "".join(
        f"@@ -{k * 5 + 1} +{k * 5 + 1} @@\n-{k * 5}\n+changed {k}\n" for k in range(count)
    )
    assert apply_patch(root, "--- a/n.txt\n+++ b/n.txt\n" + hunks)["files"][0]["hunks"] == count
    lines = (root / "n.txt").read_text().splitlines()
    assert lines[:6] == ["changed 0", "1", "2", "3", "4", "changed 1"]
    assert len(lines) == count * 5


def test_the_lines_of_one_patch_are_capped(root):
    header = f"--- /dev/null\n+++ b/x\n@@ -0,0 +1,{MAX_PATCH_LINES} @@\n"
    patch = header + "+\n" * MAX_PATCH_LINES
    with pytest.raises(InvalidInputError, match=f"the limit is {MAX_PATCH_LINES:,}"):
        apply_patch(root, patch)
    assert not (root / "x").exists()


def test_the_bytes_of_files_one_patch_reads_are_capped(root, monkeypatch):
    monkeypatch.setattr(patch_module, "MAX_PATCH_READ_BYTES", 100)
    (root / "a.txt").write_text("a\n" * 30)  # 60 bytes
    (root / "b.txt").write_text("b\n" * 30)
    change = "--- a/{0}\n+++ b/{0}\n@@ -1 +1 @@\n-{1}\n+z\n"
    before = tree(root)
    with pytest.raises(InvalidInputError, match="more than 100 bytes"):
        apply_patch(root, change.format("a.txt", "a") + change.format("b.txt", "b"))
    assert tree(root) == before
    apply_patch(root, change.format("a.txt", "a"))  # one file alone fits


# --- git's quoted names -------------------------------------------------------------------------


def test_git_quoted_names_are_decoded(root):
    (root / "é.txt").write_text("old\n")
    quoted = (
        'diff --git "a/\\303\\251.txt" "b/\\303\\251.txt"\nindex 1..2 100644\n'
        '--- "a/\\303\\251.txt"\n+++ "b/\\303\\251.txt"\n@@ -1 +1 @@\n-old\n+new\n'
    )
    assert apply_patch(root, quoted)["files"] == [
        {"path": "é.txt", "action": "modified", "hunks": 1}
    ]
    assert (root / "é.txt").read_text() == "new\n"


def test_git_quoted_names_with_escapes_and_an_empty_new_file(root):
    patch = '--- /dev/null\n+++ "b/say \\"hi\\".txt"\n@@ -0,0 +1 @@\n+hi\n'
    assert apply_patch(root, patch)["files"][0]["path"] == 'say "hi".txt'
    assert (root / 'say "hi".txt').read_text() == "hi\n"
    empty = 'diff --git "a/\\303\\251 x.txt" "b/\\303\\251 x.txt"\nnew file mode 100644\n'
    assert apply_patch(root, empty)["files"] == [{"path": "é x.txt", "action": "added", "hunks": 0}]
    assert (root / "é x.txt").read_text() == ""


@pytest.mark.parametrize(
    "name",
    ['"b/a\\tb.txt"', '"b/a\\nb.txt"', '"b/a\\001.txt"', '"b/\\056\\056/x"', '"b/a\\\\b"'],
    ids=["tab", "newline", "control", "dot-dot", "backslash"],
)
def test_decoded_names_still_go_through_the_path_check(root, name):
    with pytest.raises(PathTraversalError):
        apply_patch(root, f"--- /dev/null\n+++ {name}\n@@ -0,0 +1 @@\n+x\n")
    assert tree(root) == {}


@pytest.mark.parametrize("name", ['"b/a\\q.txt"', '"b/\\377.txt"'], ids=["unknown", "not-utf8"])
def test_badly_quoted_names_are_refused(root, name):
    with pytest.raises(InvalidInputError, match="quoted file name"):
        apply_patch(root, f"--- /dev/null\n+++ {name}\n@@ -0,0 +1 @@\n+x\n")


# --- failures leave nothing behind --------------------------------------------------------------


def test_a_failing_patch_leaves_no_temporary_file_and_no_new_folder(root):
    (root / "a.txt").write_text("a\n")
    patch = (
        "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+A\n"
        "--- /dev/null\n+++ b/new/dir/f.txt\n@@ -0,0 +1 @@\n+f\n"
        "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-not there\n+x\n"
    )
    before = tree(root)
    with pytest.raises(InvalidInputError, match="hunk 1"):
        apply_patch(root, patch)
    assert tree(root) == before


def test_a_patched_file_may_not_grow_past_the_write_limit(root, monkeypatch):
    monkeypatch.setattr(patch_module, "MAX_WRITE_BYTES", 10)
    (root / "a.txt").write_text("a\n")
    with pytest.raises(InvalidInputError, match="too large"):
        apply_patch(root, "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1,2 @@\n a\n+0123456789\n")
    assert tree(root) == {"a.txt": b"a\n"}


# --- the streamed application agrees with the list-of-lines one ---------------------------------


def _reference(lines: list[str], hunks: list[tuple[int, int, list[str], list[str]]]):
    """The algorithm apply_patch had before it streamed: a list of lines, edited in place."""
    result = list(lines)
    shift = floor = 0
    for source_start, source_length, old, new in hunks:
        start = source_start - 1 if source_length else source_start
        expected = start + shift
        at = None
        if not old:
            at = expected if floor <= expected <= len(result) else None
        else:
            for distance in range(PATCH_FUZZ_LINES + 1):
                for place in (expected - distance, expected + distance):
                    end = place + len(old)
                    if at is None and floor <= place and end <= len(result):
                        if result[place:end] == old:
                            at = place
                if at is not None:
                    break
        if at is None:
            return None
        result[at : at + len(old)] = new
        shift = at + len(new) - (start + len(old))
        floor = at + len(new)
    return result


def _random_case(rng: random.Random, size: int, gap: int):
    lines = [rng.choice("abc") * rng.randrange(1, 4) + "\n" for _ in range(rng.randrange(size))]
    if lines and rng.random() < 0.3:
        lines[-1] = lines[-1].rstrip("\n")  # no newline at the end
    hunks, text = [], []
    position = 0
    while position <= len(lines) and len(hunks) < 6:
        start = position + rng.randrange(0, gap)
        if start > len(lines):
            break
        length = min(rng.randrange(0, 4), len(lines) - start)
        old = lines[start : start + length]
        if rng.random() < 0.2 and old:
            old = [*old[:-1], "z\n"]  # a context that is not there
        new = [rng.choice("xy") + "\n" for _ in range(rng.randrange(0, 3))]
        if not old and not new:
            new = ["n\n"]
        stated = start + rng.randrange(-3, 4)  # a wrong line number: found by the fuzz
        stated = max(stated, 0)
        source_start = stated + 1 if length else stated
        hunks.append((source_start, len(old), old, new))
        body = [f"-{line}" for line in old] + [f"+{line}" for line in new]
        body = [
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
            for line in body
        ]
        text.append(
            f"@@ -{source_start},{len(old)} +{max(stated, 1)},{len(new)} @@\n{''.join(body)}"
        )
        position = start + length
    return lines, hunks, "--- a/f.txt\n+++ b/f.txt\n" + "".join(text)


@pytest.mark.parametrize(
    ("size", "gap", "first_scan", "scan"),
    [(60, 8, None, None), (60, 8, 1, 7), (3000, 600, None, None), (3000, 600, 64, 300)],
    ids=["small", "small-tiny-scans", "large", "large-small-scans"],
)
def test_the_streamed_application_matches_the_list_algorithm(
    root, monkeypatch, size, gap, first_scan, scan
):
    """Random files and patches (wrong line numbers, wrong context, missing newlines at the
    end), also with tiny scan sizes so every way of skipping lines is taken."""
    if first_scan is not None:
        monkeypatch.setattr(patch_module, "_FIRST_SCAN_BYTES", first_scan)
        monkeypatch.setattr(patch_module, "_SCAN_BYTES", scan)
    rng = random.Random(f"{size}-{first_scan}")
    checked = applied = 0
    for _ in range(150):
        lines, hunks, patch = _random_case(rng, size, gap)
        if not hunks or any(not old and not new for _, _, old, new in hunks):
            continue
        (root / "f.txt").write_text("".join(lines))
        expected = _reference(lines, hunks)
        checked += 1
        if expected is None:
            with pytest.raises(InvalidInputError, match="does not apply"):
                apply_patch(root, patch)
            assert (root / "f.txt").read_text() == "".join(lines)
        else:
            apply_patch(root, patch)
            assert (root / "f.txt").read_text() == "".join(expected), patch
            applied += 1
    assert checked > 100 and applied > 25


def _advance_by_finds(data: bytes, offset: int, count: int) -> tuple[int, int]:
    skipped = 0
    while skipped < count and offset < len(data):
        end = data.find(b"\n", offset)
        offset = len(data) if end < 0 else end + 1
        skipped += 1
    return offset, skipped


@pytest.mark.parametrize(
    ("first_scan", "scan"), [(16 * 1024, 1024 * 1024), (1, 7), (64, 300), (3, 1000)]
)
def test_skipping_lines_by_byte_counts_matches_finding_them_one_by_one(
    monkeypatch, first_scan, scan
):
    monkeypatch.setattr(patch_module, "_FIRST_SCAN_BYTES", first_scan)
    monkeypatch.setattr(patch_module, "_SCAN_BYTES", scan)
    rng = random.Random(first_scan)
    for _ in range(1500):
        count = rng.randrange(0, 400)
        data = b"".join(b"x" * rng.randrange(0, 5) + b"\n" for _ in range(count))
        if rng.random() < 0.3:
            data += b"last line without a newline"
        start = rng.randrange(0, len(data) + 1)
        start = data.rfind(b"\n", 0, start) + 1 if start else 0  # a line start
        wanted = rng.randrange(0, count + 3)
        lines = patch_module._Lines(data, None)
        assert lines._advance(start, wanted) == _advance_by_finds(data, start, wanted)

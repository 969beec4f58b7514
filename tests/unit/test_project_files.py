"""The parts of the project files API and its watcher that need no server: git status parsed
(quoted names, renames), text decoded (byte-order marks, binary, detected encodings), paths
checked (.git, the root, invalid names), If-Match read, a download's file name made safe, and
the watcher's changes coalesced per project, capped, with nothing seen through a symlink."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from watchfiles import Change

from gathering.api.routers.project_files import _attachment, _entity_tags, _precondition
from gathering.errors import InvalidInputError, PathTraversalError, PermissionDeniedError
from gathering.projects import ProjectRecord, ProjectSettings
from gathering.projects.files import (
    Entry,
    checked,
    decode_text,
    parse_status,
    status_word,
    text_encoding,
    version_of,
    with_git_status,
)
from gathering.projects.watch import (
    MAX_EVENT_PATHS,
    _coalesced,
    _kept,
    changed_paths,
    files_changed_event,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_git_status_is_parsed_with_quoted_names_and_renames():
    stdout = (
        "## main...origin/main [ahead 1]\n"
        " M src/app.py\n"
        'A  "new file.txt"\n'
        "R  old.txt -> renamed.txt\n"
        'R  "old name.txt" -> "new name.txt"\n'
        '?? "caf\\303\\251.md"\n'
        '?? "tab\\there.txt"\n'
        "?? build/\n"
        "UU conflict.txt\n"
    )
    assert parse_status(stdout) == {
        "src/app.py": " M",
        "new file.txt": "A ",
        "renamed.txt": "R ",
        "new name.txt": "R ",
        "café.md": "??",
        "tab\there.txt": "??",
        "build": "??",
        "conflict.txt": "UU",
    }


@pytest.mark.parametrize(
    ("code", "word"),
    [
        (" M", "modified"),
        ("M ", "modified"),
        ("A ", "added"),
        ("AM", "added"),
        (" D", "deleted"),
        ("R ", "renamed"),
        ("??", "untracked"),
        ("!!", "ignored"),
        ("UU", "conflicted"),
        ("AA", "conflicted"),
        (" T", "modified"),
    ],
)
def test_git_codes_have_words(code, word):
    assert status_word(code) == word


def _entry(name: str, kind: str = "file") -> Entry:
    return Entry(name, name, kind, None, NOW)  # type: ignore[arg-type]


def test_a_folder_takes_the_status_of_what_it_holds():
    entries = [_entry("src", "directory"), _entry("new", "directory"), _entry("a.txt")]
    entries += [_entry("same", "directory"), _entry("clean.txt")]
    codes = {"src/x.py": " M", "src/y.py": "A ", "new": "??", "a.txt": " M", "same/b": "A "}
    marked = {e.name: (e.git_status, e.git_code) for e in with_git_status(".", entries, codes)}
    assert marked == {
        "src": ("modified", None),
        "new": ("untracked", None),
        "a.txt": ("modified", " M"),
        "same": ("added", None),
        "clean.txt": (None, None),
    }
    inside = with_git_status("new", [_entry("z.txt")], codes)
    assert inside[0].git_status == "untracked"


def test_text_is_decoded_or_called_binary():
    assert decode_text(b"") == ("", "utf-8")
    assert decode_text("héllo".encode()) == ("héllo", "utf-8")
    assert decode_text("\ufeffbom".encode()) == ("bom", "utf-8-sig")
    assert decode_text("wide".encode("utf-16")) == ("wide", "utf-16")
    assert decode_text("wider".encode("utf-32")) == ("wider", "utf-32")
    assert decode_text(b"text\x00with a NUL") is None
    french = "Voilà, l'été à Montréal: forêt, crêpe et café.\n" * 3
    assert decode_text(french.encode("cp1252")) == (french, "cp1252")
    assert decode_text(bytes(range(256)) * 4) is None
    assert version_of(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_only_text_encodings_are_taken():
    assert text_encoding("UTF8") == "utf-8"
    assert text_encoding("latin-1") == "iso8859-1"
    for name in ("base64", "rot13", "zlib", "no-such-thing"):
        with pytest.raises(InvalidInputError):
            text_encoding(name)


def test_paths_are_checked(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / ".git").mkdir()
    os.symlink("src", tmp_path / "link")
    os.symlink("/etc", tmp_path / "etc")
    assert checked(tmp_path, "link/a.py").resolved == ("src", "a.py")
    assert checked(tmp_path, "", root_allowed=True).resolved == ()
    with pytest.raises(InvalidInputError, match="folder itself"):
        checked(tmp_path, ".")
    for path in (".git", ".git/config", ".GIT/hooks/x", "src/.git"):
        with pytest.raises(PermissionDeniedError):
            checked(tmp_path, path)
    for path in ("../x", "/etc/passwd", "%2e%2e/x", "a\\b", "etc/passwd", "bad\udcff"):
        with pytest.raises(PathTraversalError):
            checked(tmp_path, path)


def test_if_match_is_read_strongly():
    assert _entity_tags(None) is None and _entity_tags("  ") is None
    assert _entity_tags('"abc"') == ("abc",)
    assert _entity_tags('W/"weak", "strong", bare') == ("strong", "bare")
    assert _entity_tags("*") == ("*",)
    assert _precondition(None, "*").if_none_match_any
    with pytest.raises(InvalidInputError):
        _precondition(None, '"abc"')


def test_a_download_name_is_safe():
    header = _attachment('evil"\r\nX-Injected: 1;.txt')
    assert header.startswith('attachment; filename="evil___X-Injected__1_.txt"')
    assert "\r" not in header and "\n" not in header and header.count('"') == 2
    assert _attachment("...") == "attachment; filename=\"download\"; filename*=UTF-8''..."
    assert "filename*=UTF-8''caf%C3%A9.txt" in _attachment("café.txt")


def _project(project_id: int, directory: Path) -> ProjectRecord:
    return ProjectRecord(
        project_id, 1, f"p{project_id}", "", directory, "created", None,
        ProjectSettings(), {}, "", NOW, NOW,
    )  # fmt: skip


def test_the_watcher_filter_leaves_out_git_and_staged_writes():
    assert _kept(Change.modified, "/p/src/a.py")
    assert not _kept(Change.modified, "/p/.git/index")
    assert not _kept(Change.added, "/p/.git")
    assert not _kept(Change.added, "/p/src/.gathering-0123456789abcdef.tmp")
    assert _kept(Change.added, "/p/src/.gathering-notes.md")


def test_changes_are_grouped_per_project_and_never_seen_through_a_symlink(tmp_path: Path):
    one, two, outside = tmp_path / "one", tmp_path / "two", tmp_path / "outside"
    for folder in (one / "src", two, outside):
        folder.mkdir(parents=True)
    os.symlink(outside, one / "out")
    os.symlink(one / "src", two / "alias")
    nested = _project(3, one / "src")
    directories = {
        str(one): [_project(1, one)],
        str(two): [_project(2, two)],
        str(one / "src"): [nested],
    }
    changes = {
        (Change.added, f"{one}/src/a.py"),
        (Change.modified, f"{one}/src/a.py"),
        (Change.deleted, f"{one}/b.txt"),
        (Change.added, f"{one}/b.txt"),
        (Change.added, f"{one}/out/secret.txt"),
        (Change.modified, f"{two}/alias/a.py"),
        (Change.modified, f"{two}/c.txt"),
        (Change.deleted, str(two)),
    }
    found = changed_paths(changes, directories)
    assert {key: paths for key, (_, paths) in found.items()} == {
        1: {"src/a.py": "added", "b.txt": "modified"},
        2: {"c.txt": "modified"},
        3: {"a.py": "added"},
    }


def test_kinds_coalesce():
    assert _coalesced({"added", "modified"}) == "added"
    assert _coalesced({"deleted", "modified"}) == "deleted"
    assert _coalesced({"added", "deleted"}) == "modified"
    assert _coalesced({"modified"}) == "modified"


def test_an_event_lists_the_paths_in_order_capped():
    project = _project(7, Path("/p"))
    few = files_changed_event(project, {"b": "added", "a": "modified"})
    assert few.type == "project.files_changed" and few.subject == "project:7"
    assert few.data == {
        "project_id": 7,
        "project": "p7",
        "changes": [{"path": "a", "change": "modified"}, {"path": "b", "change": "added"}],
        "truncated": False,
        "total": 2,
    }
    many = files_changed_event(project, {f"f{i:04}": "added" for i in range(MAX_EVENT_PATHS + 5)})
    assert many.data["truncated"] and many.data["total"] == MAX_EVENT_PATHS + 5
    assert len(many.data["changes"]) == MAX_EVENT_PATHS
    assert many.data["changes"][0]["path"] == "f0000"

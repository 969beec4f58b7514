"""Built-in file tools: read, write, list, search and patch files inside a workspace.

Each function takes the workspace root first and resolves every user path with
`resolve_in_workspace`, so nothing outside the root is named. They block (disk I/O): the tool
layer runs them in a worker thread. Files are opened with `O_NOFOLLOW` and checked to be
regular files, so a symlink swapped in after the path check is not followed at the last
component; symlinks met while walking folders are listed but never followed. Writes go to a
temporary file in the same folder, then `os.replace`, so a reader never sees half a file.

`search_files` matches with the `regex` module, which can stop a match: a whole search ends
within `SEARCH_SECONDS` (a pattern such as `(a+)+$` that backtracks exponentially is stopped
with a clear error), and lines are cut to `MAX_SCAN_LINE_CHARS` before matching.

`apply_patch` applies a unified diff only if every hunk of every file applies: a hunk must
match its context exactly, at its stated line or up to `PATCH_FUZZ_LINES` lines either side
(earlier hunks' shifts carried over); nothing is written otherwise.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import regex
from unidiff.errors import UnidiffParseError
from unidiff.patch import Hunk, PatchedFile, PatchSet

from gathering.errors import InvalidInputError, NotFoundError, PathTraversalError
from gathering.tools.workspace import resolve_in_workspace

MAX_READ_BYTES = 1024 * 1024  # a whole file, or the text of one line window
BINARY_SNIFF_BYTES = 8192  # a NUL byte in these first bytes makes a file binary
MAX_WRITE_BYTES = 10 * 1024 * 1024
MAX_LIST_LIMIT = 10_000
MAX_WALK_ENTRIES = 200_000  # folder entries looked at by one list or search
SKIPPED_DIRS = frozenset({".git"})  # never walked into by list_files and search_files
MAX_SEARCH_RESULTS = 1000
MAX_SEARCH_FILE_BYTES = 2 * 1024 * 1024  # larger files are skipped by search_files
MAX_SCAN_LINE_CHARS = 10_000  # longer lines are cut before the regex sees them
# A whole search ends within this: `regex` (unlike `re`) can stop a match that backtracks, so a
# pattern such as (a+)+$ never keeps a tool thread busy after its call was answered.
SEARCH_SECONDS = 20.0
MAX_MATCH_TEXT_CHARS = 300
MAX_PATTERN_CHARS = 1000
MAX_PATCH_BYTES = 1024 * 1024
MAX_PATCH_FILES = 100
PATCH_FUZZ_LINES = 10
ECHO_CHARS = 200  # user input quoted in a message is cut to this

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DEV_NULL = "/dev/null"
_REREAD = "read the file again with read_file and write the patch against its current text"
_PATCH_FORMAT = (
    "give a unified diff: '--- a/path', '+++ b/path', then hunks starting "
    "'@@ -line,count +line,count @@' (use /dev/null as the old path to add a file)"
)


def _shown(text: str) -> str:
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be a whole number", hint=f"give {name} as 0, 1, 2…")
    if value < minimum or (maximum is not None and value > maximum):
        top = f" and {maximum}" if maximum is not None else " or more"
        raise InvalidInputError(
            f"{name} is {value}; it must be {minimum}{top}", hint=f"give another {name}"
        )


def _split_lines(text: str) -> list[str]:
    """The lines of `text`, each with its "\\n" (the last one may lack it); only "\\n" splits."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _too_large(what: str, size: int, limit: int, hint: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} is too large ({size:,} bytes; the limit is {limit:,})", hint=hint
    )


# --- paths and safe opening ------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A user path: where it leads (`resolved`) and its own entry (`entry`, not followed)."""

    resolved: Path
    entry: Path  # the resolved parent folder joined with the last name as given
    relative: str  # `entry` relative to the root, with "/"
    shown: str  # the user's spelling, cut for messages


def _locate(root: Path, path: str) -> _Target:
    resolved = resolve_in_workspace(root, path)  # refuses anything leaving the root
    base = Path(root).resolve()
    segments = [s for s in path.split("/") if s not in ("", ".")]
    entry = resolved
    if segments:
        entry = resolve_in_workspace(root, "/".join(segments[:-1])) / segments[-1]
    relative = entry.relative_to(base).as_posix()
    return _Target(resolved, entry, relative, _shown(path))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _open_regular(path: Path, shown: str) -> tuple[BinaryIO, os.stat_result]:
    """`path` opened for reading without following a symlink; refused unless a regular file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(
            f"{shown!r} does not exist", hint="see what is there with list_files"
        ) from None
    except PermissionError:
        raise InvalidInputError(
            f"{shown!r} cannot be read: permission denied", hint="choose another file"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathTraversalError(
                f"{shown!r} became a symlink while it was being opened",
                hint="give the path of the file itself, not of a symlink",
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(
                f"{shown!r} is a folder, not a file", hint="see what it holds with list_files"
            )
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(
                f"{shown!r} is not a regular file (a device, pipe or socket)",
                hint="only regular files can be read",
            )
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


def _refuse_special_entry(target: _Target, *, verb: str) -> os.stat_result | None:
    """The lstat of `target.entry` (None if absent); refused if a symlink, folder or device."""
    info = _lstat(target.entry)
    if info is None:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise InvalidInputError(
            f"{target.shown!r} is a symlink; files are not {verb} through symlinks",
            hint="give the path of the file the symlink points to",
        )
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(
            f"{target.shown!r} is a folder, not a file", hint="give the path of a file"
        )
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(
            f"{target.shown!r} is not a regular file", hint="choose another path"
        )
    return info


def _check_parent(target: _Target, *, create: bool) -> None:
    """Refuse a path whose folder is a file, or is missing when folders may not be created."""
    folder = target.entry.parent
    while (info := _lstat(folder)) is None:
        if not create:
            raise NotFoundError(
                f"the folder of {target.shown!r} does not exist",
                hint="pass create_dirs=true, or choose an existing folder",
            )
        folder = folder.parent
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(
            f"{target.shown!r} cannot be created: a part of its path is a file, not a folder",
            hint="choose another path",
        )


def _stage(entry: Path, data: bytes) -> Path:
    """A new temporary file beside `entry` holding `data` (with `entry`'s mode if it exists)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    existing = _lstat(entry)
    temporary = entry.parent / f".gathering-{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, _TEMP_FLAGS, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if existing is not None:
                os.fchmod(handle.fileno(), stat.S_IMODE(existing.st_mode))
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _replace_all(staged: list[tuple[Path, Path]]) -> None:
    for temporary, entry in staged:
        os.replace(temporary, entry)  # renames over the entry: a symlink there is not followed


# --- read_file -------------------------------------------------------------------------------


def read_file(root: Path, path: str, offset: int = 0, limit: int | None = None) -> str:
    """The text of a workspace file (UTF-8, bad bytes replaced), or `limit` lines from `offset`.

    `offset` counts lines from 0. Files over MAX_READ_BYTES need `limit`; binary files are refused.
    """
    _check_int("offset", offset, 0)
    if limit is not None:
        _check_int("limit", limit, 1)
    target = _locate(root, path)
    handle, info = _open_regular(target.resolved, target.shown)
    with handle:
        if b"\0" in handle.read(BINARY_SNIFF_BYTES):
            raise InvalidInputError(
                f"{target.shown!r} is a binary file ({info.st_size:,} bytes)",
                hint="only text files can be read",
            )
        handle.seek(0)
        if limit is None:
            data = handle.read(MAX_READ_BYTES + 1)
            if len(data) > MAX_READ_BYTES:
                raise _too_large(
                    repr(target.shown),
                    max(info.st_size, len(data)),
                    MAX_READ_BYTES,
                    hint="read it in parts: offset=0, limit=2000, then offset=2000, …",
                )
            lines = _split_lines(data.decode("utf-8", errors="replace"))
            text, total = "".join(lines[offset:]), len(lines)
        else:
            chunks, total = _read_window(handle, offset, limit)
            text = b"".join(chunks).decode("utf-8", errors="replace")
    if offset > 0 and not text:
        raise InvalidInputError(
            f"offset {offset} is past the end of {target.shown!r} ({total} lines)",
            hint="give a smaller offset",
        )
    return text


def _read_window(handle: BinaryIO, offset: int, limit: int) -> tuple[list[bytes], int]:
    """Up to `limit` lines from line `offset`, at most MAX_READ_BYTES in all, streamed.

    A line longer than MAX_READ_BYTES counts as several. When the byte cap stops the window
    early, a last line says where to go on from.
    """
    chunks: list[bytes] = []
    size = 0
    line = 0
    while raw := handle.readline(MAX_READ_BYTES):
        if line >= offset:
            if size + len(raw) > MAX_READ_BYTES:
                note = f"\n[stopped at {MAX_READ_BYTES:,} bytes: continue with offset={line}]\n"
                chunks.append(note.encode())
                break
            chunks.append(raw)
            size += len(raw)
            if len(chunks) == limit:
                break
        line += 1
    return chunks, line


# --- write_file ------------------------------------------------------------------------------


def _encoded(content: object, what: str) -> bytes:
    if not isinstance(content, str):
        raise InvalidInputError(f"{what} must be text", hint=f"give {what} as a string")
    if len(content) > MAX_WRITE_BYTES:  # a character is at least one byte
        raise _too_large(what, len(content), MAX_WRITE_BYTES, hint="write a smaller file")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} is not valid Unicode text (it holds a lone surrogate)",
            hint="send the text as proper UTF-8",
        ) from None
    if len(data) > MAX_WRITE_BYTES:
        raise _too_large(what, len(data), MAX_WRITE_BYTES, hint="write a smaller file")
    return data


def write_file(root: Path, path: str, content: str, create_dirs: bool = True) -> dict[str, Any]:
    """Write `content` (UTF-8) to a workspace file, atomically, creating folders if allowed.

    Refuses content over MAX_WRITE_BYTES, folders, and a symlink as the file itself.
    """
    data = _encoded(content, "content")
    target = _locate(root, path)
    if not target.relative or target.relative == ".":
        raise InvalidInputError("the workspace root is a folder, not a file", hint="name a file")
    _refuse_special_entry(target, verb="written")
    _check_parent(target, create=create_dirs)
    try:
        temporary = _stage(target.entry, data)
    except PermissionError:
        raise InvalidInputError(
            f"{target.shown!r} cannot be written: permission denied", hint="choose another path"
        ) from None
    try:
        _replace_all([(temporary, target.entry)])
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return {"path": target.relative, "bytes": len(data)}


# --- list_files and search_files -------------------------------------------------------------


def _check_glob(name: str, value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200):
        raise InvalidInputError(
            f"{name} must be a glob of 1 to 200 characters, such as '*.py'",
            hint=f"give another {name}, or none",
        )


def _glob_matches(pattern: str, name: str, relative: str) -> bool:
    """`pattern` against the name, or against the path from the root if it holds a "/"."""
    return fnmatch.fnmatchcase(relative if "/" in pattern else name, pattern)


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _walk(folder: Path, relative: str, recursive: bool) -> Iterator[tuple[os.DirEntry[str], str]]:
    """Entries under `folder` with their root-relative paths, sorted folder by folder.

    Symlinks are yielded, never followed; SKIPPED_DIRS are yielded, never walked into.
    """
    prefix = "" if relative in ("", ".") else relative + "/"
    stack = [(iter(_entries(str(folder))), prefix)]
    while stack:
        found, prefix = stack[-1]
        entry = next(found, None)
        if entry is None:
            stack.pop()
            continue
        yield entry, prefix + entry.name
        if recursive and entry.name not in SKIPPED_DIRS and _kind(entry) == "dir":
            stack.append((iter(_entries(entry.path)), f"{prefix}{entry.name}/"))


def _kind(entry: os.DirEntry[str]) -> str | None:
    try:
        if entry.is_symlink():
            return "symlink"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "file"
    except OSError:
        pass
    return None  # sockets, pipes, devices, entries gone meanwhile: not listed


def _start(root: Path, path: str) -> tuple[_Target, os.stat_result]:
    target = _locate(root, path)
    info = _lstat(target.resolved)
    if info is None:
        raise NotFoundError(
            f"{target.shown!r} does not exist", hint="see what is there with list_files"
        )
    return target, info


def _cut_note(reason: str, hint: str) -> dict[str, Any]:
    return {"truncated": True, "note": f"{reason}; {hint}"}


def list_files(
    root: Path,
    path: str = ".",
    pattern: str | None = None,
    recursive: bool = False,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Entries {"path", "type": file|dir|symlink, "size"} of a workspace folder, sorted.

    At most `limit` entries; when more exist, a last {"truncated": true, "note"} says so.
    """
    _check_int("limit", limit, 1, MAX_LIST_LIMIT)
    _check_glob("pattern", pattern)
    target, info = _start(root, path)
    relative = target.resolved.relative_to(Path(root).resolve()).as_posix()
    if stat.S_ISREG(info.st_mode):
        return [{"path": relative, "type": "file", "size": info.st_size}]
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(f"{target.shown!r} is not a folder", hint="give a folder")
    listed: list[dict[str, Any]] = []
    for scanned, (entry, entry_path) in enumerate(_walk(target.resolved, relative, recursive)):
        if scanned >= MAX_WALK_ENTRIES:
            listed.append(_cut_note(f"stopped after {scanned:,} entries", "narrow the path"))
            break
        kind = _kind(entry)
        if kind is None or (pattern and not _glob_matches(pattern, entry.name, entry_path)):
            continue
        if len(listed) == limit:
            listed.append(_cut_note(f"only the first {limit} entries", "narrow path or pattern"))
            break
        size = None
        if kind == "file":
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
        listed.append({"path": entry_path, "type": kind, "size": size})
    return listed


def _compile(pattern: object, ignore_case: bool) -> regex.Pattern[str]:
    if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_CHARS:
        raise InvalidInputError(
            f"the pattern must be a regular expression of 1 to {MAX_PATTERN_CHARS} characters",
            hint="give a shorter, non-empty pattern",
        )
    try:
        return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
    except regex.error as exc:
        raise InvalidInputError(
            f"the pattern {_shown(pattern)!r} is not a valid regular expression: {exc}",
            hint="escape special characters such as ( [ { . * + ? with a backslash",
        ) from None


def _text_lines(path: str) -> list[str] | None:
    """The lines of a text file to search; None for what is skipped (see search_files)."""
    try:
        handle, info = _open_regular(Path(path), path)
    except (InvalidInputError, NotFoundError):
        return None  # a symlink swapped in, gone, unreadable, not a regular file
    with handle:
        if info.st_size > MAX_SEARCH_FILE_BYTES:
            return None
        data = handle.read(MAX_SEARCH_FILE_BYTES + 1)
    if len(data) > MAX_SEARCH_FILE_BYTES or b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None
    return data.decode("utf-8", errors="replace").split("\n")


def search_files(
    root: Path,
    pattern: str,
    path: str = ".",
    glob: str | None = None,
    ignore_case: bool = False,
    max_results: int = 200,
) -> list[dict[str, Any]]:
    """Lines matching a regex in workspace files: {"path", "line" (from 1), "text"}.

    Skips binary files, files over MAX_SEARCH_FILE_BYTES, symlinks and `.git`. Lines are cut to
    MAX_SCAN_LINE_CHARS before matching. A last {"truncated": true, "note"} marks a cut list.
    """
    compiled = _compile(pattern, ignore_case)
    _check_int("max_results", max_results, 1, MAX_SEARCH_RESULTS)
    search = _Search(compiled, time.monotonic() + SEARCH_SECONDS)
    _check_glob("glob", glob)
    target, info = _start(root, path)
    relative = target.resolved.relative_to(Path(root).resolve()).as_posix()
    if stat.S_ISREG(info.st_mode):
        return _search_file(search, str(target.resolved), relative, [], max_results)
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(f"{target.shown!r} is not a file or folder", hint="give a folder")
    found: list[dict[str, Any]] = []
    for scanned, (entry, entry_path) in enumerate(_walk(target.resolved, relative, True)):
        if scanned >= MAX_WALK_ENTRIES:
            found.append(_cut_note(f"stopped after {scanned:,} entries", "narrow the path"))
            break
        if entry.name in SKIPPED_DIRS or _kind(entry) != "file":
            continue
        if glob is None or _glob_matches(glob, entry.name, entry_path):
            _search_file(search, entry.path, entry_path, found, max_results)
            if len(found) > max_results:
                break
    return found


@dataclass(frozen=True)
class _Search:
    """A compiled pattern and the time by which the whole search must end."""

    pattern: regex.Pattern[str]
    deadline: float

    def matches(self, line: str) -> bool:
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            return self.pattern.search(line, timeout=left) is not None
        except TimeoutError:
            raise InvalidInputError(
                f"the search took longer than {SEARCH_SECONDS:g}s and was stopped",
                hint="search fewer files (path, glob), or simplify the pattern: nested "
                "repetition such as (a+)+ can take exponential time",
            ) from None


def _search_file(
    search: _Search, path: str, relative: str, found: list[dict[str, Any]], cap: int
) -> list[dict[str, Any]]:
    """`found` with the matching lines of one file added; past `cap`, a note ends it."""
    for number, line in enumerate(_text_lines(path) or [], start=1):
        scanned = line[:MAX_SCAN_LINE_CHARS].removesuffix("\r")
        if not search.matches(scanned):
            continue
        if len(found) == cap:
            found.append(_cut_note(f"more than {cap} matches", "narrow the search"))
            break
        found.append({"path": relative, "line": number, "text": scanned[:MAX_MATCH_TEXT_CHARS]})
    return found


# --- apply_patch -----------------------------------------------------------------------------


def _unquoted(name: str) -> str:
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == '"' else name


def _patch_paths(patched: PatchedFile, number: int) -> tuple[str, str]:
    """The action ("modified", "added", "removed") and the workspace path of one file's diff."""
    source, target = _unquoted(patched.source_file or ""), _unquoted(patched.target_file or "")
    where = f"file {number} of the patch ({_shown(target or source)!r})"
    if patched.is_binary_file:
        raise InvalidInputError(f"{where} is a binary diff", hint="patch text files only")
    if getattr(patched, "is_symlink", False) or getattr(patched, "is_submodule", False):
        raise InvalidInputError(f"{where} is a symlink or submodule", hint="patch files only")
    # git's a/ and b/ prefixes are dropped when the pair has them.
    if source == _DEV_NULL and target != _DEV_NULL:
        return "added", target.removeprefix("b/")
    if target == _DEV_NULL and source != _DEV_NULL:
        return "removed", source.removeprefix("a/")
    if source.startswith("a/") and target.startswith("b/"):
        source, target = source[2:], target[2:]
    if source != target or not source:
        raise InvalidInputError(
            f"{where} renames {_shown(source)!r} to {_shown(target)!r}; renames are not supported",
            hint="give the same path after --- a/ and +++ b/; add and remove files separately",
        )
    if not patched:
        raise InvalidInputError(f"{where} has no hunks", hint=_PATCH_FORMAT)
    return "modified", source


def _hunk_sides(hunk: Hunk) -> tuple[list[str], list[str]]:
    """The old and new lines of a hunk, "\\ No newline at end of file" applied."""
    old: list[str] = []
    new: list[str] = []
    previous = ""
    for line in hunk:
        kind, value = line.line_type, line.value
        if kind == "\\":
            if previous in (" ", "-") and old:
                old[-1] = old[-1].removesuffix("\n")
            if previous in (" ", "+") and new:
                new[-1] = new[-1].removesuffix("\n")
            continue
        if kind in (" ", "-"):
            old.append(value)
        if kind in (" ", "+"):
            new.append(value)
        if kind in (" ", "-", "+"):
            previous = kind
    return old, new


def _find(lines: list[str], old: list[str], expected: int, floor: int) -> int | None:
    """Where `old` stands in `lines`: at `expected`, else the nearest within PATCH_FUZZ_LINES."""
    if not old:
        return expected if floor <= expected <= len(lines) else None
    for distance in range(PATCH_FUZZ_LINES + 1):
        for at in (expected - distance, expected + distance):
            if floor <= at and at + len(old) <= len(lines) and lines[at : at + len(old)] == old:
                return at
    return None


def _mismatch(lines: list[str], old: list[str], expected: int) -> str:
    for index, wanted in enumerate(old):
        at = expected + index
        if at < 0 or at >= len(lines):
            return f"the file has {len(lines)} lines, the hunk needs line {at + 1}"
        if lines[at] != wanted:
            found, expects = _shown(lines[at]), _shown(wanted)
            return f"line {at + 1} is {found!r}, the patch expects {expects!r}"
    return "its lines are not at the stated place"  # it matched, but before an earlier hunk


def _apply_hunks(lines: list[str], patched: PatchedFile, shown: str) -> list[str]:
    result = list(lines)
    shift = 0  # how far the lines after the last applied hunk have moved
    floor = 0  # a hunk may not start inside or before the previous one
    for number, hunk in enumerate(patched, start=1):
        old, new = _hunk_sides(hunk)
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        expected = start + shift
        at = _find(result, old, expected, floor)
        if at is None:
            header = f"@@ -{hunk.source_start},{hunk.source_length} @@"
            raise InvalidInputError(
                f"hunk {number} ({header}) of {shown!r} does not apply: "
                f"{_mismatch(result, old, expected)} (also looked {PATCH_FUZZ_LINES} lines "
                "either side); no file was changed",
                hint=_REREAD,
            )
        result[at : at + len(old)] = new
        shift = at + len(new) - (start + len(old))
        floor = at + len(new)
    return result


def _current_lines(target: _Target) -> list[str] | None:
    """The lines of the file a patch changes, or None if there is none."""
    if _refuse_special_entry(target, verb="patched") is None:
        return None
    handle, _ = _open_regular(target.entry, target.shown)
    with handle:
        data = handle.read(MAX_WRITE_BYTES + 1)
    if len(data) > MAX_WRITE_BYTES:
        raise _too_large(
            repr(target.shown), len(data), MAX_WRITE_BYTES, hint="patch a smaller file"
        )
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise InvalidInputError(f"{target.shown!r} is a binary file", hint="patch text files only")
    try:
        return _split_lines(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"{target.shown!r} is not UTF-8 text", hint="rewrite it with write_file instead"
        ) from None


def _parse_patch(patch: object) -> PatchSet:
    if not isinstance(patch, str):
        raise InvalidInputError("the patch must be text", hint=_PATCH_FORMAT)
    size = len(patch) if len(patch) > MAX_PATCH_BYTES else len(patch.encode("utf-8", "replace"))
    if size > MAX_PATCH_BYTES:
        raise _too_large("the patch", size, MAX_PATCH_BYTES, hint="split it into smaller patches")
    try:
        parsed = PatchSet(patch)
    except UnidiffParseError as exc:
        raise InvalidInputError(
            f"the patch cannot be read as a unified diff: {_shown(str(exc).strip())}",
            hint=_PATCH_FORMAT,
        ) from None
    if not parsed:
        raise InvalidInputError("the patch names no file to change", hint=_PATCH_FORMAT)
    if len(parsed) > MAX_PATCH_FILES:
        raise InvalidInputError(
            f"the patch changes {len(parsed)} files; the limit is {MAX_PATCH_FILES}",
            hint="split it into smaller patches",
        )
    return parsed


def apply_patch(root: Path, patch: str) -> dict[str, Any]:
    """Apply a unified diff to workspace files (modify, add, remove): all of it, or nothing.

    Returns {"files": [{"path", "action", "hunks"}]}.
    """
    parsed = _parse_patch(patch)
    contents: dict[Path, list[str] | None] = {}  # entry -> new lines, None once removed
    applied: list[dict[str, Any]] = []
    for number, patched in enumerate(parsed, start=1):
        action, user_path = _patch_paths(patched, number)
        target = _locate(root, user_path)
        if not target.relative or target.relative == ".":
            raise InvalidInputError("a patch cannot change the workspace root", hint=_PATCH_FORMAT)
        lines = contents[target.entry] if target.entry in contents else _current_lines(target)
        if action == "added":
            if lines is not None:
                raise InvalidInputError(
                    f"the patch adds {target.shown!r}, which already exists", hint=_REREAD
                )
            _check_parent(target, create=True)
            lines = []
        elif lines is None:
            raise NotFoundError(
                f"the patch changes {target.shown!r}, which does not exist",
                hint="add a file with '--- /dev/null' as the old path",
            )
        lines = _apply_hunks(lines, patched, target.shown)
        if action == "removed":
            if lines:
                raise InvalidInputError(
                    f"the patch removes {target.shown!r} but leaves {len(lines)} lines in it",
                    hint=_REREAD,
                )
            contents[target.entry] = None
        else:
            _encoded("".join(lines), f"the patched {target.shown!r}")
            contents[target.entry] = lines
        applied.append({"path": target.relative, "action": action, "hunks": len(patched)})
    for entry, lines in contents.items():
        if lines is not None and any(contents.get(folder) is not None for folder in entry.parents):
            raise InvalidInputError(
                f"the patch writes {entry.name!r} inside a path it also writes as a file",
                hint="a path cannot be both a file and a folder",
            )
    _commit(contents)
    return {"files": applied}


def _commit(contents: dict[Path, list[str] | None]) -> None:
    """Write every patched file (staged first, then renamed into place), then remove files."""
    staged: list[tuple[Path, Path]] = []
    try:
        for entry, lines in contents.items():
            if lines is not None:
                staged.append((_stage(entry, "".join(lines).encode("utf-8")), entry))
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    _replace_all(staged)
    for entry, lines in contents.items():
        if lines is None:
            entry.unlink(missing_ok=True)  # unlink removes a symlink itself, never its target

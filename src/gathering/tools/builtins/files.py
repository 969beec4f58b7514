"""Built-in file tools: read, write, list, search and patch files inside a workspace.

Each function takes the workspace root first. A user path is checked by
`resolve_in_workspace` (nothing outside the root is named; symlinks present at that moment
are resolved, so one that stays inside works), then reached from a descriptor of the root
one name at a time with `O_NOFOLLOW` (`beneath`): a folder swapped for a symlink after the
check is refused, never followed, and the last step (open, stat, temporary file, rename,
mkdir, listing) is relative to the folder's descriptor. Paths are at most `MAX_PATH_DEPTH`
names deep. Files read must be regular files. Walks (list_files, search_files) descend by
descriptors too and never through a symlink: symlinks are listed, not followed. The
functions block (disk I/O): the tool layer runs them in a worker thread.

Writes go to a temporary file in the same folder, then a rename, so a reader never sees
half a file. Every function takes `deadline`, a `time.monotonic()` value by which the call
must end (None: no deadline): write_file and apply_patch check it right before they put
files in place and, once it has passed, remove what they staged and raise
`ToolTimeoutError` ("... nothing was changed"); walks check it between entries, read_file
before it opens and every few thousand lines of a window, and search_files also stops each
match at it.

`search_files` matches with the `regex` module, which can stop a match: a whole search ends
within `SEARCH_SECONDS` (a pattern such as `(a+)+$` that backtracks exponentially is stopped
with a clear error), and lines are cut to `MAX_SCAN_LINE_CHARS` before matching.

`apply_patch` (in `patch`) applies a unified diff only if every hunk of every file applies.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import regex

from gathering.errors import InvalidInputError, NotFoundError, ToolTimeoutError
from gathering.tools.builtins.beneath import (
    BINARY_SNIFF_BYTES,
    DIR_FLAGS,
    MAX_PATH_DEPTH,
    MAX_WRITE_BYTES,
    Target,
    check_deadline,
    discard,
    locate,
    lstat_at,
    open_folder,
    open_regular,
    opened_root,
    refuse_special,
    remove_created,
    replace,
    shown,
    stage,
    timed_out,
    too_large,
)
from gathering.tools.builtins.patch import (
    MAX_PATCH_BYTES,
    MAX_PATCH_FILES,
    MAX_PATCH_HUNKS,
    MAX_PATCH_LINES,
    MAX_PATCH_READ_BYTES,
    PATCH_FUZZ_LINES,
    apply_patch,
)

__all__ = [
    "BINARY_SNIFF_BYTES",
    "MAX_LIST_LIMIT",
    "MAX_MATCH_TEXT_CHARS",
    "MAX_PATCH_BYTES",
    "MAX_PATCH_FILES",
    "MAX_PATCH_HUNKS",
    "MAX_PATCH_LINES",
    "MAX_PATCH_READ_BYTES",
    "MAX_PATH_DEPTH",
    "MAX_PATTERN_CHARS",
    "MAX_READ_BYTES",
    "MAX_SCAN_LINE_CHARS",
    "MAX_SEARCH_FILE_BYTES",
    "MAX_SEARCH_RESULTS",
    "MAX_WALK_ENTRIES",
    "MAX_WRITE_BYTES",
    "PATCH_FUZZ_LINES",
    "SEARCH_SECONDS",
    "SKIPPED_DIRS",
    "apply_patch",
    "list_files",
    "read_file",
    "search_files",
    "write_file",
]

MAX_READ_BYTES = 1024 * 1024  # a whole file, or the text of one line window
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
_DEADLINE_LINES = 4096  # lines read between two looks at the deadline


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


def _stopped(doing: str, target: Target) -> str:
    return f"the call's time ran out while {doing} {target.shown!r}"


# --- read_file -------------------------------------------------------------------------------


def read_file(
    root: Path,
    path: str,
    offset: int = 0,
    limit: int | None = None,
    *,
    deadline: float | None = None,
) -> str:
    """The text of a workspace file (UTF-8, bad bytes replaced), or `limit` lines from `offset`.

    `offset` counts lines from 0. Files over MAX_READ_BYTES need `limit`; binary files are
    refused. A symlink that stays inside the workspace is read as the file it points to.
    """
    _check_int("offset", offset, 0)
    if limit is not None:
        _check_int("limit", limit, 1)
    target = locate(root, path)
    stopped = _stopped("reading", target)
    check_deadline(deadline, stopped)
    if not target.resolved:
        raise InvalidInputError(
            f"{target.shown!r} is a folder, not a file", hint="see what it holds with list_files"
        )
    with opened_root(root) as root_fd:
        folder = open_folder(root_fd, target.resolved[:-1], target.shown)
        try:
            handle, info = open_regular(folder, target.resolved[-1], target.shown)
        finally:
            os.close(folder)
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
                raise too_large(
                    repr(target.shown),
                    max(info.st_size, len(data)),
                    MAX_READ_BYTES,
                    hint="read it in parts: offset=0, limit=2000, then offset=2000, …",
                )
            lines = _split_lines(data.decode("utf-8", errors="replace"))
            text, total = "".join(lines[offset:]), len(lines)
        else:
            chunks, total = _read_window(handle, offset, limit, deadline, stopped)
            text = b"".join(chunks).decode("utf-8", errors="replace")
    if offset > 0 and not text:
        raise InvalidInputError(
            f"offset {offset} is past the end of {target.shown!r} ({total} lines)",
            hint="give a smaller offset",
        )
    return text


def _read_window(
    handle: BinaryIO, offset: int, limit: int, deadline: float | None, stopped: str
) -> tuple[list[bytes], int]:
    """Up to `limit` lines from line `offset`, at most MAX_READ_BYTES in all, streamed.

    A line longer than MAX_READ_BYTES counts as several. When the byte cap stops the window
    early, a last line says where to go on from.
    """
    chunks: list[bytes] = []
    size = 0
    line = 0
    while raw := handle.readline(MAX_READ_BYTES):
        if line % _DEADLINE_LINES == 0:
            check_deadline(deadline, stopped)
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
        raise too_large(what, len(content), MAX_WRITE_BYTES, hint="write a smaller file")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} is not valid Unicode text (it holds a lone surrogate)",
            hint="send the text as proper UTF-8",
        ) from None
    if len(data) > MAX_WRITE_BYTES:
        raise too_large(what, len(data), MAX_WRITE_BYTES, hint="write a smaller file")
    return data


def write_file(
    root: Path,
    path: str,
    content: str,
    create_dirs: bool = True,
    *,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Write `content` (UTF-8) to a workspace file, atomically, creating folders if allowed.

    Refuses content over MAX_WRITE_BYTES, folders, and a symlink as the file itself. If
    `deadline` has passed when the file would be put in place, raises ToolTimeoutError and
    leaves nothing behind (no temporary file, no folder it made).
    """
    data = _encoded(content, "content")
    target = locate(root, path)
    if target.is_root:
        raise InvalidInputError("the workspace root is a folder, not a file", hint="name a file")
    created: list[tuple[str, ...]] = []
    with opened_root(root) as root_fd:
        try:
            folder = open_folder(
                root_fd,
                target.folder,
                target.shown,
                create=create_dirs,
                created=created,
                missing=f"the folder of {target.shown!r} does not exist",
                missing_hint="pass create_dirs=true, or choose an existing folder",
            )
            try:
                _write_in(folder, target, data, deadline)
            finally:
                os.close(folder)
        except BaseException:
            remove_created(root_fd, created)
            raise
    return {"path": target.relative, "bytes": len(data)}


def _write_in(folder: int, target: Target, data: bytes, deadline: float | None) -> None:
    """Stage `data` beside the entry in `folder`, then rename it over the entry."""
    existing = lstat_at(folder, target.name)
    refuse_special(existing, target.shown, verb="written")
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else None
    temporary = stage(folder, data, mode, target.shown)
    try:
        check_deadline(deadline)
        replace(folder, temporary, target.name, target.shown)
    except BaseException:
        discard(folder, temporary)
        raise


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


def _entries(folder: int) -> list[tuple[str, str | None]]:
    """The names and kinds of the entries of the folder open as `folder`, sorted by name."""
    try:
        with os.scandir(folder) as found:
            return sorted(((entry.name, _kind(entry)) for entry in found), key=lambda e: e[0])
    except OSError:
        return []


@dataclass(frozen=True)
class _Found:
    """An entry met by a walk; `folder` (its folder's descriptor) is open until the next."""

    folder: int
    name: str
    path: str  # relative to the root, with "/"
    kind: str | None  # "file", "dir", "symlink", or None for what is not listed


class _Walk:
    """The entries beneath a folder with their root-relative paths, sorted folder by folder.

    Each folder is opened by name relative to its parent's descriptor with O_NOFOLLOW, so a
    folder swapped for a symlink is not walked into. Symlinks are yielded, never followed;
    SKIPPED_DIRS are yielded, never walked into; folders MAX_PATH_DEPTH names deep are not
    walked into (`too_deep` then says so). The deadline is checked between entries.
    """

    def __init__(
        self, folder: int, relative: str, recursive: bool, deadline: float | None, stopped: str
    ) -> None:
        self.folder = folder
        self.prefix = "" if relative in ("", ".") else relative + "/"
        self.recursive = recursive
        self.deadline = deadline
        self.stopped = stopped
        self.too_deep = False

    def entries(self) -> Generator[_Found, None, None]:
        """The walk; close it (`contextlib.closing`) to close the folders it holds open."""
        first = os.dup(self.folder)
        stack = [(first, iter(_entries(first)), self.prefix)]
        try:
            while stack:
                folder, found, prefix = stack[-1]
                item = next(found, None)
                if item is None:
                    stack.pop()
                    os.close(folder)
                    continue
                check_deadline(self.deadline, self.stopped)
                name, kind = item
                yield _Found(folder, name, prefix + name, kind)
                if self.recursive and kind == "dir" and name not in SKIPPED_DIRS:
                    child = self._open(folder, name, f"{prefix}{name}")
                    if child is not None:
                        stack.append((child, iter(_entries(child)), f"{prefix}{name}/"))
        finally:
            for folder, _, _ in stack:
                os.close(folder)

    def _open(self, folder: int, name: str, path: str) -> int | None:
        """The folder `name` in `folder` (at `path`) to walk into; None if it is not walked."""
        if path.count("/") + 1 >= MAX_PATH_DEPTH:
            self.too_deep = True
            return None
        try:
            return os.open(name, DIR_FLAGS, dir_fd=folder)
        except OSError:  # a symlink swapped in (ELOOP), gone, unreadable: not walked into
            return None


@contextmanager
def _started(root: Path, target: Target) -> Iterator[tuple[int, str, os.stat_result]]:
    """The folder holding where `target` leads (a descriptor), its name there, and its lstat."""
    with opened_root(root) as root_fd:
        folder = open_folder(root_fd, target.resolved[:-1], target.shown)
        try:
            name = target.resolved[-1] if target.resolved else "."
            info = lstat_at(folder, name)
            if info is None:
                raise NotFoundError(
                    f"{target.shown!r} does not exist", hint="see what is there with list_files"
                )
            yield folder, name, info
        finally:
            os.close(folder)


def _cut_note(reason: str, hint: str) -> dict[str, Any]:
    return {"truncated": True, "note": f"{reason}; {hint}"}


def _too_deep_note() -> dict[str, Any]:
    return _cut_note(
        f"folders {MAX_PATH_DEPTH} levels deep were not walked into",
        f"paths are at most {MAX_PATH_DEPTH} names deep",
    )


def list_files(
    root: Path,
    path: str = ".",
    pattern: str | None = None,
    recursive: bool = False,
    limit: int = 1000,
    *,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Entries {"path", "type": file|dir|symlink, "size"} of a workspace folder, sorted.

    At most `limit` entries; when more exist (or folders too deep were left out), a last
    {"truncated": true, "note"} says so. ToolTimeoutError once `deadline` has passed.
    """
    _check_int("limit", limit, 1, MAX_LIST_LIMIT)
    _check_glob("pattern", pattern)
    target = locate(root, path)
    with _started(root, target) as (parent, name, info):
        relative = target.resolved_relative
        if stat.S_ISREG(info.st_mode):
            return [{"path": relative, "type": "file", "size": info.st_size}]
        if not stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(f"{target.shown!r} is not a folder", hint="give a folder")
        folder = open_folder(parent, (name,), target.shown)
    try:
        walk = _Walk(folder, relative, recursive, deadline, _stopped("listing", target))
        with closing(walk.entries()) as entries:
            listed = _listed(entries, pattern, limit)
    finally:
        os.close(folder)
    if walk.too_deep and not (listed and listed[-1].get("truncated")):
        listed.append(_too_deep_note())
    return listed


def _listed(entries: Iterator[_Found], pattern: str | None, limit: int) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = []
    for scanned, found in enumerate(entries):
        if scanned >= MAX_WALK_ENTRIES:
            listed.append(_cut_note(f"stopped after {scanned:,} entries", "narrow the path"))
            break
        if found.kind is None or (pattern and not _glob_matches(pattern, found.name, found.path)):
            continue
        if len(listed) == limit:
            listed.append(_cut_note(f"only the first {limit} entries", "narrow path or pattern"))
            break
        size = None
        if found.kind == "file":
            info = lstat_at(found.folder, found.name)
            if info is None or not stat.S_ISREG(info.st_mode):
                continue  # gone or replaced meanwhile
            size = info.st_size
        listed.append({"path": found.path, "type": found.kind, "size": size})
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
            f"the pattern {shown(pattern)!r} is not a valid regular expression: {exc}",
            hint="escape special characters such as ( [ { . * + ? with a backslash",
        ) from None


def _text_lines(folder: int, name: str) -> list[str] | None:
    """The lines of a text file to search; None for what is skipped (see search_files)."""
    try:
        handle, info = open_regular(folder, name, name)
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
    *,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Lines matching a regex in workspace files: {"path", "line" (from 1), "text"}.

    Skips binary files, files over MAX_SEARCH_FILE_BYTES, symlinks and `.git`. Lines are cut to
    MAX_SCAN_LINE_CHARS before matching. A last {"truncated": true, "note"} marks a cut list.
    The search stops at SEARCH_SECONDS (InvalidInputError) or at `deadline`, whichever comes
    first (ToolTimeoutError for the deadline).
    """
    compiled = _compile(pattern, ignore_case)
    _check_int("max_results", max_results, 1, MAX_SEARCH_RESULTS)
    search = _Search(compiled, SEARCH_SECONDS, deadline)
    _check_glob("glob", glob)
    target = locate(root, path)
    with _started(root, target) as (parent, name, info):
        relative = target.resolved_relative
        if stat.S_ISREG(info.st_mode):
            return _search_file(search, parent, name, relative, [], max_results)
        if not stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(
                f"{target.shown!r} is not a file or folder", hint="give a folder"
            )
        folder = open_folder(parent, (name,), target.shown)
    try:
        walk = _Walk(folder, relative, True, search.end, search.stopped)
        with closing(walk.entries()) as entries:
            found = _searched(search, entries, glob, max_results)
    except ToolTimeoutError:
        search.stop()  # the walk ran out of time: the right error for the bound that was hit
    finally:
        os.close(folder)
    if walk.too_deep and not (found and found[-1].get("truncated")):
        found.append(_too_deep_note())
    return found


def _searched(
    search: _Search, entries: Iterator[_Found], glob: str | None, max_results: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for scanned, entry in enumerate(entries):
        if scanned >= MAX_WALK_ENTRIES:
            found.append(_cut_note(f"stopped after {scanned:,} entries", "narrow the path"))
            break
        if entry.kind != "file":
            continue
        if glob is None or _glob_matches(glob, entry.name, entry.path):
            _search_file(search, entry.folder, entry.name, entry.path, found, max_results)
            if len(found) > max_results:
                break
    return found


class _Search:
    """A compiled pattern, and when the search must end: SEARCH_SECONDS or the call's deadline."""

    stopped = "the call's time ran out during the search"

    def __init__(self, pattern: regex.Pattern[str], seconds: float, deadline: float | None) -> None:
        self.pattern = pattern
        self.seconds = seconds
        budget = time.monotonic() + seconds
        self.deadline = deadline if deadline is not None and deadline < budget else None
        self.end = budget if self.deadline is None else self.deadline

    def stop(self) -> NoReturn:
        """Raise the error for the bound that ended the search."""
        if self.deadline is not None:
            raise timed_out(self.stopped)
        raise InvalidInputError(
            f"the search took longer than {self.seconds:g}s and was stopped",
            hint="search fewer files (path, glob), or simplify the pattern: nested "
            "repetition such as (a+)+ can take exponential time",
        )

    def matches(self, line: str) -> bool:
        left = self.end - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            return self.pattern.search(line, timeout=left) is not None
        except TimeoutError:
            self.stop()


def _search_file(
    search: _Search,
    folder: int,
    name: str,
    relative: str,
    found: list[dict[str, Any]],
    cap: int,
) -> list[dict[str, Any]]:
    """`found` with the matching lines of one file added; past `cap`, a note ends it."""
    for number, line in enumerate(_text_lines(folder, name) or [], start=1):
        scanned = line[:MAX_SCAN_LINE_CHARS].removesuffix("\r")
        if not search.matches(scanned):
            continue
        if len(found) == cap:
            found.append(_cut_note(f"more than {cap} matches", "narrow the search"))
            break
        found.append({"path": relative, "line": number, "text": scanned[:MAX_MATCH_TEXT_CHARS]})
    return found

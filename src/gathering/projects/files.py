"""A project's files, for people: list a folder (with git status), read text (encoding
detected) or bytes, write with an optimistic version, create, move, delete and search.

Every path is a user path relative to the project's directory. It goes through the workspace
checks of the file tools (`resolve_in_workspace`, then `beneath`: each folder opened from the
root's descriptor with `O_NOFOLLOW`), so nothing outside the directory is ever named, read or
changed, whatever the spelling (`..`, absolute, percent-encoded, NUL, backslash) and whatever
symlinks lie inside. A symlink that stays inside the directory is followed to read or list;
one that leads out is refused. Nothing in a `.git` folder is reachable here (git's own files
belong to the git routes), and `.git` is not listed.

A file's `version` is the SHA-256 of its bytes. A write replaces a file only when it names the
version it read (`If-Match`): the check runs again right before the new file is renamed into
place, and writes of one project through this module take turns (an advisory lock), so two
people saving the same version cannot both win. A write made by other means (an agent's file
tool, a shell) meanwhile is caught by the check unless it lands between that last check and
the rename. New entries and moves never replace what is there (`renameat2(RENAME_NOREPLACE)`).

The disk work blocks; the async functions run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import charset_normalizer
import regex

from gathering.db.database import Database, Transaction
from gathering.db.locks import transaction_lock
from gathering.errors import (
    ConflictError,
    GatheringError,
    InvalidInputError,
    NotFoundError,
    PathTraversalError,
    PermissionDeniedError,
    StaleVersionError,
    VersionRequiredError,
)
from gathering.projects.store import Actor, ProjectRecord, files_lock, record_activity
from gathering.tools.builtins.beneath import (
    BINARY_SNIFF_BYTES,
    MAX_WRITE_BYTES,
    Target,
    discard,
    locate,
    lstat_at,
    open_folder,
    open_regular,
    opened_root,
    refuse_special,
    remove_created,
    replace,
    stage,
    too_large,
)
from gathering.tools.builtins.files import (
    MAX_LIST_LIMIT,
    MAX_PATTERN_CHARS,
    MAX_READ_BYTES,
    MAX_SEARCH_RESULTS,
    list_files,
    search_files,
)
from gathering.tools.builtins.git import git

MAX_TEXT_BYTES = MAX_READ_BYTES  # a file read as text (1 MiB)
MAX_DOWNLOAD_BYTES = MAX_WRITE_BYTES  # a file read as bytes, or written (10 MiB)
MAX_FOLDER_ENTRIES = 5_000  # entries of one folder listed
MAX_FOLDER_SCAN = 200_000  # entries of one folder looked at
MAX_QUERY_CHARS = MAX_PATTERN_CHARS // 2  # a search query (a literal may double once escaped)
MAX_GLOB_CHARS = 200
GIT_STATUS_SECONDS = 10.0
GIT_FOLDER = ".git"

Kind = Literal["file", "directory", "symlink", "other"]  # other: a pipe, socket or device
NewKind = Literal["file", "directory"]
SearchMode = Literal["name", "content"]


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One entry of a folder. `git_status` is a word (modified, added, deleted, renamed,
    copied, untracked, ignored, conflicted) when the project is a git repository and git
    says something about the entry (for a folder: about what it holds); `git_code` is git's
    own two letters (`XY` of `git status --short`) for a file."""

    name: str
    path: str
    kind: Kind
    size: int | None
    modified: datetime
    git_status: str | None = None
    git_code: str | None = None


@dataclass(frozen=True)
class Folder:
    """One folder's entries (folders first, then by name)."""

    path: str
    entries: list[Entry]
    truncated: bool
    git_repository: bool
    git_problem: str | None = None


@dataclass(frozen=True)
class FileText:
    """A file read for an editor: its text unless it is binary."""

    path: str
    text: str | None
    encoding: str | None
    binary: bool
    size: int
    version: str
    modified: datetime


@dataclass(frozen=True)
class FileBytes:
    """A file read as bytes, to download."""

    path: str
    name: str
    data: bytes
    version: str
    modified: datetime


@dataclass(frozen=True)
class Written:
    """What a write left on disk."""

    path: str
    version: str
    encoding: str
    size: int
    created: bool


@dataclass(frozen=True)
class Precondition:
    """What a write expects to find: `if_match` (None: not said) holds the versions it may
    replace, or "*" for any existing file; `if_none_match_any` means only a new file."""

    if_match: tuple[str, ...] | None = None
    if_none_match_any: bool = False


@dataclass(frozen=True)
class SearchResult:
    """Entries whose names match (`name` mode: path, kind, size) or lines that match
    (`content` mode: path, line, text); `truncated` with a `note` when the list was cut."""

    matches: list[dict[str, Any]]
    truncated: bool = False
    note: str | None = None
    mode: SearchMode = "name"


# --- paths -----------------------------------------------------------------------------------


def _missing(shown: str) -> str:
    return f"{shown!r} does not exist in the project"


_LIST_HINT = "see what a folder holds: GET /projects/{project_id}/files/tree?path=..."


def checked(root: Path, path: str, *, root_allowed: bool = False) -> Target:
    """`path` checked by the workspace rules and kept as names from `root`; blocking.

    Refuses (PathTraversalError) what leaves the project, (PermissionDeniedError) what is in
    a `.git` folder, and, unless `root_allowed`, the project's folder itself.
    """
    if not isinstance(path, str):
        raise InvalidInputError("a path must be text", hint='e.g. "src/app.py"')
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise PathTraversalError(
            "the path is not valid Unicode text (it holds a lone surrogate)",
            hint="send the path as UTF-8",
        ) from None
    target = locate(root, path)
    if not all(_utf8(name) for name in target.resolved):
        raise InvalidInputError(
            f"{target.shown!r} leads to a name that is not valid UTF-8",
            hint="rename it on disk to a UTF-8 name",
        )
    if any(name.casefold() == GIT_FOLDER for name in (*target.key, *target.resolved)):
        raise PermissionDeniedError(
            f"{target.shown!r} is in a .git folder, which the files API does not reach",
            hint="use the project's git routes",
        )
    if not root_allowed and (target.is_root or not target.resolved):
        raise InvalidInputError(
            "the path names the project's folder itself", hint="name an entry inside it"
        )
    return target


def _open_folder_at(root_fd: int, names: tuple[str, ...], shown: str) -> int:
    """The folder `names` (from the root) opened; NotFound / not-a-folder said plainly."""
    if not names:
        return os.dup(root_fd)
    parent = open_folder(
        root_fd, names[:-1], shown, missing=_missing(shown), missing_hint=_LIST_HINT
    )
    try:
        info = lstat_at(parent, names[-1])
        if info is None:
            raise NotFoundError(_missing(shown), hint=_LIST_HINT)
        if not stat.S_ISDIR(info.st_mode) and not stat.S_ISLNK(info.st_mode):
            raise InvalidInputError(f"{shown!r} is a file, not a folder", hint="give a folder")
        return open_folder(
            parent, names[-1:], shown, missing=_missing(shown), missing_hint=_LIST_HINT
        )
    finally:
        os.close(parent)


def _when(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


def _utf8(name: str) -> bool:
    """Whether a name read from disk is valid UTF-8 (else it cannot go out as JSON)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def version_of(data: bytes) -> str:
    """A file's version: the SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


# --- listing a folder ------------------------------------------------------------------------


def _kind(mode: int) -> Kind:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "other"  # a pipe, socket or device: listed, moved and deleted, never read


def _list_folder(root: Path, path: str) -> tuple[str, list[Entry], bool, bool]:
    """The folder's path from the root, its entries, whether they were cut, and whether the
    project's directory is a git repository; blocking."""
    target = checked(root, path, root_allowed=True)
    relative = target.resolved_relative
    prefix = "" if relative == "." else relative + "/"
    entries: list[Entry] = []
    scanned = 0
    with opened_root(root) as root_fd:
        git_info = lstat_at(root_fd, GIT_FOLDER)
        folder = _open_folder_at(root_fd, target.resolved, target.shown)
        try:
            with os.scandir(folder) as found:
                for item in found:
                    scanned += 1
                    if scanned > MAX_FOLDER_SCAN:
                        break
                    if item.name.casefold() == GIT_FOLDER or not _utf8(item.name):
                        continue
                    info = lstat_at(folder, item.name)
                    if info is None:
                        continue
                    kind = _kind(info.st_mode)
                    size = info.st_size if kind == "file" else None
                    entries.append(Entry(item.name, prefix + item.name, kind, size, _when(info)))
        finally:
            os.close(folder)
    entries.sort(key=lambda e: (e.kind != "directory", e.name.casefold(), e.name))
    truncated = scanned > MAX_FOLDER_SCAN or len(entries) > MAX_FOLDER_ENTRIES
    is_repository = git_info is not None and stat.S_ISDIR(git_info.st_mode)
    return relative, entries[:MAX_FOLDER_ENTRIES], truncated, is_repository


async def list_folder(project: ProjectRecord, path: str = "") -> Folder:
    """The entries of one folder of the project (`""`: its root), with git status."""
    relative, entries, truncated, is_repository = await asyncio.to_thread(
        _list_folder, project.directory, path
    )
    if not is_repository:
        return Folder(relative, entries, truncated, False)
    try:
        result = await git(
            project.directory,
            "status",
            paths=None if relative == "." else [relative],
            timeout=GIT_STATUS_SECONDS,
        )
    except GatheringError as exc:  # a refused configuration, a timeout, no git installed
        return Folder(relative, entries, truncated, True, exc.message)
    if result["exit_code"] != 0:
        said = result["stderr"].strip().splitlines()
        return Folder(relative, entries, truncated, True, said[-1] if said else "git failed")
    codes = parse_status(result["stdout"])
    return Folder(relative, with_git_status(relative, entries, codes), truncated, True)


# --- git status ------------------------------------------------------------------------------

_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_CONFLICTS = frozenset({"DD", "AU", "UD", "UA", "DU", "AA", "UU"})
_WORDS = (
    ("D", "deleted"),
    ("R", "renamed"),
    ("C", "copied"),
    ("A", "added"),
    ("M", "modified"),
    ("T", "modified"),
)


def _unquote(text: str) -> tuple[str, str]:
    """The first path of `text` (C-quoted as git writes it, or plain up to the end) and what
    follows it."""
    if not text.startswith('"'):
        return text, ""
    out = bytearray()
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return out.decode("utf-8", "surrogateescape"), text[index + 1 :]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if following in _ESCAPES:
                out.append(_ESCAPES[following])
                index += 2
                continue
            digits = text[index + 1 : index + 4]
            if len(digits) == 3 and all(d in "01234567" for d in digits):
                out.append(int(digits, 8) & 0xFF)
                index += 4
                continue
        out += char.encode("utf-8", "surrogateescape")
        index += 1
    return out.decode("utf-8", "surrogateescape"), ""


def parse_status(stdout: str) -> dict[str, str]:
    """`{path: XY}` from `git status --short` (paths relative to the repository, a folder's
    without its trailing "/"; a rename gives its new path)."""
    codes: dict[str, str] = {}
    for line in stdout.split("\n"):
        if len(line) < 4 or line.startswith("##") or line[2] != " ":
            continue
        code, rest = line[:2], line[3:]
        if code[0] in "RC" or code[1] in "RC":
            if rest.startswith('"'):
                _, rest = _unquote(rest)
                rest = rest.removeprefix(" -> ")
            else:
                rest = rest.rpartition(" -> ")[2]
        path, _ = _unquote(rest)
        if path:
            codes[path.rstrip("/")] = code
    return codes


def status_word(code: str) -> str:
    """The word for git's two letters."""
    if code == "??":
        return "untracked"
    if code == "!!":
        return "ignored"
    if code in _CONFLICTS or "U" in code:
        return "conflicted"
    return next((word for letter, word in _WORDS if letter in code), "modified")


def with_git_status(folder: str, entries: list[Entry], codes: dict[str, str]) -> list[Entry]:
    """`entries` (of `folder`, "." for the root) with what `codes` (`parse_status`) says."""
    prefix = "" if folder == "." else folder + "/"
    whole = codes.get(folder) if folder != "." else None  # the folder itself is untracked
    below: dict[str, set[str]] = {}
    own: dict[str, str] = {}
    for path, code in codes.items():
        if prefix and not path.startswith(prefix):
            continue
        name, deeper, _ = path[len(prefix) :].partition("/")
        if deeper:
            below.setdefault(name, set()).add(status_word(code))
        else:
            own[name] = code
    marked = []
    for entry in entries:
        found = own.get(entry.name) or whole
        if entry.kind == "directory":
            words = below.get(entry.name, set()) | ({status_word(found)} if found else set())
            word = None if not words else next(iter(words)) if len(words) == 1 else "modified"
            marked.append(_replace(entry, git_status=word))
        elif found is not None:
            marked.append(_replace(entry, git_status=status_word(found), git_code=found))
        else:
            marked.append(entry)
    return marked


def _replace(entry: Entry, **changes: Any) -> Entry:
    return Entry(**{**entry.__dict__, **changes})


# --- reading ---------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> tuple[str, str] | None:
    """(text, encoding) of `data`, or None when it is not text (binary).

    A byte-order mark decides; else a NUL byte in the first bytes means binary; else UTF-8 if
    it decodes; else what `charset_normalizer` finds, if anything.
    """
    for mark, encoding in _BOMS:
        if data.startswith(mark):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                return None
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        return None
    encoding = codecs.lookup(best.encoding).name
    try:
        return data.decode(encoding), encoding
    except (UnicodeDecodeError, LookupError):
        return None


def _read_handle(
    handle: BinaryIO, info: os.stat_result, shown: str, limit: int, hint: str
) -> bytes:
    with handle:
        if info.st_size > limit:
            raise too_large(repr(shown), info.st_size, limit, hint=hint)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise too_large(repr(shown), len(data), limit, hint=hint)
    return data


def _read(root: Path, path: str, limit: int, hint: str) -> tuple[Target, bytes, os.stat_result]:
    target = checked(root, path)
    with opened_root(root) as root_fd:
        folder = open_folder(
            root_fd,
            target.resolved[:-1],
            target.shown,
            missing=_missing(target.shown),
            missing_hint=_LIST_HINT,
        )
        try:
            handle, info = open_regular(folder, target.resolved[-1], target.shown)
        except NotFoundError:
            raise NotFoundError(_missing(target.shown), hint=_LIST_HINT) from None
        finally:
            os.close(folder)
    return target, _read_handle(handle, info, target.shown, limit, hint), info


def _read_text(root: Path, path: str) -> FileText:
    hint = "download it instead: GET /projects/{project_id}/files/raw?path=..."
    target, data, info = _read(root, path, MAX_TEXT_BYTES, hint)
    decoded = decode_text(data)
    text, encoding = decoded if decoded is not None else (None, None)
    return FileText(
        target.resolved_relative,
        text,
        encoding,
        decoded is None,
        len(data),
        version_of(data),
        _when(info),
    )


async def read_text(project: ProjectRecord, path: str) -> FileText:
    """A file of the project as text (its encoding detected), or marked binary."""
    return await asyncio.to_thread(_read_text, project.directory, path)


def _read_bytes(root: Path, path: str) -> FileBytes:
    target, data, info = _read(root, path, MAX_DOWNLOAD_BYTES, "files this large are not served")
    return FileBytes(
        target.resolved_relative, target.resolved[-1], data, version_of(data), _when(info)
    )


async def read_bytes(project: ProjectRecord, path: str) -> FileBytes:
    """A file of the project as bytes (at most MAX_DOWNLOAD_BYTES)."""
    return await asyncio.to_thread(_read_bytes, project.directory, path)


# --- writing ---------------------------------------------------------------------------------


_NOT_FILE_ENCODINGS = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined"}
)


def text_encoding(name: str) -> str:
    """The canonical name of the text encoding `name`; InvalidInputError for anything else."""
    try:
        found = codecs.lookup(name)
        canonical = found.name
        # Refuse codecs that are not file encodings: bytes-to-bytes ones (base64, rot13, ...)
        # and text transforms (idna, punycode, the escape codecs).
        if not getattr(found, "_is_text_encoding", True) or canonical in _NOT_FILE_ENCODINGS:
            raise ValueError(canonical)
        "".encode(canonical)
    except (LookupError, TypeError, ValueError):
        raise InvalidInputError(
            f"{name[:60]!r} is not a text encoding this server knows",
            hint="e.g. utf-8, utf-16, latin-1, cp1252, shift_jis",
        ) from None
    return canonical


def _encoded(text: object, encoding: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInputError("the text must be a string", hint="send the file's text")
    if len(text) > MAX_DOWNLOAD_BYTES:
        raise too_large("the text", len(text), MAX_DOWNLOAD_BYTES, hint="write a smaller file")
    try:
        data = text.encode(encoding)
    except UnicodeError as exc:
        where = f" (at character {exc.start})" if isinstance(exc, UnicodeEncodeError) else ""
        raise InvalidInputError(
            f"the text holds characters that {encoding} cannot hold{where}",
            hint='send it in another encoding, e.g. "encoding": "utf-8"',
        ) from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise too_large("the text", len(data), MAX_DOWNLOAD_BYTES, hint="write a smaller file")
    return data


def _current(folder: int, name: str, shown: str) -> bytes | None:
    """The bytes of the file `name` now; None when it is too large to have been read."""
    handle, info = open_regular(folder, name, shown)
    with handle:
        if info.st_size > MAX_DOWNLOAD_BYTES:
            return None
        data = handle.read(MAX_DOWNLOAD_BYTES + 1)
    return data if len(data) <= MAX_DOWNLOAD_BYTES else None


def _check_precondition(
    condition: Precondition, shown: str, exists: bool, current: str | None
) -> None:
    if exists and condition.if_none_match_any:
        raise StaleVersionError(
            f"{shown!r} exists already (If-None-Match: *)",
            hint="read it and send its version in If-Match to replace it",
            details={"path": shown, "current_version": current},
        )
    if condition.if_match is None:
        if exists:
            raise VersionRequiredError(
                f"{shown!r} exists: say which version you replace",
                hint="send If-Match with the version (ETag) you read, or If-Match: * to replace "
                "whatever is there",
            )
        return
    if not exists:
        raise StaleVersionError(
            f"{shown!r} does not exist any more",
            hint="it was moved or deleted since you read it; create it again without If-Match",
            details={"path": shown, "current_version": None},
        )
    if "*" not in condition.if_match and current not in condition.if_match:
        raise StaleVersionError(
            f"{shown!r} changed since you read it",
            hint="read it again (its version is in details), merge your change, and write again",
            details={"path": shown, "current_version": current},
        )


def _write_text(
    root: Path, path: str, text: str, condition: Precondition, encoding: str | None
) -> Written:
    chosen = text_encoding(encoding) if encoding is not None else None
    target = checked(root, path)
    with opened_root(root) as root_fd:
        folder = open_folder(
            root_fd,
            target.folder,
            target.shown,
            missing=f"the folder of {target.shown!r} does not exist",
            missing_hint="create the folder first",
        )
        try:
            existing = lstat_at(folder, target.name)
            refuse_special(existing, target.shown, verb="written")
            before = _current(folder, target.name, target.shown) if existing else None
            version = version_of(before) if before is not None else None
            _check_precondition(condition, target.shown, existing is not None, version)
            if chosen is None:
                found = decode_text(before) if before else None
                chosen = found[1] if found is not None else "utf-8"
            data = _encoded(text, chosen)
            # Permission bits only: never a set-id or sticky bit on a file the server makes.
            mode = existing.st_mode & 0o777 if existing is not None else None
            temporary = stage(folder, data, mode, target.shown)
            try:
                if existing is None:
                    _put_new(folder, temporary, folder, target.name, target.shown, stale=True)
                else:
                    _recheck(folder, target, condition, version)
                    replace(folder, temporary, target.name, target.shown)
            finally:
                discard(folder, temporary)  # gone once renamed
        finally:
            os.close(folder)
    return Written(target.relative, version_of(data), chosen, len(data), existing is None)


def _recheck(folder: int, target: Target, condition: Precondition, version: str | None) -> None:
    """Right before the rename: the file is still the one whose version was checked."""
    now = lstat_at(folder, target.name)
    refuse_special(now, target.shown, verb="written")
    current = _current(folder, target.name, target.shown) if now is not None else None
    latest = version_of(current) if current is not None else None
    if now is None or latest != version:
        _check_precondition(condition, target.shown, now is not None, latest)
        if "*" not in (condition.if_match or ()):
            raise StaleVersionError(
                f"{target.shown!r} changed while it was being written",
                hint="read it again, merge your change, and write again",
                details={"path": target.shown, "current_version": latest},
            )


async def write_text(
    db: Database,
    project: ProjectRecord,
    actor: Actor,
    path: str,
    text: str,
    condition: Precondition,
    *,
    encoding: str | None = None,
) -> Written:
    """Write a text file of the project: an existing one only if `condition` names its
    current version (else StaleVersionError, or VersionRequiredError when it names none), in
    its own encoding unless `encoding` says; a new one (its folder must exist) in UTF-8."""
    async with _turn(db, project) as tx:
        written = await asyncio.to_thread(
            _write_text, project.directory, path, text, condition, encoding
        )
        detail = {"bytes": written.size, "encoding": written.encoding, "created": written.created}
        await record_activity(tx, project, actor, "file.write", written.path, detail)
    return written


# --- create, move, delete --------------------------------------------------------------------

_RENAME_NOREPLACE = 1


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """Linux's renameat2 from the C library (Python's os has no "rename unless the target
    exists"); None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def _exists(shown: str) -> ConflictError:
    return ConflictError(
        f"{shown!r} exists already", hint="choose another name, or delete it first"
    )


def _rename_no_replace(source_fd: int, source: str, target_fd: int, target: str) -> None:
    """Rename `source` to `target` unless something (a symlink included) is there: OSError
    EEXIST then. Without renameat2 (or a file system that refuses its flag), the check and
    the rename are two steps."""
    function = _renameat2()
    if function is not None:
        result = function(
            source_fd, os.fsencode(source), target_fd, os.fsencode(target), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), target)
    if lstat_at(target_fd, target) is not None:
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    os.rename(source, target, src_dir_fd=source_fd, dst_dir_fd=target_fd)


def _put_new(
    source_fd: int, temporary: str, folder: int, name: str, shown: str, *, stale: bool = False
) -> None:
    try:
        _rename_no_replace(source_fd, temporary, folder, name)
    except FileExistsError:
        if stale:
            raise StaleVersionError(
                f"{shown!r} was created while it was being written",
                hint="read it, merge your change, and write again with its version",
                details={"path": shown, "current_version": None},
            ) from None
        raise _exists(shown) from None


def _create(root: Path, path: str, kind: NewKind, text: str | None, parents: bool) -> Entry:
    data = _encoded(text or "", "utf-8") if kind == "file" else b""
    if kind == "directory" and text:
        raise InvalidInputError("a folder has no text", hint='drop "text", or create a file')
    target = checked(root, path)
    created: list[tuple[str, ...]] = []
    with opened_root(root) as root_fd:
        try:
            folder = open_folder(
                root_fd,
                target.folder,
                target.shown,
                create=parents,
                created=created,
                missing=f"the folder of {target.shown!r} does not exist",
                missing_hint='create it first, or send "parents": true',
            )
            try:
                if lstat_at(folder, target.name) is not None:
                    raise _exists(target.shown)
                if kind == "directory":
                    try:
                        os.mkdir(target.name, 0o777, dir_fd=folder)
                    except FileExistsError:
                        raise _exists(target.shown) from None
                else:
                    temporary = stage(folder, data, None, target.shown)
                    try:
                        _put_new(folder, temporary, folder, target.name, target.shown)
                    finally:
                        discard(folder, temporary)
                info = lstat_at(folder, target.name)
            finally:
                os.close(folder)
        except BaseException:
            remove_created(root_fd, created)
            raise
    if info is None:
        raise NotFoundError(f"{target.shown!r} was removed as soon as it was created")
    size = info.st_size if kind == "file" else None
    return Entry(target.name, target.relative, kind, size, _when(info))


async def create_entry(
    db: Database,
    project: ProjectRecord,
    actor: Actor,
    path: str,
    kind: NewKind,
    *,
    text: str | None = None,
    parents: bool = False,
) -> Entry:
    """Create a file (with `text`, in UTF-8) or a folder; ConflictError if something is
    there. With `parents`, missing folders on the way are made."""
    async with _turn(db, project) as tx:
        entry = await asyncio.to_thread(_create, project.directory, path, kind, text, parents)
        detail = {"kind": kind, "bytes": entry.size}
        await record_activity(tx, project, actor, "file.create", entry.path, detail)
    return entry


def _move(root: Path, source: str, destination: str) -> tuple[str, str, Kind]:
    origin = checked(root, source)
    target = checked(root, destination)
    if target.key == origin.key:
        raise _exists(target.shown)
    if target.key[: len(origin.key)] == origin.key:
        raise InvalidInputError(
            f"{origin.shown!r} cannot move into itself ({target.shown!r})",
            hint="choose a destination outside it",
        )
    with opened_root(root) as root_fd:
        source_fd = open_folder(
            root_fd,
            origin.folder,
            origin.shown,
            missing=_missing(origin.shown),
            missing_hint=_LIST_HINT,
        )
        try:
            info = lstat_at(source_fd, origin.name)
            if info is None:
                raise NotFoundError(_missing(origin.shown), hint=_LIST_HINT)
            kind = _kind(info.st_mode)
            target_fd = open_folder(
                root_fd,
                target.folder,
                target.shown,
                missing=f"the folder of {target.shown!r} does not exist",
                missing_hint="create the folder first",
            )
            try:
                _rename_no_replace(source_fd, origin.name, target_fd, target.name)
            except FileExistsError:
                raise _exists(target.shown) from None
            except FileNotFoundError:
                raise NotFoundError(_missing(origin.shown), hint=_LIST_HINT) from None
            finally:
                os.close(target_fd)
        finally:
            os.close(source_fd)
    return origin.relative, target.relative, kind


async def move_entry(
    db: Database, project: ProjectRecord, actor: Actor, source: str, destination: str
) -> tuple[str, str, Kind]:
    """Rename or move an entry (a symlink moves as itself); ConflictError when something is
    at `destination`. Returns (from, to, kind)."""
    async with _turn(db, project) as tx:
        moved = await asyncio.to_thread(_move, project.directory, source, destination)
        detail = {"from": moved[0], "to": moved[1], "kind": moved[2]}
        await record_activity(tx, project, actor, "file.rename", moved[1], detail)
    return moved


def _delete(root: Path, path: str, recursive: bool) -> tuple[str, Kind]:
    target = checked(root, path)
    with opened_root(root) as root_fd:
        folder = open_folder(
            root_fd,
            target.folder,
            target.shown,
            missing=_missing(target.shown),
            missing_hint=_LIST_HINT,
        )
        try:
            info = lstat_at(folder, target.name)
            if info is None:
                raise NotFoundError(_missing(target.shown), hint=_LIST_HINT)
            kind = _kind(info.st_mode)
            try:
                if kind != "directory":
                    os.unlink(target.name, dir_fd=folder)  # a symlink itself, never its target
                elif recursive:
                    shutil.rmtree(target.name, dir_fd=folder)  # by descriptors, no symlink followed
                else:
                    os.rmdir(target.name, dir_fd=folder)
            except FileNotFoundError:
                raise NotFoundError(_missing(target.shown), hint=_LIST_HINT) from None
            except PermissionError:
                raise InvalidInputError(
                    f"{target.shown!r} cannot be deleted: permission denied",
                    hint="choose another path",
                ) from None
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ConflictError(
                        f"the folder {target.shown!r} is not empty",
                        hint="send recursive=true to delete it with all it holds",
                    ) from None
                raise
        finally:
            os.close(folder)
    return target.relative, kind


async def delete_entry(
    db: Database, project: ProjectRecord, actor: Actor, path: str, *, recursive: bool = False
) -> tuple[str, Kind]:
    """Delete a file, a symlink (never what it points to) or a folder (a non-empty one only
    with `recursive`). Returns (path, kind)."""
    async with _turn(db, project) as tx:
        deleted = await asyncio.to_thread(_delete, project.directory, path, recursive)
        detail = {"kind": deleted[1], "recursive": recursive}
        await record_activity(tx, project, actor, "file.delete", deleted[0], detail)
    return deleted


@asynccontextmanager
async def _turn(db: Database, project: ProjectRecord) -> AsyncIterator[Transaction]:
    """A transaction holding the project's file-writing lock: changes through this module
    take turns, on every instance; their activity is written in the same transaction."""
    async with db.transaction() as tx:
        await transaction_lock(tx, files_lock(project.id), wait=True)
        yield tx


# --- search ----------------------------------------------------------------------------------

_GLOB_CHARACTERS = frozenset("*?[")


def _without_git(path: str) -> bool:
    return _utf8(path) and all(part.casefold() != GIT_FOLDER for part in path.split("/"))


def _any_case_glob(query: str) -> str:
    """A glob matching names holding `query`, letters in any case; "" when too long."""
    parts = []
    for char in query:
        if char in _GLOB_CHARACTERS:
            parts.append(f"[{char}]")
        elif char.lower() != char.upper() and len(char.lower()) == len(char.upper()) == 1:
            parts.append(f"[{char.lower()}{char.upper()}]")
        else:
            parts.append(char)
    glob = "*" + "".join(parts) + "*"
    return glob if len(glob) <= MAX_GLOB_CHARS else ""


def _cut(found: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool, str | None]:
    if found and found[-1].get("truncated"):
        return found[:-1], True, str(found[-1].get("note"))
    return found, False, None


def _search_names(root: Path, query: str, path: str, limit: int) -> SearchResult:
    checked(root, path, root_allowed=True)
    glob = query if _GLOB_CHARACTERS & set(query) else _any_case_glob(query)
    if not glob:  # a long plain query: matched as written
        glob = "*" + "".join(f"[{c}]" if c in _GLOB_CHARACTERS else c for c in query) + "*"
    if len(glob) > MAX_GLOB_CHARS:
        raise InvalidInputError(
            f"the name query is too long (at most {MAX_GLOB_CHARS - 2} characters)",
            hint="give a shorter part of the name",
        )
    found, truncated, note = _cut(list_files(root, path, glob, recursive=True, limit=limit))
    kinds = {"dir": "directory"}
    matches = [
        {"path": e["path"], "kind": kinds.get(e["type"], e["type"]), "size": e["size"]}
        for e in found
        if _without_git(e["path"])
    ]
    return SearchResult(matches, truncated, note, "name")


def _search_content(
    root: Path,
    query: str,
    path: str,
    *,
    is_regex: bool,
    glob: str | None,
    ignore_case: bool,
    limit: int,
) -> SearchResult:
    checked(root, path, root_allowed=True)
    pattern = query if is_regex else regex.escape(query)
    found = search_files(root, pattern, path, glob, ignore_case=ignore_case, max_results=limit)
    lines, truncated, note = _cut(found)
    return SearchResult([m for m in lines if _without_git(m["path"])], truncated, note, "content")


async def search(
    project: ProjectRecord,
    query: str,
    *,
    mode: SearchMode = "name",
    path: str = "",
    is_regex: bool = False,
    glob: str | None = None,
    ignore_case: bool = True,
    limit: int = 200,
) -> SearchResult:
    """Search the project below `path`: entries whose name holds `query` (any case; a glob
    such as `*.py` if it has * ? or [), or lines holding it (a literal, or a regex with
    `is_regex`, in files matching `glob`). At most `limit` matches; `.git` is never searched."""
    if not isinstance(query, str) or not 0 < len(query) <= MAX_QUERY_CHARS:
        raise InvalidInputError(
            f"the query must be 1 to {MAX_QUERY_CHARS} characters", hint="give another query"
        )
    top = MAX_SEARCH_RESULTS if mode == "content" else min(MAX_SEARCH_RESULTS, MAX_LIST_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= top:
        raise InvalidInputError(f"limit must be 1 to {top}", hint="give another limit")
    if mode == "name":
        return await asyncio.to_thread(_search_names, project.directory, query, path, limit)
    return await asyncio.to_thread(
        functools.partial(
            _search_content,
            project.directory,
            query,
            path,
            is_regex=is_regex,
            glob=glob,
            ignore_case=ignore_case,
            limit=limit,
        )
    )

"""`apply_patch`: a unified diff applied to workspace files, all of it or nothing.

A hunk must match its context exactly, at its stated line or up to `PATCH_FUZZ_LINES` lines
either side (the previous hunk's distance from its stated line carried over); nothing is
written unless every hunk of every file applies. git's quoted names (`"a/\\303\\251.txt"`)
are decoded (C escapes, octal bytes as UTF-8) before the path check.

Bounds: a patch is at most `MAX_PATCH_BYTES`, `MAX_PATCH_LINES` lines, `MAX_PATCH_FILES`
files and `MAX_PATCH_HUNKS` hunks; it reads at most `MAX_PATCH_READ_BYTES` of files in all
(a file changed twice counts twice), and each file is at most `MAX_WRITE_BYTES` before and
after. Files are patched one at a time: a file's bytes are read once and checked to be
UTF-8 text, then written forward into a temporary file beside it, the unchanged stretches
between hunks copied as byte ranges; only the lines around the hunk being placed become
separate objects. So memory stays near the size of the one file being patched, and the
work near its size plus the hunks'. The deadline is checked between files and hunks. A new
file in a folder that does not exist yet is kept in memory (its text comes from the patch)
until the commit.

The commit makes missing folders, stages what is still in memory, checks the call's
deadline (`ToolTimeoutError` then, with every temporary file and made folder removed), and
only then renames every temporary file into place and removes the removed files. Every
path is reached from the root's descriptor without following a symlink (see `beneath`).
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from unidiff.errors import UnidiffParseError
from unidiff.patch import Hunk, PatchedFile, PatchSet

from gathering.errors import InvalidInputError, NotFoundError
from gathering.tools.builtins.beneath import (
    BINARY_SNIFF_BYTES,
    MAX_WRITE_BYTES,
    NOT_WRITTEN,
    Target,
    check_deadline,
    create_temporary,
    discard,
    finish_temporary,
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
    too_large,
)

MAX_PATCH_BYTES = 1024 * 1024
MAX_PATCH_FILES = 100
MAX_PATCH_HUNKS = 2000
MAX_PATCH_LINES = 100_000
MAX_PATCH_READ_BYTES = 20 * 1024 * 1024  # bytes of files one patch reads, in all
PATCH_FUZZ_LINES = 10
_SCAN_BYTES = 1024 * 1024  # at most this many bytes are scanned at once for line ends
_FIRST_SCAN_BYTES = 16 * 1024  # the first scan between two hunks; each next one is twice larger
_CHECK_CHUNK = 1024 * 1024  # bytes decoded at once to check a file is UTF-8
_DEV_NULL = "/dev/null"
_STOPPED = "the call's time ran out while the patch was applied; nothing was changed"
_REREAD = "read the file again with read_file and write the patch against its current text"
_PATCH_FORMAT = (
    "give a unified diff: '--- a/path', '+++ b/path', then hunks starting "
    "'@@ -line,count +line,count @@' (use /dev/null as the old path to add a file)"
)
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_OCTAL = re.compile(r"[0-7]{1,3}")


# --- reading the patch -----------------------------------------------------------------------


def _parse_patch(patch: object) -> PatchSet:
    if not isinstance(patch, str):
        raise InvalidInputError("the patch must be text", hint=_PATCH_FORMAT)
    size = len(patch) if len(patch) > MAX_PATCH_BYTES else len(patch.encode("utf-8", "replace"))
    if size > MAX_PATCH_BYTES:
        raise too_large("the patch", size, MAX_PATCH_BYTES, hint="split it into smaller patches")
    lines = patch.count("\n") + 1
    if lines > MAX_PATCH_LINES:  # each becomes a few hundred bytes of objects once parsed
        raise InvalidInputError(
            f"the patch has {lines:,} lines; the limit is {MAX_PATCH_LINES:,}",
            hint="split it into smaller patches, or rewrite the file with write_file",
        )
    try:
        parsed = PatchSet(patch)
    except UnidiffParseError as exc:
        raise InvalidInputError(
            f"the patch cannot be read as a unified diff: {shown(str(exc).strip())}",
            hint=_PATCH_FORMAT,
        ) from None
    if not parsed:
        raise InvalidInputError("the patch names no file to change", hint=_PATCH_FORMAT)
    if len(parsed) > MAX_PATCH_FILES:
        raise InvalidInputError(
            f"the patch changes {len(parsed)} files; the limit is {MAX_PATCH_FILES}",
            hint="split it into smaller patches",
        )
    hunks = sum(len(patched) for patched in parsed)
    if hunks > MAX_PATCH_HUNKS:
        raise InvalidInputError(
            f"the patch has {hunks:,} hunks; the limit is {MAX_PATCH_HUNKS:,}",
            hint="split it into smaller patches, or rewrite the file with write_file",
        )
    return parsed


def _git_name(name: str) -> str:
    """A file name from a diff header; git's "quoted" form decoded (C escapes, octal bytes).

    git quotes a name holding bytes other than printable ASCII: `"a/\\303\\251.txt"` is
    `a/é.txt`. The decoded name still goes through the workspace path check, which refuses
    control characters such as a decoded newline.
    """
    if not (len(name) >= 2 and name[0] == name[-1] == '"'):
        return name
    body = name[1:-1]
    decoded = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            decoded += char.encode("utf-8", "surrogatepass")
            index += 1
            continue
        octal = _OCTAL.match(body, index + 1)
        escape = body[index + 1 : index + 2]
        if octal and int(octal.group(), 8) <= 0xFF:
            decoded.append(int(octal.group(), 8))
            index = octal.end()
        elif escape in _C_ESCAPES:
            decoded.append(_C_ESCAPES[escape])
            index += 2
        else:
            raise InvalidInputError(
                f"the quoted file name {shown(name)!r} has an unknown escape "
                f"{shown(body[index : index + 2])!r}",
                hint='quote names as git does: \\" \\\\ \\t \\n and octal bytes such as \\303',
            )
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"the quoted file name {shown(name)!r} is not UTF-8 once decoded",
            hint="name files in UTF-8",
        ) from None


def _patch_paths(patched: PatchedFile, number: int) -> tuple[str, str]:
    """The action ("modified", "added", "removed") and the workspace path of one file's diff."""
    source = _git_name(patched.source_file or "")
    target = _git_name(patched.target_file or "")
    where = f"file {number} of the patch ({shown(target or source)!r})"
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
            f"{where} renames {shown(source)!r} to {shown(target)!r}; renames are not supported",
            hint="give the same path after --- a/ and +++ b/; add and remove files separately",
        )
    if not patched:
        raise InvalidInputError(f"{where} has no hunks", hint=_PATCH_FORMAT)
    return "modified", source


def _encoded_line(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            "the patch is not valid Unicode text (it holds a lone surrogate)",
            hint="send the patch as proper UTF-8",
        ) from None


def _hunk_sides(hunk: Hunk) -> tuple[list[bytes], list[bytes]]:
    """The old and new lines of a hunk as UTF-8, "\\ No newline at end of file" applied."""
    old: list[bytes] = []
    new: list[bytes] = []
    previous = ""
    for line in hunk:
        kind, value = line.line_type, line.value
        if kind == "\\":
            if previous in (" ", "-") and old:
                old[-1] = old[-1].removesuffix(b"\n")
            if previous in (" ", "+") and new:
                new[-1] = new[-1].removesuffix(b"\n")
            continue
        if kind in (" ", "-", "+"):
            encoded = _encoded_line(value)
            if kind in (" ", "-"):
                old.append(encoded)
            if kind in (" ", "+"):
                new.append(encoded)
            previous = kind
    return old, new


# --- applying the hunks of one file, streamed ------------------------------------------------


class _Output:
    """Where a patched file's bytes go, counted: a temporary file, memory, or nowhere."""

    def __init__(self, handle: BinaryIO | None, what: str) -> None:
        self.handle = handle
        self.what = what
        self.lines = 0
        self.size = 0

    def write(self, chunk: bytes | memoryview, lines: int) -> None:
        """Write `chunk`, which holds `lines` lines."""
        self.lines += lines
        self.size += len(chunk)
        if self.size > MAX_WRITE_BYTES:
            raise too_large(
                f"the patched {self.what!r}", self.size, MAX_WRITE_BYTES, "patch a smaller file"
            )
        if self.handle is not None:
            self.handle.write(chunk)


class _Lines:
    """A file's text read forward once, by line; only the lines around a hunk become objects.

    Line numbers count from 0 in the text as it was before this diff. `position` is the first
    line neither copied to the output nor dropped (the end of the previous hunk). Lines are
    skipped and copied as byte ranges of the text (found with `bytes.count`), so a file of
    millions of short lines never becomes millions of objects.
    """

    def __init__(self, data: bytes, deadline: float | None) -> None:
        self._data = data
        self._view = memoryview(data)
        self._deadline = deadline
        self.position = 0
        self._ahead: list[bytes] = []  # lines position, position + 1, … split off by `_fill`
        self._ahead_end = 0  # where the line after `_ahead` starts

    def _fill(self, end: int) -> None:
        """Split off lines until line `end` (not included) is in `_ahead`, or the text ends."""
        data, size = self._data, len(self._data)
        while self.position + len(self._ahead) < end and self._ahead_end < size:
            cut = data.find(b"\n", self._ahead_end)
            cut = size if cut < 0 else cut + 1
            self._ahead.append(data[self._ahead_end : cut])
            self._ahead_end = cut

    def _advance(self, offset: int, count: int) -> tuple[int, int]:
        """Where the line `count` lines after the one at byte `offset` starts, and how many
        lines that is (fewer if the text ends first; a last line without "\\n" counts)."""
        data, size = self._data, len(self._data)
        skipped = 0
        block = _FIRST_SCAN_BYTES
        while skipped < count and offset < size:
            check_deadline(self._deadline, _STOPPED)
            wanted = count - skipped
            block = min(max(block, wanted * 2), _SCAN_BYTES)
            end = min(size, offset + block)
            block *= 2
            found = data.count(b"\n", offset, end)
            if found < wanted:
                skipped += found
                offset = end
                if end == size and not data.endswith(b"\n"):
                    skipped += 1  # the last line, without its "\n"
                continue
            low, high = offset, end  # [low, high) holds the wanted-th "\n" from low
            while high - low > 64:
                middle = (low + high) // 2
                before = data.count(b"\n", low, middle)
                if before >= wanted:
                    high = middle
                else:
                    low, wanted = middle, wanted - before
            for _ in range(wanted):
                low = data.index(b"\n", low) + 1
            return low, count
        return offset, skipped

    def copy_to(self, end: int | None, out: _Output) -> None:
        """Copy the lines before line `end` (every line left if None) to `out`."""
        take = len(self._ahead) if end is None else min(end - self.position, len(self._ahead))
        if take > 0:
            out.write(b"".join(self._ahead[:take]), take)
            del self._ahead[:take]
            self.position += take
        if self._ahead or (end is not None and self.position >= end):
            return
        start = self._ahead_end  # nothing is split off: the next line starts here
        stop, count = self._advance(start, len(self._data) if end is None else end - self.position)
        out.write(self._view[start:stop], count)
        self.position += count
        self._ahead_end = stop

    def drop(self, count: int) -> None:
        """Skip `count` lines (split off by `find`)."""
        del self._ahead[:count]
        self.position += count

    def find(self, old: list[bytes], expected: int, out: _Output) -> int | None:
        """Where `old` stands: at `expected`, else the nearest within PATCH_FUZZ_LINES.

        Lines before the search window are copied to `out` first; a place before `position`
        (inside or before the previous hunk) is never chosen.
        """
        self.copy_to(expected - PATCH_FUZZ_LINES, out)
        if not old:
            self._fill(expected)
            known = self.position + len(self._ahead)
            return expected if self.position <= expected <= known else None
        self._fill(expected + PATCH_FUZZ_LINES + len(old))
        first, size = old[0], len(old)
        for distance in range(PATCH_FUZZ_LINES + 1):
            for at in (expected - distance, expected + distance):
                index = at - self.position
                if (
                    index >= 0
                    and index + size <= len(self._ahead)
                    and self._ahead[index] == first
                    and self._ahead[index : index + size] == old
                ):
                    return at
        return None

    def mismatch(self, old: list[bytes], expected: int) -> str:
        """What differs between `old` and the text's lines at `expected` (after `find`)."""
        for offset, wanted in enumerate(old):
            at = expected + offset
            index = at - self.position
            if index < 0:
                return f"line {at + 1} is inside or before the previous hunk"
            if index >= len(self._ahead):
                total = self.position + len(self._ahead)
                return f"the file has {total} lines, the hunk needs line {at + 1}"
            if self._ahead[index] != wanted:
                found = shown(self._ahead[index].decode("utf-8", "replace"))
                expects = shown(wanted.decode("utf-8", "replace"))
                return f"line {at + 1} is {found!r}, the patch expects {expects!r}"
        return "its lines are not at the stated place"

    def close(self) -> None:
        """Release the view of the text."""
        self._view.release()


def _apply_hunks(
    data: bytes, patched: PatchedFile, what: str, out: _Output, deadline: float | None
) -> None:
    """Write `data` with every hunk of `patched` applied to `out`; refused if one misses."""
    lines = _Lines(data, deadline)
    try:
        _place_hunks(lines, patched, what, out, deadline)
    finally:
        lines.close()


def _place_hunks(
    lines: _Lines, patched: PatchedFile, what: str, out: _Output, deadline: float | None
) -> None:
    offset = 0  # how far the previous hunk was found from its stated place
    for number, hunk in enumerate(patched, start=1):
        check_deadline(deadline, _STOPPED)
        old, new = _hunk_sides(hunk)
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        expected = start + offset
        at = lines.find(old, expected, out)
        if at is None:
            header = f"@@ -{hunk.source_start},{hunk.source_length} @@"
            raise InvalidInputError(
                f"hunk {number} ({header}) of {what!r} does not apply: "
                f"{lines.mismatch(old, expected)} (also looked {PATCH_FUZZ_LINES} lines "
                "either side); no file was changed",
                hint=_REREAD,
            )
        lines.copy_to(at, out)
        out.write(b"".join(new), len(new))
        lines.drop(len(old))
        offset = at - start
    lines.copy_to(None, out)


def _check_text(data: bytes, what: str) -> None:
    """Refuse a binary file (a NUL byte early on) or one that is not UTF-8, in bounded memory."""
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise InvalidInputError(f"{what!r} is a binary file", hint="patch text files only")
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(data), _CHECK_CHUNK):
            decoder.decode(view[start : start + _CHECK_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"{what!r} is not UTF-8 text", hint="rewrite it with write_file instead"
        ) from None
    finally:
        view.release()


# --- the files of one patch ------------------------------------------------------------------


@dataclass
class _File:
    """One file a patch changes, as far as the patch has got."""

    target: Target
    folder: int | None  # descriptor of its folder; None while the folder does not exist
    mode: int | None  # the mode of the file there before, kept by the new text
    exists: bool  # whether there is a file now, as far as the patch has got
    staged: str | None = None  # a temporary file in `folder` with the new text
    text: bytes | None = None  # the new text, kept in memory (a file in a missing folder)
    removed: bool = False  # the file is removed at the commit


class _Patch:
    """The files of one patch: applied one after another, committed together or not at all."""

    def __init__(self, root: Path, root_fd: int, deadline: float | None) -> None:
        self.root = root
        self.root_fd = root_fd
        self.deadline = deadline
        self.files: dict[tuple[str, ...], _File] = {}
        self.created: list[tuple[str, ...]] = []  # folders made by the commit
        self.read = 0  # bytes of files read so far
        self.committed = False

    def _load(self, target: Target) -> _File:
        """What is at `target` now: its folder (if it exists) and whether a file is there."""
        try:
            folder: int | None = open_folder(self.root_fd, target.folder, target.shown)
        except NotFoundError:
            folder = None  # made at the commit if a file is added there
        info = lstat_at(folder, target.name) if folder is not None else None
        state = _File(target, folder, None, info is not None)
        self.files[target.key] = state  # registered first: `close` closes its folder
        refuse_special(info, target.shown, verb="patched")
        if info is not None:
            state.mode = stat.S_IMODE(info.st_mode)
        return state

    def _read(self, folder: int, name: str, what: str) -> bytes:
        handle, info = open_regular(folder, name, what)
        with handle:
            if info.st_size > MAX_WRITE_BYTES:
                raise too_large(repr(what), info.st_size, MAX_WRITE_BYTES, "patch a smaller file")
            if self.read + info.st_size > MAX_PATCH_READ_BYTES:
                raise InvalidInputError(
                    f"the patch changes more than {MAX_PATCH_READ_BYTES:,} bytes of files "
                    f"(at {what!r})",
                    hint="split it into smaller patches",
                )
            data = handle.read(info.st_size + 1)  # not MAX_WRITE_BYTES: read allocates it all
            if len(data) > info.st_size:  # it grew meanwhile
                data += handle.read(MAX_WRITE_BYTES + 1 - len(data))
        if len(data) > MAX_WRITE_BYTES:
            raise too_large(repr(what), len(data), MAX_WRITE_BYTES, hint="patch a smaller file")
        self.read += len(data)
        return data

    def _current(self, state: _File) -> bytes | None:
        """The text of the file as far as the patch has got; None if there is no file."""
        if not state.exists:
            return None
        if state.text is not None:
            return state.text
        assert state.folder is not None  # a file exists, so its folder does
        data = self._read(state.folder, state.staged or state.target.name, state.target.shown)
        if state.staged is None:
            _check_text(data, state.target.shown)
        return data

    def apply(self, number: int, patched: PatchedFile) -> dict[str, Any]:
        """Apply the diff of one file (staged, not yet in place); its entry for the answer."""
        check_deadline(self.deadline, _STOPPED)
        action, user_path = _patch_paths(patched, number)
        target = locate(self.root, user_path)
        if target.is_root:
            raise InvalidInputError("a patch cannot change the workspace root", hint=_PATCH_FORMAT)
        state = self.files.get(target.key) or self._load(target)
        data = self._current(state)
        if action == "added":
            if data is not None:
                raise InvalidInputError(
                    f"the patch adds {target.shown!r}, which already exists", hint=_REREAD
                )
            data = b""
        elif data is None:
            raise NotFoundError(
                f"the patch changes {target.shown!r}, which does not exist",
                hint="add a file with '--- /dev/null' as the old path",
            )
        if action == "removed":
            out = _Output(None, target.shown)
            _apply_hunks(data, patched, target.shown, out, self.deadline)
            if out.lines:
                raise InvalidInputError(
                    f"the patch removes {target.shown!r} but leaves {out.lines} lines in it",
                    hint=_REREAD,
                )
            self._forget(state)
            state.exists, state.removed = False, True
        elif state.folder is None:
            memory = io.BytesIO()
            _apply_hunks(data, patched, target.shown, _Output(memory, target.shown), self.deadline)
            state.text = memory.getvalue()
            state.exists, state.removed = True, False
        else:
            self._stream(state, data, patched)
        return {"path": target.relative, "action": action, "hunks": len(patched)}

    def _stream(self, state: _File, data: bytes, patched: PatchedFile) -> None:
        """Apply `patched` to `data` into a new temporary file beside the file."""
        assert state.folder is not None
        what = state.target.shown
        name, handle = create_temporary(state.folder, state.mode, what)
        try:
            _apply_hunks(data, patched, what, _Output(handle, what), self.deadline)
            finish_temporary(handle)
        except BaseException:
            handle.close()
            discard(state.folder, name)
            raise
        self._forget(state)
        state.staged, state.exists, state.removed = name, True, False

    def _forget(self, state: _File) -> None:
        """Drop the new text staged so far for `state` (a later diff of it replaces it)."""
        if state.staged is not None and state.folder is not None:
            discard(state.folder, state.staged)
        state.staged = state.text = None

    def check_paths(self) -> None:
        """Refuse a patch that writes a file at a path it also writes a file beneath."""
        written = {key for key, state in self.files.items() if state.exists}
        for key in written:
            if any(key[:depth] in written for depth in range(1, len(key))):
                raise InvalidInputError(
                    f"the patch writes {shown(key[-1])!r} inside a path it also writes as a file",
                    hint="a path cannot be both a file and a folder",
                )

    def commit(self) -> None:
        """Stage what is in memory, check the deadline, then put every file in place."""
        for state in self.files.values():
            if state.text is None:
                continue
            what = state.target.shown
            if state.folder is None:
                state.folder = open_folder(
                    self.root_fd, state.target.folder, what, create=True, created=self.created
                )
            state.staged = stage(state.folder, state.text, state.mode, what)
            state.text = None
        check_deadline(self.deadline, NOT_WRITTEN)
        self.committed = True
        for state in self.files.values():
            if state.staged is not None and state.folder is not None:
                replace(state.folder, state.staged, state.target.name, state.target.shown)
                state.staged = None
        for state in self.files.values():
            if state.removed and state.folder is not None:
                discard(state.folder, state.target.name)

    def close(self) -> None:
        """Remove what is left staged (everything, unless committed) and close the folders."""
        for state in self.files.values():
            if state.folder is not None:
                if state.staged is not None:
                    discard(state.folder, state.staged)
                os.close(state.folder)
        if not self.committed:
            remove_created(self.root_fd, self.created)


def apply_patch(root: Path, patch: str, *, deadline: float | None = None) -> dict[str, Any]:
    """Apply a unified diff to workspace files (modify, add, remove): all of it, or nothing.

    Returns {"files": [{"path", "action", "hunks"}]}. `deadline` is a `time.monotonic()`
    value: once it has passed (checked between files and hunks, and right before the files
    are put in place) the call raises ToolTimeoutError and nothing is changed.
    """
    parsed = _parse_patch(patch)
    check_deadline(deadline, _STOPPED)
    with opened_root(root) as root_fd:
        state = _Patch(root, root_fd, deadline)
        try:
            applied = [state.apply(number, patched) for number, patched in enumerate(parsed, 1)]
            state.check_paths()
            state.commit()
        finally:
            state.close()
    return {"files": applied}

"""Reaching workspace entries from the root's file descriptor, never through a symlink.

`resolve_in_workspace` checks how a user path is spelled and where it leads when it is
called; a folder swapped for a symlink right after that check would still send a plain
`open(path)` outside the workspace. So the file tools reach what the check named through
this module: `locate` runs the check and keeps the path as names from the root, with the
symlinks present at that moment already resolved (so a symlink that stays inside the
workspace still works); `opened_root` opens the root; `open_folder` then opens each folder
one name at a time with `os.open(name, O_NOFOLLOW | O_DIRECTORY, dir_fd=parent)`, and the
last step (open, stat, temporary file, rename, unlink, mkdir, listing) is done relative to
the folder's descriptor. A symlink met on the way can only have been swapped in after the
check: it is refused as `PathTraversalError`, never followed.

Paths are at most `MAX_PATH_DEPTH` names deep. `check_deadline` raises `ToolTimeoutError`
once a call's `time.monotonic()` deadline has passed.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gathering.errors import (
    InvalidInputError,
    NotFoundError,
    PathTraversalError,
    ToolTimeoutError,
)
from gathering.tools.workspace import resolve_in_workspace

MAX_PATH_DEPTH = 64  # names in a path below the root; walks do not go deeper either
MAX_WRITE_BYTES = 10 * 1024 * 1024  # a file written or patched
BINARY_SNIFF_BYTES = 8192  # a NUL byte in these first bytes makes a file binary
ECHO_CHARS = 200  # user input quoted in a message is cut to this

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NOT_WRITTEN = "the call's time ran out before the files were written; nothing was changed"


def shown(text: str) -> str:
    """`text` cut to ECHO_CHARS, to quote user input in a message."""
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


def too_large(what: str, size: int, limit: int, hint: str) -> InvalidInputError:
    """The error for `what` being `size` bytes when `limit` is allowed."""
    return InvalidInputError(
        f"{what} is too large ({size:,} bytes; the limit is {limit:,})", hint=hint
    )


def timed_out(message: str) -> ToolTimeoutError:
    """The error for a call whose deadline has passed."""
    return ToolTimeoutError(message, hint="try again with a smaller task or a longer timeout")


def check_deadline(deadline: float | None, message: str = NOT_WRITTEN) -> None:
    """`ToolTimeoutError(message)` if the `time.monotonic()` value `deadline` has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise timed_out(message)


# --- where a user path leads -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A checked user path, as names from the workspace root (no "", ".", ".." or symlink)."""

    resolved: tuple[str, ...]  # where the path leads: a symlink as the last name is followed
    folder: tuple[str, ...]  # the folder holding the entry itself
    name: str  # the entry's own name, as given; "" for the root itself
    shown: str  # the user's spelling, cut for messages

    @property
    def is_root(self) -> bool:
        """Whether the path names the workspace root itself."""
        return not self.name

    @property
    def key(self) -> tuple[str, ...]:
        """The entry itself (its last name not followed), as names from the root."""
        return (*self.folder, self.name) if self.name else ()

    @property
    def relative(self) -> str:
        """The entry itself, relative to the root with "/" ("." for the root)."""
        return "/".join(self.key) or "."

    @property
    def resolved_relative(self) -> str:
        """Where the path leads, relative to the root with "/" ("." for the root)."""
        return "/".join(self.resolved) or "."


def _names(root: Path, path: Path) -> tuple[str, ...]:
    return path.relative_to(Path(root).resolve()).parts


def _refuse_deep(path: str, depth: int) -> InvalidInputError:
    return InvalidInputError(
        f"the path {shown(path)!r} is {depth} names deep; the limit is {MAX_PATH_DEPTH}",
        hint="use a shallower path",
    )


def locate(root: Path, path: str) -> Target:
    """`path` checked by `resolve_in_workspace` and kept as names from the root.

    Raises PathTraversalError for a path leaving the root, InvalidInputError for one more
    than MAX_PATH_DEPTH names deep or going through a symlink loop.
    """
    try:
        resolved = resolve_in_workspace(root, path)  # refuses anything leaving the root
        segments = [s for s in path.split("/") if s not in ("", ".")]
        if len(segments) > MAX_PATH_DEPTH:
            raise _refuse_deep(path, len(segments))
        folder: tuple[str, ...] = ()
        if segments:
            folder = _names(root, resolve_in_workspace(root, "/".join(segments[:-1])))
    except RuntimeError:  # pathlib's "Symlink loop"
        raise InvalidInputError(
            f"the path {shown(path)!r} goes through a loop of symlinks", hint="choose another path"
        ) from None
    names = _names(root, resolved)
    for depth in (len(names), len(folder) + 1):
        if depth > MAX_PATH_DEPTH:
            raise _refuse_deep(path, depth)
    return Target(names, folder, segments[-1] if segments else "", shown(path))


# --- opening beneath the root ----------------------------------------------------------------


@contextmanager
def opened_root(root: Path) -> Iterator[int]:
    """A descriptor of the workspace root folder, closed on leaving."""
    try:
        fd = os.open(Path(root).resolve(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(
            "the workspace folder does not exist", hint="create the workspace folder first"
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(folder: int, name: str) -> os.stat_result | None:
    """The stat of `name` in `folder`, a symlink not followed; None if there is none."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _blocked(folder: int, names: Sequence[str], index: int, what: str) -> InvalidInputError:
    """Why the folder `names[index]` could not be opened (it exists but is not a folder)."""
    info = lstat_at(folder, names[index])
    part = shown("/".join(names[: index + 1]))
    if info is not None and stat.S_ISREG(info.st_mode):
        return InvalidInputError(
            f"{what!r} cannot be reached: a part of its path ({part!r}) is a file, not a folder",
            hint="choose another path",
        )
    return PathTraversalError(
        f"{what!r} cannot be reached: {part!r} is no longer the folder that was checked "
        "(it is a symlink or something else now); symlinks are not followed there",
        hint="give the path again, or the path of the folder the symlink points to",
    )


def _open_dir(folder: int, names: Sequence[str], index: int, what: str) -> int:
    try:
        return os.open(names[index], DIR_FLAGS, dir_fd=folder)
    except PermissionError:
        raise InvalidInputError(
            f"{what!r} cannot be reached: permission denied", hint="choose another path"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _blocked(folder, names, index, what) from None
        raise


def open_folder(
    root: int,
    names: Sequence[str],
    what: str,
    *,
    create: bool = False,
    created: list[tuple[str, ...]] | None = None,
    missing: str | None = None,
    missing_hint: str = "see what is there with list_files",
) -> int:
    """A new descriptor of the folder `names` lead to from the folder `root`.

    Each name is opened with O_NOFOLLOW | O_DIRECTORY relative to the one before: a symlink
    is refused (PathTraversalError), a file on the way too (InvalidInputError). A missing
    folder is made if `create` (its names are added to `created`), else NotFoundError with
    `missing` (default: "{what!r} does not exist") and `missing_hint`. `what` is the user's
    path, for messages. The caller closes the descriptor.
    """
    current = os.dup(root)
    try:
        for index, name in enumerate(names):
            try:
                child = _open_dir(current, names, index, what)
            except FileNotFoundError:
                if not create:
                    raise NotFoundError(
                        missing or f"{what!r} does not exist", hint=missing_hint
                    ) from None
                try:
                    os.mkdir(name, 0o777, dir_fd=current)
                    if created is not None:
                        created.append(tuple(names[: index + 1]))
                except FileExistsError:
                    pass  # made meanwhile: opened below like any folder
                except PermissionError:
                    raise InvalidInputError(
                        f"{what!r} cannot be created: permission denied",
                        hint="choose another path",
                    ) from None
                child = _open_dir(current, names, index, what)
            os.close(current)
            current = child
        return current
    except BaseException:
        os.close(current)
        raise


def remove_created(root: int, created: list[tuple[str, ...]]) -> None:
    """Remove the folders `open_folder` made (deepest first), if they are still empty."""
    for names in reversed(created):
        try:
            folder = open_folder(root, names[:-1], "/".join(names))
        except (OSError, InvalidInputError, NotFoundError):
            continue
        try:
            os.rmdir(names[-1], dir_fd=folder)
        except OSError:
            pass  # something was put there meanwhile: it stays
        finally:
            os.close(folder)
    created.clear()


def open_regular(folder: int, name: str, what: str) -> tuple[BinaryIO, os.stat_result]:
    """`name` in `folder` opened for reading, a symlink not followed; only a regular file."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=folder)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(
            f"{what!r} does not exist", hint="see what is there with list_files"
        ) from None
    except PermissionError:
        raise InvalidInputError(
            f"{what!r} cannot be read: permission denied", hint="choose another file"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathTraversalError(
                f"{what!r} became a symlink while it was being opened",
                hint="give the path of the file itself, not of a symlink",
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(
                f"{what!r} is a folder, not a file", hint="see what it holds with list_files"
            )
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(
                f"{what!r} is not a regular file (a device, pipe or socket)",
                hint="only regular files can be read",
            )
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


def refuse_special(info: os.stat_result | None, what: str, *, verb: str) -> None:
    """Refuse an entry (lstat `info`, None if absent) that is a symlink, folder or device."""
    if info is None:
        return
    if stat.S_ISLNK(info.st_mode):
        raise InvalidInputError(
            f"{what!r} is a symlink; files are not {verb} through symlinks",
            hint="give the path of the file the symlink points to",
        )
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(f"{what!r} is a folder, not a file", hint="give the path of a file")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"{what!r} is not a regular file", hint="choose another path")


# --- writing: a temporary file beside the entry, then a rename -------------------------------


def _gone(what: str) -> NotFoundError:
    return NotFoundError(
        f"the folder of {what!r} was removed while it was being written; it was not written",
        hint="write it again",
    )


def create_temporary(folder: int, mode: int | None, what: str) -> tuple[str, BinaryIO]:
    """A new, empty temporary file in `folder` (with `mode` if given): its name and handle."""
    name = f".gathering-{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(name, _TEMP_FLAGS, 0o666, dir_fd=folder)
    except FileNotFoundError:
        raise _gone(what) from None
    except PermissionError:
        raise InvalidInputError(
            f"{what!r} cannot be written: permission denied", hint="choose another path"
        ) from None
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        return name, os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        discard(folder, name)
        raise


def finish_temporary(handle: BinaryIO) -> None:
    """Flush a temporary file to disk and close it."""
    with handle:
        handle.flush()
        os.fsync(handle.fileno())


def stage(folder: int, data: bytes, mode: int | None, what: str) -> str:
    """The name of a new temporary file in `folder` holding `data`, on disk."""
    name, handle = create_temporary(folder, mode, what)
    try:
        handle.write(data)
        finish_temporary(handle)
    except BaseException:
        handle.close()
        discard(folder, name)
        raise
    return name


def discard(folder: int, name: str) -> None:
    """Remove `name` from `folder` if it is there (a symlink itself, never its target)."""
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def replace(folder: int, temporary: str, name: str, what: str) -> None:
    """Rename `temporary` over `name` in `folder` (a symlink there is replaced, not followed)."""
    try:
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except FileNotFoundError:
        raise _gone(what) from None
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise InvalidInputError(
                f"{what!r} became a folder meanwhile; it was not written",
                hint="give the path of a file",
            ) from None
        raise

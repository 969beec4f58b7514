"""Workspace path safety: the one function every file access resolves user paths with.

`resolve_in_workspace(root, user_path)` returns an absolute path inside `root` or raises
`PathTraversalError`. It refuses what could name a place outside the root, in any spelling:
`..` segments, absolute paths and drive letters, backslashes, NUL and other control
characters, percent-encoded and double-encoded forms of those, Unicode compatibility forms
(full-width dots and slashes) that normalize to them, and symlinks that lead out of the root.

The check resolves symlinks present at call time; a caller that lets untrusted code create
symlinks inside the workspace between this check and its own open should open with
`O_NOFOLLOW` as well.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

from gathering.errors import InvalidInputError, PathTraversalError

MAX_PATH_LENGTH = 4096
MAX_SEGMENT_BYTES = 255
# Decoding layers looked through: "%252e" is "%2e" once decoded and "." twice.
_DECODE_ROUNDS = 4
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse(user_path: str, reason: str) -> PathTraversalError:
    shown = user_path if len(user_path) <= 200 else user_path[:200] + "…"
    return PathTraversalError(
        f"path {shown!r} is not allowed: {reason}",
        hint="give a relative path inside the workspace, with / between folders",
    )


def _spellings(user_path: str) -> list[str]:
    """The path as given, each percent-decoding of it, and their Unicode NFKC forms."""
    forms = [user_path]
    current = user_path
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(current, errors="strict") if "%" in current else current
        if decoded == current:
            break
        forms.append(decoded)
        current = decoded
    forms.extend(unicodedata.normalize("NFKC", form) for form in list(forms))
    return forms


def _check_spelling(user_path: str, form: str) -> None:
    if _CONTROL.search(form):
        raise _refuse(user_path, "control or NUL characters")
    if "\\" in form:
        raise _refuse(user_path, "backslashes")
    if form.startswith(("/", "~")) or _DRIVE.match(form):
        raise _refuse(user_path, "absolute path")
    if any(segment == ".." for segment in form.split("/")):
        raise _refuse(user_path, "`..` leaves the folder")


def resolve_in_workspace(root: str | os.PathLike[str], user_path: str) -> Path:
    """The absolute path `user_path` names inside `root`; `PathTraversalError` if it leaves it.

    `""` and `"."` name the root itself. Blocking (it looks at symlinks on disk): from async
    code, call it in the same worker thread as the file access (`asyncio.to_thread`).
    """
    if not isinstance(user_path, str):
        raise InvalidInputError("a path must be text")
    if len(user_path) > MAX_PATH_LENGTH:
        raise _refuse(user_path, f"longer than {MAX_PATH_LENGTH} characters")
    try:
        spellings = _spellings(user_path)
    except UnicodeDecodeError:
        raise _refuse(user_path, "invalid percent-encoding") from None
    for form in spellings:
        _check_spelling(user_path, form)
    segments = [s for s in user_path.split("/") if s not in ("", ".")]
    if any(len(s.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES for s in segments):
        raise _refuse(user_path, f"a name longer than {MAX_SEGMENT_BYTES} bytes")
    base = Path(root).resolve()
    target = base.joinpath(*segments).resolve()  # follows every symlink on the way
    if target != base and not target.is_relative_to(base):
        raise _refuse(user_path, "it leads outside the workspace (through a symlink)")
    return target

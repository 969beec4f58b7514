"""The `git` tool: eleven git subcommands on a repository of the agent's workspace, safe by
construction; and, with the same hardening, `init_repository` and `clone_repository` to make one.

`await git(root, "status", repo="project")` runs `git status` in the repository
`<root>/project` and returns {"exit_code", "stdout", "stderr", "truncated"}. A non-zero exit code
is an answer, not an error; refused arguments raise `InvalidInputError` (a path leaving the
workspace: `PathTraversalError`, a forbidden repository or remote: `PermissionDeniedError`),
and a git that outlives `timeout` is killed with its whole process group (`ToolTimeoutError`).

The rules:

- **In the sandbox.** git runs in the bubblewrap sandbox of `gathering.tools.sandbox`, which
  sees the workspace (at /workspace), a read-only /usr and nothing else of the machine: no
  network but for an https push, pull or clone (then the host's), and a local remote bound at
  its own path (read-only but for a push). So whatever git is made to run (a filter or hook
  slipped into `.git` while a call runs, say) runs with the sandbox's powers, not the
  server's. When the server runs as root, git keeps one capability inside, CAP_DAC_OVERRIDE,
  to write the files the server wrote as root (and gets no /proc); its files belong to the
  owner of `.git` when that is not root (a registered folder's user), else to the sandbox's
  uid. Without a sandbox the tool refuses (`FeatureUnavailableError`).
- **No shell.** git runs from an argv list in a process group of its own, so the timeout, or a
  cancelled call, kills the sandbox and every process in it (remote helpers, ...); stdout and
  stderr are each kept up to `MAX_OUTPUT_BYTES` (the rest is read and dropped).
- **The repository** is the folder `repo` (through `resolve_in_workspace`) holding a real `.git`
  folder. git gets `--git-dir` and `--work-tree` explicitly, so it never looks above the
  workspace for a repository (nor honours `core.worktree`). A `.git` file or symlink, a linked
  worktree (`commondir`), object alternates and a symlink anywhere inside `.git` (git writes
  some files there in place: reflogs, COMMIT_EDITMSG, FETCH_HEAD) are refused: each would let
  git read or write outside the workspace. A `.git` of more than `MAX_GIT_DIR_ENTRIES`
  entries is refused as too large to check.
- **Paths** go through `resolve_in_workspace` rooted at the repository (inside the workspace),
  so they stay inside the repository even through symlinks; they may not name anything in
  `.git` nor start with `-`, and are passed relative to the repository after `--`, with
  pathspec magic off (`--literal-pathspecs`).
- **Refs, branch and remote names** follow strict grammars (`_check_revision`,
  `_check_branch`, `_check_remote_name`): git's check-ref-format rules on the alphabet
  ``A-Z a-z 0-9 . _ / + -`` with `~N` / `^N` suffixes for revisions, so a value can never start
  with `-` and `@{...}`, `:path`, `^{...}` and reflog forms are refused. Ranges `a..b` and
  `a...b` are accepted only by `diff` and `log`, each side checked. Revisions follow
  `--end-of-options` where git allows it.
- **No hooks, no helpers, no configuration from outside.** No system or global configuration,
  HOME is an empty temporary folder, the environment is built from scratch (`_environment`: no
  GIT_* variable of the server leaks in), and `_OVERRIDES` sets on the command line every
  single-valued key that could run a program (command-line values win over the repository's).
- **The repository's own configuration is untrusted** (the agent can write `.git/config`). Before
  each call it is listed (`git config --list --no-includes --show-scope`) and the call is refused
  if the repository or worktree configuration sets any key outside `_PLAIN_KEYS`,
  `_SUBSECTION_KEYS` and `_FREE_SECTIONS`, an allow-list of keys that run nothing. So filters,
  diff and merge drivers, textconv, include/includeIf, url.*.insteadOf, credential helpers,
  aliases, remote upload/receive programs, pagers, editors, gpg, fsmonitor and hooksPath are
  all refused, including those (filter.<name>.*, diff.<name>.*) that no override can reach.
  A checked-out submodule is refused too (except by log, show, branch and push): git runs
  itself inside one, under the submodule's own, unchecked, configuration.
- **push and pull** go only to a configured remote whose every URL (pushurl for push) is on
  `allowed_remotes`: https URLs, or local repositories (absolute path or file:// URL, compared
  as written: no `..`, no symlink standing for them) outside the workspace; any url.*.insteadOf
  is refused with the rest of the configuration. The default allow-list is empty: no push, no
  pull. git may use only the
  transports those URLs need (GIT_ALLOW_PROTOCOL and protocol.allow=never), so ext::, fd::,
  ssh, git:// and plain http cannot run, whatever the configuration says. pull is
  fast-forward only: no merge, no merge driver, no editor.
- **commit** takes its message as an argument, never opens an editor, runs no hook and signs
  nothing. **unstage** is `git reset -- paths` (the index only; it works before a first commit).
- **porcelain** (status, log, show, the branch list) asks for output made for programs
  (`--porcelain=v2 -z`, `COMMIT_FORMAT`, `BRANCH_FORMAT`) instead of output for people.
- **Making a repository.** `init_repository` runs `git init` (no template, so no hooks) in a
  folder of the workspace that has no `.git` of any kind; `clone_repository` clones an
  allow-listed https URL or local repository (never one inside the server's data) into a new
  folder, and removes it if the clone fails. Both run with the same command line overrides and
  environment as the rest.

The configuration git reads is the one that was checked: `.git/config` (and
`config.worktree`) is read once per call, checked, and given to git read-only over the live
file, so a change made while a call runs (a concurrent tool call, a shell) is not seen; git
writes no configuration then (deleting a branch leaves its section). A symlink planted in `.git`
after the check, or anything else git could be made to run, acts inside the sandbox only, on
files it could write anyway. Allow-listed remotes are trusted: git runs their server side
(and its hooks) for a local remote, which is why one inside the workspace, or below a
`forbidden` folder (the server's data: other projects), is refused, wherever its symlinks
lead; the sandbox binds the very folder that was checked. A local remote must belong to root,
to the sandbox's uid or to the repository's owner. The environment carries no proxy or CA
settings of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import re
import shutil
import signal
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

from gathering.errors import (
    ConflictError,
    FeatureUnavailableError,
    InvalidInputError,
    PathTraversalError,
    PermissionDeniedError,
    ToolTimeoutError,
)
from gathering.tools.sandbox import (
    SANDBOX_TMP,
    SANDBOX_UID,
    WORKSPACE_MOUNT,
    SandboxLimits,
    SharedFolder,
    prepare_sandbox,
)
from gathering.tools.workspace import resolve_in_workspace

GitCommand = Literal[
    "status",
    "diff",
    "log",
    "show",
    "add",
    "unstage",
    "commit",
    "branch",
    "checkout",
    "push",
    "pull",
]
COMMANDS: tuple[str, ...] = get_args(GitCommand)

MAX_OUTPUT_BYTES = 256 * 1024  # of stdout, and of stderr
MAX_TIMEOUT = 600.0
GIT_ADDRESS_SPACE_BYTES = 8 * 1024**3  # git maps pack files: room for large repositories
GIT_MAX_FILE_BYTES = 4 * 1024**3  # the largest file (a pack) git may write
MAX_CONFIG_BYTES = 32 * 1024  # of .git/config: checked, then given to git as it was read
MAX_GIT_DIR_ENTRIES = 200_000  # files and folders of .git checked for symlinks before a call
DEFAULT_LOG_COUNT = 20
MAX_LOG_COUNT = 1000
MAX_PATHS = 1000
MAX_NAME_CHARS = 200  # a ref, branch or revision
MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_REMOTE = "origin"
DEFAULT_NAME = "GatheRing agent"  # the identity of commits when the repository names none
DEFAULT_EMAIL = "agent@gathering.invalid"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
ECHO_CHARS = 200
_READ_CHUNK = 64 * 1024

# Set on every command line; a command-line value wins over the repository's for these
# single-valued keys, and git passes them on to the git processes it starts.
_OVERRIDES: tuple[str, ...] = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.sshCommand=false",
    "core.pager=cat",
    "core.editor=:",  # ":" is git's "no editor"
    "sequence.editor=:",
    "core.askPass=",
    "credential.helper=",  # an empty value clears the list of helpers
    "diff.external=",
    "core.attributesFile=/dev/null",
    "core.excludesFile=/dev/null",
    "protocol.allow=never",  # push and pull add protocol.<name>.allow=always for their URL
    "http.followRedirects=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "push.gpgSign=false",
    "log.showSignature=false",
    "gpg.program=false",
    # A submodule's own configuration is never checked: git must not run anything in one.
    "diff.ignoreSubmodules=all",
    "status.submoduleSummary=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "push.recurseSubmodules=no",
    "gc.auto=0",  # no background `git gc` outliving the call
    "maintenance.auto=false",
    "color.ui=false",
)

# The repository configuration keys that are allowed (section and variable are lower case, as
# `git config --list` prints them); any other key refuses the call.
_PLAIN_KEYS = frozenset(
    """
    core.repositoryformatversion core.filemode core.bare core.logallrefupdates core.ignorecase
    core.precomposeunicode core.symlinks core.autocrlf core.eol core.safecrlf core.quotepath
    core.abbrev core.whitespace core.checkstat core.trustctime core.untrackedcache
    core.preloadindex core.compression core.sharedrepository core.commentchar
    extensions.objectformat extensions.worktreeconfig
    user.name user.email user.useconfigonly author.name author.email committer.name
    committer.email init.defaultbranch pull.rebase pull.ff push.default push.autosetupremote
    push.followtags fetch.prune fetch.prunetags status.showuntrackedfiles status.short
    status.branch diff.renames diff.algorithm diff.context diff.indentheuristic diff.renamelimit
    merge.ff merge.conflictstyle i18n.commitencoding i18n.logoutputencoding gc.auto
    """.split()
)
_SUBSECTION_KEYS: dict[str, frozenset[str]] = {
    "remote": frozenset({"url", "pushurl", "fetch", "push", "tagopt", "prune", "prunetags"}),
    "branch": frozenset({"remote", "merge", "rebase", "pushremote", "description"}),
}
_FREE_SECTIONS = frozenset({"color", "advice"})  # only colours and hints: nothing runs

_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "status": ("paths", "porcelain"),
    "diff": ("paths", "ref", "staged"),
    "log": ("paths", "ref", "max_count", "porcelain"),
    "show": ("paths", "ref", "porcelain"),
    "add": ("paths",),
    "unstage": ("paths",),
    "commit": ("message", "paths", "author_name", "author_email"),
    "branch": ("branch", "ref", "delete", "porcelain"),
    "checkout": ("branch", "ref", "paths", "create"),
    "push": ("remote", "branch"),
    "pull": ("remote", "branch"),
}

# The grammars below, as patterns that JSON Schema (ECMAScript) and Python read alike, for an API
# to publish: a value they match passes the checks of this module (tests hold it), so that a
# client knows what is accepted. A ref name: parts joined by /, none starting with '.' nor
# ending with '.lock', no '..', not ending with '.'.
_SEGMENT = r"[A-Za-z0-9_+-]+"
_DOTTED = rf"\.(?!lock(?:[/~^]|\.\.|$)){_SEGMENT}"
_REF_NAME = rf"(?!-)(?:{_SEGMENT}(?:{_DOTTED})*\.?/)*{_SEGMENT}(?:{_DOTTED})*"
_STEPS = r"(?:~[0-9]{0,6}|\^[0-9]{0,3})*"
REVISION_PATTERN = rf"^{_REF_NAME}{_STEPS}$"
RANGE_PATTERN = rf"^{_REF_NAME}{_STEPS}(?:\.\.\.?{_REF_NAME}{_STEPS})?$"
BRANCH_PATTERN = rf"^(?!HEAD$)(?!refs/)(?=[A-Za-z0-9_]){_REF_NAME}$"
REMOTE_PATTERN = r"^[A-Za-z0-9_](?:(?!\.\.)[A-Za-z0-9._-]){0,99}$"
# A path of the repository (see `resolve_in_workspace`): relative, not starting with '-' or
# '~', no '..' segment, no control character or backslash, no '%' that percent-decoding would
# read, no drive letter, none of the characters whose compatibility form (NFKC) holds a '.',
# '/', '\', ':', '%' or '~', and names of at most 255 bytes (255 ASCII characters, or 63 of any
# kind). Symlinks leading out and `.git` are refused on the server.
_NFKC_PUNCTUATION = (
    r"\u2024-\u2026\u2100\u2101\u2105\u2106\u2488-\u249b\u2a74\u33c2\u33c7\u33d8\ufe13"
    r"\ufe19\ufe30\ufe52\ufe55\ufe68\ufe6a\uff05\uff0e\uff0f\uff1a\uff3c\uff5e"
)
_LITERAL_PERCENT = r"%(?![0-9A-Fa-f]{2})"
_ASCII_CHAR = rf"(?:[\x20-\x24\x26-\x2e\x30-\x5b\x5d-\x7e]|{_LITERAL_PERCENT})"
_ANY_CHAR = rf"(?:[^\x00-\x1f\x7f/\\%{_NFKC_PUNCTUATION}]|{_LITERAL_PERCENT})"
_PATH_NAME = rf"(?:{_ASCII_CHAR}{{1,255}}|{_ANY_CHAR}{{1,63}})(?=/|$)"
PATH_PATTERN = rf"^(?![-/~])(?!.:)(?!(?:.*/)?\.\.(?:/|$))(?:{_PATH_NAME}/*)+$"

_NAME = re.compile(r"[A-Za-z0-9._/+-]+")
_REVISION = re.compile(r"(?P<name>[A-Za-z0-9._/+-]+)(?P<suffix>(?:~[0-9]{0,6}|\^[0-9]{0,3})*)")
_BRANCH_START = re.compile(r"[A-Za-z0-9_]")
_REMOTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
# An address as accounts have them (any script), without what would end git's `Name <email>`.
_ADDRESS_CHAR = r"[^\s<>@\x00-\x1f\x7f-\x9f]"
_EMAIL = re.compile(rf"(?!-){_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME_HINT = "use letters, digits and . _ / + - (e.g. main, feature/login, v1.2, HEAD~2)"


class UnknownRemoteError(ConflictError, InvalidInputError):
    """push or pull named a remote the repository does not configure: the repository's state,
    not the request's form, so a 409 (and still an `InvalidInputError` for the tool)."""

    code = "unknown_remote"


def _shown(text: str) -> str:
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


# --- arguments -------------------------------------------------------------------------------


def _check_arguments(command: str, given: Mapping[str, object]) -> None:
    if command not in COMMANDS:
        raise InvalidInputError(
            f"{_shown(str(command))!r} is not a git command this tool runs",
            hint=f"use one of: {', '.join(COMMANDS)}",
        )
    allowed = _ARGUMENTS[command]
    for name, value in given.items():
        if value is not None and value is not False and name not in allowed:
            raise InvalidInputError(
                f"`{name}` does not apply to `git {command}`",
                hint=f"`git {command}` takes: {', '.join(allowed) or 'no argument'}",
            )


def _check_ref_name(value: object, what: str) -> str:
    """`value` if it is a ref name by git's check-ref-format rules, on a small alphabet."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be non-empty text", hint=_NAME_HINT)
    shown = _shown(value)
    if value.startswith("-"):
        raise InvalidInputError(
            f"{what} {shown!r} starts with '-', which git would read as an option",
            hint=_NAME_HINT,
        )
    if len(value) > MAX_NAME_CHARS:
        raise InvalidInputError(
            f"{what} is longer than {MAX_NAME_CHARS} characters", hint=_NAME_HINT
        )
    if not _NAME.fullmatch(value):
        raise InvalidInputError(f"{what} {shown!r} holds characters not allowed", hint=_NAME_HINT)
    parts = value.split("/")
    if (
        ".." in value
        or value.endswith(".")
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
    ):
        raise InvalidInputError(
            f"{what} {shown!r} is not a valid ref name (empty part, '..', a part starting with "
            "'.' or ending with '.lock')",
            hint=_NAME_HINT,
        )
    return value


def _check_revision(value: object, what: str = "ref") -> str:
    """A revision: a ref name or object id, optionally followed by ~N and ^N steps."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be non-empty text", hint=_NAME_HINT)
    if value.startswith("-"):
        raise InvalidInputError(
            f"{what} {_shown(value)!r} starts with '-', which git would read as an option",
            hint=_NAME_HINT,
        )
    match = _REVISION.fullmatch(value)
    if match is None or len(value) > MAX_NAME_CHARS:
        raise InvalidInputError(
            f"{what} {_shown(value)!r} is not a revision this tool accepts (a ref name or commit "
            "id, optionally with ~N or ^N; no @{...}, :path or ^{...} forms)",
            hint=_NAME_HINT,
        )
    _check_ref_name(match["name"], what)
    return value


def _check_revisions(value: object, *, ranges: bool) -> str:
    """A revision, or for diff and log (`ranges`) a range `a..b` / `a...b`, each side checked."""
    if ranges and isinstance(value, str):
        for separator in ("...", ".."):
            if separator in value:
                left, _, right = value.partition(separator)
                if not left or not right:
                    raise InvalidInputError(
                        f"the range {_shown(value)!r} needs a revision on each side",
                        hint="write it as a..b (or a...b), e.g. main..feature",
                    )
                _check_revision(left, "the start of the range")
                _check_revision(right, "the end of the range")
                return value
    elif isinstance(value, str) and ".." in value:
        raise InvalidInputError(
            f"ref {_shown(value)!r} is a range; only diff and log take ranges",
            hint="give a single revision, e.g. HEAD or main~1",
        )
    return _check_revision(value)


def _check_branch(value: object) -> str:
    name = _check_ref_name(value, "branch")
    if not _BRANCH_START.match(name) or name == "HEAD" or name.startswith("refs/"):
        raise InvalidInputError(
            f"branch {_shown(name)!r} is not allowed (it must start with a letter, digit or _, "
            "and not be HEAD or start with refs/)",
            hint="choose a name such as feature/login",
        )
    return name


def _check_remote_name(value: object) -> str:
    if not isinstance(value, str) or not _REMOTE_NAME.fullmatch(value) or ".." in value:
        shown = _shown(value) if isinstance(value, str) else value
        raise InvalidInputError(
            f"remote {shown!r} is not a remote name (a URL or anything starting with '-' is "
            "refused)",
            hint="give the name of a configured remote, such as origin",
        )
    return value


def _check_paths(paths: object, *, required: bool) -> list[str]:
    if paths is None:
        paths = []
    if isinstance(paths, str | bytes) or not isinstance(paths, Sequence):
        raise InvalidInputError("paths must be a list of paths", hint='e.g. ["src/app.py"]')
    if required and not paths:
        raise InvalidInputError("this command needs paths", hint='give paths, e.g. ["."]')
    if len(paths) > MAX_PATHS:
        raise InvalidInputError(
            f"{len(paths)} paths given; the limit is {MAX_PATHS}", hint="give a folder instead"
        )
    for path in paths:
        if not isinstance(path, str) or not path:
            raise InvalidInputError("each path must be non-empty text", hint='e.g. "src/app.py"')
        if path.startswith("-"):
            raise InvalidInputError(
                f"path {_shown(path)!r} starts with '-', which git would read as an option",
                hint="name its folder instead",
            )
        if not _encodable(path):
            raise InvalidInputError(
                f"path {_shown(path)!r} is not valid Unicode text (it holds a lone surrogate)",
                hint="send the path as UTF-8",
            )
    return list(paths)


def _encodable(text: str) -> bool:
    """Whether `text` can go on a command line (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_message(message: object) -> str:
    if not isinstance(message, str) or not message.strip():
        raise InvalidInputError("commit needs a message", hint="give message, e.g. 'Fix login'")
    if "\0" in message:
        raise InvalidInputError("the commit message holds a NUL character", hint="remove it")
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(
            "the commit message is not valid Unicode text", hint="send it as UTF-8"
        ) from None
    if size > MAX_MESSAGE_BYTES:
        raise InvalidInputError(
            f"the commit message is {size:,} bytes; the limit is {MAX_MESSAGE_BYTES:,}",
            hint="write a shorter message",
        )
    return message


def _check_identity(name: object, email: object) -> None:
    if name is not None and (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > MAX_NAME_CHARS
        or _CONTROL.search(name)
        or any(char in name for char in "<>")
        or not _encodable(name)
    ):
        raise InvalidInputError(
            "author_name must be 1 to 200 characters, without <, > or control characters",
            hint="e.g. 'Ada Lovelace'",
        )
    if email is not None and (
        not isinstance(email, str)
        or len(email) > 254
        or not _EMAIL.fullmatch(email)
        or not _encodable(email)
    ):
        raise InvalidInputError(
            "author_email is not an email address this tool accepts", hint="e.g. ada@example.com"
        )


def _check_int(name: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInputError(
            f"{name} must be a whole number from {minimum} to {maximum}",
            hint=f"give another {name}",
        )
    return value


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise InvalidInputError(
            f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds",
            hint="give another timeout",
        )
    return float(timeout)


# --- the repository on disk (blocking: run in a worker thread) -----------------------------


@dataclass(frozen=True)
class _Repository:
    """A checked repository of the workspace."""

    workspace: Path  # the resolved workspace root
    work_tree: Path
    git_dir: Path
    owner: int = 0  # the host uid that owns .git
    # The configuration files (name in .git -> bytes) as they were read when it was opened:
    # git gets these very bytes, read-only, so a change made while a call runs is not seen.
    frozen: Mapping[str, bytes] = field(default_factory=dict)


def _read_config_file(git_dir: int, name: str, repo: str) -> bytes | None:
    """The bytes of the configuration file `name` of `.git` (None: there is none), read
    without following a symlink; refused beyond MAX_CONFIG_BYTES."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=git_dir)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PermissionDeniedError(
            f"the .git/{name} of {_shown(repo)!r} cannot be read: {exc.strerror}",
            hint=f"make .git/{name} a plain file",
        ) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
            raise PermissionDeniedError(
                f"the .git/{name} of {_shown(repo)!r} is not a plain file of at most "
                f"{MAX_CONFIG_BYTES:,} bytes",
                hint=f"make .git/{name} a small plain file",
            )
        data = os.read(descriptor, MAX_CONFIG_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(data) > MAX_CONFIG_BYTES:
        raise PermissionDeniedError(
            f"the .git/{name} of {_shown(repo)!r} grew beyond {MAX_CONFIG_BYTES:,} bytes",
            hint=f"make .git/{name} a small plain file",
        )
    return data


def _frozen_configuration(git_dir: Path, repo: str) -> dict[str, bytes]:
    """`config` (empty when missing) and, when there is one or `config` enables it,
    `config.worktree`, as they are now; blocking."""
    folder = os.open(git_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        config = _read_config_file(folder, "config", repo) or b""
        frozen = {"config": config}
        worktree = _read_config_file(folder, "config.worktree", repo)
        if worktree is not None or b"worktreeconfig" in config.lower():
            frozen["config.worktree"] = worktree or b""
    finally:
        os.close(folder)
    return frozen


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _refuse_symlinks_in(git_dir: Path, work_tree: Path, repo: str) -> None:
    """Refuse a symlink anywhere in `.git`: git writes through some of its files in place
    (reflogs in logs/, COMMIT_EDITMSG, FETCH_HEAD, ...), so one planted there (by a shell in
    the workspace) would have the server's git write outside it. git never makes one there."""
    pending = [git_dir]
    seen = 0
    while pending:
        folder = pending.pop()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
            for entry in it:
                seen += 1
                if seen > MAX_GIT_DIR_ENTRIES:
                    raise PermissionDeniedError(
                        f"the .git of {_shown(repo)!r} holds more than "
                        f"{MAX_GIT_DIR_ENTRIES:,} entries, too many to check",
                        hint="pack the repository (git gc) in a terminal, then try again",
                    )
                if entry.is_symlink():
                    relative = Path(entry.path).relative_to(work_tree).as_posix()
                    raise PathTraversalError(
                        f"{relative} in {_shown(repo)!r} is a symlink; git could follow it out "
                        "of the workspace",
                        hint="replace the symlink with the folder or file itself",
                    )
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))


def _open_repository(root: Path, repo: str) -> _Repository:
    work_tree = resolve_in_workspace(root, repo)
    if not work_tree.is_dir():
        raise InvalidInputError(
            f"{_shown(repo)!r} is not a folder of the workspace",
            hint="give repo as the folder holding the repository's .git",
        )
    git_dir = work_tree / ".git"
    info = _lstat(git_dir)
    if info is None:
        raise InvalidInputError(
            f"{_shown(repo)!r} is not a git repository (it has no .git folder)",
            hint="give repo as the folder holding the repository's .git",
        )
    if stat.S_ISLNK(info.st_mode):
        raise PathTraversalError(
            f"the .git of {_shown(repo)!r} is a symlink",
            hint="use a repository whose .git is a folder",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionDeniedError(
            f"the .git of {_shown(repo)!r} is a file (a linked worktree or submodule), which may "
            "lead outside the workspace",
            hint="use a repository whose .git is a folder",
        )
    for name in ("commondir", "objects/info/alternates"):
        if _lstat(git_dir / name) is not None:
            raise PermissionDeniedError(
                f"the repository {_shown(repo)!r} has .git/{name}, which makes git use files "
                "outside it",
                hint=f"remove .git/{name}, or use a plain repository",
            )
    _refuse_symlinks_in(git_dir, work_tree, repo)
    frozen = _frozen_configuration(git_dir, repo)
    return _Repository(Path(root).resolve(), work_tree, git_dir, info.st_uid, frozen)


def _repository_paths(repository: _Repository, paths: list[str]) -> list[str]:
    """Each path given relative to the work tree, once `resolve_in_workspace` (rooted at the
    repository, which is inside the workspace) has found that it stays inside the repository.

    The last name is not followed: a symlink is named itself, as git tracks it.
    """
    work_tree = repository.work_tree
    relative: list[str] = []
    for path in paths:
        resolve_in_workspace(work_tree, path)  # its spelling, and where its symlinks lead
        segments = [s for s in path.split("/") if s not in ("", ".")]
        entry = work_tree
        if segments:
            entry = resolve_in_workspace(work_tree, "/".join(segments[:-1])) / segments[-1]
        inside = entry.relative_to(work_tree).as_posix()
        if any(part.lower() == ".git" for part in inside.split("/")):
            raise PermissionDeniedError(
                f"path {_shown(path)!r} is inside .git", hint="name files of the work tree only"
            )
        relative.append(inside)
    return relative


# --- remotes ------------------------------------------------------------------------------


def _plain_url_path(path: str) -> bool:
    """Whether a URL's path, decoded as often as it decodes, has no `.` or `..` segment, no
    encoded `/` or backslash and no control character."""
    spellings = [path]
    for _ in range(4):
        spellings.append(unquote(spellings[-1]))
    return all(
        form.count("/") == path.count("/")
        and "\\" not in form
        and not _CONTROL.search(form)
        and not any(segment in (".", "..") for segment in form.split("/"))
        for form in spellings
    )


def _location(url: str) -> tuple[str, str] | None:
    """(transport, canonical spelling) of an https URL or a local repository; None otherwise.

    A local path is compared as written (no symlink resolved), so what git opens is what the
    allow-list names; `..` is refused, and so are `.` and `..` in an https path in any spelling
    (curl would resolve them, leaving the prefix the allow-list names).
    """
    if _CONTROL.search(url) or "::" in url or url.startswith("-") or " " in url or "\\" in url:
        return None
    if url.startswith("https://"):
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # e.g. an unclosed [IPv6 address
            return None
        if not hostname or parts.query or parts.fragment or not _plain_url_path(parts.path):
            return None
        credentials, at, host = parts.netloc.rpartition("@")
        return "https", f"https://{credentials}{at}{host.lower()}{parts.path.rstrip('/')}"
    path = url.removeprefix("file://")
    if not path.startswith("/") or ".." in path.split("/") or "%" in path:
        return None  # relative paths, file://host/..., ssh, scp-like host:path, git://, http://
    return "file", os.path.normpath(path)


def _check_remote(
    repository: _Repository,
    config: list[tuple[str, str, str | None]],
    remote: str,
    allowed: Sequence[str],
    *,
    push: bool,
) -> tuple[list[str], list[str]]:
    """The transports `remote` needs and its local repositories (paths), once every URL of it
    is on `allowed`; blocking."""
    if isinstance(allowed, str) or not allowed:
        raise PermissionDeniedError(
            "push and pull are not enabled: no remote is on the allow-list",
            hint="an operator can allow remotes (allowed_remotes, a list of URLs)",
        )
    permitted: set[tuple[str, str]] = set()
    for entry in allowed:
        location = _location(entry) if isinstance(entry, str) else None
        if location is None:
            raise InvalidInputError(
                f"allowed_remotes holds {_shown(str(entry))!r}, which is not an https URL or an "
                "absolute path to a local repository",
                hint="fix the remote allow-list setting",
            )
        real = Path(os.path.realpath(location[1])) if location[0] == "file" else None
        if real is not None and real.is_relative_to(repository.workspace):
            raise PermissionDeniedError(
                f"the allowed remote {_shown(entry)!r} is inside the agent's workspace, where the "
                "agent could plant hooks that git would run",
                hint="allow only remotes outside the workspace",
            )
        permitted.add(location)
    for legacy in ("remotes", "branches"):
        if _lstat(repository.git_dir / legacy / remote) is not None:
            raise PermissionDeniedError(
                f"the repository defines remote {remote!r} in .git/{legacy}/, which is not checked",
                hint=f"remove .git/{legacy}/{remote} and configure the remote with its URL",
            )
    values = {
        variable: [v for _, key, v in config if key == f"remote.{remote}.{variable}"]
        for variable in ("url", "pushurl")
    }
    urls = values["pushurl"] if push and values["pushurl"] else values["url"]
    if not urls:
        raise UnknownRemoteError(
            f"remote {remote!r} is not configured with a URL in this repository",
            hint="give the name of a configured remote, such as origin",
        )
    transports: set[str] = set()
    local: set[str] = set()
    for url in urls:
        location = _location(url) if url is not None else None
        if location is None or location not in permitted:
            raise PermissionDeniedError(
                f"remote {remote!r} points to {_shown(str(url))!r}, which is not on the allow-list",
                hint="push and pull only to allowed remotes (https URLs or local repositories)",
            )
        transports.add(location[0])
        if location[0] == "file":
            local.add(location[1])
    return sorted(transports), sorted(local)


# --- the repository configuration ----------------------------------------------------------


def _config_key_allowed(key: str) -> bool:
    section, _, rest = key.partition(".")
    if section in _FREE_SECTIONS:
        return True
    _subsection, dot, variable = rest.rpartition(".")
    if not dot:
        return key in _PLAIN_KEYS
    return variable in _SUBSECTION_KEYS.get(section, frozenset())


def _parse_config(listing: str) -> list[tuple[str, str, str | None]]:
    """(scope, key, value) of each entry of `git config --list --show-scope -z`."""
    tokens = listing.split("\0")
    entries: list[tuple[str, str, str | None]] = []
    for index in range(0, len(tokens) - 1, 2):
        key, newline, value = tokens[index + 1].partition("\n")
        entries.append((tokens[index], key, value if newline else None))
    return entries


async def _repository_config(repository: _Repository) -> list[tuple[str, str, str | None]]:
    """The repository's configuration entries; refused if any key could run a program."""
    result = await _execute(repository, ["config", "--list", "--no-includes", "--show-scope", "-z"])
    if result["exit_code"] != 0 or result["truncated"]:
        raise InvalidInputError(
            f"the repository's configuration cannot be read: {_shown(result['stderr'].strip())}",
            hint="fix or remove .git/config",
        )
    ours = ("command", "global")  # the command line's and GLOBAL_CONFIG's: the tool's own
    entries = [e for e in _parse_config(result["stdout"]) if e[0] not in ours]
    for scope, key, _ in entries:
        if not _config_key_allowed(key):
            raise PermissionDeniedError(
                f"the repository's {scope} configuration sets {_shown(key)!r}, which this tool "
                "does not allow (such settings can make git run programs or reach elsewhere)",
                hint=f"remove {_shown(key)!r} from .git/config",
            )
    return entries


async def _refuse_checked_out_submodules(repository: _Repository) -> None:
    """Refuse a repository with a checked-out submodule: git runs itself inside one (to see
    whether it changed) under the submodule's own configuration, which is not checked."""
    result = await _execute(
        repository,
        ["ls-files", "--stage", "-z"],
        keep=lambda record: record.startswith(b"160000 "),  # gitlinks
    )
    if result["exit_code"] != 0 or result["truncated"]:
        raise InvalidInputError(
            f"the repository's index cannot be read: {_shown(result['stderr'].strip())}",
            hint="check the repository with git status outside this tool",
        )
    paths = [record.partition("\t")[2] for record in result["stdout"].split("\0") if record]
    work_tree = repository.work_tree
    populated = await asyncio.to_thread(
        lambda: [path for path in paths if os.path.lexists(work_tree / path / ".git")]
    )
    if populated:
        raise PermissionDeniedError(
            f"the repository has a checked-out submodule ({_shown(populated[0])!r}); git would "
            "run inside it under its own configuration, which this tool does not check",
            hint="use a repository without checked-out submodules (or nested repositories)",
        )


# --- running git ------------------------------------------------------------------------------


@functools.cache
def _git_program() -> str:
    found = shutil.which("git", path=SAFE_PATH) or shutil.which("git")
    if found is None:
        raise FeatureUnavailableError(
            "git is not installed on this server", hint="install git to use the git tool"
        )
    program = os.path.realpath(found)
    if not program.startswith("/usr/"):
        raise FeatureUnavailableError(
            f"git is at {program}, outside /usr: the sandbox git runs in shows only /usr",
            hint="install git from the system's packages (e.g. sudo apt-get install git)",
        )
    return program


def _environment(transports: Sequence[str]) -> dict[str, str]:
    """The whole environment of git in the sandbox: no GIT_* the server did not choose."""
    return {
        "PATH": SAFE_PATH,
        "HOME": SANDBOX_TMP,  # the sandbox's own, empty, in-memory /tmp
        "XDG_CONFIG_HOME": SANDBOX_TMP,
        "LC_ALL": "C",
        "LANG": "C",
        "TERM": "dumb",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_SYSTEM": "/dev/null",
        "GIT_CONFIG_GLOBAL": GLOBAL_CONFIG,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",  # set and empty: no askpass program, not even core.askPass
        "GIT_SSH_COMMAND": "false",
        "GIT_EDITOR": ":",
        "GIT_SEQUENCE_EDITOR": ":",
        "GIT_PAGER": "cat",
        "PAGER": "cat",
        "GIT_MERGE_AUTOEDIT": "no",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_PROTOCOL_FROM_USER": "0",
        # Set, it replaces every protocol.* setting; empty, it allows no transport at all.
        "GIT_ALLOW_PROTOCOL": ":".join(transports),
    }


# git refuses a repository another uid owns ("dubious ownership"); in the sandbox it sees only
# the workspace and the allowed remotes, whose files may be the server's (root's), the
# sandbox's or, for a remote, their owner's, and their configuration is checked or trusted.
# A global configuration file says so, since git drops command-line settings when it runs a
# local remote's side (upload-pack, receive-pack); it holds nothing else.
GLOBAL_CONFIG = "/etc/gathering-git.config"
_GLOBAL_CONFIG_TEXT = "[safe]\n\tdirectory = *\n"


def _inside(workspace: Path, path: Path) -> str:
    """Where the sandbox sees `path`, a path in `workspace` (bound at WORKSPACE_MOUNT)."""
    relative = path.relative_to(workspace).as_posix()
    return WORKSPACE_MOUNT if relative == "." else f"{WORKSPACE_MOUNT}/{relative}"


def _command_line(
    repository: _Repository,
    arguments: Sequence[str],
    transports: Sequence[str],
    config: Sequence[str],
) -> list[str]:
    work_tree = _inside(repository.workspace, repository.work_tree)
    settings = [
        *_OVERRIDES,
        *(f"protocol.{name}.allow=always" for name in transports),
        *config,
    ]
    return [
        _git_program(),
        "-C",
        work_tree,  # paths are given relative to the repository
        "--no-pager",
        "--literal-pathspecs",
        *(part for setting in settings for part in ("-c", setting)),
        f"--git-dir={work_tree}/.git",
        f"--work-tree={work_tree}",
        *arguments,
    ]


async def _read_capped(
    stream: asyncio.StreamReader | None, keep: Callable[[bytes], bool] | None = None
) -> tuple[bytes, bool]:
    """All of `stream` read, the first MAX_OUTPUT_BYTES kept, and whether any was dropped.

    With `keep`, the output is NUL-ended records and only those `keep` accepts count.
    """
    kept = bytearray()
    truncated = False
    pending = b""
    if stream is None:
        return b"", False
    while chunk := await stream.read(_READ_CHUNK):
        if keep is not None:
            records = (pending + chunk).split(b"\0")
            pending = records.pop()
            chunk = b"".join(record + b"\0" for record in records if keep(record))
        room = MAX_OUTPUT_BYTES - len(kept)
        if len(chunk) > room:
            kept += chunk[: max(room, 0)]
            truncated = True
        else:
            kept += chunk
    return bytes(kept), truncated


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _limits(seconds: float) -> SandboxLimits:
    """The sandbox's limits for one git call of at most `seconds`: room for large packs."""
    return SandboxLimits(
        cpu_seconds=math.ceil(seconds) + 1,
        address_space_bytes=GIT_ADDRESS_SPACE_BYTES,
        max_processes=64,
        max_file_bytes=GIT_MAX_FILE_BYTES,
        wall_seconds=seconds,
        max_open_files=1024,
    )


async def _sandboxed(
    workspace: Path,
    argv: Sequence[str],
    *,
    seconds: float,
    transports: Sequence[str] = (),
    outside: Sequence[SharedFolder] = (),
    keep: Callable[[bytes], bool] | None = None,
    files: Mapping[str, bytes] | None = None,
    owner: int = 0,
) -> dict[str, Any]:
    """Run git's `argv` in the sandbox, `workspace` at WORKSPACE_MOUNT, `outside` folders (local
    remotes) at their own path, `files` over files of the workspace, the network only for
    https; its output as `_execute` gives it. As root, git's files belong to `owner` when that
    is not root (a registered folder's user), else to the sandbox's uid.

    On cancellation (the caller's timeout), the sandbox and every process in it are killed."""
    host = owner if owner > 0 else SANDBOX_UID
    launch = await prepare_sandbox(
        argv,
        workspace,
        limits=_limits(seconds),
        network="https" in transports,
        env=_environment(transports),
        outside=outside,
        override_permissions=True,
        files={GLOBAL_CONFIG: _GLOBAL_CONFIG_TEXT, **(files or {})},
        host_uid=host,
        host_gid=host,
    )
    try:
        process = await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=launch.env,
            cwd="/",
            pass_fds=launch.pass_fds,
            start_new_session=True,  # its own process group, killed as a whole
        )
    except BaseException:
        launch.close()
        raise
    launch.close_passed()
    try:
        if not await launch.start(process.pid):
            said = await process.stderr.read() if process.stderr else b""
            raise launch.failure(said)
        (out, out_cut), (err, err_cut) = await asyncio.gather(
            _read_capped(process.stdout, keep), _read_capped(process.stderr)
        )
        exit_code = await process.wait()
    finally:
        _kill_group(process.pid)  # on timeout, cancellation, or stragglers after a normal exit
        if process.returncode is None:
            await asyncio.shield(process.wait())
        launch.close()
    return {
        "exit_code": exit_code,
        "stdout": out.decode("utf-8", errors="replace"),
        "stderr": err.decode("utf-8", errors="replace"),
        "truncated": out_cut or err_cut,
    }


async def _execute(
    repository: _Repository,
    arguments: Sequence[str],
    *,
    transports: Sequence[str] = (),
    outside: Sequence[SharedFolder] = (),
    config: Sequence[str] = (),
    keep: Callable[[bytes], bool] | None = None,
) -> dict[str, Any]:
    """Run git in the sandbox with the hardened command line and environment; no check of the
    configuration. `keep` filters the NUL-ended records of stdout (see `_read_capped`)."""
    program = await asyncio.to_thread(_command_line, repository, arguments, transports, config)
    git_dir = _inside(repository.workspace, repository.git_dir)
    return await _sandboxed(
        repository.workspace,
        program,
        seconds=MAX_TIMEOUT,  # the caller's own timeout is the one that applies
        transports=transports,
        outside=outside,
        keep=keep,
        files={f"{git_dir}/{name}": data for name, data in repository.frozen.items()},
        owner=repository.owner,
    )


# --- the subcommands ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """A call's checked arguments."""

    command: str
    paths: list[str]
    ref: str | None
    branch: str | None
    message: str | None
    author_name: str | None
    author_email: str | None
    remote: str
    max_count: int
    staged: bool
    create: bool
    delete: bool
    porcelain: bool


_NO_SUBMODULES = "--ignore-submodules=all"
_DIFF_OPTIONS = ("--no-color", "--no-ext-diff", "--no-textconv")
_HISTORY_OPTIONS = (*_DIFF_OPTIONS, "--no-show-signature", "--no-mailmap", "--date=iso")
# Machine-readable output (`porcelain`). A commit: RS, then NUL-separated full hash, parent
# hashes (space-separated), author name, email, date (ISO 8601), committer name, email, date,
# and the raw message. show ends the header with NUL US before the patch.
COMMIT_FORMAT = "%x1e%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
# A branch (one line each, local and remote-tracking): NUL-separated "*" for the current one,
# full ref name, commit hash, upstream, "ahead N, behind M" / "gone", symbolic target, subject.
BRANCH_FORMAT = (
    "%(HEAD)%00%(refname)%00%(objectname)%00%(upstream:short)%00"
    "%(upstream:track,nobracket)%00%(symref)%00%(contents:subject)"
)


def _revision_arguments(ref: str | None) -> list[str]:
    return ["--end-of-options", ref] if ref is not None else []


def _identity(config: list[tuple[str, str, str | None]]) -> dict[str, str]:
    return {key: value for _, key, value in config if key in ("user.name", "user.email") and value}


def _arguments(
    request: _Request, paths: list[str], config: list[tuple[str, str, str | None]]
) -> tuple[list[str], list[str]]:
    """The git arguments of a request, and the -c settings it adds."""
    command, ref, branch = request.command, request.ref, request.branch
    if command == "status":
        form = ["--porcelain=v2", "-z"] if request.porcelain else ["--short"]
        return ["status", *form, "--branch", _NO_SUBMODULES, "--", *paths], []
    if command == "diff":
        staged = ["--cached"] if request.staged else []
        options = [*_DIFF_OPTIONS, _NO_SUBMODULES, *staged]
        return ["diff", *options, *_revision_arguments(ref), "--", *paths], []
    if command == "log":
        count = f"--max-count={request.max_count}"
        form = [f"--format={COMMIT_FORMAT}"] if request.porcelain else []
        return [
            "log",
            *_HISTORY_OPTIONS,
            *form,
            count,
            *_revision_arguments(ref or "HEAD"),
            "--",
            *paths,
        ], []
    if command == "show":
        form = [f"--format={COMMIT_FORMAT}%x00%x1f"] if request.porcelain else []
        revision = _revision_arguments(ref or "HEAD")
        return ["show", *_HISTORY_OPTIONS, *form, *revision, "--", *paths], []
    if command == "add":
        return ["add", "--", *paths], []
    if command == "unstage":  # the index entries back to HEAD's (gone, before a first commit)
        return ["reset", "--quiet", "--", *paths], []
    if command == "commit":
        return _commit_arguments(request, paths, config)
    if command == "branch":
        if branch is None and request.porcelain:
            return ["branch", "--list", "--all", "--no-color", f"--format={BRANCH_FORMAT}"], []
        if branch is None:
            return ["branch", "--list", "--no-color", "-v"], []
        if request.delete:
            return ["branch", "--delete", "--", branch], []
        return ["branch", "--", branch, *([ref] if ref else [])], []
    if command == "checkout":
        base = ["checkout", "--no-recurse-submodules"]
        if paths:
            return [*base, *([ref] if ref else []), "--", *paths], []
        if branch is not None and request.create:
            return [*base, "-b", branch, *([ref] if ref else []), "--"], []
        if branch is not None:
            return [*base, branch, "--"], []
        return [*base, "--detach", str(ref), "--"], []
    # The remote's programs are git's own, whatever the repository's configuration says by
    # the time git reads it (a command-line value wins).
    programs = [
        f"remote.{request.remote}.receivepack=git-receive-pack",
        f"remote.{request.remote}.uploadpack=git-upload-pack",
    ]
    if command == "push":
        refspec = f"refs/heads/{branch}:refs/heads/{branch}" if branch else "HEAD"
        push = ["push", "--no-verify", "--no-recurse-submodules", "--", request.remote, refspec]
        return push, programs
    # pull: fast-forward only, so no merge (no merge driver, no editor)
    wanted = [f"refs/heads/{branch}"] if branch else []
    options = ["--ff-only", "--no-rebase", "--no-edit", "--no-recurse-submodules"]
    return ["pull", *options, "--", request.remote, *wanted], programs


def _commit_arguments(
    request: _Request, paths: list[str], config: list[tuple[str, str, str | None]]
) -> tuple[list[str], list[str]]:
    known = _identity(config)
    name = known.get("user.name", DEFAULT_NAME)
    email = known.get("user.email", DEFAULT_EMAIL)
    settings = [f"user.name={name}", f"user.email={email}"]
    author = []
    if request.author_name is not None or request.author_email is not None:
        author = [f"--author={request.author_name or name} <{request.author_email or email}>"]
    message = f"--message={request.message}"
    options = ["--no-verify", "--no-gpg-sign", message, *author]
    return ["commit", *options, "--", *paths], settings


def _check_combinations(request: _Request) -> None:
    command = request.command
    if command == "diff" and request.staged and request.ref and ".." in request.ref:
        raise InvalidInputError(
            "staged compares the index with one revision; a range makes no sense with it",
            hint="drop staged, or give a single revision",
        )
    if command == "branch" and request.branch is None and (request.ref or request.delete):
        raise InvalidInputError("ref and delete need the branch they apply to", hint="give branch")
    if command == "branch" and request.delete and request.ref:
        raise InvalidInputError("deleting a branch takes no ref", hint="drop ref")
    if command == "branch" and request.porcelain and request.branch is not None:
        raise InvalidInputError(
            "porcelain applies to the list of branches", hint="drop porcelain, or branch"
        )
    if command == "checkout":
        if request.paths and (request.branch or request.create):
            raise InvalidInputError(
                "checkout either switches branch or restores paths, not both",
                hint="give branch, or paths (with ref to restore them from a revision)",
            )
        if request.create and request.branch is None:
            raise InvalidInputError("create needs the new branch's name", hint="give branch")
        if request.branch and request.ref and not request.create:
            raise InvalidInputError(
                "ref with branch is the start point of a new branch", hint="add create=true"
            )
        if not (request.paths or request.branch or request.ref):
            raise InvalidInputError(
                "checkout needs a branch, a ref or paths",
                hint="give branch to switch to, or paths to restore",
            )


def _request(
    command: str,
    *,
    paths: object,
    ref: object,
    branch: object,
    message: object,
    author_name: object,
    author_email: object,
    remote: object,
    max_count: object,
    staged: object,
    create: object,
    delete: object,
    porcelain: object,
) -> _Request:
    flags = (("staged", staged), ("create", create), ("delete", delete), ("porcelain", porcelain))
    for name, flag in flags:
        if not isinstance(flag, bool):
            raise InvalidInputError(
                f"{name} must be true or false", hint=f"give {name} as a boolean"
            )
    if command == "commit":
        message = _check_message(message)
        _check_identity(author_name, author_email)
    request = _Request(
        command=command,
        paths=_check_paths(paths, required=command in ("add", "unstage")),
        ref=None if ref is None else _check_revisions(ref, ranges=command in ("diff", "log")),
        branch=None if branch is None else _check_branch(branch),
        message=message if isinstance(message, str) else None,
        author_name=author_name if isinstance(author_name, str) else None,
        author_email=author_email if isinstance(author_email, str) else None,
        remote=_check_remote_name(DEFAULT_REMOTE if remote is None else remote),
        max_count=DEFAULT_LOG_COUNT
        if max_count is None
        else _check_int("max_count", max_count, 1, MAX_LOG_COUNT),
        staged=bool(staged),
        create=bool(create),
        delete=bool(delete),
        porcelain=bool(porcelain),
    )
    _check_combinations(request)
    return request


def _prepare(root: Path, repo: str, paths: list[str]) -> tuple[_Repository, list[str]]:
    """The repository and the paths relative to it; blocking."""
    repository = _open_repository(root, repo)
    return repository, _repository_paths(repository, paths)


async def git(
    root: Path,
    command: GitCommand,
    *,
    repo: str = ".",
    paths: Sequence[str] | None = None,
    ref: str | None = None,
    branch: str | None = None,
    message: str | None = None,
    author_name: str | None = None,
    author_email: str | None = None,
    remote: str | None = None,
    max_count: int | None = None,
    staged: bool = False,
    create: bool = False,
    delete: bool = False,
    porcelain: bool = False,
    allowed_remotes: Sequence[str] = (),
    forbidden: Sequence[Path] = (),
    timeout: float = 30.0,  # noqa: ASYNC109 (covers the whole call, config check included)
) -> dict[str, Any]:
    """Run one git subcommand on the repository `repo` of the workspace `root`.

    Returns {"exit_code", "stdout", "stderr", "truncated"}. Arguments per command:

    - status: paths, porcelain (`--porcelain=v2 -z`).
    - diff: paths, ref (a revision or a range a..b / a...b), staged (the index against HEAD or
      ref instead of the work tree against the index).
    - log: paths, ref (a revision or range; default HEAD), max_count (default 20), porcelain
      (each commit in `COMMIT_FORMAT`).
    - show: paths, ref (default HEAD), porcelain (the commit in `COMMIT_FORMAT`, NUL US, then
      the patch).
    - add: paths (required).
    - unstage: paths (required): their index entries back to HEAD's.
    - commit: message (required), paths (commit only these), author_name, author_email.
    - branch: none to list (porcelain: local and remote-tracking, in `BRANCH_FORMAT`); branch
      to create (at ref, default HEAD); branch with delete.
    - checkout: branch to switch to, or with create a new one (at ref); ref alone to detach;
      paths to restore from the index (or from ref).
    - push: remote (default origin), branch (default the current branch).
    - pull: remote (default origin), branch (default the upstream); fast-forward only.

    push and pull need the remote's URLs on `allowed_remotes` (empty by default: refused); a
    local remote may not be in the workspace nor below a `forbidden` folder (the server's
    data), wherever its symlinks lead. An
    argument that does not apply to the command is refused. `timeout` seconds cover the whole
    call; git is then killed with its process group (`ToolTimeoutError`).
    """
    given = {
        "paths": paths,
        "ref": ref,
        "branch": branch,
        "message": message,
        "author_name": author_name,
        "author_email": author_email,
        "remote": remote,
        "max_count": max_count,
        "staged": staged,
        "create": create,
        "delete": delete,
        "porcelain": porcelain,
    }
    _check_arguments(command, given)
    seconds = _check_timeout(timeout)
    if not isinstance(repo, str):
        raise InvalidInputError("repo must be a path", hint='e.g. "." or "projects/app"')
    request = _request(command, **given)
    if command in ("push", "pull") and not allowed_remotes:
        raise PermissionDeniedError(
            "push and pull are not enabled: no remote is on the allow-list",
            hint="an operator can allow remotes (allowed_remotes)",
        )
    repository, relative = await asyncio.to_thread(_prepare, root, repo, request.paths)
    opened: list[int] = []  # local remotes, bound in the sandbox by these descriptors
    try:
        async with asyncio.timeout(seconds):
            config = await _repository_config(repository)
            if command not in ("log", "show", "branch", "push"):  # these leave the work tree be
                await _refuse_checked_out_submodules(repository)
            transports: list[str] = []
            local: list[str] = []
            if command in ("push", "pull"):
                transports, local = await asyncio.to_thread(
                    _check_remote,
                    repository,
                    config,
                    request.remote,
                    allowed_remotes,
                    push=command == "push",
                )
            arguments, settings = _arguments(request, relative, config)
            refused = [*forbidden, repository.workspace]
            what = "pushing to" if command == "push" else "pulling from"
            for path in local:
                opened.append(await asyncio.to_thread(_open_local, path, refused, what))
            shared = [
                SharedFolder(path, writable=command == "push", descriptor=descriptor)
                for path, descriptor in zip(local, opened, strict=True)
            ]
            return await _execute(
                repository, arguments, transports=transports, outside=shared, config=settings
            )
    except TimeoutError:
        raise ToolTimeoutError(
            f"git {command} did not finish within {seconds:g} seconds and was stopped",
            hint="try again with a larger timeout, or a smaller request (max_count, paths)",
        ) from None
    finally:
        for descriptor in opened:
            os.close(descriptor)


# --- making a repository: init and clone ------------------------------------------------------


async def _run_outside(
    arguments: Sequence[str],
    workspace: Path,
    *,
    transports: Sequence[str],
    outside: Sequence[SharedFolder] = (),
    seconds: float,
    what: str,
) -> tuple[int, str]:
    """Run git outside any repository (init, clone) in the sandbox, `workspace` at
    WORKSPACE_MOUNT, with the hardened command line and environment: (exit code, stderr).
    At the timeout, or on cancellation, the sandbox is killed."""
    settings = [*_OVERRIDES, *(f"protocol.{name}.allow=always" for name in transports)]
    argv = [
        await asyncio.to_thread(_git_program),
        "--no-pager",
        *(part for setting in settings for part in ("-c", setting)),
        *arguments,
    ]
    try:
        async with asyncio.timeout(seconds):
            result = await _sandboxed(
                workspace, argv, seconds=seconds, transports=transports, outside=outside
            )
    except TimeoutError:
        raise ToolTimeoutError(
            f"{what} did not finish within {seconds:g} seconds and was stopped",
            hint="try again; a large repository may need a larger timeout",
        ) from None
    return result["exit_code"], result["stderr"]


def _last_line(said: str) -> str:
    lines = said.strip().splitlines()
    return _shown(lines[-1] if lines else "no message")


def _new_repository_folder(root: Path, repo: str) -> Path:
    """The folder `repo` of the workspace, once it holds no `.git` of any kind; blocking."""
    work_tree = resolve_in_workspace(root, repo)
    if not work_tree.is_dir():
        raise InvalidInputError(
            f"{_shown(repo)!r} is not a folder of the workspace",
            hint="give the folder to make a repository of",
        )
    if _lstat(work_tree / ".git") is not None:
        raise ConflictError(
            f"{_shown(repo)!r} is already a git repository (it has a .git)",
            hint="use it as it is",
        )
    return work_tree


async def init_repository(
    root: Path,
    repo: str = ".",
    *,
    branch: str = "main",
    timeout: float = 30.0,  # noqa: ASYNC109 (covers the whole call)
) -> None:
    """Make the folder `repo` of the workspace `root` a new, empty git repository whose first
    branch is `branch`: no templates (so no hooks), no configuration from outside.
    `ConflictError` when the folder has a `.git` already (a folder, a file or a symlink)."""
    name = _check_branch(branch)
    seconds = _check_timeout(timeout)
    if not isinstance(repo, str):
        raise InvalidInputError("repo must be a path", hint='e.g. "." or "projects/app"')
    work_tree = await asyncio.to_thread(_new_repository_folder, root, repo)
    workspace = await asyncio.to_thread(Path(root).resolve)
    target = _inside(workspace, work_tree)
    arguments = ["init", "--quiet", "--template=", f"--initial-branch={name}", "--", target]
    code, said = await _run_outside(
        arguments, workspace, transports=(), seconds=seconds, what="git init"
    )
    if code != 0:
        raise ConflictError(f"git init failed: {_last_line(said)}", hint="check the folder")


def _open_local(path: str, forbidden: Sequence[Path], what: str) -> int:
    """An O_PATH descriptor of the local repository `path`, once the folder it holds (wherever
    symlinks led) is at or below none of `forbidden`; the sandbox binds this very descriptor.
    The caller closes it. Blocking."""
    try:
        descriptor = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise InvalidInputError(
            f"{what} {_shown(path)!r} failed: there is no repository there",
            hint="check the path and that the repository exists",
        ) from None
    real = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
    for folder in forbidden:
        if real.is_relative_to(os.path.realpath(folder)):
            os.close(descriptor)
            raise PermissionDeniedError(
                f"{what} {_shown(path)!r} is not allowed: it is inside the server's own data "
                "(other projects, workspaces) or this workspace",
                hint="use a repository of its own, outside the server's data",
            )
    return descriptor


def _source_allowed(location: tuple[str, str], entry: str) -> bool:
    """Whether the canonical `location` is `entry` (an allow-list entry) or below it."""
    allowed = _location(entry)
    if allowed is None or allowed[0] != location[0]:
        return False
    base, wanted = allowed[1].rstrip("/"), location[1]
    return wanted == base or wanted.startswith(base + "/")


def _make_target(target: Path) -> None:
    """Make the clone's folder, which must not exist (its parents may not yet); blocking."""
    os.makedirs(target.parent, exist_ok=True)
    try:
        os.mkdir(target, 0o750)  # the clone's sandbox: git sees this folder and nothing else
    except FileExistsError:
        raise ConflictError(
            f"{str(target)!r} exists already", hint="clone into a new folder"
        ) from None


async def clone_repository(
    url: str,
    target: Path,
    *,
    allowed: Sequence[str],
    forbidden: Sequence[Path] = (),
    timeout: float = 300.0,  # noqa: ASYNC109 (covers the whole clone)
) -> None:
    """Clone `url` into `target` (a folder that must not exist yet).

    `url` must be an https URL or a local repository (an absolute path or file:// URL) at or
    below an entry of `allowed`; a local one may not be at or below a `forbidden` folder (the
    server's data), wherever its symlinks lead. The clone runs with the same hardened
    environment as the git tool: no system or user configuration, no hooks or templates, no
    submodules, only the one transport the URL needs, and for a local repository the transport,
    not hard links. git runs in the sandbox, where it sees `target` and the local source
    (read-only) alone. A failed or cancelled clone leaves no folder behind.
    """
    seconds = _check_timeout(timeout)
    if isinstance(allowed, str) or not allowed:
        raise PermissionDeniedError(
            "cloning is not enabled on this server: no URL is on the allow-list",
            hint="an operator can allow URLs: GATHERING_PROJECT_CLONE_ALLOWED",
        )
    location = _location(url) if isinstance(url, str) else None
    if location is None:
        raise InvalidInputError(
            f"{_shown(str(url))!r} is not an https URL or the absolute path of a local repository",
            hint="clone from https://... or /path/to/repository",
        )
    if not any(isinstance(entry, str) and _source_allowed(location, entry) for entry in allowed):
        raise PermissionDeniedError(
            f"cloning from {_shown(url)!r} is not allowed",
            hint="an operator can allow it: GATHERING_PROJECT_CLONE_ALLOWED",
        )
    transport, where = location
    source: int | None = None
    made = False
    try:
        if transport == "file":
            source = await asyncio.to_thread(_open_local, where, forbidden, "cloning")
        making = asyncio.ensure_future(asyncio.to_thread(_make_target, target))
        try:
            await asyncio.shield(making)
        except asyncio.CancelledError:  # the thread goes on: know whether it made the folder
            with contextlib.suppress(Exception):
                await making
            made = making.exception() is None
            raise
        made = True
        arguments = [
            "clone",
            "--quiet",
            "--no-recurse-submodules",
            "--template=",
            *(["--no-local"] if transport == "file" else []),
            "--",
            url,
            WORKSPACE_MOUNT,
        ]
        shared = [SharedFolder(where, descriptor=source)] if source is not None else []
        code, said = await _run_outside(
            arguments,
            target,
            transports=[transport],
            outside=shared,
            seconds=seconds,
            what=f"cloning {_shown(url)!r}",
        )
    except BaseException:
        if made:
            await asyncio.to_thread(shutil.rmtree, target, True)  # it did not exist before
        raise
    finally:
        if source is not None:
            os.close(source)
    if code != 0:
        await asyncio.to_thread(shutil.rmtree, target, True)
        raise InvalidInputError(
            f"cloning {_shown(url)!r} failed: {_last_line(said)}",
            hint="check the URL and that the repository exists",
        )

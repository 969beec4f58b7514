"""The `git` tool: ten git subcommands on a repository of the agent's workspace, safe by
construction.

`await git(root, "status", repo="project")` runs `git status` in the repository
`<root>/project` and returns {"exit_code", "stdout", "stderr", "truncated"}. A non-zero exit code
is an answer, not an error; refused arguments raise `InvalidInputError` (a path leaving the
workspace: `PathTraversalError`, a forbidden repository or remote: `PermissionDeniedError`),
and a git that outlives `timeout` is killed with its whole process group (`ToolTimeoutError`).

The rules:

- **No shell.** git runs from an argv list (`asyncio.create_subprocess_exec`) in a session of its
  own, so the timeout, or a cancelled call, kills it and every child (remote helpers, ssh, ...);
  stdout and stderr are each kept up to `MAX_OUTPUT_BYTES` (the rest is read and dropped).
- **The repository** is the folder `repo` (through `resolve_in_workspace`) holding a real `.git`
  folder. git gets `--git-dir` and `--work-tree` explicitly, so it never looks above the
  workspace for a repository (nor honours `core.worktree`). A `.git` file or symlink, a linked
  worktree (`commondir`), object alternates and symlinks among `.git`'s and `.git/objects`'s
  entries are refused: each would let git read or write outside the workspace.
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
  nothing.

What is not covered: the configuration is checked just before git reads it, so an agent that
rewrites `.git/config` *while* a call runs (a concurrent tool call) could slip a filter or
driver in between; the single-valued keys of `_OVERRIDES` still hold then. Allow-listed
remotes are trusted: git runs their server side (and its hooks) for a local remote, which is
why one inside the workspace is refused. As in `resolve_in_workspace`, a symlink swapped in
after the checks (for the repository folder itself) is not guarded against. The environment
carries no proxy or CA settings of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from gathering.errors import (
    FeatureUnavailableError,
    InvalidInputError,
    PathTraversalError,
    PermissionDeniedError,
    ToolTimeoutError,
)
from gathering.tools.workspace import resolve_in_workspace

GitCommand = Literal[
    "status", "diff", "log", "show", "add", "commit", "branch", "checkout", "push", "pull"
]
COMMANDS: tuple[str, ...] = get_args(GitCommand)

MAX_OUTPUT_BYTES = 256 * 1024  # of stdout, and of stderr
MAX_TIMEOUT = 600.0
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
    "status": ("paths",),
    "diff": ("paths", "ref", "staged"),
    "log": ("paths", "ref", "max_count"),
    "show": ("paths", "ref"),
    "add": ("paths",),
    "commit": ("message", "paths", "author_name", "author_email"),
    "branch": ("branch", "ref", "delete"),
    "checkout": ("branch", "ref", "paths", "create"),
    "push": ("remote", "branch"),
    "pull": ("remote", "branch"),
}

_NAME = re.compile(r"[A-Za-z0-9._/+-]+")
_REVISION = re.compile(r"(?P<name>[A-Za-z0-9._/+-]+)(?P<suffix>(?:~[0-9]{0,6}|\^[0-9]{0,3})*)")
_BRANCH_START = re.compile(r"[A-Za-z0-9_]")
_REMOTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME_HINT = "use letters, digits and . _ / + - (e.g. main, feature/login, v1.2, HEAD~2)"


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
    return list(paths)


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
    ):
        raise InvalidInputError(
            "author_name must be 1 to 200 characters, without <, > or control characters",
            hint="e.g. 'Ada Lovelace'",
        )
    if email is not None and (
        not isinstance(email, str) or len(email) > 254 or not _EMAIL.fullmatch(email)
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


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


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
    for folder in (git_dir, git_dir / "objects"):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
            for entry in it:
                if entry.is_symlink():
                    relative = Path(entry.path).relative_to(work_tree).as_posix()
                    raise PathTraversalError(
                        f"{relative} in {_shown(repo)!r} is a symlink; git could follow it out "
                        "of the workspace",
                        hint="replace the symlink with the folder or file itself",
                    )
    return _Repository(Path(root).resolve(), work_tree, git_dir)


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


def _location(url: str) -> tuple[str, str] | None:
    """(transport, canonical spelling) of an https URL or a local repository; None otherwise.

    A local path is compared as written (no symlink resolved), so what git opens is what the
    allow-list names; `..` is refused.
    """
    if _CONTROL.search(url) or "::" in url or url.startswith("-") or " " in url:
        return None
    if url.startswith("https://"):
        parts = urlsplit(url)
        if not parts.hostname or parts.query or parts.fragment:
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
) -> list[str]:
    """The transports `remote` needs, once every URL of it is on `allowed`; blocking."""
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
        raise InvalidInputError(
            f"remote {remote!r} is not configured with a URL in this repository",
            hint="give the name of a configured remote, such as origin",
        )
    transports: set[str] = set()
    for url in urls:
        location = _location(url) if url is not None else None
        if location is None or location not in permitted:
            raise PermissionDeniedError(
                f"remote {remote!r} points to {_shown(str(url))!r}, which is not on the allow-list",
                hint="push and pull only to allowed remotes (https URLs or local repositories)",
            )
        transports.add(location[0])
    return sorted(transports)


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


async def _repository_config(
    repository: _Repository, home: str
) -> list[tuple[str, str, str | None]]:
    """The repository's configuration entries; refused if any key could run a program."""
    result = await _execute(
        repository, ["config", "--list", "--no-includes", "--show-scope", "-z"], home=home
    )
    if result["exit_code"] != 0 or result["truncated"]:
        raise InvalidInputError(
            f"the repository's configuration cannot be read: {_shown(result['stderr'].strip())}",
            hint="fix or remove .git/config",
        )
    entries = [e for e in _parse_config(result["stdout"]) if e[0] != "command"]
    for scope, key, _ in entries:
        if not _config_key_allowed(key):
            raise PermissionDeniedError(
                f"the repository's {scope} configuration sets {_shown(key)!r}, which this tool "
                "does not allow (such settings can make git run programs or reach elsewhere)",
                hint=f"remove {_shown(key)!r} from .git/config",
            )
    return entries


async def _refuse_checked_out_submodules(repository: _Repository, home: str) -> None:
    """Refuse a repository with a checked-out submodule: git runs itself inside one (to see
    whether it changed) under the submodule's own configuration, which is not checked."""
    result = await _execute(
        repository,
        ["ls-files", "--stage", "-z"],
        home=home,
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
    return os.path.realpath(found)


def _environment(home: str, transports: Sequence[str]) -> dict[str, str]:
    """The whole environment of git: nothing of the server's, no GIT_* it did not choose."""
    return {
        "PATH": SAFE_PATH,
        "HOME": home,
        "XDG_CONFIG_HOME": home,
        "LC_ALL": "C",
        "LANG": "C",
        "TERM": "dumb",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_SYSTEM": "/dev/null",
        "GIT_CONFIG_GLOBAL": "/dev/null",
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


def _command_line(
    repository: _Repository,
    arguments: Sequence[str],
    transports: Sequence[str],
    config: Sequence[str],
) -> list[str]:
    settings = [
        *_OVERRIDES,
        f"safe.directory={repository.work_tree}",
        *(f"protocol.{name}.allow=always" for name in transports),
        *config,
    ]
    return [
        _git_program(),
        "--no-pager",
        "--literal-pathspecs",
        *(part for setting in settings for part in ("-c", setting)),
        f"--git-dir={repository.git_dir}",
        f"--work-tree={repository.work_tree}",
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


async def _execute(
    repository: _Repository,
    arguments: Sequence[str],
    *,
    home: str,
    transports: Sequence[str] = (),
    config: Sequence[str] = (),
    keep: Callable[[bytes], bool] | None = None,
) -> dict[str, Any]:
    """Run git with the hardened command line and environment; no check of the configuration.

    On cancellation (the caller's timeout), git and every process of its group are killed.
    `keep` filters the NUL-ended records of stdout (see `_read_capped`).
    """
    program = await asyncio.to_thread(_command_line, repository, arguments, transports, config)
    process = await asyncio.create_subprocess_exec(
        *program,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(home, transports),
        cwd=repository.work_tree,
        start_new_session=True,  # its own process group, killed as a whole
    )
    try:
        (out, out_cut), (err, err_cut) = await asyncio.gather(
            _read_capped(process.stdout, keep), _read_capped(process.stderr)
        )
        exit_code = await process.wait()
    finally:
        _kill_group(process.pid)  # on timeout, cancellation, or stragglers after a normal exit
        if process.returncode is None:
            await asyncio.shield(process.wait())
    return {
        "exit_code": exit_code,
        "stdout": out.decode("utf-8", errors="replace"),
        "stderr": err.decode("utf-8", errors="replace"),
        "truncated": out_cut or err_cut,
    }


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


_NO_SUBMODULES = "--ignore-submodules=all"
_DIFF_OPTIONS = ("--no-color", "--no-ext-diff", "--no-textconv")
_HISTORY_OPTIONS = (*_DIFF_OPTIONS, "--no-show-signature", "--no-mailmap", "--date=iso")


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
        return ["status", "--short", "--branch", _NO_SUBMODULES, "--", *paths], []
    if command == "diff":
        staged = ["--cached"] if request.staged else []
        options = [*_DIFF_OPTIONS, _NO_SUBMODULES, *staged]
        return ["diff", *options, *_revision_arguments(ref), "--", *paths], []
    if command == "log":
        count = f"--max-count={request.max_count}"
        return [
            "log",
            *_HISTORY_OPTIONS,
            count,
            *_revision_arguments(ref or "HEAD"),
            "--",
            *paths,
        ], []
    if command == "show":
        return ["show", *_HISTORY_OPTIONS, *_revision_arguments(ref or "HEAD"), "--", *paths], []
    if command == "add":
        return ["add", "--", *paths], []
    if command == "commit":
        return _commit_arguments(request, paths, config)
    if command == "branch":
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
    if command == "push":
        refspec = f"refs/heads/{branch}:refs/heads/{branch}" if branch else "HEAD"
        return ["push", "--no-verify", "--no-recurse-submodules", "--", request.remote, refspec], []
    # pull: fast-forward only, so no merge (no merge driver, no editor)
    wanted = [f"refs/heads/{branch}"] if branch else []
    options = ["--ff-only", "--no-rebase", "--no-edit", "--no-recurse-submodules"]
    return ["pull", *options, "--", request.remote, *wanted], []


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
) -> _Request:
    for name, flag in (("staged", staged), ("create", create), ("delete", delete)):
        if not isinstance(flag, bool):
            raise InvalidInputError(
                f"{name} must be true or false", hint=f"give {name} as a boolean"
            )
    if command == "commit":
        message = _check_message(message)
        _check_identity(author_name, author_email)
    request = _Request(
        command=command,
        paths=_check_paths(paths, required=command == "add"),
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
    )
    _check_combinations(request)
    return request


def _prepare(root: Path, repo: str, paths: list[str]) -> tuple[_Repository, list[str], str]:
    """The repository, the paths relative to it, and a new empty HOME folder; blocking."""
    repository = _open_repository(root, repo)
    relative = _repository_paths(repository, paths)
    return repository, relative, tempfile.mkdtemp(prefix="gathering-git-home-")


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
    allowed_remotes: Sequence[str] = (),
    timeout: float = 30.0,  # noqa: ASYNC109 (covers the whole call, config check included)
) -> dict[str, Any]:
    """Run one git subcommand on the repository `repo` of the workspace `root`.

    Returns {"exit_code", "stdout", "stderr", "truncated"}. Arguments per command:

    - status: paths.
    - diff: paths, ref (a revision or a range a..b / a...b), staged (the index against HEAD or
      ref instead of the work tree against the index).
    - log: paths, ref (a revision or range; default HEAD), max_count (default 20).
    - show: paths, ref (default HEAD).
    - add: paths (required).
    - commit: message (required), paths (commit only these), author_name, author_email.
    - branch: none to list; branch to create (at ref, default HEAD); branch with delete.
    - checkout: branch to switch to, or with create a new one (at ref); ref alone to detach;
      paths to restore from the index (or from ref).
    - push: remote (default origin), branch (default the current branch).
    - pull: remote (default origin), branch (default the upstream); fast-forward only.

    push and pull need the remote's URLs on `allowed_remotes` (empty by default: refused). An
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
    repository, relative, home = await asyncio.to_thread(_prepare, root, repo, request.paths)
    try:
        async with asyncio.timeout(seconds):
            config = await _repository_config(repository, home)
            if command not in ("log", "show", "branch", "push"):  # these leave the work tree be
                await _refuse_checked_out_submodules(repository, home)
            transports: list[str] = []
            if command in ("push", "pull"):
                transports = await asyncio.to_thread(
                    _check_remote,
                    repository,
                    config,
                    request.remote,
                    allowed_remotes,
                    push=command == "push",
                )
            arguments, settings = _arguments(request, relative, config)
            return await _execute(
                repository, arguments, home=home, transports=transports, config=settings
            )
    except TimeoutError:
        raise ToolTimeoutError(
            f"git {command} did not finish within {seconds:g} seconds and was stopped",
            hint="try again with a larger timeout, or a smaller request (max_count, paths)",
        ) from None
    finally:
        await asyncio.to_thread(shutil.rmtree, home, True)

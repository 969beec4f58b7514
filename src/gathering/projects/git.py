"""A project's git, for people: the hardened git tool (`gathering.tools.builtins.git`, whose
rules hold here too) run on the project's directory, its machine-readable output parsed.

`ProjectGit(project.directory)` reads (status, diff, log, show, branches) and changes (stage,
unstage, commit, checkout, push, pull, init) the repository at the root of the directory. A
directory without one raises `NoRepositoryError` (`status` says `repository=False` instead);
git answering with a non-zero exit code (nothing to commit, a conflict, a push that is not a
fast-forward) raises `GitCommandError` with git's message. Refused arguments raise the tool's
errors (`InvalidInputError`, `PathTraversalError`, `PermissionDeniedError`), and a git that
outlives the timeout `ToolTimeoutError`.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from gathering.errors import ConflictError
from gathering.tools.builtins.git import (
    DEFAULT_LOG_COUNT,
    MAX_TIMEOUT,
    GitCommand,
    git,
    init_repository,
)

REPOSITORY = "."  # the repository is the project's directory itself
MAX_ECHO = 4_000  # characters of git's own message in an error

FileState = Literal[
    "unmodified",
    "modified",
    "type_changed",
    "added",
    "deleted",
    "renamed",
    "copied",
    "unmerged",
    "untracked",
]
_STATES: dict[str, FileState] = {
    ".": "unmodified",
    "M": "modified",
    "T": "type_changed",
    "A": "added",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "U": "unmerged",
}
_TRACK = re.compile(r"(?:ahead (?P<ahead>[0-9]+))?(?:, )?(?:behind (?P<behind>[0-9]+))?")


class NoRepositoryError(ConflictError):
    """The project's directory is not a git repository (yet)."""

    code = "no_repository"


class GitCommandError(ConflictError):
    """git ran and failed (a non-zero exit code): its message says why."""

    code = "git_failed"


@dataclass(frozen=True)
class FileStatus:
    """A changed, staged or untracked path: its state in the index (staged) and in the work
    tree (not staged yet); a renamed or copied path names where it came from."""

    path: str
    index: FileState
    worktree: FileState
    original_path: str | None = None


@dataclass(frozen=True)
class RepositoryStatus:
    """Where the repository stands. `branch` is None when HEAD is detached, `head` before the
    first commit; `ahead` and `behind` count commits against the upstream branch."""

    repository: bool
    branch: str | None = None
    head: str | None = None
    upstream: str | None = None
    ahead: int | None = None
    behind: int | None = None
    files: tuple[FileStatus, ...] = ()
    truncated: bool = False

    @property
    def detached(self) -> bool:
        return self.repository and self.branch is None


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committer_email: str
    committed_at: datetime
    subject: str
    body: str


@dataclass(frozen=True)
class Diff:
    diff: str
    truncated: bool


@dataclass(frozen=True)
class CommitDiff:
    commit: Commit
    diff: str
    truncated: bool


@dataclass(frozen=True)
class Branch:
    """A local branch, or a remote-tracking one (`remote`, named like origin/main)."""

    name: str
    commit: str
    subject: str
    current: bool
    remote: bool
    upstream: str | None
    ahead: int | None
    behind: int | None
    gone: bool  # its upstream was deleted


@dataclass(frozen=True)
class Branches:
    current: str | None  # None: HEAD is detached
    branches: tuple[Branch, ...]


@dataclass(frozen=True)
class Exchange:
    """What a push or pull said, and where the repository stands after it."""

    output: str
    status: RepositoryStatus


# --- parsing ---------------------------------------------------------------------------------


def _records(stdout: str, truncated: bool, separator: str) -> list[str]:
    """The complete records of `stdout`: a cut last one is dropped."""
    records = stdout.split(separator)
    if truncated or records[-1] == "":
        records.pop()
    return records


def parse_status(stdout: str, truncated: bool) -> RepositoryStatus:
    """`git status --porcelain=v2 -z --branch`, read."""
    header: dict[str, str] = {}
    files: list[FileStatus] = []
    records = iter(_records(stdout, truncated, "\0"))
    for record in records:
        kind = record[:2]
        if kind == "# ":
            key, _, value = record[2:].partition(" ")
            header[key] = value
        elif kind == "1 ":
            fields = record.split(" ", 8)
            if len(fields) == 9:
                files.append(_file(fields[1], fields[8]))
        elif kind == "2 ":
            fields = record.split(" ", 9)
            original = next(records, None)
            if len(fields) == 10 and original is not None:
                files.append(_file(fields[1], fields[9], original))
        elif kind == "u ":
            fields = record.split(" ", 10)
            if len(fields) == 11:
                files.append(FileStatus(fields[10], "unmerged", "unmerged"))
        elif kind == "? ":
            files.append(FileStatus(record[2:], "untracked", "untracked"))
    ahead = behind = None
    counts = header.get("branch.ab", "").split()
    if len(counts) == 2 and counts[0][1:].isdigit() and counts[1][1:].isdigit():
        ahead, behind = int(counts[0][1:]), int(counts[1][1:])
    oid = header.get("branch.oid")
    branch = header.get("branch.head")
    return RepositoryStatus(
        repository=True,
        branch=None if branch in (None, "(detached)") else branch,
        head=None if oid in (None, "(initial)") else oid,
        upstream=header.get("branch.upstream"),
        ahead=ahead,
        behind=behind,
        files=tuple(files),
        truncated=truncated,
    )


def _file(states: str, path: str, original: str | None = None) -> FileStatus:
    index, worktree = (_STATES.get(state, "modified") for state in (states + "..")[:2])
    return FileStatus(path, index, worktree, original)


def _commit(record: str) -> Commit | None:
    fields = record.split("\0", 8)
    if len(fields) != 9:
        return None
    sha, parents, a_name, a_email, a_date, c_name, c_email, c_date, message = fields
    subject, _, body = message.rstrip("\n").partition("\n")
    try:
        authored, committed = datetime.fromisoformat(a_date), datetime.fromisoformat(c_date)
    except ValueError:
        return None
    return Commit(
        sha=sha,
        parents=tuple(parents.split()),
        author_name=a_name,
        author_email=a_email,
        authored_at=authored,
        committer_name=c_name,
        committer_email=c_email,
        committed_at=committed,
        subject=subject,
        body=body.strip("\n"),
    )


def parse_log(stdout: str, truncated: bool) -> list[Commit]:
    """`git log --format=COMMIT_FORMAT`, read (a commit cut by the output cap is dropped)."""
    records = stdout.split("\x1e")[1:]
    if truncated and records:
        records.pop()
    return [commit for record in records if (commit := _commit(record)) is not None]


def parse_show(stdout: str, truncated: bool) -> CommitDiff | None:
    """`git show --format=COMMIT_FORMAT%x00%x1f`, read; None when it is not a commit."""
    _, marker, rest = stdout.partition("\x1e")
    header, end, diff = rest.partition("\0\x1f")
    commit = _commit(header) if marker and end else None
    if commit is None:
        return None
    return CommitDiff(commit, diff.lstrip("\n"), truncated)


def parse_branches(stdout: str, truncated: bool) -> list[Branch]:
    """`git branch --list --all --format=BRANCH_FORMAT`, read."""
    branches = []
    for line in _records(stdout, truncated, "\n"):
        fields = line.split("\0")
        if len(fields) != 7:
            continue
        head, ref, commit, upstream, track, symref, subject = fields
        remote = ref.startswith("refs/remotes/")
        if symref or not (remote or ref.startswith("refs/heads/")):
            continue  # origin/HEAD, or the "(HEAD detached at ...)" line
        counts = _TRACK.fullmatch(track) if track != "gone" else None
        branches.append(
            Branch(
                name=ref.removeprefix("refs/remotes/" if remote else "refs/heads/"),
                commit=commit,
                subject=subject,
                current=head == "*",
                remote=remote,
                upstream=upstream or None,
                ahead=int(counts["ahead"] or 0) if counts and upstream else None,
                behind=int(counts["behind"] or 0) if counts and upstream else None,
                gone=track == "gone",
            )
        )
    return branches


# --- the repository --------------------------------------------------------------------------


def author_of(email: str) -> tuple[str, str]:
    """The (name, email) a person's commits carry: their email, and a name made from its local
    part ("ada.lovelace@example.com": "Ada Lovelace"). What git's `Name <email>` cannot hold
    (`<`, `>`, a leading `-`) is left out."""
    address = "".join(char for char in email if char not in "<>").lstrip("-")
    local = address.rpartition("@")[0] or address
    words = [word for word in re.split(r"[._+\-]+", local) if word]
    name = " ".join(word[:1].upper() + word[1:] for word in words)
    return name[:200] or address[:200], address


class ProjectGit:
    """git on the repository at the root of a project's `directory`. `allowed_remotes` are the
    URLs push and pull may reach (none: both refused); `timeout` covers each git call."""

    def __init__(
        self,
        directory: Path,
        *,
        allowed_remotes: Sequence[str] = (),
        forbidden: Sequence[Path] = (),
        timeout: float = 60.0,
    ) -> None:
        self.directory = directory
        self.allowed_remotes = tuple(allowed_remotes)
        self.forbidden = tuple(forbidden)
        self.timeout = min(timeout, MAX_TIMEOUT)

    async def is_repository(self) -> bool:
        return await asyncio.to_thread(os.path.lexists, self.directory / ".git")

    async def _git(self, command: GitCommand, **arguments: Any) -> dict[str, Any]:
        if not await self.is_repository():
            raise _no_repository()
        return await git(
            self.directory,
            command,
            repo=REPOSITORY,
            allowed_remotes=self.allowed_remotes,
            forbidden=self.forbidden,
            timeout=self.timeout,
            **arguments,
        )

    async def _succeeded(self, command: GitCommand, **arguments: Any) -> dict[str, Any]:
        """The tool's answer, once git exited with 0; `GitCommandError` with its message if not."""
        result = await self._git(command, **arguments)
        if result["exit_code"] != 0:
            raise _failure(command, result)
        return result

    # --- reading ---

    async def status(self) -> RepositoryStatus:
        if not await self.is_repository():
            return RepositoryStatus(repository=False)
        result = await self._succeeded("status", porcelain=True)
        return parse_status(result["stdout"], result["truncated"])

    async def diff(
        self, *, path: str | None = None, ref: str | None = None, staged: bool = False
    ) -> Diff:
        """The work tree against the index, or with `staged` the index against HEAD; against
        `ref` instead of the index (or of HEAD) when it is given."""
        paths = [path] if path is not None else None
        result = await self._succeeded("diff", paths=paths, ref=ref, staged=staged)
        return Diff(result["stdout"], result["truncated"])

    async def log(
        self,
        *,
        path: str | None = None,
        ref: str | None = None,
        max_count: int = DEFAULT_LOG_COUNT,
    ) -> list[Commit]:
        """Commits, newest first (of `path` only: its history); none before the first."""
        paths = [path] if path is not None else None
        result = await self._git("log", paths=paths, ref=ref, max_count=max_count, porcelain=True)
        if result["exit_code"] != 0:
            if ref is None and (await self.status()).head is None:
                return []  # HEAD names no commit yet
            raise _failure("log", result)
        return parse_log(result["stdout"], result["truncated"])

    async def show(self, *, ref: str = "HEAD", path: str | None = None) -> CommitDiff:
        paths = [path] if path is not None else None
        result = await self._succeeded("show", ref=ref, paths=paths, porcelain=True)
        shown = parse_show(result["stdout"], result["truncated"])
        if shown is None:
            raise GitCommandError(
                f"{ref!r} is not a commit (or its message is too large to show)",
                hint="name a commit: a branch, a tag or a commit id",
            )
        return shown

    async def branches(self) -> Branches:
        status = await self.status()
        if not status.repository:
            raise _no_repository()
        result = await self._succeeded("branch", porcelain=True)
        listed = parse_branches(result["stdout"], result["truncated"])
        return Branches(current=status.branch, branches=tuple(listed))

    # --- changing ---

    async def stage(self, paths: Sequence[str]) -> RepositoryStatus:
        await self._succeeded("add", paths=list(paths))
        return await self.status()

    async def unstage(self, paths: Sequence[str]) -> RepositoryStatus:
        await self._succeeded("unstage", paths=list(paths))
        return await self.status()

    async def commit(
        self,
        message: str,
        *,
        paths: Sequence[str] | None = None,
        author_name: str | None = None,
        author_email: str | None = None,
    ) -> Commit:
        """Commit what is staged (or only `paths`, staged or not); the new commit."""
        await self._succeeded(
            "commit",
            message=message,
            paths=list(paths) if paths else None,
            author_name=author_name,
            author_email=author_email,
        )
        result = await self._succeeded("log", max_count=1, porcelain=True)
        commits = parse_log(result["stdout"], result["truncated"])
        if not commits:
            raise GitCommandError("the new commit cannot be read", hint="look at the log")
        return commits[0]

    async def checkout(
        self,
        *,
        branch: str | None = None,
        create: bool = False,
        ref: str | None = None,
        paths: Sequence[str] | None = None,
    ) -> RepositoryStatus:
        """Switch to `branch` (a new one with `create`, at `ref`), detach HEAD at `ref`, or
        restore `paths` from the index (or from `ref`)."""
        await self._succeeded(
            "checkout",
            branch=branch,
            create=create,
            ref=ref,
            paths=list(paths) if paths else None,
        )
        return await self.status()

    async def push(self, *, remote: str | None = None, branch: str | None = None) -> Exchange:
        result = await self._succeeded("push", remote=remote, branch=branch)
        return Exchange(_said(result), await self.status())

    async def pull(self, *, remote: str | None = None, branch: str | None = None) -> Exchange:
        result = await self._succeeded("pull", remote=remote, branch=branch)
        return Exchange(_said(result), await self.status())

    async def init(self, *, branch: str = "main") -> RepositoryStatus:
        """Make the directory a new, empty repository whose first branch is `branch`;
        `ConflictError` when it is one already."""
        await init_repository(self.directory, REPOSITORY, branch=branch, timeout=self.timeout)
        return await self.status()


def _no_repository() -> NoRepositoryError:
    return NoRepositoryError(
        "the project's directory is not a git repository",
        hint="make it one: POST /projects/{project_id}/git/init",
    )


def _failure(command: str, result: dict[str, Any]) -> GitCommandError:
    said = result["stderr"].strip() or result["stdout"].strip() or "no message"
    return GitCommandError(
        f"git {command} failed: {said[-MAX_ECHO:]}",
        hint="read git's message; the repository is as it was before",
        details={"command": command, "exit_code": result["exit_code"]},
    )


def _said(result: dict[str, Any]) -> str:
    return "\n".join(part for part in (result["stderr"].strip(), result["stdout"].strip()) if part)

"""A project's git: status, diffs, history, branches, and staging, committing, checking out,
pushing and pulling, on the repository at the root of the project's directory (made with
`POST .../git/init` when there is none). Members with `read` read; members with `write` change,
and each change is kept in the project's activity (`git.stage`, `git.commit`, ...). A commit's
author is the person who makes it. Push and pull reach only the remotes on the server's
allow-list (GATHERING_GIT_ALLOWED_REMOTES).

Every git call goes through the hardened git tool (no hooks, no configuration that runs
programs, paths kept inside the project): its refusals are 403 or 422, a directory that is not
a repository is a 409 `no_repository`, and git failing (nothing to commit, a conflict, a push
that is not a fast-forward) a 409 `git_failed` with git's message. See docs/projects.md.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from gathering.api.deps import DbDep, app_state
from gathering.api.fields import TEXT_PATTERN, WholeNumber
from gathering.api.routers.projects import ProjectId, ProjectsReader, ProjectsWriter, project_access
from gathering.api.security import rate_limit
from gathering.auth.principal import Principal
from gathering.db import Database
from gathering.db.fields import Flag
from gathering.projects import Actor, Permission, ProjectRecord, record_activity
from gathering.projects.git import (
    Branches,
    Commit,
    FileState,
    ProjectGit,
    RepositoryStatus,
    author_of,
)
from gathering.tools.builtins.git import (
    BRANCH_PATTERN,
    DEFAULT_LOG_COUNT,
    MAX_LOG_COUNT,
    MAX_NAME_CHARS,
    MAX_PATHS,
    PATH_PATTERN,
    RANGE_PATTERN,
    REMOTE_PATTERN,
    REVISION_PATTERN,
)
from gathering.tools.workspace import MAX_PATH_LENGTH

router = APIRouter(prefix="/projects", tags=["projects"])

MAX_MESSAGE_CHARS = 16_000  # 4 bytes each at most: within the tool's 64 KiB
KEPT_PATHS = 100  # paths named in one activity entry


class _Grammar:
    """A text field that must match `pattern`, which has lookaheads (pydantic's own `pattern`
    does not run them): checked in Python, published as the field's JSON Schema."""

    def __init__(self, pattern: str, max_length: int, what: str) -> None:
        self.compiled = re.compile(pattern)
        self.what = what
        self.length = StringConstraints(min_length=1, max_length=max_length)
        self.check = AfterValidator(self._matching)
        self.schema = WithJsonSchema(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": max_length,
                "pattern": pattern,
                "description": what[0].upper() + what[1:],
            }
        )

    def _matching(self, value: str) -> str:
        if self.compiled.fullmatch(value) is None:
            raise ValueError(f"is not {self.what}")
        return value


_PATH = _Grammar(
    PATH_PATTERN, MAX_PATH_LENGTH, "a path in the project, relative to its directory (src/app.py)"
)
_REVISION = _Grammar(
    REVISION_PATTERN,
    MAX_NAME_CHARS,
    "a revision: a branch, tag or commit id, optionally with ~N or ^N (e.g. HEAD~1)",
)
_RANGE = _Grammar(RANGE_PATTERN, MAX_NAME_CHARS, "a revision, or a range a..b or a...b")
_BRANCH = _Grammar(BRANCH_PATTERN, MAX_NAME_CHARS, "a branch name (e.g. main, feature/login)")
_REMOTE = _Grammar(REMOTE_PATTERN, 100, "the name of a configured remote (e.g. origin)")
RepoPath = Annotated[str, _PATH.length, _PATH.check, _PATH.schema]
Revision = Annotated[str, _REVISION.length, _REVISION.check, _REVISION.schema]
RevisionRange = Annotated[str, _RANGE.length, _RANGE.check, _RANGE.schema]
BranchName = Annotated[str, _BRANCH.length, _BRANCH.check, _BRANCH.schema]
RemoteName = Annotated[str, _REMOTE.length, _REMOTE.check, _REMOTE.schema]
Paths = Annotated[list[RepoPath], Field(min_length=1, max_length=MAX_PATHS)]


# --- answers ----------------------------------------------------------------------------------


class FileStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    path: str
    index: FileState = Field(description="Its state in the index: what is staged")
    worktree: FileState = Field(description="Its state in the work tree: what is not staged")
    original_path: str | None = Field(description="Renamed or copied: where it came from")


class GitStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    repository: bool = Field(description="false: the directory is not a git repository")
    branch: str | None = Field(description="The current branch (null: detached, or none)")
    detached: bool
    head: str | None = Field(description="The current commit (null before the first)")
    upstream: str | None = Field(description="The branch it tracks, e.g. origin/main")
    ahead: int | None = Field(description="Commits the upstream lacks")
    behind: int | None = Field(description="Commits of the upstream it lacks")
    files: list[FileStatusOut] = Field(description="Changed, staged and untracked paths")
    truncated: bool = Field(description="git said more than the server keeps (256 KiB)")

    @classmethod
    def of(cls, found: RepositoryStatus) -> GitStatusOut:
        return cls.model_validate({**found.__dict__, "detached": found.detached})


class DiffOut(BaseModel):
    diff: str = Field(description="A unified diff")
    truncated: bool = Field(description="It was cut at 256 KiB")


class CommitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sha: str
    parents: list[str]
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committer_email: str
    committed_at: datetime
    subject: str = Field(description="The first line of its message")
    body: str = Field(description="The rest of its message")


class ShowOut(BaseModel):
    commit: CommitOut
    diff: str = Field(description="What it changed, as a unified diff")
    truncated: bool = Field(description="The diff was cut at 256 KiB")


class BranchOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str = Field(description="e.g. main; a remote-tracking branch: origin/main")
    commit: str
    subject: str = Field(description="Its last commit's first line")
    current: bool
    remote: bool = Field(description="A remote-tracking branch")
    upstream: str | None
    ahead: int | None
    behind: int | None
    gone: bool = Field(description="Its upstream was deleted")


class BranchesOut(BaseModel):
    current: str | None = Field(description="null: HEAD is detached")
    branches: list[BranchOut]

    @classmethod
    def of(cls, found: Branches) -> BranchesOut:
        return cls.model_validate(
            {"current": found.current, "branches": [b.__dict__ for b in found.branches]}
        )


class ExchangeOut(BaseModel):
    output: str = Field(description="What git said")
    status: GitStatusOut


# --- requests -----------------------------------------------------------------------------------


class PathsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: Paths = Field(description='Paths in the project ("." for everything)')


class CommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=TEXT_PATTERN)
    paths: Paths | None = Field(
        default=None, description="Commit only these (staged or not); default: what is staged"
    )


class BranchCheckoutIn(BaseModel):
    """Switch to a branch (one only on a remote is made from it), or create one."""

    model_config = ConfigDict(extra="forbid")

    branch: BranchName
    create: Flag = Field(default=False, description="Create the branch (at ref, or HEAD)")
    ref: Revision | None = Field(default=None, description="Where a new branch starts")


class DetachCheckoutIn(BaseModel):
    """Check out a commit with no branch (a detached HEAD)."""

    model_config = ConfigDict(extra="forbid")

    ref: Revision


class RestoreCheckoutIn(BaseModel):
    """Restore paths as the index has them (throwing away what is not staged), or as `ref`
    has them."""

    model_config = ConfigDict(extra="forbid")

    paths: Paths
    ref: Revision | None = None


class RemoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    remote: RemoteName | None = Field(default=None, description="Default: origin")
    branch: BranchName | None = Field(
        default=None, description="Default: the current branch (push), its upstream (pull)"
    )


class InitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    branch: BranchName = Field(default="main", description="The first branch")


_GIT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The directory is not a git repository (`no_repository`), or git "
        "failed (`git_failed`: its message in `detail`)"
    },
    501: {"description": "git is not installed on the server"},
    504: {"description": "git did not finish in time and was stopped"},
}
_INIT: dict[int | str, dict[str, Any]] = {
    **_GIT,
    409: {"description": "The directory is a git repository already"},
}


# --- the routes ------------------------------------------------------------------------------


async def _git(
    request: Request, principal: Principal, db: Database, project_id: int, need: Permission
) -> tuple[ProjectRecord, ProjectGit]:
    project = await project_access(request, principal, db, project_id, need)
    settings = app_state(request).settings
    repository = ProjectGit(
        project.directory,
        allowed_remotes=settings.git_allowed_remotes,
        forbidden=[settings.data_dir, settings.projects_directory],  # others' repositories
        timeout=settings.tool_timeout,
    )
    return project, repository


async def _record(
    db: Database,
    project: ProjectRecord,
    principal: Principal,
    action: str,
    paths: list[str] | None = None,
    **detail: Any,
) -> None:
    """Keep a change in the project's activity: the path when there is one, the rest in
    `detail` (None values left out)."""
    named = paths or []
    if named:
        detail["paths"] = named[:KEPT_PATHS]
        detail["path_count"] = len(named)
    await record_activity(
        db,
        project,
        Actor(user_id=principal.user_id),
        action,
        named[0] if len(named) == 1 else None,
        {key: value for key, value in detail.items() if value is not None},
    )


def _commit_out(commit: Commit) -> CommitOut:
    return CommitOut.model_validate({**commit.__dict__, "parents": list(commit.parents)})


@router.get(
    "/{project_id:id}/git/status",
    summary="The repository's branch, its distance to the upstream, and its changed files",
    responses=_GIT,
    dependencies=[rate_limit("relaxed")],
)
async def git_status(
    project_id: ProjectId, request: Request, principal: ProjectsReader, db: DbDep
) -> GitStatusOut:
    _, repository = await _git(request, principal, db, project_id, "read")
    return GitStatusOut.of(await repository.status())


@router.get(
    "/{project_id:id}/git/diff",
    summary="What changed: the work tree against the index, or (staged) the index against HEAD",
    responses=_GIT,
    dependencies=[rate_limit("relaxed")],
)
async def git_diff(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsReader,
    db: DbDep,
    path: Annotated[RepoPath | None, Query(description="Only this file or folder")] = None,
    ref: Annotated[
        Revision | None, Query(description="Compare with this commit instead (of HEAD, staged)")
    ] = None,
    staged: Annotated[bool, Query(description="What is staged, not what is not")] = False,
) -> DiffOut:
    _, repository = await _git(request, principal, db, project_id, "read")
    found = await repository.diff(path=path, ref=ref, staged=staged)
    return DiffOut(diff=found.diff, truncated=found.truncated)


@router.get(
    "/{project_id:id}/git/log",
    summary="Commits, newest first; with path, that file's history",
    responses=_GIT,
    dependencies=[rate_limit("relaxed")],
)
async def git_log(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsReader,
    db: DbDep,
    path: Annotated[RepoPath | None, Query(description="Only commits that changed it")] = None,
    ref: Annotated[
        RevisionRange | None, Query(description="From this commit, or a range a..b (default HEAD)")
    ] = None,
    max_count: Annotated[WholeNumber, Query(ge=1, le=MAX_LOG_COUNT)] = DEFAULT_LOG_COUNT,
) -> list[CommitOut]:
    _, repository = await _git(request, principal, db, project_id, "read")
    commits = await repository.log(path=path, ref=ref, max_count=max_count)
    return [_commit_out(commit) for commit in commits]


@router.get(
    "/{project_id:id}/git/show",
    summary="One commit: who, when, its message, and what it changed",
    responses=_GIT,
    dependencies=[rate_limit("relaxed")],
)
async def git_show(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsReader,
    db: DbDep,
    ref: Annotated[Revision, Query(description="The commit")] = "HEAD",
    path: Annotated[RepoPath | None, Query(description="Only its changes to this path")] = None,
) -> ShowOut:
    _, repository = await _git(request, principal, db, project_id, "read")
    shown = await repository.show(ref=ref, path=path)
    return ShowOut(commit=_commit_out(shown.commit), diff=shown.diff, truncated=shown.truncated)


@router.get(
    "/{project_id:id}/git/branches",
    summary="The local and remote-tracking branches, and the current one",
    responses=_GIT,
    dependencies=[rate_limit("relaxed")],
)
async def git_branches(
    project_id: ProjectId, request: Request, principal: ProjectsReader, db: DbDep
) -> BranchesOut:
    _, repository = await _git(request, principal, db, project_id, "read")
    return BranchesOut.of(await repository.branches())


@router.post(
    "/{project_id:id}/git/stage",
    summary="Stage paths (new, changed or deleted files) for the next commit",
    responses=_GIT,
)
async def git_stage(
    project_id: ProjectId, body: PathsIn, request: Request, principal: ProjectsWriter, db: DbDep
) -> GitStatusOut:
    project, repository = await _git(request, principal, db, project_id, "write")
    found = await repository.stage(body.paths)
    await _record(db, project, principal, "git.stage", body.paths)
    return GitStatusOut.of(found)


@router.post(
    "/{project_id:id}/git/unstage",
    summary="Unstage paths: the index takes them back as HEAD has them; the files stay",
    responses=_GIT,
)
async def git_unstage(
    project_id: ProjectId, body: PathsIn, request: Request, principal: ProjectsWriter, db: DbDep
) -> GitStatusOut:
    project, repository = await _git(request, principal, db, project_id, "write")
    found = await repository.unstage(body.paths)
    await _record(db, project, principal, "git.unstage", body.paths)
    return GitStatusOut.of(found)


@router.post(
    "/{project_id:id}/git/commit",
    status_code=status.HTTP_201_CREATED,
    summary="Commit what is staged (or the given paths); you are its author",
    responses=_GIT,
)
async def git_commit(
    project_id: ProjectId, body: CommitIn, request: Request, principal: ProjectsWriter, db: DbDep
) -> CommitOut:
    project, repository = await _git(request, principal, db, project_id, "write")
    name, email = author_of(principal.email)
    commit = await repository.commit(
        body.message, paths=body.paths, author_name=name, author_email=email
    )
    await _record(
        db, project, principal, "git.commit", body.paths, commit=commit.sha, subject=commit.subject
    )
    return _commit_out(commit)


@router.post(
    "/{project_id:id}/git/checkout",
    summary="Switch branch (or create one), check out a commit, or restore paths",
    responses=_GIT,
)
async def git_checkout(
    project_id: ProjectId,
    body: BranchCheckoutIn | DetachCheckoutIn | RestoreCheckoutIn,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
) -> GitStatusOut:
    project, repository = await _git(request, principal, db, project_id, "write")
    if isinstance(body, BranchCheckoutIn):
        create = body.create or body.ref is not None
        found = await repository.checkout(branch=body.branch, create=create, ref=body.ref)
        await _record(
            db, project, principal, "git.checkout", branch=body.branch, create=create, ref=body.ref
        )
    elif isinstance(body, DetachCheckoutIn):
        found = await repository.checkout(ref=body.ref)
        await _record(db, project, principal, "git.checkout", ref=body.ref)
    else:
        found = await repository.checkout(paths=body.paths, ref=body.ref)
        await _record(db, project, principal, "git.checkout", body.paths, ref=body.ref)
    return GitStatusOut.of(found)


@router.post(
    "/{project_id:id}/git/push",
    summary="Push a branch to a remote on the server's allow-list",
    responses=_GIT,
)
async def git_push(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
    body: RemoteIn | None = None,
) -> ExchangeOut:
    project, repository = await _git(request, principal, db, project_id, "write")
    wanted = body or RemoteIn()
    done = await repository.push(remote=wanted.remote, branch=wanted.branch)
    await _record(
        db,
        project,
        principal,
        "git.push",
        remote=wanted.remote or "origin",
        branch=wanted.branch or done.status.branch,
        head=done.status.head,
    )
    return ExchangeOut(output=done.output, status=GitStatusOut.of(done.status))


@router.post(
    "/{project_id:id}/git/pull",
    summary="Pull (fast-forward only) from a remote on the server's allow-list",
    responses=_GIT,
)
async def git_pull(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
    body: RemoteIn | None = None,
) -> ExchangeOut:
    project, repository = await _git(request, principal, db, project_id, "write")
    wanted = body or RemoteIn()
    done = await repository.pull(remote=wanted.remote, branch=wanted.branch)
    await _record(
        db,
        project,
        principal,
        "git.pull",
        remote=wanted.remote or "origin",
        branch=wanted.branch,
        head=done.status.head,
    )
    return ExchangeOut(output=done.output, status=GitStatusOut.of(done.status))


@router.post(
    "/{project_id:id}/git/init",
    status_code=status.HTTP_201_CREATED,
    summary="Make the project's directory a new, empty git repository",
    responses=_INIT,
)
async def git_init(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
    body: InitIn | None = None,
) -> GitStatusOut:
    project, repository = await _git(request, principal, db, project_id, "write")
    wanted = body or InitIn()
    found = await repository.init(branch=wanted.branch)
    await _record(db, project, principal, "git.init", branch=wanted.branch)
    return GitStatusOut.of(found)

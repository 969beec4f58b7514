"""A project's files: list a folder (with git status), read a file as text (its encoding
detected) or download its bytes, write it with an optimistic version (`If-Match`), create,
move and delete entries, and search names and contents.

Every path is relative to the project's directory and checked by the workspace rules: a path
that leaves it (`..`, absolute, percent-encoded, NUL, backslash, a symlink leading out) is a
422 `path_traversal`; `.git` is never listed nor reached (403). Reading needs the project's
`read` permission, changing files its `write` permission; each change is kept in the
project's activity log. Changes on disk, whoever made them, reach `/ws` subscribers of
`project:<id>` as `project.files_changed` events. See docs/projects.md.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import DbDep
from gathering.api.fields import NO_NUL_PATTERN, Flag, WholeNumber
from gathering.api.routers.projects import (
    ProjectId,
    ProjectsReader,
    ProjectsWriter,
    project_access,
)
from gathering.api.security import rate_limit
from gathering.errors import InvalidInputError
from gathering.projects import Actor
from gathering.projects.files import (
    MAX_GLOB_CHARS,
    MAX_QUERY_CHARS,
    MAX_TEXT_BYTES,
    Entry,
    Precondition,
    create_entry,
    delete_entry,
    list_folder,
    move_entry,
    read_bytes,
    read_text,
    search,
    write_text,
)
from gathering.tools.builtins.files import MAX_SEARCH_RESULTS
from gathering.tools.workspace import MAX_PATH_LENGTH

router = APIRouter(prefix="/projects", tags=["projects"])

_PATH_HELP = (
    "Relative to the project's directory, with / between folders; a path leaving it (.., "
    "absolute, a symlink out) is refused"
)
# What the schema can say of a path (no control character, no backslash); the rest (`..`,
# absolute, encoded forms, symlinks out) is refused by the workspace rules with a 422.
PATH_PATTERN = r"^[^\x00-\x1f\x7f\\]*$"
FolderPath = Annotated[
    str,
    Query(max_length=MAX_PATH_LENGTH, pattern=PATH_PATTERN, description=_PATH_HELP),
]
FilePath = Annotated[
    str,
    Query(min_length=1, max_length=MAX_PATH_LENGTH, pattern=PATH_PATTERN, description=_PATH_HELP),
]
BodyPath = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATH_LENGTH, pattern=PATH_PATTERN, description=_PATH_HELP),
]
ENCODING_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$"
MAX_HEADER_CHARS = 2_000

Answers = dict[int | str, dict[str, Any]]
_REFUSED_PATH: Answers = {
    403: {"description": "The path is in a .git folder, or you lack the permission"},
    404: {"description": "No such project (or not yours), or no such file or folder"},
    422: {"description": "The path leaves the project (`path_traversal`), or names the wrong kind"},
}
_CHANGE: Answers = {
    **_REFUSED_PATH,
    409: {"description": "Something is already there (create, move), or a folder is not empty"},
}
_VERSIONED: Answers = {
    **_REFUSED_PATH,
    201: {
        "description": "A new file was created",
        "headers": {"ETag": {"schema": {"type": "string"}}},
    },
    412: {"description": "The file changed since that version was read (`stale_version`)"},
    428: {"description": "The file exists and If-Match is missing (`version_required`)"},
}
_ETAG: dict[str, Any] = {
    "ETag": {"description": "The file's version, quoted", "schema": {"type": "string"}}
}


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    path: str = Field(description="From the project's directory")
    kind: Literal["file", "directory", "symlink", "other"]
    size: int | None = Field(description="Bytes, for a file")
    modified: datetime
    git_status: str | None = Field(
        description="modified, added, deleted, renamed, copied, untracked, ignored or conflicted "
        "(for a folder: what it holds), when the project is a git repository"
    )
    git_code: str | None = Field(description="git's two letters (XY of `git status --short`)")


class FolderOut(BaseModel):
    path: str = Field(description='The folder, from the project\'s directory ("." for it)')
    entries: list[EntryOut] = Field(description="Folders first, then by name; .git is left out")
    truncated: bool = Field(description="More entries than are listed")
    git_repository: bool
    git_problem: str | None = Field(description="Why there is no git status, if git failed")


class FileOut(BaseModel):
    path: str = Field(description="The file read (a symlink inside the project is followed)")
    text: str | None = Field(description="Null for a binary file: download it from /files/raw")
    encoding: str | None = Field(description="The encoding the text was read in")
    binary: bool
    size: int
    version: str = Field(description="SHA-256 of its bytes: send it back in If-Match to write")
    modified: datetime


class WriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_TEXT_BYTES, description="The whole new text")
    encoding: str | None = Field(
        default=None,
        pattern=ENCODING_PATTERN,
        description="Default: the file's own encoding (UTF-8 for a new or binary file)",
    )


class WrittenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    path: str
    version: str
    encoding: str
    size: int
    created: bool


class CreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: BodyPath
    kind: Literal["file", "directory"] = "file"
    text: str | None = Field(
        default=None, max_length=MAX_TEXT_BYTES, description="A new file's text (UTF-8)"
    )
    parents: Flag = Field(default=False, description="Create missing folders on the way")


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: BodyPath = Field(alias="from")
    destination: BodyPath = Field(alias="to")


class MovedOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    source: str = Field(alias="from")
    destination: str = Field(alias="to")
    kind: Literal["file", "directory", "symlink", "other"]


class NameMatch(BaseModel):
    path: str
    kind: Literal["file", "directory", "symlink", "other"]
    size: int | None


class LineMatch(BaseModel):
    path: str
    line: int = Field(description="From 1")
    text: str = Field(description="The line, cut to 300 characters")


class SearchOut(BaseModel):
    mode: Literal["name", "content"]
    matches: list[NameMatch | LineMatch]
    truncated: bool
    note: str | None = Field(description="Why the list was cut")


def _entry(entry: Entry) -> EntryOut:
    return EntryOut.model_validate(entry)


def _etag(version: str) -> str:
    return f'"{version}"'


def _entity_tags(value: str | None) -> tuple[str, ...] | None:
    """The strong entity tags of an If-Match header ("*" for any); None when not given."""
    if value is None or not value.strip():
        return None
    tags = []
    for part in (piece.strip() for piece in value.split(",")):
        if part and not part.startswith("W/"):  # a weak tag never matches a strong validator
            tags.append(part[1:-1] if len(part) >= 2 and part[0] == part[-1] == '"' else part)
    return tuple(tags)


def _precondition(if_match: str | None, if_none_match: str | None) -> Precondition:
    if if_none_match is not None and if_none_match.strip() not in ("", "*"):
        raise InvalidInputError(
            "a write takes If-None-Match: * only (write only if the file does not exist)",
            hint="drop If-None-Match, or send *",
        )
    any_version = if_none_match is not None and if_none_match.strip() == "*"
    return Precondition(_entity_tags(if_match), any_version)


def _attachment(name: str) -> str:
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "download"
    encoded = quote(name, safe="", errors="replace")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}"


@router.get(
    "/{project_id:id}/files/tree",
    summary="List one folder of the project (lazily), with git status",
    responses=_REFUSED_PATH,
    dependencies=[rate_limit("relaxed")],
)
async def files_tree(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsReader,
    db: DbDep,
    path: FolderPath = "",
) -> FolderOut:
    project = await project_access(request, principal, db, project_id, "read")
    folder = await list_folder(project, path)
    return FolderOut(
        path=folder.path,
        entries=[_entry(entry) for entry in folder.entries],
        truncated=folder.truncated,
        git_repository=folder.git_repository,
        git_problem=folder.git_problem,
    )


@router.get(
    "/{project_id:id}/files/content",
    summary="Read a file as text (encoding detected); a binary file comes without text",
    responses={200: {"headers": _ETAG}, **_REFUSED_PATH},
    dependencies=[rate_limit("relaxed")],
)
async def read_file(
    project_id: ProjectId,
    path: FilePath,
    request: Request,
    response: Response,
    principal: ProjectsReader,
    db: DbDep,
) -> FileOut:
    project = await project_access(request, principal, db, project_id, "read")
    found = await read_text(project, path)
    response.headers["ETag"] = _etag(found.version)
    return FileOut.model_validate(found, from_attributes=True)


@router.get(
    "/{project_id:id}/files/raw",
    summary="Download a file's bytes (an attachment, never rendered)",
    response_class=Response,
    responses={
        200: {
            "description": "The file's bytes",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "headers": _ETAG,
        },
        **_REFUSED_PATH,
    },
    dependencies=[rate_limit("relaxed")],
)
async def download_file(
    project_id: ProjectId, path: FilePath, request: Request, principal: ProjectsReader, db: DbDep
) -> Response:
    project = await project_access(request, principal, db, project_id, "read")
    found = await read_bytes(project, path)
    headers = {
        "Content-Disposition": _attachment(found.name),
        "X-Content-Type-Options": "nosniff",
        "ETag": _etag(found.version),
    }
    return Response(found.data, media_type="application/octet-stream", headers=headers)


@router.put(
    "/{project_id:id}/files/content",
    summary="Write a file's text: an existing file only with If-Match (the version read)",
    responses={200: {"headers": _ETAG}, **_VERSIONED},
)
async def write_file(
    project_id: ProjectId,
    path: FilePath,
    body: WriteIn,
    request: Request,
    response: Response,
    principal: ProjectsWriter,
    db: DbDep,
    if_match: Annotated[
        str | None,
        Header(
            max_length=MAX_HEADER_CHARS,
            description='The version you read ("<version>"), or * to replace whatever is there',
        ),
    ] = None,
    if_none_match: Annotated[
        str | None,
        Header(max_length=MAX_HEADER_CHARS, description="* : only if the file does not exist"),
    ] = None,
) -> WrittenOut:
    project = await project_access(request, principal, db, project_id, "write")
    condition = _precondition(if_match, if_none_match)
    actor = Actor(user_id=principal.user_id)
    written = await write_text(
        db, project, actor, path, body.text, condition, encoding=body.encoding
    )
    response.headers["ETag"] = _etag(written.version)
    if written.created:
        response.status_code = status.HTTP_201_CREATED
    return WrittenOut.model_validate(written)


@router.post(
    "/{project_id:id}/files/entry",
    status_code=status.HTTP_201_CREATED,
    summary="Create a file (with text) or a folder",
    responses=_CHANGE,
)
async def create_file(
    project_id: ProjectId, body: CreateIn, request: Request, principal: ProjectsWriter, db: DbDep
) -> EntryOut:
    project = await project_access(request, principal, db, project_id, "write")
    actor = Actor(user_id=principal.user_id)
    entry = await create_entry(
        db, project, actor, body.path, body.kind, text=body.text, parents=body.parents
    )
    return _entry(entry)


@router.post(
    "/{project_id:id}/files/move",
    summary="Rename or move a file or folder (never over something that is there)",
    responses=_CHANGE,
)
async def move_file(
    project_id: ProjectId, body: MoveIn, request: Request, principal: ProjectsWriter, db: DbDep
) -> MovedOut:
    project = await project_access(request, principal, db, project_id, "write")
    actor = Actor(user_id=principal.user_id)
    source, destination, kind = await move_entry(db, project, actor, body.source, body.destination)
    return MovedOut(source=source, destination=destination, kind=kind)


@router.delete(
    "/{project_id:id}/files/entry",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a file, a symlink (not what it points to), or a folder",
    responses=_CHANGE,
)
async def delete_file(
    project_id: ProjectId,
    path: FilePath,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
    recursive: Annotated[bool, Query(description="Delete a folder with all it holds")] = False,
) -> Response:
    project = await project_access(request, principal, db, project_id, "write")
    await delete_entry(db, project, Actor(user_id=principal.user_id), path, recursive=recursive)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{project_id:id}/files/search",
    summary="Search names (any case; a glob with * ? [) or contents (literal or regex)",
    responses=_REFUSED_PATH,
)
async def search_files(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsReader,
    db: DbDep,
    query: Annotated[
        str,
        Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NO_NUL_PATTERN),
    ],
    mode: Literal["name", "content"] = "name",
    path: FolderPath = "",
    regex: Annotated[bool, Query(description="content: the query is a regular expression")] = False,
    glob: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_GLOB_CHARS,
            pattern=NO_NUL_PATTERN,
            description="content: only files matching this glob (e.g. *.py)",
        ),
    ] = None,
    ignore_case: bool = True,
    limit: Annotated[WholeNumber, Query(ge=1, le=MAX_SEARCH_RESULTS)] = 200,
) -> SearchOut:
    project = await project_access(request, principal, db, project_id, "read")
    result = await search(
        project,
        query,
        mode=mode,
        path=path,
        is_regex=regex,
        glob=glob,
        ignore_case=ignore_case,
        limit=limit,
    )
    return SearchOut.model_validate(result, from_attributes=True)

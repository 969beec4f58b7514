"""Projects: a directory that agents and people work on together. The owner (and admins)
manage a project: its settings, its members and their permissions (`read`, `write`,
`terminal`), the agents and circles linked to it (its directory is their workspace). Members
see it and act within their permissions. A project the caller may not read answers 404, like
one that does not exist. Events go to the subject `project:<id>`. API keys need
`projects:read` and `projects:write`. See docs/projects.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import MAX_ID, DbDep, app_state
from gathering.api.fields import WholeNumber
from gathering.api.security import ensure_owner, not_found, rate_limit, require_scope
from gathering.auth.principal import Principal
from gathering.db import Database
from gathering.errors import NotFoundError, PermissionDeniedError
from gathering.projects import (
    PERMISSIONS,
    Permission,
    ProjectChange,
    ProjectIn,
    ProjectMemberIn,
    ProjectRecord,
    ProjectSettings,
    change_project,
    create_project,
    delete_project,
    get_project,
    link,
    linked,
    list_activity,
    list_members,
    list_projects,
    permissions_of,
    refresh_stack,
    remove_member,
    set_member,
    unlink,
)
from gathering.projects.definition import read_only

router = APIRouter(prefix="/projects", tags=["projects"])
ProjectsReader = Annotated[Principal, Depends(require_scope("projects:read"))]
ProjectsWriter = Annotated[Principal, Depends(require_scope("projects:write"))]
ProjectId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The project's id")]
UserId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The person's account")]
LinkedId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The agent's or circle's id")]
Linkable = Literal["agents", "circles"]


async def project_access(
    conn: HTTPConnection, principal: Principal, db: Database, project_id: int, need: Permission
) -> ProjectRecord:
    """Project `project_id` once the caller may `need` in it: 404 (audited) when they may not
    even read it, 403 when they lack `need` (a viewer never writes)."""
    try:
        project = await get_project(db, project_id)
    except NotFoundError:
        raise not_found("project", project_id) from None
    allowed = await permissions_of(db, project, principal.user_id)
    if "read" not in allowed:
        await ensure_owner(
            conn, principal, project.owner_id, resource="project", resource_id=project_id
        )
        allowed = frozenset(PERMISSIONS)  # an admin
    if need not in allowed or (need != "read" and principal.read_only):
        raise PermissionDeniedError(
            f"you may not {_DOING[need]} in project {project.name!r}",
            hint=f"its owner can give you the `{need}` permission",
        )
    return project


_DOING = {"read": "look", "write": "change files", "terminal": "open a terminal"}


async def _managed(
    request: Request, principal: Principal, db: Database, project_id: int
) -> ProjectRecord:
    """The project, once the caller manages it (its owner, an admin)."""
    project = await project_access(request, principal, db, project_id, "read")
    if not principal.owns(project.owner_id):
        raise PermissionDeniedError(
            f"only the owner of project {project.name!r} changes it",
            hint="ask its owner",
        )
    return project


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner_id: int
    name: str
    description: str
    directory: str = Field(description="Where its files are, on the server")
    origin: str = Field(description="created, cloned or registered")
    source: str | None = Field(description="The git URL it was cloned from")
    settings: ProjectSettings
    stack: dict[str, Any] = Field(description="Languages, package managers, test command")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, project: ProjectRecord) -> ProjectOut:
        return cls.model_validate({**project.__dict__, "directory": str(project.directory)})


class LinkOut(BaseModel):
    id: int
    name: str
    linked_at: datetime


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: int
    email: str
    permissions: list[str]
    added_at: datetime


class ProjectDetailOut(ProjectOut):
    permissions: list[str] = Field(description="What you may do in it")
    agents: list[LinkOut]
    circles: list[LinkOut]


class ContextOut(BaseModel):
    context: str = Field(description="What linked agents are told about the project")


class PermissionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permissions: list[Permission] = Field(default_factory=read_only, min_length=1, max_length=3)


class ActivityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int | None = Field(description="The person who did it")
    agent_id: int | None = Field(description="The agent who did it (both null: seen on disk)")
    action: str
    path: str | None
    detail: dict[str, Any]
    at: datetime


async def _detail(db: Database, principal: Principal, project: ProjectRecord) -> ProjectDetailOut:
    allowed = await permissions_of(db, project, principal.user_id, is_admin=principal.is_admin)
    return ProjectDetailOut.model_validate(
        {
            **ProjectOut.of(project).model_dump(),
            "permissions": [p for p in PERMISSIONS if p in allowed],
            "agents": await linked(db, project.id, "agent"),
            "circles": await linked(db, project.id, "circle"),
        }
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a project (an empty directory, a clone, or a registered directory)",
    dependencies=[rate_limit("bulk")],
    responses={
        404: {"description": "The directory to register does not exist"},
        409: {"description": "You have a project of that name, or the directory is taken"},
        504: {"description": "The clone did not finish in time"},
    },
)
async def create(
    body: ProjectIn, request: Request, principal: ProjectsWriter, db: DbDep
) -> ProjectDetailOut:
    settings = app_state(request).settings
    project = await create_project(
        db, settings, principal.user_id, body, is_admin=principal.is_admin
    )
    return await _detail(db, principal, project)


@router.get(
    "", summary="List the projects you own or are a member of", dependencies=[rate_limit("relaxed")]
)
async def list_all(
    principal: ProjectsReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[ProjectOut]:
    projects = await list_projects(db, principal.owner_filter, limit=limit, offset=offset)
    return [ProjectOut.of(project) for project in projects]


@router.get("/{project_id:id}", summary="One project", dependencies=[rate_limit("relaxed")])
async def show(
    project_id: ProjectId, request: Request, principal: ProjectsReader, db: DbDep
) -> ProjectDetailOut:
    project = await project_access(request, principal, db, project_id, "read")
    return await _detail(db, principal, project)


@router.patch("/{project_id:id}", summary="Change a project's description or settings")
async def change(
    project_id: ProjectId,
    body: ProjectChange,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
) -> ProjectDetailOut:
    project = await _managed(request, principal, db, project_id)
    project = await change_project(db, project, body)
    if body.settings is not None:
        project = await refresh_stack(db, project)  # the context text holds the settings
    return await _detail(db, principal, project)


@router.delete(
    "/{project_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a project (and the directory it made; a registered one is kept)",
)
async def remove(
    project_id: ProjectId, request: Request, principal: ProjectsWriter, db: DbDep
) -> Response:
    project = await _managed(request, principal, db, project_id)
    await delete_project(db, project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{project_id:id}/stack",
    summary="Detect the project's stack again and rebuild its context text",
    dependencies=[rate_limit("bulk")],
)
async def refresh(
    project_id: ProjectId, request: Request, principal: ProjectsWriter, db: DbDep
) -> ProjectDetailOut:
    project = await project_access(request, principal, db, project_id, "write")
    return await _detail(db, principal, await refresh_stack(db, project))


@router.get(
    "/{project_id:id}/context",
    summary="What linked agents are told about the project",
    dependencies=[rate_limit("relaxed")],
)
async def context(
    project_id: ProjectId, request: Request, principal: ProjectsReader, db: DbDep
) -> ContextOut:
    project = await project_access(request, principal, db, project_id, "read")
    return ContextOut(context=project.context)


@router.get("/{project_id:id}/members", summary="The people who may work on the project")
async def members(
    project_id: ProjectId, request: Request, principal: ProjectsReader, db: DbDep
) -> list[MemberOut]:
    project = await project_access(request, principal, db, project_id, "read")
    return [MemberOut.model_validate(m) for m in await list_members(db, project.id)]


@router.put(
    "/{project_id:id}/members/{user_id:id}",
    summary="Let a person work on the project, or change what they may do",
    responses={409: {"description": "The owner may already do everything"}},
)
async def put_member(
    project_id: ProjectId,
    user_id: UserId,
    body: PermissionsIn,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
) -> MemberOut:
    project = await _managed(request, principal, db, project_id)
    member = ProjectMemberIn(user_id=user_id, permissions=body.permissions)
    return MemberOut.model_validate(await set_member(db, project, member))


@router.delete(
    "/{project_id:id}/members/{user_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a person from the project",
)
async def delete_member(
    project_id: ProjectId, user_id: UserId, request: Request, principal: ProjectsWriter, db: DbDep
) -> Response:
    project = await _managed(request, principal, db, project_id)
    await remove_member(db, project.id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/{project_id:id}/{kind}/{linked_id:id}",
    summary="Link one of the owner's agents or circles: the project's directory becomes its "
    "workspace (one linked elsewhere moves here)",
)
async def put_link(
    project_id: ProjectId,
    kind: Linkable,
    linked_id: LinkedId,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
) -> ProjectDetailOut:
    project = await _managed(request, principal, db, project_id)
    await link(db, project, kind.removesuffix("s"), linked_id)
    return await _detail(db, principal, project)


@router.delete(
    "/{project_id:id}/{kind}/{linked_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unlink an agent or a circle (it works in its own workspace again)",
)
async def delete_link(
    project_id: ProjectId,
    kind: Linkable,
    linked_id: LinkedId,
    request: Request,
    principal: ProjectsWriter,
    db: DbDep,
) -> Response:
    project = await _managed(request, principal, db, project_id)
    await unlink(db, project, kind.removesuffix("s"), linked_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{project_id:id}/activity",
    summary="Who changed what in the project, newest first",
    dependencies=[rate_limit("relaxed")],
)
async def activity(
    project_id: ProjectId,
    request: Request,
    principal: ProjectsReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 50,
    before: Annotated[
        WholeNumber | None, Query(ge=1, le=MAX_ID, description="Page: activity ids below this")
    ] = None,
) -> list[ActivityOut]:
    project = await project_access(request, principal, db, project_id, "read")
    rows = await list_activity(db, project.id, limit=limit, before=before)
    return [ActivityOut.model_validate(row) for row in rows]

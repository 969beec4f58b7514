"""Projects as stored (migration 0023): the project, who may work on it (members and their
permissions), the agents and circles linked to it, and what happened in it (activity)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from gathering.db.database import Queries
from gathering.db.locks import LockKey
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, NotFoundError
from gathering.events import Event
from gathering.projects.definition import (
    PERMISSIONS,
    ProjectChange,
    ProjectIn,
    ProjectMemberIn,
    ProjectSettings,
)

SQL = queries_of("gathering.projects")
ORIGINS = ("created", "cloned", "registered")
ALL_PERMISSIONS = frozenset(PERMISSIONS)


@dataclass(frozen=True)
class ProjectRecord:
    """A stored project."""

    id: int
    owner_id: int
    name: str
    description: str
    directory: Path
    origin: str
    source: str | None
    settings: ProjectSettings
    stack: dict[str, Any]
    context: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ProjectRecord:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["directory"] = Path(row["directory"])
        values["settings"] = ProjectSettings.model_validate(row["settings"])
        return cls(**values)

    @property
    def subject(self) -> str:
        """The subject of its events (`/ws?subjects=project:<id>`)."""
        return f"project:{self.id}"


@dataclass(frozen=True)
class ProjectMember:
    """A person who may work on a project."""

    user_id: int
    email: str
    permissions: tuple[str, ...]
    added_at: datetime


@dataclass(frozen=True)
class Actor:
    """Who did something in a project: a person, an agent, or (both None) a change seen on
    disk whose author is not known."""

    user_id: int | None = None
    agent_id: int | None = None


@dataclass(frozen=True)
class Activity:
    """One change in a project's activity log."""

    id: int
    project_id: int
    user_id: int | None
    agent_id: int | None
    action: str
    path: str | None
    detail: dict[str, Any]
    at: datetime


def files_lock(project_id: int) -> LockKey:
    """The lock a change of the project's files takes (the files API; deleting the project)."""
    return LockKey("project-files", str(project_id))


def project_event(project: ProjectRecord, kind: str, body: dict[str, Any]) -> Event:
    """A `project.<kind>` event on the project's subject."""
    data = {"project_id": project.id, "project": project.name, **body}
    return Event(f"project.{kind}", data, subject=project.subject, source="projects")


async def insert_project(
    tx: Queries, owner_id: int, spec: ProjectIn, directory: Path, origin: str, source: str | None
) -> ProjectRecord:
    """Store a new project whose directory is ready; `ConflictError` when the owner has a
    project of that name or another project has the directory."""
    row = await tx.fetch_one(
        SQL["insert_project"],
        owner_id,
        spec.name,
        spec.description,
        str(directory),
        origin,
        source,
        Jsonb(spec.settings.model_dump()),
    )
    if row is None:
        if await tx.fetch_one(SQL["project_with_directory"], str(directory)) is not None:
            raise ConflictError(
                f"the directory {str(directory)!r} is already a project",
                hint="a directory belongs to one project; register another",
            )
        raise ConflictError(
            f"you have a project named {spec.name!r}",
            hint="project names are unique per owner; pick another",
        )
    return ProjectRecord.from_row(row)


async def get_project(db: Queries, project_id: int) -> ProjectRecord:
    """Project `project_id`; `NotFoundError` when there is none."""
    row = await db.fetch_one(SQL["project_by_id"], project_id)
    if row is None:
        raise NotFoundError(f"no project {project_id}", hint="list them: `gathering projects list`")
    return ProjectRecord.from_row(row)


async def project_named(db: Queries, owner_id: int, name: str) -> ProjectRecord:
    """The owner's project called `name`."""
    row = await db.fetch_one(SQL["project_by_name"], owner_id, name)
    if row is None:
        raise NotFoundError(
            f"no project named {name!r}", hint="list them: `gathering projects list`"
        )
    return ProjectRecord.from_row(row)


async def list_projects(
    db: Queries, user_id: int | None, *, limit: int = 100, offset: int = 0
) -> list[ProjectRecord]:
    """The projects `user_id` owns or is a member of (all of them for None), oldest first."""
    rows = await db.fetch_all(SQL["projects"], user_id, limit, offset)
    return [ProjectRecord.from_row(row) for row in rows]


async def change_project(
    db: Queries, project: ProjectRecord, change: ProjectChange
) -> ProjectRecord:
    """Apply the fields `change` gives."""
    description = project.description if change.description is None else change.description
    settings = project.settings if change.settings is None else change.settings
    row = await db.fetch_one(
        SQL["update_project"], project.id, description, Jsonb(settings.model_dump())
    )
    if row is None:
        raise NotFoundError(f"no project {project.id}")
    return ProjectRecord.from_row(row)


async def set_stack(
    db: Queries, project_id: int, stack: dict[str, Any], context: str
) -> ProjectRecord:
    """Keep what stack detection found and the context text built from it."""
    row = await db.fetch_one(SQL["update_stack"], project_id, Jsonb(stack), context)
    if row is None:
        raise NotFoundError(f"no project {project_id}")
    return ProjectRecord.from_row(row)


async def delete_project_row(db: Queries, project_id: int) -> ProjectRecord:
    """Delete the project's row (members, links and activity go with it)."""
    row = await db.fetch_one(SQL["delete_project"], project_id)
    if row is None:
        raise NotFoundError(f"no project {project_id}")
    return ProjectRecord.from_row(row)


# --- who may do what ---------------------------------------------------------------------------


async def permissions_of(
    db: Queries, project: ProjectRecord, user_id: int | None, *, is_admin: bool = False
) -> frozenset[str]:
    """What `user_id` may do in the project: everything for its owner and admins, a member's
    permissions, nothing for anyone else (`user_id` None: a local owner-less caller)."""
    if is_admin or user_id == project.owner_id:
        return ALL_PERMISSIONS
    if user_id is None:
        return frozenset()
    row = await db.fetch_one(SQL["member_permissions"], project.id, user_id)
    return frozenset(row["permissions"]) if row is not None else frozenset()


async def set_member(db: Queries, project: ProjectRecord, member: ProjectMemberIn) -> ProjectMember:
    """Add a person to the project, or change their permissions."""
    if member.user_id == project.owner_id:
        raise ConflictError("the owner may already do everything in the project")
    if await db.fetch_one(SQL["user_exists"], member.user_id) is None:
        raise NotFoundError(f"no user {member.user_id}")
    await db.execute(SQL["upsert_member"], project.id, member.user_id, member.permissions)
    return next(m for m in await list_members(db, project.id) if m.user_id == member.user_id)


async def remove_member(db: Queries, project_id: int, user_id: int) -> None:
    if await db.fetch_one(SQL["delete_member"], project_id, user_id) is None:
        raise NotFoundError(f"user {user_id} is not a member of project {project_id}")


async def list_members(db: Queries, project_id: int) -> list[ProjectMember]:
    rows = await db.fetch_all(SQL["members"], project_id)
    return [
        ProjectMember(row["user_id"], row["email"], tuple(row["permissions"]), row["added_at"])
        for row in rows
    ]


# --- links -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Linkable:
    """The statements of one kind of thing a project links (agents, circles)."""

    owner: str
    ref: str
    link: str
    unlink: str
    listed: str


_LINKABLE = {
    "agent": _Linkable("agent_owner", "agent_ref", "link_agent", "unlink_agent", "linked_agents"),
    "circle": _Linkable(
        "circle_owner", "circle_ref", "link_circle", "unlink_circle", "linked_circles"
    ),
}


async def _owner_of(db: Queries, what: str, thing_id: int) -> int:
    row = await db.fetch_one(SQL[_LINKABLE[what].owner], thing_id)
    if row is None:
        raise NotFoundError(f"no {what} {thing_id}")
    return int(row["owner_id"])


async def link(db: Queries, project: ProjectRecord, what: str, thing_id: int) -> None:
    """Link agent or circle `thing_id` (the project owner's) to the project: its directory
    becomes their workspace. One linked elsewhere moves here."""
    if await _owner_of(db, what, thing_id) != project.owner_id:
        raise NotFoundError(
            f"no {what} {thing_id} of the project's owner",
            hint=f"link the owner's own {what}s",
        )
    await db.execute(SQL[_LINKABLE[what].link], thing_id, project.id)


async def linkable_id(db: Queries, what: str, ref: int | str, owner_id: int) -> int:
    """The id of `owner_id`'s agent or circle named `ref` (an id or a name)."""
    by_id = ref if isinstance(ref, int) else None
    row = await db.fetch_one(SQL[_LINKABLE[what].ref], by_id, str(ref), owner_id)
    if row is None:
        raise NotFoundError(f"no {what} {ref!r} of the project's owner")
    return int(row["id"])


async def unlink(db: Queries, project: ProjectRecord, what: str, thing_id: int) -> None:
    if await db.fetch_one(SQL[_LINKABLE[what].unlink], thing_id, project.id) is None:
        raise NotFoundError(f"{what} {thing_id} is not linked to project {project.name!r}")


async def linked(db: Queries, project_id: int, what: str) -> list[dict[str, Any]]:
    """The agents or circles linked to the project: id, name, linked_at."""
    return [dict(row) for row in await db.fetch_all(SQL[_LINKABLE[what].listed], project_id)]


async def project_of_circle(db: Queries, circle_id: int) -> ProjectRecord | None:
    """The project circle `circle_id` is linked to, if any."""
    row = await db.fetch_one(SQL["project_of_circle"], circle_id)
    return ProjectRecord.from_row(row) if row is not None else None


# --- activity ----------------------------------------------------------------------------------


async def record_activity(
    db: Queries,
    project: ProjectRecord,
    actor: Actor,
    action: str,
    path: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Activity:
    """Keep that `actor` did `action` (e.g. `file.write`, `git.commit`) on `path`."""
    row = await db.fetch_one(
        SQL["insert_activity"],
        project.id,
        actor.user_id,
        actor.agent_id,
        action,
        path,
        Jsonb(detail or {}),
    )
    assert row is not None
    return Activity(**row)


async def list_activity(
    db: Queries, project_id: int, *, limit: int = 50, before: int | None = None
) -> list[Activity]:
    """The project's activity, newest first (before activity id `before`, to page)."""
    return [
        Activity(**row) for row in await db.fetch_all(SQL["activity"], project_id, limit, before)
    ]

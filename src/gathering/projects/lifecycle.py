"""A project's life: made (with its directory), its stack and context refreshed, deleted (with
the directory it made)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

from gathering.config import Settings
from gathering.db.database import Database, Queries
from gathering.db.locks import LockKey, transaction_lock
from gathering.errors import ConflictError, PermissionDeniedError
from gathering.projects.definition import ProjectIn
from gathering.projects.directories import (
    cloned_directory,
    new_directory,
    registered_directory,
    remove_directory,
)
from gathering.projects.stack import build_context, detect_stack
from gathering.projects.store import (
    SQL,
    ProjectRecord,
    delete_project_row,
    files_lock,
    insert_project,
    set_stack,
)

REGISTRATIONS = LockKey("project-registrations")


async def create_project(
    db: Database, settings: Settings, owner_id: int, spec: ProjectIn, *, is_admin: bool = False
) -> ProjectRecord:
    """A new project of `owner_id`: its directory made, cloned or (admins) registered, then its
    stack detected. Nothing is left on disk when it fails."""
    if await db.fetch_one(SQL["project_by_name"], owner_id, spec.name) is not None:
        raise ConflictError(  # before a clone, which may take long
            f"you have a project named {spec.name!r}",
            hint="project names are unique per owner; pick another",
        )
    if spec.directory is not None:  # registered: nothing of ours to remove on failure
        if not is_admin:
            raise PermissionDeniedError(
                "only an admin may register an existing directory",
                hint="create the project without `directory`, or clone one (clone_from)",
            )
        directory = await asyncio.to_thread(registered_directory, settings, spec.directory)
        async with db.transaction() as tx:  # one registration at a time: none nests in another
            await transaction_lock(tx, REGISTRATIONS, wait=True)
            if await tx.fetch_one(SQL["overlapping_project"], str(directory)) is not None:
                raise ConflictError(
                    f"{spec.directory!r} holds, or lies inside, another project's directory",
                    hint="a project's files belong to it alone: register another directory",
                )
            project = await insert_project(tx, owner_id, spec, directory, "registered", None)
        return await refresh_stack(db, project)
    if spec.clone_from is not None:
        directory = await cloned_directory(settings, spec.name, spec.clone_from)
        origin, source = "cloned", _without_credentials(spec.clone_from)
    else:
        directory = await new_directory(settings, spec.name)
        origin, source = "created", None
    try:
        project = await insert_project(db, owner_id, spec, directory, origin, source)
    except BaseException:
        await remove_directory(directory, origin)
        raise
    return await refresh_stack(db, project)


def _without_credentials(url: str) -> str:
    """`url` without the user name and password it may carry (kept and shown as the source)."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


async def refresh_stack(db: Queries, project: ProjectRecord) -> ProjectRecord:
    """Detect the project's stack again and rebuild its context text."""
    stack = await asyncio.to_thread(detect_stack, project.directory)
    context = await asyncio.to_thread(build_context, project, stack)
    return await set_stack(db, project.id, stack, context)


async def delete_project(db: Database, project: ProjectRecord) -> None:
    """Delete the project; the directory goes too, unless it was registered. Its knowledge
    documents stay their owners'. A write through the files API finishes first."""
    async with db.transaction() as tx:
        await transaction_lock(tx, files_lock(project.id), wait=True)
        deleted = await delete_project_row(tx, project.id)
    await remove_directory(deleted.directory, deleted.origin)

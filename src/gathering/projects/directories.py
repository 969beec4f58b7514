"""Where a project's files live: a new folder under the projects root, a clone of an allowed
git URL, or (admins) an existing directory under an allowed root. There is never a browser of
the server's filesystem: a registered directory is named, checked and taken as it is."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from gathering.config import Settings
from gathering.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from gathering.tools.builtins.git import clone_repository


def _new_folder_path(settings: Settings, name: str) -> Path:
    root = settings.projects_directory
    root.mkdir(parents=True, exist_ok=True, mode=0o750)
    return Path(os.path.realpath(root)) / f"{name}-{secrets.token_hex(4)}"


def _make_folder(settings: Settings, name: str) -> Path:
    folder = _new_folder_path(settings, name)
    folder.mkdir(mode=0o750)
    return folder


async def new_directory(settings: Settings, name: str) -> Path:
    """A new empty folder for project `name` under the projects root."""
    return await asyncio.to_thread(_make_folder, settings, name)


async def cloned_directory(settings: Settings, name: str, url: str) -> Path:
    """A new folder under the projects root holding a clone of `url` (on the clone allow-list)."""
    target = await asyncio.to_thread(_new_folder_path, settings, name)
    await clone_repository(
        url,
        target,
        allowed=settings.project_clone_allowed,
        forbidden=[settings.data_dir, settings.projects_directory],  # others' files
    )
    return target


def _overlaps(one: Path, other: Path) -> bool:
    return one == other or one.is_relative_to(other) or other.is_relative_to(one)


def registered_directory(settings: Settings, given: str) -> Path:
    """The real path of `given`, an existing directory strictly below an allowed root and away
    from the server's own data; blocking."""
    if not given.startswith("/"):
        raise InvalidInputError(
            f"{given!r} is not an absolute path", hint="name the directory from /"
        )
    roots = [Path(os.path.realpath(root)) for root in settings.project_register_roots]
    if not roots:
        raise PermissionDeniedError(
            "registering existing directories is not enabled",
            hint="an operator can allow roots: GATHERING_PROJECT_REGISTER_ROOTS",
        )
    real = Path(os.path.realpath(given))
    if not any(real != root and real.is_relative_to(root) for root in roots):
        raise PermissionDeniedError(
            f"{given!r} is not below an allowed root",
            hint="register a directory inside one of GATHERING_PROJECT_REGISTER_ROOTS",
        )
    for own in (settings.data_dir, settings.projects_directory):
        if _overlaps(real, Path(os.path.realpath(own))):
            raise PermissionDeniedError(
                f"{given!r} holds or is inside the server's data directory or projects root",
                hint="register a directory of its own",
            )
    if not real.is_dir():
        raise NotFoundError(f"{given!r} is not an existing directory")
    return real


async def remove_directory(directory: Path, origin: str) -> None:
    """Delete a project's directory once the project is deleted; a registered directory was
    never ours and is left as it is."""
    if origin != "registered":
        await asyncio.to_thread(shutil.rmtree, directory, True)

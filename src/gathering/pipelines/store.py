"""Stored pipelines: each owner's definitions by name, every saved version kept.

    record = await create_pipeline(db, document, owner_id=user.id)
    record, changed = await update_pipeline(db, record.id, edited, by=user.id)
    first = await get_version(db, record.id, 1)

Saving checks the definition (`check`: `InvalidInputError` with `details["problems"]`). A save
that changes the definition adds a version, numbered from 1; one identical to the current
version adds none. Versions are never changed (the database refuses it), so a run can pin the
version it started with. Names are unique per owner (`ConflictError`). These functions do not
check who asks: the API shows an owner only their own pipelines.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gathering.db.database import Database, Queries
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, DatabaseError, InvalidInputError, NotFoundError
from gathering.pipelines.definition import PipelineDefinition, parse_definition
from gathering.pipelines.validation import check

_SQL = queries_of("gathering.pipelines")
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # JSON's escape of NUL, not a text "\\u0000"
MAX_LIST = 1_000
Applied = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class PipelineRecord:
    """A stored pipeline with its current version's definition (`document`, as saved)."""

    id: int
    owner_id: int
    name: str
    description: str
    version: int
    document: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def definition(self) -> PipelineDefinition:
        return parse_definition(self.document)


@dataclass(frozen=True)
class PipelineVersion:
    """One saved version of a pipeline. `document` is None in `list_versions`, which gives
    only each version's `name`."""

    pipeline_id: int
    version: int
    name: str
    created_at: datetime
    created_by: int | None
    document: dict[str, Any] | None = None


def _record(row: Mapping[str, Any]) -> PipelineRecord:
    return PipelineRecord(
        id=int(row["id"]),
        owner_id=int(row["owner_id"]),
        name=row["name"],
        description=row["description"],
        version=int(row["current_version"]),
        document=dict(row["definition"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _version(row: Mapping[str, Any]) -> PipelineVersion:
    document = dict(row["definition"]) if "definition" in row else None
    return PipelineVersion(
        pipeline_id=int(row["pipeline_id"]),
        version=int(row["version"]),
        name=str(document["name"] if document is not None else row["name"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        document=document,
    )


async def _checked(
    definition: PipelineDefinition | Mapping[str, Any],
) -> tuple[PipelineDefinition, str]:
    """`definition` parsed and checked, and its document as JSON text for the database
    (`InvalidInputError` when it is not valid, or holds what PostgreSQL cannot store). In a
    thread: a large definition takes a while (1,000 nodes, each template parsed)."""
    return await asyncio.to_thread(_check_and_encode, definition)


def _check_and_encode(
    definition: PipelineDefinition | Mapping[str, Any],
) -> tuple[PipelineDefinition, str]:
    if not isinstance(definition, PipelineDefinition):
        definition = parse_definition(definition)
    check(definition)
    try:
        text = json.dumps(definition.to_document(), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise InvalidInputError(
            f"pipeline {definition.name!r} holds a number JSON cannot carry (infinite or NaN)",
            hint="use finite numbers",
        ) from None
    if _NUL.search(text):
        raise InvalidInputError(
            f"pipeline {definition.name!r} holds a NUL character (\\u0000), which cannot be stored",
            hint="remove the NUL characters from its texts",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"pipeline {definition.name!r} holds text that is not valid Unicode (a lone surrogate)",
            hint="write each character whole (a \\ud83d without its pair is not one)",
        ) from None
    return definition, text


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"you already have a pipeline named {name!r}",
        hint="choose another name, or save a new version of that pipeline (PUT /pipelines/{id},"
        " or `gathering pipelines apply FILE`, which goes by name)",
    )


async def create_pipeline(
    queries: Queries,
    definition: PipelineDefinition | Mapping[str, Any],
    *,
    owner_id: int,
    by: int | None = None,
) -> PipelineRecord:
    """Store a new pipeline of `owner_id` at version 1 (saved `by` someone, default the
    owner). `InvalidInputError` when it is not valid, `ConflictError` when the owner has a
    pipeline of that name."""
    parsed, text = await _checked(definition)
    try:
        row = await queries.fetch_one(
            _SQL["create_pipeline"],
            owner_id,
            parsed.name,
            parsed.description,
            text,
            owner_id if by is None else by,
        )
    except ConflictError as exc:
        if isinstance(exc, DatabaseError):  # the unique name
            raise _name_taken(parsed.name) from None
        raise
    assert row is not None
    return _record(row)


async def update_pipeline(
    db: Database,
    pipeline_id: int,
    definition: PipelineDefinition | Mapping[str, Any],
    *,
    by: int | None = None,
) -> tuple[PipelineRecord, bool]:
    """Save `definition` as pipeline `pipeline_id`'s next version (its name may change), and
    whether it did: a definition identical to the current one adds no version.
    `NotFoundError`, `InvalidInputError`, or `ConflictError` when the owner has another
    pipeline of the new name."""
    parsed, text = await _checked(definition)
    document = json.loads(text)
    try:
        async with db.transaction() as tx:
            row = await tx.fetch_one(_SQL["lock_pipeline"], pipeline_id)
            if row is None:
                raise NotFoundError(f"pipeline {pipeline_id} not found")
            current = _record(row)
            if current.document == document:
                return current, False
            if parsed.name != current.name and await tx.fetch_val(
                _SQL["name_taken"], current.owner_id, parsed.name, pipeline_id
            ):
                raise _name_taken(parsed.name)
            saved = await tx.fetch_one(
                _SQL["add_version"],
                pipeline_id,
                current.version + 1,
                text,
                current.owner_id if by is None else by,
                parsed.name,
                parsed.description,
            )
    except ConflictError as exc:
        if isinstance(exc, DatabaseError):  # the unique name, taken meanwhile
            raise _name_taken(parsed.name) from None
        raise
    assert saved is not None
    return _record(saved), True


async def apply_pipeline(
    db: Database,
    definition: PipelineDefinition | Mapping[str, Any],
    *,
    owner_id: int,
    by: int | None = None,
) -> tuple[PipelineRecord, Applied]:
    """Create the owner's pipeline of the definition's name, or save a new version of it
    (`gathering pipelines apply`); what it did: created, updated or unchanged."""
    parsed = (
        definition
        if isinstance(definition, PipelineDefinition)
        else await asyncio.to_thread(parse_definition, definition)
    )
    row = await db.fetch_one(_SQL["pipeline_by_name"], owner_id, parsed.name)
    if row is None:
        return await create_pipeline(db, parsed, owner_id=owner_id, by=by), "created"
    record, changed = await update_pipeline(db, int(row["id"]), parsed, by=by)
    return record, "updated" if changed else "unchanged"


async def get_pipeline(queries: Queries, pipeline_id: int) -> PipelineRecord:
    """Pipeline `pipeline_id` with its current definition; `NotFoundError` when none."""
    row = await queries.fetch_one(_SQL["pipeline_by_id"], pipeline_id)
    if row is None:
        raise NotFoundError(f"pipeline {pipeline_id} not found")
    return _record(row)


async def pipeline_named(queries: Queries, owner_id: int, name: str) -> PipelineRecord:
    """The owner's pipeline `name`; `NotFoundError` when they have none of that name."""
    row = await queries.fetch_one(_SQL["pipeline_by_name"], owner_id, name)
    if row is None:
        raise NotFoundError(
            f"no pipeline named {name!r}", hint="`gathering pipelines list` shows them"
        )
    return _record(row)


async def list_pipelines(
    queries: Queries, *, owner_id: int | None, limit: int = 100, offset: int = 0
) -> list[PipelineRecord]:
    """The pipelines of `owner_id` (None: every owner's), by name."""
    if not 1 <= limit <= MAX_LIST or offset < 0:
        raise InvalidInputError(f"limit is 1 to {MAX_LIST}, offset at least 0")
    rows = await queries.fetch_all(_SQL["list_pipelines"], owner_id, limit, offset)
    return [_record(row) for row in rows]


async def delete_pipeline(queries: Queries, pipeline_id: int) -> None:
    """Delete pipeline `pipeline_id` with all its versions; `NotFoundError` when none."""
    if await queries.fetch_val(_SQL["delete_pipeline"], pipeline_id) is None:
        raise NotFoundError(f"pipeline {pipeline_id} not found")


async def list_versions(queries: Queries, pipeline_id: int) -> list[PipelineVersion]:
    """The versions of pipeline `pipeline_id`, newest first, without their definitions."""
    rows = await queries.fetch_all(_SQL["list_versions"], pipeline_id)
    return [_version(row) for row in rows]


async def get_version(queries: Queries, pipeline_id: int, version: int) -> PipelineVersion:
    """Version `version` of pipeline `pipeline_id`, with its definition; `NotFoundError`
    when there is no such version."""
    row = await queries.fetch_one(_SQL["pipeline_version"], pipeline_id, version)
    if row is None:
        raise NotFoundError(
            f"pipeline {pipeline_id} has no version {version}",
            hint=f"GET /pipelines/{pipeline_id}/versions lists them",
        )
    return _version(row)

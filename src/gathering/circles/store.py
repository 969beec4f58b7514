"""Circles and their members as stored (migration 0021): the lifecycle created -> active ->
archived, settings, members with a role and competencies, and their metrics."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from gathering.circles.definition import (
    CircleChange,
    CircleIn,
    CircleSettings,
    MemberChange,
    MemberIn,
)
from gathering.circles.routing import Candidate
from gathering.config import get_settings
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, NotFoundError
from gathering.events import Event

SQL = queries_of("gathering.circles")
CIRCLE_STATUSES = ("created", "active", "archived")
_LIFECYCLE = {"created": ("active", "archived"), "active": ("archived",), "archived": ()}


@dataclass(frozen=True)
class CircleRecord:
    """A stored circle."""

    id: int
    owner_id: int
    name: str
    description: str
    status: str
    settings: CircleSettings
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CircleRecord:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["settings"] = CircleSettings.model_validate(row["settings"])
        return cls(**values)

    @property
    def subject(self) -> str:
        """The subject of its events (`/ws/circles/{name}`)."""
        return f"circle:{self.name}"

    @property
    def workspace(self) -> Path:
        """The directory its agents work in, with their tools, on its tasks and in its
        conversations (not created): `<data dir>/circles/<id>-<creation time in µs>`."""
        stamp = round(self.created_at.timestamp() * 1_000_000)
        return get_settings().data_dir / "circles" / f"{self.id}-{stamp}"


@dataclass(frozen=True)
class MemberRecord:
    """A member of a circle, with its metrics and (when read with it) its load. A member
    whose agent or account was deleted is `gone` (and never active again)."""

    id: int
    circle_id: int
    agent_id: int | None
    user_id: int | None
    name: str
    role: str
    competencies: dict[str, int]
    active: bool
    completed: int
    failed: int
    verdicts: int
    approvals: int
    review_rounds: int
    reviews_given: int
    tokens: int
    work_seconds: float
    joined_at: datetime
    load: int = 0
    gone: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MemberRecord:
        values = {name: row[name] for name in cls.__dataclass_fields__ if name in row}
        values["active"] = row["active"] and not row.get("gone", False)
        return cls(**values)

    @property
    def approval_rate(self) -> float | None:
        """Approved verdicts over all verdicts on their work; None before the first."""
        return self.approvals / self.verdicts if self.verdicts else None

    @property
    def mean_review_rounds(self) -> float | None:
        """Attempts per completed task; None before the first."""
        return self.review_rounds / self.completed if self.completed else None

    def candidate(self) -> Candidate:
        return Candidate(
            self.id, self.role, self.competencies, self.load, self.verdicts, self.approvals
        )


def circle_event(circle: CircleRecord, kind: str, body: dict[str, Any]) -> Event:
    """A `circle.<kind>` event on the circle's subject."""
    data = {"circle_id": circle.id, "circle": circle.name, **body}
    return Event(f"circle.{kind}", data, subject=circle.subject, source="circles")


async def create_circle(tx: Queries, owner_id: int, spec: CircleIn) -> CircleRecord:
    """A new circle of `owner_id`, `created` (activate it to route tasks)."""
    row = await tx.fetch_one(
        SQL["insert_circle"],
        owner_id,
        spec.name,
        spec.description,
        Jsonb(spec.settings.model_dump()),
    )
    if row is None:
        raise ConflictError(
            f"a circle named {spec.name!r} exists", hint="circle names are unique; pick another"
        )
    return CircleRecord.from_row(row)


async def get_circle(db: Queries, circle_id: int) -> CircleRecord:
    row = await db.fetch_one(SQL["circle_by_id"], circle_id)
    if row is None:
        raise NotFoundError(
            f"no circle {circle_id}", hint="list them with `gathering circles list`"
        )
    return CircleRecord.from_row(row)


async def circle_named(db: Queries, name: str) -> CircleRecord:
    row = await db.fetch_one(SQL["circle_by_name"], name)
    if row is None:
        raise NotFoundError(f"no circle {name!r}", hint="list them with `gathering circles list`")
    return CircleRecord.from_row(row)


async def find_circle(db: Queries, ref: int | str) -> CircleRecord:
    """A circle by id or by name."""
    return await (get_circle(db, ref) if isinstance(ref, int) else circle_named(db, ref))


async def lock_circle(tx: Queries, circle_id: int) -> CircleRecord:
    row = await tx.fetch_one(SQL["lock_circle"], circle_id)
    if row is None:
        raise NotFoundError(f"no circle {circle_id}")
    return CircleRecord.from_row(row)


async def list_circles(
    db: Queries,
    user_id: int | None,
    *,
    limit: int = 100,
    offset: int = 0,
    name: str | None = None,
) -> list[CircleRecord]:
    """The circles `user_id` owns or is an active member of (every circle when None; the one
    `name`d), oldest first."""
    rows = await db.fetch_all(SQL["circles"], user_id, limit, offset, name)
    return [CircleRecord.from_row(row) for row in rows]


async def change_circle(tx: Queries, circle_id: int, change: CircleChange) -> CircleRecord:
    circle = await lock_circle(tx, circle_id)
    description = circle.description if change.description is None else change.description
    settings = change.settings or circle.settings
    row = await tx.fetch_one(
        SQL["update_circle"], circle.id, description, Jsonb(settings.model_dump()), circle.status
    )
    assert row is not None
    return CircleRecord.from_row(row)


async def set_circle_status(tx: Queries, circle_id: int, status: str) -> CircleRecord:
    """Move a circle along created -> active -> archived (`ConflictError` otherwise)."""
    circle = await lock_circle(tx, circle_id)
    if status == circle.status:
        return circle
    if status not in _LIFECYCLE[circle.status]:
        allowed = ", ".join(_LIFECYCLE[circle.status]) or "nothing (it is archived)"
        raise ConflictError(
            f"circle {circle.name!r} is {circle.status}: it cannot become {status}",
            hint=f"from {circle.status} it may become: {allowed}",
            details={"status": circle.status, "allowed": list(_LIFECYCLE[circle.status])},
        )
    row = await tx.fetch_one(
        SQL["update_circle"],
        circle.id,
        circle.description,
        Jsonb(circle.settings.model_dump()),
        status,
    )
    assert row is not None
    return CircleRecord.from_row(row)


async def delete_circle(db: Queries, circle_id: int) -> None:
    """The circle with its members, tasks, conversations and workspace."""
    circle = await get_circle(db, circle_id)
    await db.execute(SQL["delete_circle"], circle_id)
    await asyncio.to_thread(shutil.rmtree, circle.workspace, True)


async def add_member(tx: Queries, circle: CircleRecord, spec: MemberIn) -> MemberRecord:
    """`spec`'s agent (one of the circle owner's) or person joins `circle`."""
    agent_id = user_id = None
    if spec.agent is not None:
        by_id, by_name = (spec.agent, None) if isinstance(spec.agent, int) else (None, spec.agent)
        agent_id = await tx.fetch_val(SQL["agent_of_owner"], by_id, by_name, circle.owner_id)
        if agent_id is None:
            raise NotFoundError(
                f"no agent {spec.agent!r} of the circle's owner",
                hint="a circle's agents are its owner's: list them with `gathering agents list`",
            )
    else:
        user_id = await tx.fetch_val(SQL["user_exists"], spec.user_id)
        if user_id is None:
            raise NotFoundError(f"no active account {spec.user_id}")
    member_id = await tx.fetch_val(
        SQL["insert_member"],
        circle.id,
        agent_id,
        user_id,
        spec.role,
        Jsonb(spec.competencies),
    )
    if member_id is None:
        raise ConflictError(
            f"{'agent ' + str(spec.agent) if agent_id else 'user ' + str(user_id)} is a member "
            f"of {circle.name!r} already",
            hint="change the member instead (PATCH)",
        )
    return await get_member(tx, circle.id, member_id)


async def get_member(db: Queries, circle_id: int, member_id: int) -> MemberRecord:
    row = await db.fetch_one(SQL["members"], circle_id, member_id)
    if row is None:
        raise NotFoundError(f"no member {member_id} in circle {circle_id}")
    return MemberRecord.from_row(row)


async def list_members(db: Queries, circle_id: int) -> list[MemberRecord]:
    """The members of a circle (active or not), each with their load."""
    rows = await db.fetch_all(SQL["members"], circle_id, None)
    return [MemberRecord.from_row(row) for row in rows]


async def member_of_user(db: Queries, circle_id: int, user_id: int) -> int | None:
    """The member id of person `user_id` in the circle, when they are an active one."""
    found = await db.fetch_val(SQL["member_of_user"], circle_id, user_id)
    return int(found) if found is not None else None


async def change_member(
    tx: Queries, circle_id: int, member_id: int, change: MemberChange
) -> MemberRecord:
    member = await get_member(tx, circle_id, member_id)
    await tx.execute(
        SQL["update_member"],
        member.id,
        change.role or member.role,
        Jsonb(member.competencies if change.competencies is None else change.competencies),
        member.active if change.active is None else change.active,
    )
    return await get_member(tx, circle_id, member_id)

"""Schedules as stored, and their runs: create, read, change, pause, resume, delete (migration
0017). Every change is in PostgreSQL, so every instance's next claim sees it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from psycopg.types.json import Jsonb

from gathering.db.database import Database, Queries
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, InvalidInputError, NotFoundError
from gathering.scheduler.definition import MAX_NAME, ScheduleSpec, load_zone, parse_spec
from gathering.scheduler.timing import next_fire

_SQL = queries_of("gathering.scheduler")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class ScheduleRecord:
    """A stored schedule."""

    id: int
    owner_id: int
    name: str
    spec: ScheduleSpec
    status: str  # active, paused, expired
    next_run_at: datetime | None
    executions: int
    created_at: datetime
    updated_at: datetime
    event_cursor: int | None = None  # an event schedule's place in the outbox

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ScheduleRecord:
        return cls(
            id=int(row["id"]),
            owner_id=int(row["owner_id"]),
            name=row["name"],
            spec=ScheduleSpec.model_validate(row["spec"]),
            status=row["status"],
            next_run_at=row["next_run_at"],
            event_cursor=row.get("event_cursor"),
            executions=int(row["executions"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    @property
    def anchor(self) -> datetime:
        """Where an interval's slots count from (start_at, else when it was made)."""
        return self.spec.start_at or self.created_at


@dataclass(frozen=True)
class ScheduleRun:
    """One run of a schedule: for a slot, or started by hand."""

    id: int
    schedule_id: int
    slot_time: datetime
    trigger: str  # slot, manual, event
    status: str  # queued, running, succeeded, failed, skipped, cancelled
    attempt: int
    job_id: int | None
    pipeline_run_id: int | None
    output: Any
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    event: dict[str, Any] | None = None  # the event that started it (trigger: event)
    task_id: int | None = None  # the background task it started (run_task)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ScheduleRun:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


PREFIX = "pipeline:"  # the names of pipelines' trigger schedules (`pipeline_triggers`)


def _name(name: str) -> str:
    if not name.strip() or len(name) > MAX_NAME or "\x00" in name:
        raise InvalidInputError(
            f"a schedule's name has 1 to {MAX_NAME} characters", details={"path": "name"}
        )
    return name


def _stored(spec: ScheduleSpec) -> Jsonb:
    return Jsonb(spec.model_dump(mode="json", exclude_none=True))


async def create_schedule(
    db: Queries, owner_id: int, name: str, document: dict[str, Any]
) -> ScheduleRecord:
    """Store a schedule for `owner_id` from `document` (see `ScheduleSpec`); it is active, its
    next run the first instant it fires from now. `ConflictError` when the name is taken;
    names starting with `pipeline:` are the pipelines' trigger schedules'."""
    _not_a_trigger(name)
    return await create_trigger_schedule(db, owner_id, name, document)


def _not_a_trigger(name: str) -> None:
    if name.startswith(PREFIX):
        raise InvalidInputError(
            f"schedules named {PREFIX}... are pipelines' triggers: change the pipeline's "
            "trigger node instead",
            hint="choose another name, or give the pipeline a schedule or event trigger "
            "(pause and resume work on them)",
            details={"path": "name"},
        )


async def create_trigger_schedule(
    db: Queries, owner_id: int, name: str, document: dict[str, Any]
) -> ScheduleRecord:
    """`create_schedule` without the reserved names' check (for `pipeline_triggers`)."""
    spec = await asyncio.to_thread(parse_spec, document)
    now = datetime.now(UTC)
    first, cursor = await _when(db, spec, spec.start_at or now, now, None)
    try:
        row = await db.fetch_one(
            _SQL["insert_schedule"], owner_id, _name(name), _stored(spec), first, now, cursor
        )
    except ConflictError:
        raise ConflictError(
            f"you have a schedule named {name!r} already",
            hint="choose another name, or change that schedule",
        ) from None
    assert row is not None
    return ScheduleRecord.from_row(row)


async def _when(
    db: Queries, spec: ScheduleSpec, anchor: datetime, now: datetime, cursor: int | None
) -> tuple[datetime | None, int | None]:
    """Where `spec` starts claiming: (its first slot after `now`, None), or for an event
    schedule (None, the outbox cursor after which it sees events: `cursor` when it had one,
    else the latest, so only events to come count)."""
    if spec.kind == "event":
        if spec.end_at is not None and spec.end_at <= now:
            _never(spec)
        if cursor is None:
            cursor = int(await db.fetch_val(_SQL["latest_cursor"]))
        return None, cursor
    return _first(spec, anchor, now), None


def _never(spec: ScheduleSpec) -> NoReturn:
    where = "at" if spec.kind == "once" else "end_at"
    raise InvalidInputError(
        f"the schedule would never fire: `{where}` has passed",
        hint="give an instant to come",
        details={"path": where},
    )


def _first(spec: ScheduleSpec, anchor: datetime, now: datetime) -> datetime:
    """The first instant `spec` fires after `now`; `InvalidInputError` when there is none
    (its `at`, or its `end_at`, has passed)."""
    first = next_fire(spec, anchor, now)
    if first is None:
        _never(spec)
    return first


async def apply_schedule(
    db: Database, owner_id: int, document: dict[str, Any]
) -> tuple[ScheduleRecord, bool]:
    """Store `document` (`name` and the definition) as the owner's schedule of that name: a
    new one, or a change of the one there; (the schedule, whether it was created)."""
    body = dict(document)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise InvalidInputError("a schedule file needs a `name` (text)", details={"path": "name"})
    _not_a_trigger(name)
    found = await schedule_named(db, owner_id, name)
    if found is None:
        return await create_schedule(db, owner_id, name, body), True
    return await replace_schedule(db, found.id, body), False


async def schedule_named(db: Queries, owner_id: int, name: str) -> ScheduleRecord | None:
    """The schedule of `owner_id` named `name`, if there is one."""
    row = await db.fetch_one(_SQL["schedule_named"], owner_id, name)
    return None if row is None else ScheduleRecord.from_row(row)


async def get_schedule(db: Queries, schedule_id: int) -> ScheduleRecord:
    row = await db.fetch_one(_SQL["schedule_by_id"], schedule_id)
    if row is None:
        raise NotFoundError(f"no schedule {schedule_id}")
    return ScheduleRecord.from_row(row)


async def list_schedules(
    db: Queries, owner_id: int | None, *, limit: int = 100, offset: int = 0
) -> list[ScheduleRecord]:
    """The schedules of `owner_id` (None: everyone's), newest first."""
    rows = await db.fetch_all(_SQL["list_schedules"], owner_id, limit, offset)
    return [ScheduleRecord.from_row(row) for row in rows]


async def replace_schedule(
    db: Database, schedule_id: int, document: dict[str, Any]
) -> ScheduleRecord:
    """Schedule `schedule_id` takes the definition `document`: its next run is counted again
    from now (a paused schedule stays paused; an expired one is active again when it has
    instants left). A pipeline's trigger schedule is changed through its pipeline only."""
    async with db.transaction() as tx:
        _not_a_trigger((await _locked(tx, schedule_id)).name)
    return await replace_trigger_schedule(db, schedule_id, document)


async def replace_trigger_schedule(
    db: Database, schedule_id: int, document: dict[str, Any]
) -> ScheduleRecord:
    """`replace_schedule` without the trigger schedules' check (for `pipeline_triggers`)."""
    spec = await asyncio.to_thread(parse_spec, document)
    async with db.transaction() as tx:
        current = await _locked(tx, schedule_id)
        now = datetime.now(UTC)
        # An active event schedule goes on from where it was; one that was expired or paused
        # (or not an event schedule) starts with the events to come, not a backlog.
        kept = current.event_cursor if current.status == "active" else None
        following, cursor = await _when(tx, spec, spec.start_at or current.created_at, now, kept)
        status = current.status if current.status == "paused" else "active"
        if spec.max_executions is not None and current.executions >= spec.max_executions:
            status, following = "expired", None
        row = await tx.fetch_one(
            _SQL["update_schedule"], schedule_id, _stored(spec), status, following, cursor
        )
    assert row is not None
    return ScheduleRecord.from_row(row)


async def pause_schedule(db: Database, schedule_id: int) -> ScheduleRecord:
    """Stop claiming slots of `schedule_id` (runs already queued still run)."""
    async with db.transaction() as tx:
        current = await _locked(tx, schedule_id)
        if current.status == "expired":
            raise ConflictError(f"schedule {schedule_id} has expired: nothing to pause")
        row = await tx.fetch_one(
            _SQL["update_schedule"],
            schedule_id,
            _stored(current.spec),
            "paused",
            current.next_run_at,
            current.event_cursor,
        )
    assert row is not None
    return ScheduleRecord.from_row(row)


async def resume_schedule(db: Database, schedule_id: int) -> ScheduleRecord:
    """Claim slots of `schedule_id` again, from the next instant it fires (the slots that
    passed while it was paused are not run)."""
    async with db.transaction() as tx:
        current = await _locked(tx, schedule_id)
        if current.status != "paused":
            raise ConflictError(
                f"schedule {schedule_id} is {current.status}, not paused",
                hint="only a paused schedule can be resumed",
            )
        await load_zone(current.spec.timezone)
        if current.spec.kind == "event":  # the events of the pause are not run either
            following, cursor = None, int(await tx.fetch_val(_SQL["latest_cursor"]))
            status = "active"
        else:
            following = next_fire(current.spec, current.anchor, datetime.now(UTC))
            cursor, status = None, "active" if following is not None else "expired"
        row = await tx.fetch_one(
            _SQL["update_schedule"],
            schedule_id,
            _stored(current.spec),
            status,
            following,
            cursor,
        )
    assert row is not None
    return ScheduleRecord.from_row(row)


async def delete_schedule(db: Queries, schedule_id: int) -> None:
    """Delete `schedule_id` and its runs (the pipeline runs it started are kept)."""
    if await db.fetch_one(_SQL["delete_schedule"], schedule_id) is None:
        raise NotFoundError(f"no schedule {schedule_id}")


async def list_schedule_runs(
    db: Queries, schedule_id: int, *, limit: int = 50, offset: int = 0
) -> list[ScheduleRun]:
    """The runs of `schedule_id`, newest first."""
    rows = await db.fetch_all(_SQL["runs_of_schedule"], schedule_id, limit, offset)
    return [ScheduleRun.from_row(row) for row in rows]


async def get_schedule_run(db: Queries, run_id: int) -> ScheduleRun:
    row = await db.fetch_one(_SQL["run_by_id"], run_id)
    if row is None:
        raise NotFoundError(f"no schedule run {run_id}")
    return ScheduleRun.from_row(row)


async def _locked(tx: Queries, schedule_id: int) -> ScheduleRecord:
    row = await tx.fetch_one(_SQL["lock_schedule"], schedule_id)
    if row is None:
        raise NotFoundError(f"no schedule {schedule_id}")
    return ScheduleRecord.from_row(row)

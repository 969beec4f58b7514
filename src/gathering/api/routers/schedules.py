"""Schedules: when something runs (cron in a time zone, an interval, once, an event on the bus)
and what (a pipeline run, a notification, an API call). Changes take effect at the next claim
on every instance (within a second). Runs are listed per schedule; events of each go to the
WebSocket subject `schedule:<id>`. Owners see only their own schedules, admins every one. API
keys need `schedules:read` to read and `schedules:write` to change or trigger.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import MAX_ID, BusDep, DbDep
from gathering.api.fields import WholeNumber, text
from gathering.api.security import ensure_owner, not_found, rate_limit, require_scope
from gathering.auth.principal import Principal
from gathering.db import Database
from gathering.errors import NotFoundError
from gathering.scheduler import (
    Scheduler,
    ScheduleRecord,
    ScheduleRun,
    ScheduleSpec,
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedule_runs,
    list_schedules,
    pause_schedule,
    preview,
    replace_schedule,
    resume_schedule,
)
from gathering.scheduler.definition import load_zone

router = APIRouter(prefix="/schedules", tags=["schedules"])
SchedulesReader = Annotated[Principal, Depends(require_scope("schedules:read"))]
SchedulesWriter = Annotated[Principal, Depends(require_scope("schedules:write"))]
ScheduleId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The schedule's id")]


class ScheduleIn(ScheduleSpec):
    """A schedule: its name and its definition."""

    name: str = text(200)


class ScheduleOut(BaseModel):
    id: int
    owner_id: int
    name: str
    spec: dict[str, Any] = Field(description="The definition as stored")
    status: str = Field(description="active, paused or expired")
    next_run_at: datetime | None = Field(description="The next slot (none once expired)")
    executions: int
    created_at: datetime
    updated_at: datetime


class ScheduleRunOut(BaseModel):
    id: int
    schedule_id: int
    slot_time: datetime
    trigger: str = Field(description="slot, or manual (POST .../trigger)")
    status: str = Field(description="queued, running, succeeded, failed, skipped or cancelled")
    attempt: int
    pipeline_run_id: int | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


def _out(record: ScheduleRecord) -> ScheduleOut:
    return ScheduleOut(
        id=record.id,
        owner_id=record.owner_id,
        name=record.name,
        spec=record.spec.model_dump(mode="json", exclude_none=True),
        status=record.status,
        next_run_at=record.next_run_at,
        executions=record.executions,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _run_out(run: ScheduleRun) -> ScheduleRunOut:
    return ScheduleRunOut.model_validate(run, from_attributes=True)


def _document(body: ScheduleIn) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude={"name"}, exclude_none=True)


async def _visible(
    request: Request, principal: Principal, db: Database, schedule_id: int
) -> ScheduleRecord:
    try:
        record = await get_schedule(db, schedule_id)
    except NotFoundError:
        raise not_found("schedule", schedule_id) from None
    await ensure_owner(
        request, principal, record.owner_id, resource="schedule", resource_id=schedule_id
    )
    return record


_CHECKED: dict[int | str, dict[str, Any]] = {
    409: {"description": "The owner has another schedule of that name"},
    422: {"description": "The definition is wrong: the message names where"},
}


@router.get("", summary="List schedules", dependencies=[rate_limit("relaxed")])
async def schedules_list(
    principal: SchedulesReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[ScheduleOut]:
    """Newest first. Admins see every owner's."""
    found = await list_schedules(db, principal.owner_filter, limit=limit, offset=offset)
    return [_out(record) for record in found]


@router.post(
    "", summary="Create a schedule", status_code=status.HTTP_201_CREATED, responses=_CHECKED
)
async def schedule_create(body: ScheduleIn, principal: SchedulesWriter, db: DbDep) -> ScheduleOut:
    """It is active at once: its first slot is the first instant it fires from now."""
    return _out(await create_schedule(db, principal.user_id, body.name, _document(body)))


@router.post(
    "/preview",
    summary="The next instants a schedule not saved yet would fire",
    responses={409: {"description": "An event schedule: it fires on events, not at set times"}},
)
async def schedule_draft_preview(
    body: ScheduleSpec,
    principal: SchedulesReader,
    count: Annotated[WholeNumber, Query(ge=1, le=20)] = 5,
) -> list[datetime]:
    """For a form being filled in: the timing of the definition as the server reads it (an
    interval counts from its start_at, else from now); nothing is stored and the action's
    settings are not checked."""
    await load_zone(body.timezone)
    now = datetime.now(UTC)
    return await asyncio.to_thread(preview, body, body.start_at or now, now, count)


@router.get("/{schedule_id:id}", summary="One schedule", dependencies=[rate_limit("relaxed")])
async def schedule_get(
    schedule_id: ScheduleId, request: Request, principal: SchedulesReader, db: DbDep
) -> ScheduleOut:
    return _out(await _visible(request, principal, db, schedule_id))


@router.put("/{schedule_id:id}", summary="Change a schedule", responses=_CHECKED)
async def schedule_replace(
    schedule_id: ScheduleId,
    body: ScheduleIn,
    request: Request,
    principal: SchedulesWriter,
    db: DbDep,
) -> ScheduleOut:
    """The new definition replaces the old (the name stays); its next slot is counted again
    from now, on every instance at the next claim."""
    await _visible(request, principal, db, schedule_id)
    return _out(await replace_schedule(db, schedule_id, _document(body)))


@router.delete(
    "/{schedule_id:id}", summary="Delete a schedule", status_code=status.HTTP_204_NO_CONTENT
)
async def schedule_delete(
    schedule_id: ScheduleId, request: Request, principal: SchedulesWriter, db: DbDep
) -> Response:
    """With its runs (the pipeline runs it started are kept)."""
    await _visible(request, principal, db, schedule_id)
    await delete_schedule(db, schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{schedule_id:id}/pause",
    summary="Pause a schedule",
    responses={409: {"description": "The schedule has expired"}},
)
async def schedule_pause(
    schedule_id: ScheduleId, request: Request, principal: SchedulesWriter, db: DbDep
) -> ScheduleOut:
    """No slot is claimed until it is resumed (runs already queued still run)."""
    await _visible(request, principal, db, schedule_id)
    return _out(await pause_schedule(db, schedule_id))


@router.post(
    "/{schedule_id:id}/resume",
    summary="Resume a paused schedule",
    responses={409: {"description": "The schedule is not paused"}},
)
async def schedule_resume(
    schedule_id: ScheduleId, request: Request, principal: SchedulesWriter, db: DbDep
) -> ScheduleOut:
    """From the next instant it fires: the slots that passed while paused are not run."""
    await _visible(request, principal, db, schedule_id)
    return _out(await resume_schedule(db, schedule_id))


@router.post(
    "/{schedule_id:id}/trigger",
    summary="Run a schedule now",
    status_code=status.HTTP_202_ACCEPTED,
)
async def schedule_trigger(
    schedule_id: ScheduleId,
    request: Request,
    principal: SchedulesWriter,
    db: DbDep,
    bus: BusDep,
) -> ScheduleRunOut:
    """One run now, outside the schedule's slots (its concurrency policy applies: the run may
    come back `skipped`); follow it at GET /schedules/{id}/runs."""
    record = await _visible(request, principal, db, schedule_id)
    return _run_out(await Scheduler(db, bus).trigger(record))


@router.get(
    "/{schedule_id:id}/runs",
    summary="A schedule's runs, newest first",
    dependencies=[rate_limit("relaxed")],
)
async def schedule_runs(
    schedule_id: ScheduleId,
    request: Request,
    principal: SchedulesReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 50,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[ScheduleRunOut]:
    """Each with its slot, status, attempts, output (a pipeline run's id) and error."""
    await _visible(request, principal, db, schedule_id)
    runs = await list_schedule_runs(db, schedule_id, limit=limit, offset=offset)
    return [_run_out(run) for run in runs]


@router.get(
    "/{schedule_id:id}/preview",
    summary="The next instants a schedule fires",
    dependencies=[rate_limit("relaxed")],
    responses={409: {"description": "An event schedule: it fires on events, not at set times"}},
)
async def schedule_preview(
    schedule_id: ScheduleId,
    request: Request,
    principal: SchedulesReader,
    db: DbDep,
    count: Annotated[WholeNumber, Query(ge=1, le=100)] = 5,
) -> list[datetime]:
    """From now, within its start_at and end_at (in UTC), whether it is paused or not."""
    record = await _visible(request, principal, db, schedule_id)
    await load_zone(record.spec.timezone)
    return await asyncio.to_thread(preview, record.spec, record.anchor, datetime.now(UTC), count)

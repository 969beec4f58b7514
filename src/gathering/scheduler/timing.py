"""When a schedule fires. A cron expression is read in the schedule's time zone (cronsim: a
time that does not exist on the day clocks go forward fires at the first time after it; on the
day they go back, a time that happens twice fires once, and an hourly expression fires for each
of the two hours). An interval's slots are `anchor + k * every`, so a late run never shifts
the next one. Every instant returned is in UTC."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

from cronsim import CronSim

from gathering.errors import ConflictError
from gathering.scheduler.definition import ScheduleSpec, zone


def fire_times(spec: ScheduleSpec, anchor: datetime, after: datetime) -> Iterator[datetime]:
    """The instants `spec` fires strictly after `after`, in order, within its start_at and
    end_at; `anchor` is where an interval's slots count from (its start_at, else when the
    schedule was made)."""
    start = max(after, spec.start_at - timedelta(microseconds=1)) if spec.start_at else after
    for instant in _raw(spec, anchor, start):
        if spec.end_at is not None and instant > spec.end_at:
            return
        yield instant


def _raw(spec: ScheduleSpec, anchor: datetime, after: datetime) -> Iterator[datetime]:
    if spec.kind == "once":
        assert spec.at is not None
        if spec.at > after:
            yield spec.at.astimezone(UTC)
        return
    if spec.kind == "interval":
        assert spec.every_seconds is not None
        every = timedelta(seconds=spec.every_seconds)
        origin = spec.start_at or anchor
        steps = max(0, math.floor((after - origin) / every) + 1)
        while True:
            instant = origin + steps * every
            if instant > after:  # (floating point may land on `after` itself)
                yield instant.astimezone(UTC)
            steps += 1
    assert spec.cron is not None
    for instant in CronSim(spec.cron, after.astimezone(zone(spec.timezone))):
        # From an instant in an hour that happens twice, cronsim may give back the first
        # one (it keeps no fold): an instant already passed is none of ours.
        if instant.astimezone(UTC) > after:
            yield instant.astimezone(UTC)


def next_fire(spec: ScheduleSpec, anchor: datetime, after: datetime) -> datetime | None:
    """The first instant `spec` fires after `after`; None when it never will again."""
    return next(fire_times(spec, anchor, after), None)


def preview(spec: ScheduleSpec, anchor: datetime, after: datetime, count: int) -> list[datetime]:
    """The next `count` instants `spec` fires after `after`; `ConflictError` for an event
    schedule, which fires when its events come, at no instant known beforehand."""
    if spec.kind == "event":
        raise ConflictError(
            f"an event schedule fires on each {spec.event_type} event, not at set times: "
            "it has no preview",
            hint="see its runs (GET /schedules/{id}/runs) for when it fired",
        )
    return list(islice(fire_times(spec, anchor, after), count))


LATE_SCAN = 2_000  # late slots a claim steps through one by one before it jumps ahead


@dataclass(frozen=True)
class SlotPlan:
    """The slots a claim found up to now: the latest late ones it keeps (`late`, at most
    `keep`), how many late ones there were (`missed`; a lower bound when `jumped`), those on
    time, and the first slot left for later (None: none)."""

    late: list[datetime]
    missed: int
    jumped: bool
    on_time: list[datetime]
    following: datetime | None


def plan_slots(
    spec: ScheduleSpec,
    anchor: datetime,
    first: datetime,
    now: datetime,
    *,
    keep: int,
    on_time_at_most: int,
) -> SlotPlan:
    """The slots from `first` (the schedule's next_run_at) up to `now`: late ones are older
    than the misfire grace. Bounded: past `LATE_SCAN` late slots it jumps to the last few
    before the grace (a schedule of seconds that was down for a year costs as much as one
    down for an hour), and it stops after `on_time_at_most` slots on time (the next claim
    takes the rest). CPU work: run it in a thread from async code."""
    cutoff = now - timedelta(seconds=spec.misfire_grace_seconds)
    late: deque[datetime] = deque(maxlen=keep)
    missed, jumped = 0, False
    on_time: list[datetime] = []
    slots = fire_times(spec, anchor, first)
    slot: datetime | None = first
    previous: datetime | None = None
    while slot is not None and slot <= now:
        if len(on_time) >= on_time_at_most:
            break  # still due: the next claim takes it
        if slot < cutoff:
            missed += 1
            late.append(slot)
            if missed % LATE_SCAN == 0 and previous is not None:
                # Far behind: start again a little before the grace, as far back as the
                # slots kept need (judged from the spacing of the last two).
                spacing = max(slot - previous, timedelta(seconds=1))
                restart = cutoff - spacing * (keep + 1)
                if restart > slot:
                    jumped = True
                    slots = fire_times(spec, anchor, restart)
            previous = slot
        else:
            on_time.append(slot)
        slot = next(slots, None)
    return SlotPlan(list(late), missed, jumped, on_time, slot)

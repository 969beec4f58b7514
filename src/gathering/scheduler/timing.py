"""When a schedule fires. A cron expression is read in the schedule's time zone (cronsim: a
time that does not exist on the day clocks go forward fires at the first time after it; on the
day they go back, a time that happens twice fires once, and an hourly expression fires for each
of the two hours). An interval's slots are `anchor + k * every`, so a late run never shifts
the next one. Every instant returned is in UTC."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

from cronsim import CronSim

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
        yield instant.astimezone(UTC)


def next_fire(spec: ScheduleSpec, anchor: datetime, after: datetime) -> datetime | None:
    """The first instant `spec` fires after `after`; None when it never will again."""
    return next(fire_times(spec, anchor, after), None)


def preview(spec: ScheduleSpec, anchor: datetime, after: datetime, count: int) -> list[datetime]:
    """The next `count` instants `spec` fires after `after`."""
    return list(islice(fire_times(spec, anchor, after), count))


def due_slots(
    spec: ScheduleSpec, anchor: datetime, first: datetime, now: datetime, limit: int
) -> tuple[list[datetime], int]:
    """The slots from `first` (the schedule's next_run_at) up to `now`: the last `limit` of
    them, and how many came before those (a scheduler that was down finds many)."""
    slots: deque[datetime] = deque([first], maxlen=limit)
    seen = 1
    for instant in fire_times(spec, anchor, first):
        if instant > now or seen >= 10_000_000:  # years of one-second slots: no further
            break
        slots.append(instant)
        seen += 1
    return list(slots), seen - len(slots)

"""Schedules: cron (in a time zone), interval, once and event; actions that start a pipeline
run, send a notification or call an API; each slot (or event) run exactly once across
instances (`runner`); pipelines' schedule and event triggers kept as schedules
(`pipeline_triggers`)."""

from gathering.scheduler.definition import ScheduleSpec, parse_spec
from gathering.scheduler.runner import Scheduler
from gathering.scheduler.store import (
    ScheduleRecord,
    ScheduleRun,
    apply_schedule,
    create_schedule,
    delete_schedule,
    get_schedule,
    get_schedule_run,
    list_schedule_runs,
    list_schedules,
    pause_schedule,
    replace_schedule,
    resume_schedule,
    schedule_named,
)
from gathering.scheduler.timing import fire_times, next_fire, preview

__all__ = [
    "ScheduleRecord",
    "ScheduleRun",
    "ScheduleSpec",
    "Scheduler",
    "apply_schedule",
    "create_schedule",
    "delete_schedule",
    "fire_times",
    "get_schedule",
    "get_schedule_run",
    "list_schedule_runs",
    "list_schedules",
    "next_fire",
    "parse_spec",
    "pause_schedule",
    "preview",
    "replace_schedule",
    "resume_schedule",
    "schedule_named",
]

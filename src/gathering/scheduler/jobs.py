"""The scheduler's jobs, `scheduler:run_slot` (one run of a schedule) and `scheduler:run_task`
(a background agent task, until it ends or waits), registered through the `gathering.jobs`
entry point; and its duty: claim due slots and settle ended runs, on one
instance at a time, every `interval` seconds (a claim is safe on any number of instances at
once; one claimer is enough, and another takes over within seconds when it dies)."""

from __future__ import annotations

import procrastinate

from gathering.db.locks import LockKey, SingletonDuty
from gathering.jobs import ON_SHUTDOWN, JobServices, draining, services_of
from gathering.scheduler.runner import QUEUE, Scheduler
from gathering.scheduler.tasks import store as tasks
from gathering.scheduler.tasks.loop import TaskRunner

blueprint = procrastinate.Blueprint()
DUTY_LOCK = LockKey("scheduler", "claims")
TICK_SECONDS = 0.5


@blueprint.task(name="run_slot", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def run_slot(context: procrastinate.JobContext, run_id: int) -> None:
    """Run `run_id` of a schedule."""
    services = services_of(context)
    assert context.job.id is not None
    await Scheduler(services.db, services.bus).run(run_id, context.job.id)


@blueprint.task(name="run_task", pass_context=True, retry=ON_SHUTDOWN, queue=tasks.QUEUE)
async def run_task(context: procrastinate.JobContext, task_id: int) -> None:
    """Work on background task `task_id`."""
    services = services_of(context)
    assert context.job.id is not None
    runner = TaskRunner(services.db, services.bus)
    await runner.run(task_id, context.job.id, draining=lambda: draining(context))


def scheduler_duty(services: JobServices, *, interval: float = TICK_SECONDS) -> SingletonDuty:
    """Claims the slots that have come and settles runs that ended, every `interval` s."""
    scheduler = Scheduler(services.db, services.bus)
    return SingletonDuty(services.db, DUTY_LOCK, scheduler.tick, interval=interval)

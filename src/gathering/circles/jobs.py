"""The circles' jobs, `circles:work` (an agent works an attempt of a task) and
`circles:review` (an agent reviews one), registered through the `gathering.jobs` entry point;
and the duty that sends offers nobody answered in time to the next member."""

from __future__ import annotations

import procrastinate

from gathering.circles.tasks import QUEUE, TaskFlow
from gathering.circles.work import CircleWorker
from gathering.db.locks import LockKey, SingletonDuty
from gathering.jobs import ON_SHUTDOWN, JobServices, services_of

blueprint = procrastinate.Blueprint()
OFFERS_LOCK = LockKey("circles", "offers")


@blueprint.task(name="work", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def work(
    context: procrastinate.JobContext, task_id: int, iteration: int, member_id: int
) -> None:
    """Agent member `member_id` works attempt `iteration` of circle task `task_id`."""
    services = services_of(context)
    await CircleWorker(services.db, services.bus).work(task_id, iteration, member_id)


@blueprint.task(name="review", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def review(
    context: procrastinate.JobContext, task_id: int, iteration: int, member_id: int
) -> None:
    """Agent member `member_id` reviews attempt `iteration` of circle task `task_id`."""
    services = services_of(context)
    await CircleWorker(services.db, services.bus).review(task_id, iteration, member_id)


def offers_duty(services: JobServices, *, interval: float = 1.0) -> SingletonDuty:
    """Re-routes offers past their deadline, on one instance, every `interval` s."""
    flow = TaskFlow(services.db, services.bus)

    async def round_() -> None:
        await flow.expire_offers()

    return SingletonDuty(services.db, OFFERS_LOCK, round_, interval=interval)

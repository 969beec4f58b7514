"""The circles' jobs, registered through the `gathering.jobs` entry point: `circles:work` (an
agent works an attempt of a task), `circles:review` (an agent reviews one), `circles:converse`
(a conversation takes its turns) and `circles:summarize`; and the duty that sends offers
nobody answered in time (or whose member is gone) to the next member, and moves on the agents'
work whose job ended without an outcome."""

from __future__ import annotations

import procrastinate

from gathering.circles.conversations import Conversations
from gathering.circles.tasks import QUEUE, TaskFlow
from gathering.circles.work import CircleWorker
from gathering.db.locks import LockKey, SingletonDuty
from gathering.jobs import ON_SHUTDOWN, JobServices, services_of

blueprint = procrastinate.Blueprint()
OFFERS_LOCK = LockKey("circles", "offers")
STRANDED_EVERY = 10  # rounds: agents' work whose job ended without an outcome, every 10 s


@blueprint.task(name="work", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def work(
    context: procrastinate.JobContext,
    task_id: int,
    iteration: int,
    member_id: int,
    budget_waits: int = 0,
    estimate: list[float] | None = None,
) -> None:
    """Agent member `member_id` works attempt `iteration` of circle task `task_id` (again,
    after `budget_waits` refusals of a budget, once it can take `estimate`)."""
    services = services_of(context)
    worker = CircleWorker(services.db, services.bus)
    await worker.work(task_id, iteration, member_id, budget_waits, estimate)


@blueprint.task(name="review", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def review(
    context: procrastinate.JobContext, task_id: int, iteration: int, member_id: int
) -> None:
    """Agent member `member_id` reviews attempt `iteration` of circle task `task_id`."""
    services = services_of(context)
    await CircleWorker(services.db, services.bus).review(task_id, iteration, member_id)


@blueprint.task(name="converse", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def converse(context: procrastinate.JobContext, conversation_id: int) -> None:
    """Conversation `conversation_id` takes its turns until it ends, pauses or is cancelled."""
    services = services_of(context)
    await Conversations(services.db, services.bus).run(conversation_id)


@blueprint.task(name="summarize", pass_context=True, retry=ON_SHUTDOWN, queue=QUEUE)
async def summarize(context: procrastinate.JobContext, conversation_id: int) -> None:
    """A summary of conversation `conversation_id`'s transcript so far."""
    services = services_of(context)
    await Conversations(services.db, services.bus).summarize(conversation_id)


def offers_duty(services: JobServices, *, interval: float = 1.0) -> SingletonDuty:
    """Re-routes offers past their deadline, and the tasks of members who are gone, on one
    instance, every `interval` s; every `STRANDED_EVERY` rounds, moves on the agents' work
    whose job ended without an outcome (`TaskFlow.sweep_stranded`)."""
    flow = TaskFlow(services.db, services.bus)
    rounds = 0

    async def round_() -> None:
        nonlocal rounds
        rounds += 1  # first: a round that fails does not sweep again at once
        await flow.expire_offers()
        await flow.sweep_orphans()
        if rounds % STRANDED_EVERY == 1:
            await flow.sweep_stranded()

    return SingletonDuty(services.db, OFFERS_LOCK, round_, interval=interval)

"""The pipelines' job: `pipelines:run_node` runs one attempt of one node (registered through
the `gathering.jobs` entry point), and the duty that enforces run and node deadlines."""

from __future__ import annotations

import procrastinate
from procrastinate import job_context

from gathering.db.locks import LockKey, SingletonDuty
from gathering.jobs import ON_SHUTDOWN, JobServices, draining, services_of
from gathering.pipelines.executor import Executor

blueprint = procrastinate.Blueprint()
DEADLINES_LOCK = LockKey("pipelines", "deadlines")


@blueprint.task(name="run_node", pass_context=True, retry=ON_SHUTDOWN, queue="pipelines")
async def run_node(context: procrastinate.JobContext, run_id: int, node_id: str) -> None:
    """One attempt of node `node_id` of run `run_id`."""
    services = services_of(context)
    assert context.job.id is not None

    def shutting_down() -> bool:
        return context.abort_reason() == job_context.AbortReason.SHUTDOWN

    await Executor(services.db, services.bus).run_node(
        run_id,
        node_id,
        context.job.id,
        shutting_down=shutting_down,
        draining=lambda: draining(context),
    )


def deadlines_duty(services: JobServices, *, interval: float = 1.0) -> SingletonDuty:
    """Fails runs and node attempts past their deadlines, on one instance, every `interval` s
    (a live worker stops its own node at its timeout; this covers the dead ones)."""
    executor = Executor(services.db, services.bus)

    async def round_() -> None:
        await executor.enforce_deadlines()

    return SingletonDuty(services.db, DEADLINES_LOCK, round_, interval=interval)

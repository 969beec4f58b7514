"""What happens once a person answers an approval: the waiting turn goes on (or the direct
invocation runs, or is refused), on the instance that picks it up first.

`resume_answered` is called right after an answer on the instance that took it, and
`ApprovalResumer.run_once` (a singleton duty of the server) expires overdue approvals and
picks up any answered one left behind: an answer given from the CLI or on an instance that
stopped before it resumed the turn. Nothing waits in memory meanwhile.
"""

from __future__ import annotations

import structlog

from gathering.agents.agent import Agent
from gathering.agents.agent_store import PostgresAgentStore
from gathering.agents.turn_loop import resume_turn
from gathering.db import Database
from gathering.errors import GatheringError, NotFoundError
from gathering.events import Event, EventBus
from gathering.tools.agent_tools import agent_workspace, run_approved_invocation
from gathering.tools.approvals import Approval, expire_due, mark_resumed, to_resume
from gathering.tools.registry import loaded_registry

log = structlog.get_logger(__name__)


def approval_events(kind: str, approval: Approval, **extra: object) -> list[Event]:
    """`kind` events about `approval`, for its agent's and its owner's subscribers."""
    subjects = [f"agent:{approval.agent_id}"]
    if approval.owner_id is not None:
        subjects.append(f"user:{approval.owner_id}")
    body = approval.event_body() | extra
    return [Event(kind, body, subject=subject, source="agent") for subject in subjects]


async def resume_answered(db: Database, bus: EventBus | None, approval: Approval) -> None:
    """Go on with what `approval` held up, once: its turn resumes (when no other approval of
    it is pending), or its direct invocation runs (approved) or is refused, with the outcome
    kept with the approval."""
    store = PostgresAgentStore(db)
    try:
        record = await store.load_agent(approval.agent_id)
    except NotFoundError:
        await mark_resumed(db, approval.id)  # the agent is gone, and its turn with it
        return
    if approval.turn_id is None:
        if not await mark_resumed(db, approval.id):
            return  # picked up by another instance
        workspace = agent_workspace(approval.agent_id, record.created_at)
        call = await run_approved_invocation(db, await loaded_registry(), approval, workspace)
        if bus is not None:
            events = approval_events("tool.invoked", approval, is_error=call.is_error)
            await bus.publish_many(events, durable=True)
        return
    agent = Agent.from_record(record, store=store)
    agent.event_bus = bus
    async for _ in resume_turn(agent, approval.turn_id):
        pass
    # Taken up by the turn itself; if the turn was not waiting any more (interrupted, or
    # resumed elsewhere), there is nothing left to do for this answer either.
    await mark_resumed(db, approval.id)


class ApprovalResumer:
    """The server's duty: expire overdue approvals, and resume answered ones left behind."""

    def __init__(self, db: Database, bus: EventBus | None, *, batch: int = 20) -> None:
        self.db, self.bus, self.batch = db, bus, batch

    async def run_once(self) -> int:
        """One round; how many answered approvals it picked up."""
        for approval in await expire_due(self.db):
            log.info("approval expired", approval_id=approval.id, tool=approval.tool_name)
            if self.bus is not None:
                await self.bus.publish_many(
                    approval_events("approval.decided", approval), durable=True
                )
        picked = 0
        for approval in await to_resume(self.db, self.batch):
            try:
                await resume_answered(self.db, self.bus, approval)
            except GatheringError as exc:  # the next round tries again
                log.warning(
                    "could not resume after an approval", approval_id=approval.id, error=str(exc)
                )
                continue
            picked += 1
        return picked

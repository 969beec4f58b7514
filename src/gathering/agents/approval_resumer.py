"""What happens once a person answers an approval: the waiting turn goes on (or the direct
invocation runs, or is refused), on the instance that picks it up first. (A background task's
call is the scheduler's: it queues the task again.)

`resume_answered` is called right after an answer on the instance that took it, and
`ApprovalResumer.run_once` (a singleton duty of the server) expires overdue approvals and
picks up any answered one left behind: an answer given from the CLI or on an instance that
stopped before it resumed the turn. Nothing waits in memory meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import structlog

from gathering.agents.agent import Agent
from gathering.agents.agent_store import PostgresAgentStore
from gathering.agents.turn_events import agent_subjects
from gathering.agents.turn_loop import resume_turn
from gathering.cancellation import cancel_and_wait
from gathering.config import get_settings
from gathering.db import Database
from gathering.errors import AgentBusyError, GatheringError, NotFoundError, RateLimitedError
from gathering.events import Event, EventBus
from gathering.tools.agent_tools import run_approved_invocation, workspace_of
from gathering.tools.approvals import (
    Approval,
    agents_with_orphaned_resumes,
    expire_due,
    mark_outcomes_unknown,
    mark_resumed,
    to_resume,
)
from gathering.tools.mcp import registry_for

log = structlog.get_logger(__name__)

Admit = Callable[[int], AbstractContextManager[object]]
"""A slot for a turn of the owner `owner_id` (released on exit); `RateLimitedError` when the
owner has as many turns running as they may (the API's per-user cap)."""


def approval_events(kind: str, approval: Approval, **extra: object) -> list[Event]:
    """`kind` events about `approval`, for its agent's and its owner's subscribers."""
    body = approval.event_body() | extra
    subjects = agent_subjects(approval.agent_id, approval.owner_id)
    return [Event(kind, body, subject=subject, source="agent") for subject in subjects]


async def resume_answered(db: Database, bus: EventBus | None, approval: Approval) -> None:
    """Go on with what `approval` held up, once: its turn resumes (when no other approval of
    it is pending), or its direct invocation runs (approved) or is refused, with the outcome
    kept with the approval."""
    if approval.task_id is not None:
        return  # a background task's call: the scheduler queues its task again
    store = PostgresAgentStore(db)
    try:
        record = await store.load_agent(approval.agent_id)
    except NotFoundError:
        await mark_resumed(db, approval.id)  # the agent is gone, and its turn with it
        return
    if approval.turn_id is None:
        if not await mark_resumed(db, approval.id):
            return  # picked up by another instance
        workspace = await workspace_of(db, approval.agent_id, record.created_at)
        tools = await registry_for(db, record.owner_id, approval.agent_id)
        call = await run_approved_invocation(db, tools, approval, workspace)
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
    """The server's duty, each round: expire overdue approvals; take up answered ones left
    behind (each in a task of its own, at most `concurrency` at once, so a long turn never
    holds up the round); close turns a stopped process left running after it took them up;
    and give an `UNKNOWN` outcome to direct invocations whose process stopped mid-run."""

    def __init__(
        self,
        db: Database,
        bus: EventBus | None,
        *,
        batch: int = 20,
        concurrency: int = 4,
        admit: Admit | None = None,
    ) -> None:
        self.db, self.bus, self.batch, self.concurrency = db, bus, batch, concurrency
        self.admit = admit
        self._running: dict[int, asyncio.Task[None]] = {}

    async def run_once(self) -> int:
        """One round; how many answered approvals it started taking up."""
        for approval in await expire_due(self.db):
            log.info("approval expired", approval_id=approval.id, tool=approval.tool_name)
            if self.bus is not None:
                await self.bus.publish_many(
                    approval_events("approval.decided", approval), durable=True
                )
        stale = get_settings().tool_timeout * 2 + 60
        for approval_id in await mark_outcomes_unknown(self.db, stale):
            log.warning("an approved invocation's outcome is unknown", approval_id=approval_id)
        await self._close_orphaned_turns()
        started = 0
        for approval in await to_resume(self.db, self.batch):
            if approval.id in self._running or len(self._running) >= self.concurrency:
                continue
            owner = approval.owner_id
            try:  # the owner's turns running here count; at the cap, a later round goes on
                slot = nullcontext() if self.admit is None or owner is None else self.admit(owner)
            except RateLimitedError:
                continue
            task = asyncio.create_task(self._resume(approval, slot), name=f"approval-{approval.id}")
            self._running[approval.id] = task
            task.add_done_callback(self._forget)
            started += 1
        return started

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._running.items()):
            if running is task:
                del self._running[key]

    async def drain(self) -> None:
        """Wait for the resumes this duty started."""
        if self._running:
            await asyncio.wait(list(self._running.values()))

    async def stop(self) -> None:
        """Cancel the resumes still running (their turns are closed as interrupted later)."""
        for task in list(self._running.values()):
            await cancel_and_wait(task)

    async def _resume(self, approval: Approval, slot: AbstractContextManager[object]) -> None:
        try:
            with slot:
                await resume_answered(self.db, self.bus, approval)
        except GatheringError as exc:  # the next round tries again
            log.warning(
                "could not resume after an approval", approval_id=approval.id, error=str(exc)
            )
        except Exception:
            log.error("resuming after an approval failed", approval_id=approval.id, exc_info=True)

    async def _close_orphaned_turns(self) -> None:
        """A turn still `running` after it was taken up, with its agent's lock free, was left
        by a process that stopped: opening the agent's conversation closes it as interrupted
        (its unfinished call `interrupted`, never run again)."""
        store = PostgresAgentStore(self.db)
        for agent_id in await agents_with_orphaned_resumes(self.db):
            try:
                async with store.conversation(agent_id, wait=0) as conversation:
                    if conversation.interrupted:
                        log.warning(
                            "closed a resumed turn a stopped process left running",
                            agent_id=agent_id,
                            turns=list(conversation.interrupted),
                        )
            except AgentBusyError:
                continue  # running now, on some instance
            except NotFoundError:
                continue
